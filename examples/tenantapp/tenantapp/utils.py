"""Small pure helpers: slugs, pagination, sorting."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_NON_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(value: str, *, max_length: int = 80) -> str:
    """ASCII slug for URLs and organisation handles: "Zürich Labs (EU)" -> "zurich-labs-eu".

    Characters with no ASCII decomposition (e.g. CJK) are dropped; a name made only of those gets "org".
    """
    normalized = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii").lower()
    slug = _NON_SLUG.sub("-", normalized).strip("-")
    if len(slug) > max_length:
        slug = slug[:max_length].rstrip("-")
    return slug or "org"


@dataclass(frozen=True)
class Page:
    skip: int
    limit: int

    @property
    def offset(self) -> int:
        return self.skip


def clamp_page(skip: int, limit: int, *, max_limit: int) -> Page:
    """Validate paging parameters. Negative values are client errors; a too-large limit is capped, not refused,
    which is what most API clients expect."""
    if skip < 0:
        raise ValueError("skip must be >= 0")
    if limit < 1:
        raise ValueError("limit must be >= 1")
    return Page(skip=skip, limit=min(limit, max_limit))


def parse_sort(sort: str | None, allowed: set[str], default: str) -> tuple[str, bool]:
    """Parse "name" / "-created_at" into (column, descending). Only whitelisted column names are accepted: the
    value is used to pick an ORM attribute, and a whitelist is what keeps arbitrary input out of ORDER BY."""
    raw = (sort or default).strip()
    descending = raw.startswith("-")
    column = raw[1:] if descending else raw
    if column not in allowed:
        raise ValueError(f"cannot sort by {column!r}; allowed: {', '.join(sorted(allowed))}")
    return column, descending


def chunked(items: list, size: int):
    if size < 1:
        raise ValueError("size must be >= 1")
    for start in range(0, len(items), size):
        yield items[start:start + size]
