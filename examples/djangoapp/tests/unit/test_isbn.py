import pytest

from lending import rules

from ..conftest import isbn13

pytestmark = pytest.mark.unit

VALID_13 = ["9780306406157", "978-0-306-40615-7", "9783161484100", "9781861972712", "9780131103627",
            "9780262033848", "9780201633610", "9781491950357", "9780596007126", "9780134685991"]
VALID_10 = ["0306406152", "0-306-40615-2", "0131103628", "0262033844", "0201633612", "080442957X", "043942089X"]
INVALID = ["", "123", "9780306406158", "978030640615", "97803064061577", "0306406153", "030640615Y", "abcdefghij",
           "979030640615X", "9770306406157", "030640615", "0-306-40615-3"]


@pytest.mark.parametrize("isbn", VALID_13)
def test_valid_isbn13(isbn):
    assert rules.isbn13_is_valid(isbn)


@pytest.mark.parametrize("isbn", VALID_10)
def test_valid_isbn10(isbn):
    assert rules.isbn10_is_valid(isbn)


@pytest.mark.parametrize("isbn", INVALID)
def test_invalid_isbns_are_refused(isbn):
    with pytest.raises(rules.InvalidIsbn):
        rules.normalize_isbn(isbn)


@pytest.mark.parametrize("isbn10", VALID_10)
def test_isbn10_converts_to_a_valid_isbn13(isbn10):
    converted = rules.isbn10_to_13(isbn10)
    assert rules.isbn13_is_valid(converted)
    assert converted[3:12] == rules._digits(isbn10)[:9]


@pytest.mark.parametrize("n", range(0, 200, 5))
def test_generated_isbns_are_valid(n):
    assert rules.isbn13_is_valid(isbn13(n * 104729))


@pytest.mark.parametrize("isbn", VALID_13)
def test_normalize_strips_separators(isbn):
    assert rules.normalize_isbn(isbn) == isbn.replace("-", "")
