"""Lending rules that need no database: ISBN checks, due dates, late fees, slugs. Unit-tested on their own."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

FEE_PER_DAY = Decimal("0.25")
FEE_CAP = Decimal("10.00")
GRACE_DAYS = 1


class InvalidIsbn(ValueError):
    pass


def _digits(raw: str) -> str:
    return re.sub(r"[\s-]", "", raw or "")


def isbn10_is_valid(raw: str) -> bool:
    s = _digits(raw).upper()
    if not re.fullmatch(r"\d{9}[\dX]", s):
        return False
    total = sum((10 - i) * (10 if c == "X" else int(c)) for i, c in enumerate(s))
    return total % 11 == 0


def isbn13_is_valid(raw: str) -> bool:
    s = _digits(raw)
    if not re.fullmatch(r"97[89]\d{10}", s):
        return False
    total = sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(s))
    return total % 10 == 0


def isbn10_to_13(raw: str) -> str:
    s = _digits(raw).upper()
    if not isbn10_is_valid(s):
        raise InvalidIsbn(f"not a valid ISBN-10: {raw!r}")
    body = "978" + s[:9]
    check = (10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(body)) % 10) % 10
    return body + str(check)


def normalize_isbn(raw: str) -> str:
    """The ISBN-13 for an ISBN-10 or ISBN-13, without separators; InvalidIsbn otherwise."""
    s = _digits(raw)
    if len(s) == 10:
        return isbn10_to_13(s)
    if isbn13_is_valid(s):
        return s
    raise InvalidIsbn(f"not a valid ISBN: {raw!r}")


def due_date(borrowed: datetime, loan_days: int) -> datetime:
    if loan_days <= 0:
        raise ValueError("loan_days must be positive")
    return borrowed + timedelta(days=loan_days)


def days_late(due: datetime | date, returned: datetime | date) -> int:
    """Whole days after the due date, less the grace period; never negative."""
    d = due.date() if isinstance(due, datetime) else due
    r = returned.date() if isinstance(returned, datetime) else returned
    return max(0, (r - d).days - GRACE_DAYS)


def late_fee(due: datetime | date, returned: datetime | date) -> Decimal:
    fee = FEE_PER_DAY * days_late(due, returned)
    return min(fee, FEE_CAP).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def slugify_title(title: str) -> str:
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text[:80] or "untitled"
