"""AI-assisted test case generation: ask a model for prompts that probe a behaviour, validate what comes back,
and import the usable ones into a test set."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable

from pydantic import ValidationError
from sqlalchemy.orm import Session

from .. import models, schemas
from ..ai.client import AIClient
from .evaluation import complete_with_retry
from .test_sets import import_test_cases

GENERATION_SYSTEM = ("You write test prompts for evaluating a customer support assistant. Reply with a JSON array "
                     "only, each element an object with the keys \"prompt\" and \"expected_response\".")

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


class GenerationError(Exception):
    """The model's answer could not be used at all."""


def build_generation_prompt(behavior: str, topic: str, count: int) -> str:
    return (f"Write {count} distinct test prompts about {topic!r} that check the assistant's {behavior!r} "
            f"behaviour. For each, give the response a good assistant would give.")


def parse_generated_cases(text: str, *, behavior: str, limit: int) -> tuple[list[schemas.TestCaseCreate], int]:
    """Extract test cases from a model answer. Models wrap JSON in code fences or chatter around it, so take the
    outermost [...] and validate each element; invalid or duplicate elements are counted as discarded."""
    stripped = _FENCE.sub("", text.strip())
    start, end = stripped.find("["), stripped.rfind("]")
    if start == -1 or end <= start:
        raise GenerationError("the model did not return a JSON array")
    try:
        items: Any = json.loads(stripped[start:end + 1])
    except json.JSONDecodeError as exc:
        raise GenerationError(f"the model returned invalid JSON: {exc.msg}") from None
    if not isinstance(items, list):
        raise GenerationError("the model did not return a JSON array")

    cases: list[schemas.TestCaseCreate] = []
    seen: set[str] = set()
    discarded = 0
    for item in items:
        if len(cases) >= limit:
            discarded += 1
            continue
        if not isinstance(item, dict):
            discarded += 1
            continue
        prompt = item.get("prompt")
        expected = item.get("expected_response", item.get("expected"))
        try:
            case = schemas.TestCaseCreate(prompt=prompt, expected_response=expected, behavior=behavior,
                                          tags=["generated"])
        except ValidationError:
            discarded += 1
            continue
        key = " ".join(case.prompt.casefold().split())
        if key in seen:
            discarded += 1
            continue
        seen.add(key)
        cases.append(case)
    return cases, discarded


def generate_test_cases(db: Session, client: AIClient, *, test_set: models.TestSet, user: models.User,
                        request: schemas.GenerateTestCasesRequest, backoff_seconds: float = 0.5,
                        sleep: Callable[[float], None] = time.sleep) -> schemas.GenerateTestCasesResult:
    completion = complete_with_retry(client, build_generation_prompt(request.behavior, request.topic, request.count),
                                     model=request.model_name, system=GENERATION_SYSTEM,
                                     backoff_seconds=backoff_seconds, sleep=sleep)
    cases, discarded = parse_generated_cases(completion.text, behavior=request.behavior, limit=request.count)
    if not cases:
        raise GenerationError("the model returned no usable test cases")
    new_ids: list = []
    result = import_test_cases(db, test_set=test_set, user=user, items=cases, created_ids=new_ids)
    return schemas.GenerateTestCasesResult(created=result.created, discarded=discarded + result.skipped_duplicates,
                                           test_case_ids=new_ids)
