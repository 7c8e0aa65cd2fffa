"""Evaluation runs: send every test case's prompt to a model, score the answers, store and summarise results."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Callable, Optional

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .. import models, schemas
from ..ai.client import AIClient, AIServiceError, Completion
from .scoring import pass_rate, score_response

log = logging.getLogger(__name__)

SYSTEM_PROMPT = "You are the customer support assistant being evaluated. Answer briefly."


def complete_with_retry(client: AIClient, prompt: str, *, model: str, system: Optional[str] = None,
                        attempts: int = 3, backoff_seconds: float = 0.5,
                        sleep: Callable[[float], None] = time.sleep) -> Completion:
    """Call the model, retrying retryable failures with exponential backoff (0.5 s, 1 s, ...).

    ``sleep`` is injectable so tests exercise the retry path without waiting.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for attempt in range(1, attempts + 1):
        try:
            return client.complete(prompt, model=model, system=system)
        except AIServiceError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            delay = backoff_seconds * (2 ** (attempt - 1))
            log.warning("model call failed (%s), attempt %d/%d, retrying in %.1fs", exc, attempt, attempts, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def create_run(db: Session, *, test_set: models.TestSet, user: models.User, model_name: str) -> models.EvaluationRun:
    run = models.EvaluationRun(organization_id=test_set.organization_id, test_set_id=test_set.id,
                               created_by_id=user.id, model_name=model_name, status="queued")
    db.add(run)
    db.flush()
    return run


def execute_run(db: Session, run: models.EvaluationRun, client: AIClient, *, threshold: float,
                attempts: int = 3, backoff_seconds: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                failure_ratio: float = 0.5) -> models.EvaluationRun:
    """Run every test case of the run's test set through ``client`` and store one result per case.

    A case whose model call still fails after the retries is stored as errored (not passed). If more than
    ``failure_ratio`` of the cases errored, the run as a whole is marked failed: its pass rate would say more about
    the model service's availability than about the model.
    """
    run.status = "running"
    run.started_at = datetime.now(timezone.utc)
    db.flush()

    cases = db.execute(
        select(models.TestCase).where(models.TestCase.test_set_id == run.test_set_id)
        .order_by(models.TestCase.position, models.TestCase.id)
    ).unique().scalars().all()

    passed = errored = 0
    for case in cases:
        result = models.EvaluationResult(organization_id=run.organization_id, run_id=run.id, test_case_id=case.id)
        try:
            completion = complete_with_retry(client, case.prompt.content, model=run.model_name,
                                             system=SYSTEM_PROMPT, attempts=attempts,
                                             backoff_seconds=backoff_seconds, sleep=sleep)
        except AIServiceError as exc:
            errored += 1
            result.error = str(exc)[:1000]
            result.score, result.passed = 0.0, False
        else:
            result.response = completion.text
            result.score = score_response(case.prompt.expected_response, completion.text)
            result.passed = result.score >= threshold
            result.latency_ms = completion.latency_ms
            result.tokens = completion.total_tokens
            passed += int(result.passed)
        db.add(result)

    run.total, run.passed, run.errored = len(cases), passed, errored
    run.pass_rate = pass_rate(passed, len(cases))
    run.finished_at = datetime.now(timezone.utc)
    if cases and errored / len(cases) > failure_ratio:
        run.status = "failed"
        run.error = f"{errored} of {len(cases)} model calls failed"
    else:
        run.status = "completed"
    db.flush()
    return run


_REPORT_SQL = text("""
SELECT coalesce(b.name, '(none)')                                         AS behavior,
       count(*)                                                           AS total,
       count(*) FILTER (WHERE r.passed)                                   AS passed,
       coalesce(avg(r.score), 0)                                          AS mean_score,
       coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_ms), 0) AS p95_latency_ms
  FROM evaluation_results r
  JOIN test_cases tc ON tc.organization_id = r.organization_id AND tc.id = r.test_case_id
  LEFT JOIN behaviors b ON b.organization_id = tc.organization_id AND b.id = tc.behavior_id
 WHERE r.run_id = :run_id
 GROUP BY 1
 ORDER BY 1
""")

_TOTALS_SQL = text("""
SELECT count(*), count(*) FILTER (WHERE passed), count(*) FILTER (WHERE error IS NOT NULL),
       coalesce(avg(score), 0), coalesce(sum(tokens), 0)
  FROM evaluation_results WHERE run_id = :run_id
""")


def build_report(db: Session, run: models.EvaluationRun) -> schemas.EvaluationReport:
    """Aggregate a run's results in SQL (runs can have tens of thousands of results)."""
    total, passed, errored, mean_score, total_tokens = db.execute(_TOTALS_SQL, {"run_id": run.id}).one()
    behaviors = [
        schemas.BehaviorReport(behavior=row.behavior, total=row.total, passed=row.passed,
                               pass_rate=pass_rate(row.passed, row.total), mean_score=round(float(row.mean_score), 4),
                               p95_latency_ms=int(round(row.p95_latency_ms)))
        for row in db.execute(_REPORT_SQL, {"run_id": run.id})
    ]
    return schemas.EvaluationReport(run_id=run.id, total=total, passed=passed, errored=errored,
                                    pass_rate=pass_rate(passed, total), mean_score=round(float(mean_score), 4),
                                    total_tokens=int(total_tokens), behaviors=behaviors)
