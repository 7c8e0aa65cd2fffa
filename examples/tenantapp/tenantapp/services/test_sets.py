"""Test set operations: bulk import, statistics and CSV export."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Iterator, Optional, Sequence

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from .. import crud, models, schemas
from ..utils import chunked
from .scoring import normalize

IMPORT_FLUSH_EVERY = 250  # rows per flush: big enough to batch INSERTs, small enough to keep memory flat


def import_test_cases(db: Session, *, test_set: models.TestSet, user: models.User,
                      items: Sequence[schemas.TestCaseCreate],
                      created_ids: Optional[list[uuid.UUID]] = None) -> schemas.ImportResult:
    """Create prompts and test cases in one go, appended after the set's existing cases.

    A case whose prompt (normalised) already exists in the set, or earlier in the same batch, is skipped: imports
    are re-run by CI jobs, and a re-run must not double the set. Unknown behaviours are created on the fly. The ids
    of the new test cases are appended to ``created_ids`` when given.
    """
    org_id = test_set.organization_id
    # Two queries rather than a join: see _prompt_contents.
    prompt_ids = db.execute(select(models.TestCase.prompt_id).where(models.TestCase.test_set_id == test_set.id)
                            ).scalars().all()
    existing = {normalize(content) for content in _prompt_contents(db, prompt_ids)}
    behaviors = crud.behaviors_by_name(db)
    position = db.execute(select(func.coalesce(func.max(models.TestCase.position), 0))
                          .where(models.TestCase.test_set_id == test_set.id)).scalar_one()
    created = behaviors_created = skipped = 0
    for batch in chunked(list(items), IMPORT_FLUSH_EVERY):
        for item in batch:
            key = normalize(item.prompt)
            if key in existing:
                skipped += 1
                continue
            existing.add(key)
            behavior_id = None
            if item.behavior:
                behavior, was_created = crud.get_or_create_behavior(db, org_id, item.behavior, cache=behaviors)
                behaviors_created += int(was_created)
                behavior_id = behavior.id
            prompt_id = uuid.uuid4()  # chosen here so the test case can reference it before the flush
            db.add(models.Prompt(id=prompt_id, organization_id=org_id, content=item.prompt,
                                 language_code=item.language_code, expected_response=item.expected_response,
                                 created_by_id=user.id))
            position += 1
            case_id = uuid.uuid4()
            db.add(models.TestCase(id=case_id, organization_id=org_id, test_set_id=test_set.id, prompt_id=prompt_id,
                                   behavior_id=behavior_id, priority=item.priority, tags=list(item.tags),
                                   position=position))
            if created_ids is not None:
                created_ids.append(case_id)
            created += 1
        db.flush()
    return schemas.ImportResult(created=created, behaviors_created=behaviors_created, skipped_duplicates=skipped)


def _prompt_contents(db: Session, prompt_ids: list[uuid.UUID]) -> list[str]:
    """Contents of the given prompts, by primary key.

    Deliberately not a join of test_cases and prompts. Under RLS both sides carry the policy's
    ``organization_id = <current org>`` qual, and when the statistics are stale - a freshly cloned test database
    whose tables were tiny when analysed, or rows inserted earlier in the same open transaction - the planner
    estimates a couple of rows and picks a nested loop whose inner side is the tenant's whole prompts table
    (the RLS qual is its only indexable condition). That is quadratic: 1.6 s for a 3,000-case set, growing with
    every import. ``id = ANY(:ids)`` tells the planner how many rows to expect, whatever the statistics say.
    """
    contents: list[str] = []
    for batch in chunked(list(prompt_ids), 5000):
        contents += db.execute(select(models.Prompt.content).where(models.Prompt.id.in_(batch))).scalars().all()
    return contents


def stats(db: Session, test_set: models.TestSet) -> schemas.TestSetStats:
    tc = models.TestCase
    total = db.execute(select(func.count()).where(tc.test_set_id == test_set.id)).scalar_one()
    behavior = func.coalesce(models.Behavior.name, "(none)").label("behavior")
    by_behavior = dict(db.execute(
        select(behavior, func.count())
        .select_from(tc).outerjoin(models.Behavior, and_(models.Behavior.id == tc.behavior_id,
                                                         models.Behavior.organization_id == tc.organization_id))
        .where(tc.test_set_id == test_set.id).group_by(behavior)
    ).all())
    by_priority = dict(db.execute(
        select(tc.priority, func.count()).where(tc.test_set_id == test_set.id).group_by(tc.priority)
    ).all())
    tag = func.unnest(tc.tags).label("tag")
    tag_rows = select(tag).where(tc.test_set_id == test_set.id).subquery()
    by_tag = dict(db.execute(select(tag_rows.c.tag, func.count()).group_by(tag_rows.c.tag)).all())
    return schemas.TestSetStats(test_set_id=test_set.id, total=total, by_behavior=by_behavior,
                                by_priority=by_priority, by_tag=by_tag)


CSV_COLUMNS = ("id", "prompt", "expected_response", "language_code", "behavior", "priority", "tags")


def export_csv(db: Session, test_set: models.TestSet) -> Iterator[str]:
    """Yield the set as CSV, a chunk of rows at a time, so a large set never sits in memory as one string."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    # LEFT JOIN although every case has a prompt (NOT NULL + foreign key): an outer join is not folded into the
    # RLS equivalence class, so the plan stays a per-row primary-key lookup even on stale statistics (see
    # _prompt_contents for the quadratic plan an inner join gets).
    stmt = (
        select(models.TestCase.id, models.Prompt.content, models.Prompt.expected_response,
               models.Prompt.language_code, models.Behavior.name, models.TestCase.priority, models.TestCase.tags)
        .outerjoin(models.Prompt, and_(models.Prompt.id == models.TestCase.prompt_id,
                                       models.Prompt.organization_id == models.TestCase.organization_id))
        .outerjoin(models.Behavior, and_(models.Behavior.id == models.TestCase.behavior_id,
                                         models.Behavior.organization_id == models.TestCase.organization_id))
        .where(models.TestCase.test_set_id == test_set.id)
        .order_by(models.TestCase.position, models.TestCase.id)
    )
    for i, row in enumerate(db.execute(stmt), start=1):
        case_id, content, expected, language, behavior, priority, tags = row
        writer.writerow((case_id, content, expected or "", language, behavior or "", priority, ";".join(tags)))
        if i % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
