"""Data access. Every query here relies on Row Level Security for tenant scoping; none adds its own
``organization_id`` filter for reads. That is deliberate: it keeps the policies the single source of truth, and the
security tests prove they are enough. Writes set ``organization_id`` explicitly (the policies' WITH CHECK then
refuses anything that does not match the session's organisation).
"""

from __future__ import annotations

import uuid
from typing import Any, Generic, Iterable, Optional, Sequence, TypeVar

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from . import models
from .utils import Page, parse_sort

M = TypeVar("M", bound=models.Base)


def escape_like(term: str) -> str:
    """Escape LIKE wildcards so a search for "50%" or "a_b" matches those characters literally."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class CRUDBase(Generic[M]):
    def __init__(self, model: type[M], *, sortable: Iterable[str], default_sort: str,
                 search_columns: Sequence[str] = ()):
        self.model = model
        self.sortable = set(sortable)
        self.default_sort = default_sort
        self.search_columns = tuple(search_columns)

    def get(self, db: Session, id: uuid.UUID) -> Optional[M]:
        # A SELECT rather than Session.get(): Session.get() answers from the identity map without asking the
        # database, and only the database knows which tenant may see the row.
        return db.execute(select(self.model).where(self.model.id == id)).unique().scalar_one_or_none()

    def list(self, db: Session, *, page: Page, sort: Optional[str] = None, search: Optional[str] = None,
             filters: Optional[dict[str, Any]] = None) -> tuple[list[M], int]:
        column, descending = parse_sort(sort, self.sortable, self.default_sort)
        stmt = select(self.model)
        for name, value in (filters or {}).items():
            if value is not None:
                stmt = stmt.where(getattr(self.model, name) == value)
        if search and self.search_columns:
            pattern = f"%{escape_like(search)}%"
            stmt = stmt.where(or_(*(getattr(self.model, c).ilike(pattern, escape="\\") for c in self.search_columns)))
        total = db.execute(select(func.count()).select_from(stmt.order_by(None).subquery())).scalar_one()
        order = getattr(self.model, column)
        # The id tie-breaker makes paging stable when many rows share a sort value (e.g. a bulk import's created_at).
        stmt = stmt.order_by(order.desc() if descending else order.asc(), self.model.id)
        rows = db.execute(stmt.offset(page.offset).limit(page.limit)).unique().scalars().all()
        return list(rows), total

    def create(self, db: Session, *, organization_id: uuid.UUID, **values: Any) -> M:
        obj = self.model(organization_id=organization_id, **values)
        db.add(obj)
        db.flush()
        return obj

    def update(self, db: Session, obj: M, changes: dict[str, Any]) -> M:
        for key, value in changes.items():
            setattr(obj, key, value)
        db.flush()
        return obj

    def delete(self, db: Session, obj: M) -> None:
        db.delete(obj)
        db.flush()


users = CRUDBase(models.User, sortable={"name", "email", "created_at"}, default_sort="email",
                 search_columns=("name", "email"))
projects = CRUDBase(models.Project, sortable={"name", "created_at"}, default_sort="-created_at",
                    search_columns=("name", "description"))
prompts = CRUDBase(models.Prompt, sortable={"created_at", "language_code"}, default_sort="-created_at",
                   search_columns=("content",))
test_sets = CRUDBase(models.TestSet, sortable={"name", "created_at"}, default_sort="-created_at",
                     search_columns=("name", "description"))
test_cases = CRUDBase(models.TestCase, sortable={"position", "created_at", "priority"}, default_sort="position")
evaluation_runs = CRUDBase(models.EvaluationRun, sortable={"created_at", "pass_rate", "status"},
                           default_sort="-created_at")
behaviors = CRUDBase(models.Behavior, sortable={"name"}, default_sort="name", search_columns=("name",))
statuses = CRUDBase(models.Status, sortable={"name", "entity_type"}, default_sort="name")


def get_user_by_auth0_id(db: Session, auth0_id: str) -> Optional[models.User]:
    return db.execute(select(models.User).where(models.User.auth0_id == auth0_id)).scalar_one_or_none()


def get_organization(db: Session, organization_id: uuid.UUID) -> Optional[models.Organization]:
    return db.execute(select(models.Organization).where(models.Organization.id == organization_id)
                      ).scalar_one_or_none()


def get_status(db: Session, entity_type: str, name: str) -> Optional[models.Status]:
    return db.execute(select(models.Status).where(models.Status.entity_type == entity_type,
                                                  models.Status.name == name)).scalar_one_or_none()


def behaviors_by_name(db: Session) -> dict[str, models.Behavior]:
    return {b.name.casefold(): b for b in db.execute(select(models.Behavior)).scalars()}


def get_or_create_behavior(db: Session, organization_id: uuid.UUID, name: str,
                           cache: Optional[dict[str, models.Behavior]] = None) -> tuple[models.Behavior, bool]:
    cache = cache if cache is not None else behaviors_by_name(db)
    key = name.strip().casefold()
    if key in cache:
        return cache[key], False
    behavior = behaviors.create(db, organization_id=organization_id, name=name.strip())
    cache[key] = behavior
    return behavior, True
