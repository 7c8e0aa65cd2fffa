from datetime import timedelta
from decimal import Decimal

import pytest

from lending import notifications, services
from lending.models import AuditEntry, Loan

pytestmark = [pytest.mark.db, pytest.mark.django_db]


def test_borrow_creates_an_open_loan_due_in_fourteen_days(make_book, make_member, now):
    loan = services.borrow(make_book().pk, make_member().pk, now=now)
    assert loan.is_open
    assert loan.due_at - loan.borrowed_at == timedelta(days=14)
    assert AuditEntry.objects.filter(loan=loan, action="borrow").exists()


def test_notifications_wait_for_the_commit(make_book, make_member, now, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.borrow(make_book().pk, make_member().pk, now=now)
    assert len(callbacks) == 1
    assert notifications.outbox[0]["kind"] == "borrowed"


def test_without_a_commit_nothing_is_sent(make_book, make_member, now):
    services.borrow(make_book().pk, make_member().pk, now=now)
    assert notifications.outbox == []  # the test's transaction never commits


@pytest.mark.parametrize("copies", [1, 2, 4])
def test_the_last_copy_can_be_lent_only_once(make_book, make_member, now, copies):
    book = make_book(copies=copies)
    for _ in range(copies):
        services.borrow(book.pk, make_member().pk, now=now)
    with pytest.raises(services.NoCopyAvailable):
        services.borrow(book.pk, make_member().pk, now=now)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_member_loan_limit(make_book, make_member, now, limit):
    member = make_member(max_open_loans=limit)
    for _ in range(limit):
        services.borrow(make_book().pk, member.pk, now=now)
    with pytest.raises(services.LoanLimitReached):
        services.borrow(make_book().pk, member.pk, now=now)


def test_default_loan_limit_comes_from_settings(make_book, make_member, now, settings):
    settings.LENDING_MAX_OPEN_LOANS = 2
    member = make_member()
    services.borrow(make_book().pk, member.pk, now=now)
    services.borrow(make_book().pk, member.pk, now=now)
    with pytest.raises(services.LoanLimitReached):
        services.borrow(make_book().pk, member.pk, now=now)


def test_inactive_members_cannot_borrow(make_book, make_member, now):
    with pytest.raises(services.MemberInactive):
        services.borrow(make_book().pk, make_member(active=False).pk, now=now)


def test_the_same_book_twice_is_refused_and_leaves_no_trace(make_book, make_member, now):
    book, member = make_book(copies=2), make_member()
    services.borrow(book.pk, member.pk, now=now)
    with pytest.raises(services.AlreadyBorrowed):
        services.borrow(book.pk, member.pk, now=now)
    assert Loan.objects.filter(book=book).count() == 1
    assert AuditEntry.objects.filter(action="borrow").count() == 1


@pytest.mark.parametrize("days, fee", [(0, "0.00"), (14, "0.00"), (15, "0.00"), (16, "0.25"), (24, "2.25"),
                                       (60, "10.00")])
def test_return_charges_late_fees(make_book, make_member, now, days, fee):
    loan = services.borrow(make_book().pk, make_member().pk, now=now)
    returned = services.return_book(loan.pk, now=now + timedelta(days=days))
    assert returned.fee == Decimal(fee)
    assert not returned.is_open


def test_a_loan_is_returned_once(make_book, make_member, now):
    loan = services.borrow(make_book().pk, make_member().pk, now=now)
    services.return_book(loan.pk, now=now)
    with pytest.raises(services.AlreadyReturned):
        services.return_book(loan.pk, now=now)


def test_returning_frees_the_copy(make_book, make_member, now):
    book = make_book(copies=1)
    loan = services.borrow(book.pk, make_member().pk, now=now)
    services.return_book(loan.pk, now=now + timedelta(days=1))
    services.borrow(book.pk, make_member().pk, now=now + timedelta(days=2))


@pytest.mark.parametrize("renewals", [1, 2])
def test_renewal_extends_the_due_date(make_book, make_member, now, renewals):
    loan = services.borrow(make_book().pk, make_member().pk, now=now)
    due = loan.due_at
    for _ in range(renewals):
        loan = services.renew(loan.pk, now=now)
    assert loan.due_at == due + timedelta(days=14 * renewals)
    assert loan.renewals == renewals


def test_third_renewal_is_refused(make_book, make_member, now):
    loan = services.borrow(make_book().pk, make_member().pk, now=now)
    services.renew(loan.pk, now=now)
    services.renew(loan.pk, now=now)
    with pytest.raises(services.RenewalRefused):
        services.renew(loan.pk, now=now)


def test_overdue_loans_cannot_be_renewed(make_book, make_member, now):
    loan = services.borrow(make_book().pk, make_member().pk, now=now)
    with pytest.raises(services.RenewalRefused):
        services.renew(loan.pk, now=now + timedelta(days=20))


@pytest.mark.parametrize("offsets, expected", [([1], 0), ([20], 1), ([1, 20, 30], 2), ([20, 25, 40, 50], 4)])
def test_overdue_listing(make_book, make_member, now, offsets, expected):
    for days_ago in offsets:
        services.borrow(make_book().pk, make_member().pk, now=now - timedelta(days=days_ago))
    assert services.overdue(now=now).count() == expected
