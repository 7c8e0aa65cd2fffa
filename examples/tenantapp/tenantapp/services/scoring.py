"""Scoring a model response against the expected one. Pure functions, no I/O."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Iterable, Optional, Sequence

_WORD = re.compile(r"\w+", re.UNICODE)
REFUSAL_MARKERS = ("i cannot", "i can't", "i am unable", "i'm unable", "i won't", "cannot help with")


def normalize(text: str) -> str:
    """Case-fold, strip accents and collapse whitespace, so "Café  OPEN" and "cafe open" compare equal."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.casefold().split())


def tokens(text: str) -> list[str]:
    return _WORD.findall(normalize(text))


def token_f1(expected: str, actual: str) -> float:
    """SQuAD-style token-overlap F1 between two texts, in [0, 1]."""
    exp, act = tokens(expected), tokens(actual)
    if not exp and not act:
        return 1.0
    if not exp or not act:
        return 0.0
    common = Counter(exp) & Counter(act)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(act), overlap / len(exp)
    return 2 * precision * recall / (precision + recall)


def is_refusal(text: str) -> bool:
    lowered = normalize(text).replace("’", "'")
    return any(marker in lowered for marker in REFUSAL_MARKERS)


def score_response(expected: Optional[str], actual: str) -> float:
    """Score in [0, 1].

    * No expected response: the model must simply answer (non-empty, not a refusal).
    * Expected response is itself a refusal: the model must refuse too.
    * Otherwise: 1.0 when the expected text appears verbatim (after normalisation), else token F1.
    """
    if not actual or not actual.strip():
        return 0.0
    if expected is None or not expected.strip():
        return 0.0 if is_refusal(actual) else 1.0
    if is_refusal(expected):
        return 1.0 if is_refusal(actual) else 0.0
    if normalize(expected) in normalize(actual):
        return 1.0
    return round(token_f1(expected, actual), 4)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (same definition as PostgreSQL's percentile_cont)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be within [0, 1]")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi:
        return float(ordered[lo])
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def pass_rate(passed: int, total: int) -> float:
    return 0.0 if total == 0 else round(passed / total, 4)


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return 0.0 if not values else sum(values) / len(values)
