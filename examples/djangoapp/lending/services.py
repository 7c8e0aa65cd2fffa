"""Borrowing and returning, with the locking that keeps two desks from lending the last copy twice."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import rules
from .models import AuditEntry, Book, Loan, Member
from .notifications import notify_after_commit


class LendingError(Exception):
    code = "lending_error"


class NoCopyAvailable(LendingError):
    code = "no_copy_available"


class LoanLimitReached(LendingError):
    code = "loan_limit_reached"


class MemberInactive(LendingError):
    code = "member_inactive"


class AlreadyBorrowed(LendingError):
    code = "already_borrowed"


class AlreadyReturned(LendingError):
    code = "already_returned"


def loan_limit(member: Member) -> int:
    return member.max_open_loans if member.max_open_loans is not None else settings.LENDING_MAX_OPEN_LOANS


@transaction.atomic
def borrow(book_id: int, member_id: int, now: datetime | None = None) -> Loan:
    now = now or timezone.now()
    # Lock the book row: two borrows of the last copy serialise here and the second sees the first's loan.
    book = Book.objects.select_for_update().get(pk=book_id)
    member = Member.objects.select_for_update().get(pk=member_id)
    if not member.active:
        raise MemberInactive(f"member {member.card_number} is inactive")
    if member.loans.filter(returned_at__isnull=True).count() >= loan_limit(member):
        raise LoanLimitReached(f"member {member.card_number} already has {loan_limit(member)} open loans")
    if book.loans.filter(returned_at__isnull=True).count() >= book.copies:
        raise NoCopyAvailable(f"no copy of {book.title!r} is available")
    try:
        with transaction.atomic():
            loan = Loan.objects.create(book=book, member=member, borrowed_at=now,
                                       due_at=rules.due_date(now, settings.LENDING_LOAN_DAYS))
    except IntegrityError as exc:
        raise AlreadyBorrowed(f"member {member.card_number} already has {book.title!r}") from exc
    AuditEntry.objects.create(action="borrow", loan=loan, detail=f"{member.card_number} {book.isbn}")
    notify_after_commit("borrowed", loan_id=loan.pk, card=member.card_number, due=loan.due_at.date().isoformat())
    return loan


@transaction.atomic
def return_book(loan_id: int, now: datetime | None = None) -> Loan:
    now = now or timezone.now()
    loan = Loan.objects.select_for_update().get(pk=loan_id)
    if loan.returned_at is not None:
        raise AlreadyReturned(f"loan {loan.pk} was returned on {loan.returned_at.date()}")
    loan.returned_at = now
    loan.fee = rules.late_fee(loan.due_at, now)
    loan.save(update_fields=["returned_at", "fee"])
    AuditEntry.objects.create(action="return", loan=loan, detail=f"fee {loan.fee}")
    if loan.fee:
        notify_after_commit("fee_due", loan_id=loan.pk, fee=str(loan.fee))
    return loan


def overdue(now: datetime | None = None):
    now = now or timezone.now()
    return Loan.objects.filter(returned_at__isnull=True, due_at__lt=now).select_related("book", "member")


class RenewalRefused(LendingError):
    code = "renewal_refused"


MAX_RENEWALS = 2


@transaction.atomic
def renew(loan_id: int, now: datetime | None = None) -> Loan:
    """Extends an open, not yet overdue loan by another loan period, at most MAX_RENEWALS times."""
    now = now or timezone.now()
    loan = Loan.objects.select_for_update().get(pk=loan_id)
    if loan.returned_at is not None:
        raise AlreadyReturned(f"loan {loan.pk} was returned on {loan.returned_at.date()}")
    if loan.due_at < now:
        raise RenewalRefused(f"loan {loan.pk} is overdue")
    if loan.renewals >= MAX_RENEWALS:
        raise RenewalRefused(f"loan {loan.pk} was already renewed {loan.renewals} times")
    loan.due_at = rules.due_date(loan.due_at, settings.LENDING_LOAN_DAYS)
    loan.renewals += 1
    loan.save(update_fields=["due_at", "renewals"])
    AuditEntry.objects.create(action="renew", loan=loan, detail=f"due {loan.due_at.date()}")
    return loan
