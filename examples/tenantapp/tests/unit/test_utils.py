import pytest

from tenantapp.crud import escape_like
from tenantapp.utils import chunked, clamp_page, parse_sort, slugify

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Acme Corp", "acme-corp"),
        ("Zürich Labs (EU)", "zurich-labs-eu"),
        ("[beta] O'Reilly & Sons", "beta-o-reilly-sons"),
        ('Say "hello" world', "say-hello-world"),
        ("  --Trim me--  ", "trim-me"),
        ("Crème Brûlée GmbH", "creme-brulee-gmbh"),
        ("東京 AI", "ai"),
        ("東京", "org"),
        ("", "org"),
        ("a" * 120, "a" * 80),
    ],
)
def test_slugify(name, slug):
    assert slugify(name) == slug


@pytest.mark.critical
def test_slug_is_url_safe_for_any_input():
    for name in ("Ünïcödé", "a/b\\c?d#e", "<script>", "tab\tand\nnewline"):
        assert all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in slugify(name))


def test_slug_never_ends_with_a_dash_after_truncation():
    assert not slugify("word " * 40, max_length=12).endswith("-")


@pytest.mark.parametrize(("skip", "limit", "expected"), [(0, 10, (0, 10)), (20, 100, (20, 100)), (5, 5000, (5, 100))])
def test_clamp_page(skip, limit, expected):
    page = clamp_page(skip, limit, max_limit=100)
    assert (page.skip, page.limit) == expected


@pytest.mark.parametrize(("skip", "limit"), [(-1, 10), (0, 0), (0, -5)])
def test_clamp_page_rejects(skip, limit):
    with pytest.raises(ValueError):
        clamp_page(skip, limit, max_limit=100)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, ("created_at", True)), ("name", ("name", False)), ("-name", ("name", True)), (" -created_at ", ("created_at", True))],
)
def test_parse_sort(raw, expected):
    assert parse_sort(raw, {"name", "created_at"}, "-created_at") == expected


@pytest.mark.critical
@pytest.mark.parametrize("raw", ["password", "name; DROP TABLE users", "-", "organization_id", "name desc"])
def test_parse_sort_only_accepts_whitelisted_columns(raw):
    with pytest.raises(ValueError, match="cannot sort by"):
        parse_sort(raw, {"name", "created_at"}, "name")


def test_chunked():
    assert list(chunked(list(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []
    with pytest.raises(ValueError):
        list(chunked([1], 0))


@pytest.mark.parametrize(
    ("term", "escaped"),
    [("plain", "plain"), ("50%", "50\\%"), ("a_b", "a\\_b"), ("C:\\path", "C:\\\\path"), ("%_%", "\\%\\_\\%")],
)
def test_escape_like(term, escaped):
    assert escape_like(term) == escaped
