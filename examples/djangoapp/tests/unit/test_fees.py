from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from lending import rules

pytestmark = pytest.mark.unit

DUE = date(2024, 1, 15)


@pytest.mark.parametrize("late, fee", [
    (-5, "0.00"), (0, "0.00"), (1, "0.00"), (2, "0.25"), (3, "0.50"), (5, "1.00"), (10, "2.25"), (20, "4.75"),
    (30, "7.25"), (40, "9.75"), (41, "10.00"), (42, "10.00"), (100, "10.00"), (365, "10.00"),
])
def test_late_fee(late, fee):
    assert rules.late_fee(DUE, DUE + timedelta(days=late)) == Decimal(fee)


@pytest.mark.parametrize("days", range(0, 30))
def test_fee_never_exceeds_the_cap_and_grows_monotonically(days):
    a = rules.late_fee(DUE, DUE + timedelta(days=days))
    b = rules.late_fee(DUE, DUE + timedelta(days=days + 1))
    assert Decimal("0") <= a <= b <= rules.FEE_CAP


@pytest.mark.parametrize("hour", [0, 6, 12, 23])
def test_datetimes_count_whole_days(hour):
    due = datetime(2024, 1, 15, 12, tzinfo=timezone.utc)
    returned = datetime(2024, 1, 18, hour, tzinfo=timezone.utc)
    assert rules.days_late(due, returned) == 2


@pytest.mark.parametrize("loan_days", [1, 7, 14, 21, 28])
def test_due_date_adds_the_loan_period(loan_days):
    start = datetime(2024, 2, 27, 9, tzinfo=timezone.utc)
    assert rules.due_date(start, loan_days) - start == timedelta(days=loan_days)


@pytest.mark.parametrize("loan_days", [0, -1, -14])
def test_due_date_refuses_non_positive_periods(loan_days):
    with pytest.raises(ValueError):
        rules.due_date(datetime(2024, 1, 1, tzinfo=timezone.utc), loan_days)
