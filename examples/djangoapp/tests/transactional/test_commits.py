"""Tests that really commit: on_commit hooks, row locks seen by a second connection, IntegrityError recovery.
pytest-django flushes every table after each of them (Django's TransactionTestCase), so they run last."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction

from lending import notifications, services
from lending.models import AuditEntry, Book, Genre, Loan

pytestmark = [pytest.mark.transactional, pytest.mark.django_db(transaction=True)]


def test_notification_is_sent_on_commit(make_book, make_member, now):
    services.borrow(make_book().pk, make_member().pk, now=now)
    assert [m["kind"] for m in notifications.outbox] == ["borrowed"]


def test_a_rolled_back_borrow_sends_nothing(make_book, make_member, now):
    book, member = make_book(), make_member()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            services.borrow(book.pk, member.pk, now=now)
            raise RuntimeError("the desk crashed")
    assert notifications.outbox == []
    assert not Loan.objects.exists()
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("days, sent", [(1, ["borrowed"]), (30, ["borrowed", "fee_due"])])
def test_fee_notice_after_commit(make_book, make_member, now, days, sent):
    loan = services.borrow(make_book().pk, make_member().pk, now=now)
    services.return_book(loan.pk, now=now + timedelta(days=days))
    assert [m["kind"] for m in notifications.outbox] == sent


@pytest.mark.parametrize("round_", range(6))
def test_two_desks_cannot_lend_the_last_copy_twice(make_book, make_member, now, round_):
    """Two threads, two connections, one copy: the row lock makes exactly one borrow succeed."""
    book = make_book(copies=1)
    members = [make_member(), make_member()]
    barrier = threading.Barrier(2)
    outcomes = []

    def desk(member):
        try:
            barrier.wait(timeout=10)
            services.borrow(book.pk, member.pk, now=now)
            outcomes.append("ok")
        except services.NoCopyAvailable:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=desk, args=(m,)) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["ok", "refused"]
    assert Loan.objects.filter(book=book, returned_at__isnull=True).count() == 1


def test_a_second_connection_sees_committed_rows(make_author):
    author = make_author(name="Committed")

    def other():
        try:
            seen.append(Book.objects.model._meta.apps.get_model("lending", "Author").objects.filter(pk=author.pk).exists())
        finally:
            connections.close_all()

    seen = []
    t = threading.Thread(target=other)
    t.start()
    t.join(timeout=30)
    assert seen == [True]


@pytest.mark.parametrize("i", range(8))
def test_tables_start_empty_after_a_flush(i, make_author):
    # Every transactional test starts with the tables Django flushed after the previous one.
    assert not Loan.objects.exists()
    make_author(name=f"flushed-{i}")


def test_integrity_error_inside_atomic_keeps_the_outer_transaction_usable(make_book, make_member, now):
    book, member = make_book(copies=2), make_member()
    with transaction.atomic():
        services.borrow(book.pk, member.pk, now=now)
        with pytest.raises(services.AlreadyBorrowed):
            services.borrow(book.pk, member.pk, now=now)
        assert Loan.objects.count() == 1
    assert not connection.needs_rollback


@pytest.mark.parametrize("slug", ["fantasy", "science", "poetry"])
def test_serialized_rollback_restores_migration_data(slug):
    """The flush after a transactional test empties the genres a data migration put there; serialized rollback
    (conftest.py) restores them from the copy Django serialised when it set the test database up, which it does
    with --reuse-db too."""
    assert Genre.objects.filter(slug=slug).exists()
