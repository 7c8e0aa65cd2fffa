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


def test_clamp_page():
    assert clamp_page(0, 10, max_limit=100).limit == 10
    assert clamp_page(5, 5000, max_limit=100).limit == 100  # capped, not refused
    for skip, limit in ((-1, 10), (0, 0)):
        with pytest.raises(ValueError):
            clamp_page(skip, limit, max_limit=100)


def test_parse_sort():
    allowed = {"name", "created_at"}
    assert parse_sort(None, allowed, "-created_at") == ("created_at", True)
    assert parse_sort("name", allowed, "-created_at") == ("name", False)
    assert parse_sort(" -created_at ", allowed, "name") == ("created_at", True)


@pytest.mark.critical
def test_parse_sort_only_accepts_whitelisted_columns():
    for raw in ("password", "name; DROP TABLE users", "organization_id", "name desc"):
        with pytest.raises(ValueError, match="cannot sort by"):
            parse_sort(raw, {"name", "created_at"}, "name")


def test_chunked():
    assert list(chunked(list(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []
    with pytest.raises(ValueError):
        list(chunked([1], 0))


def test_escape_like():
    assert escape_like("plain") == "plain"
    assert escape_like("50%") == "50\\%"
    assert escape_like("a_b") == "a\\_b"
    assert escape_like("C:\\path") == "C:\\\\path"
