import pytest

from lending import rules

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("title, slug", [
    ("The Hobbit", "the-hobbit"), ("  Dune  ", "dune"), ("Cien años de soledad", "cien-anos-de-soledad"),
    ("Les Misérables", "les-miserables"), ("1984", "1984"), ("C++ Primer", "c-primer"), ("???", "untitled"),
    ("", "untitled"), ("Über die Brücke", "uber-die-brucke"), ("A -- B", "a-b"), ("Ærø", "r"),
    ("x" * 100, "x" * 80), ("Gödel, Escher, Bach", "godel-escher-bach"), ("Hello_World", "hello-world"),
])
def test_slugify_title(title, slug):
    assert rules.slugify_title(title) == slug


@pytest.mark.parametrize("title", ["The Hobbit", "Dune", "1984", "Les Misérables", "Über"])
def test_slugs_are_idempotent(title):
    once = rules.slugify_title(title)
    assert rules.slugify_title(once) == once
