from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction

from lending.models import Author, Book, Genre, Loan

pytestmark = [pytest.mark.db, pytest.mark.django_db]


def test_database_identity(record_property):
    """Records which database this test ran against and from which backend, so testshard's own tests can show from
    the JUnit XML that every agent had a database of its own."""
    with connection.cursor() as cur:
        cur.execute("SELECT current_database(), current_user, pg_backend_pid(), inet_server_addr() IS NOT NULL")
        name, user, pid, tcp = cur.fetchone()
    record_property("database", name)
    record_property("settings_name", connection.settings_dict["NAME"])
    record_property("role", user)
    record_property("backend_pid", str(pid))
    record_property("transport", "tcp" if tcp else "socket")
    assert name == connection.settings_dict["NAME"]


SEEDED = ["biography", "children", "crime", "fantasy", "history", "poetry", "science", "science-fiction"]


@pytest.mark.parametrize("slug", SEEDED)
def test_data_migration_seeded_genre(slug):
    assert Genre.objects.filter(slug=slug).exists()


def test_genres_are_ordered_by_name():
    names = list(Genre.objects.values_list("name", flat=True))
    assert names == sorted(names)


@pytest.mark.parametrize("copies", [0, 1, 2, 5, 50])
def test_book_copies(make_book, copies):
    book = make_book(copies=copies)
    assert Book.objects.get(pk=book.pk).copies == copies


def test_isbn_is_unique(make_book):
    book = make_book()
    with pytest.raises(IntegrityError):
        Book.objects.create(title="Dup", slug="dup", isbn=book.isbn, author=book.author)


def test_author_with_books_cannot_be_deleted(make_book):
    from django.db.models import ProtectedError
    book = make_book()
    with pytest.raises(ProtectedError):
        book.author.delete()


def test_deleting_a_genre_keeps_its_books(make_book):
    genre = Genre.objects.create(name="Temporary", slug="temporary")
    book = make_book(genre="temporary")
    genre.delete()
    book.refresh_from_db()
    assert book.genre is None


@pytest.mark.parametrize("n_books", [1, 3, 7])
def test_author_books_reverse_relation(make_author, make_book, n_books):
    author = make_author()
    for _ in range(n_books):
        make_book(author=author)
    assert author.books.count() == n_books


def test_one_open_loan_per_member_and_book(make_book, make_member, now):
    book, member = make_book(copies=3), make_member()
    Loan.objects.create(book=book, member=member, borrowed_at=now, due_at=now + timedelta(days=14))
    with pytest.raises(IntegrityError), transaction.atomic():
        Loan.objects.create(book=book, member=member, borrowed_at=now, due_at=now + timedelta(days=14))


def test_returned_loans_do_not_block_a_new_one(make_book, make_member, now):
    book, member = make_book(), make_member()
    Loan.objects.create(book=book, member=member, borrowed_at=now, due_at=now + timedelta(days=1),
                        returned_at=now + timedelta(hours=1))
    Loan.objects.create(book=book, member=member, borrowed_at=now, due_at=now + timedelta(days=14))
    assert Loan.objects.filter(book=book, member=member).count() == 2


@pytest.mark.parametrize("days", [0, -1, -30])
def test_due_must_follow_borrowed(make_book, make_member, now, days):
    with pytest.raises(IntegrityError):
        Loan.objects.create(book=make_book(), member=make_member(), borrowed_at=now, due_at=now + timedelta(days=days))


@pytest.mark.parametrize("copies, loans, available", [(1, 0, 1), (1, 1, 0), (3, 1, 2), (3, 3, 0), (5, 2, 3)])
def test_available_books_queryset(make_book, make_member, now, copies, loans, available):
    book = make_book(copies=copies)
    for _ in range(loans):
        Loan.objects.create(book=book, member=make_member(), borrowed_at=now, due_at=now + timedelta(days=14))
    annotated = Book.objects.with_open_loans().get(pk=book.pk)
    assert annotated.copies - annotated.open_loans == available
    assert Book.objects.available().filter(pk=book.pk).exists() == (available > 0)


@pytest.mark.parametrize("i", range(20))
def test_rows_written_in_one_test_are_gone_in_the_next(i, make_author):
    # Each test runs in a transaction that is rolled back: whatever order these run in, each sees only its own row.
    make_author(name=f"isolated-{i}")
    assert Author.objects.filter(name__startswith="isolated-").count() == 1
