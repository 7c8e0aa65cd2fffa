"""Fixtures shared by the suite: small factories for the lending models.

The database is pytest-django's business: tests marked ``django_db`` get the test database (``test_<DB_NAME>``,
created and migrated at the start of the session, or DB_NAME itself when reused), each inside a transaction that
is rolled back; ``transaction=True`` tests really commit and the tables are flushed afterwards.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone as dt_timezone

import pytest

from lending import notifications

_seq = itertools.count(1)


def isbn13(n: int) -> str:
    """A valid ISBN-13 (978 prefix) derived from n."""
    body = "978" + f"{n % 10**9:09d}"
    check = (10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(body)) % 10) % 10
    return body + str(check)


@pytest.fixture(autouse=True)
def _empty_outbox():
    notifications.outbox.clear()
    yield
    notifications.outbox.clear()


@pytest.fixture
def now():
    return datetime(2024, 3, 1, 10, 0, tzinfo=dt_timezone.utc)


@pytest.fixture
def make_author(db):
    from lending.models import Author

    def make(name=None, born=1950):
        return Author.objects.create(name=name or f"Author {next(_seq)}", born=born)
    return make


@pytest.fixture
def make_book(db, make_author):
    from lending.models import Book, Genre
    from lending.rules import slugify_title

    def make(title=None, copies=1, author=None, genre="fantasy", published=2001):
        n = next(_seq)
        title = title or f"Book {n}"
        return Book.objects.create(title=title, slug=slugify_title(title), isbn=isbn13(n * 7919),
                                   author=author or make_author(), copies=copies, published=published,
                                   genre=_genre(Genre, genre) if genre else None)
    return make


def _genre(Genre, slug):
    # get_or_create rather than get: the genres come from a data migration, and the flush after a transactional
    # test empties the table.
    return Genre.objects.get_or_create(slug=slug, defaults={"name": slug.replace("-", " ").title()})[0]


@pytest.fixture
def make_member(db, django_user_model):
    from lending.models import Member

    def make(active=True, max_open_loans=None):
        n = next(_seq)
        user = django_user_model.objects.create_user(username=f"reader{n}")  # no password: no hashing
        return Member.objects.create(user=user, card_number=f"C{n:08d}", active=active, max_open_loans=max_open_loans)
    return make
