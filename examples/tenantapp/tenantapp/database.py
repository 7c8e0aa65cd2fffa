"""Engine, sessions and the tenant context that Row Level Security keys on.

Every tenant-owned table has a policy comparing ``organization_id`` with the ``app.current_organization``
setting (see ``migrations/rls_helpers.py``). The application sets it with ``set_config(..., is_local => true)``,
i.e. for the current transaction only, so a pooled connection never carries one request's tenant into the next.

Because it is transaction-local, it must be set again whenever the Session starts a new transaction, e.g. after
``db.commit()`` followed by ``db.refresh(obj)``: without it the refresh runs with no tenant, RLS hides the row and
SQLAlchemy raises ObjectDeletedError. The ``after_begin`` hook below applies the tenant stored in ``session.info``
(or an explicit "none") at the start of every transaction.
"""

from __future__ import annotations

import uuid
from typing import Iterator, Optional

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from .config import get_settings
from .dburl import normalize_database_url

TENANT_SETTING = "app.current_organization"
USER_SETTING = "app.current_user"
_TENANT_INFO_KEY = "tenantapp.tenant"

_SET_CONTEXT = text(
    "SELECT set_config('app.current_organization', :org, true), set_config('app.current_user', :usr, true)"
)

SessionLocal = sessionmaker(autoflush=False, expire_on_commit=False, future=True)
_engine: Optional[Engine] = None


def make_engine(url: URL | str, **kwargs) -> Engine:
    """Create an engine for a (possibly libpq-style) URL. ``pool_pre_ping`` because test servers come and go."""
    if isinstance(url, str):
        url = normalize_database_url(url)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("future", True)
    return create_engine(url, **kwargs)


def get_engine() -> Engine:
    """The service's engine, created on first use from the settings (as the app role)."""
    global _engine
    if _engine is None:
        _engine = make_engine(get_settings().runtime_database_url(), pool_size=5, max_overflow=5)
        SessionLocal.configure(bind=_engine)
    return _engine


def get_db() -> Iterator[Session]:
    """FastAPI dependency: one Session per request, closed (and its transaction rolled back) afterwards."""
    get_engine()
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


def _apply(connection: Connection, org: str, user: str) -> None:
    connection.execute(_SET_CONTEXT, {"org": org, "usr": user})


def set_tenant(db: Session, organization_id: uuid.UUID | str, user_id: uuid.UUID | str | None = None) -> None:
    """Scope everything ``db`` does from now on to one organisation (and record the acting user)."""
    org = str(uuid.UUID(str(organization_id)))  # refuse anything that is not a UUID before it reaches SQL
    usr = str(uuid.UUID(str(user_id))) if user_id else ""
    db.info[_TENANT_INFO_KEY] = (org, usr)
    # db.connection() begins a transaction if needed (after_begin then applies it); apply explicitly too,
    # for the case where the transaction had already begun.
    _apply(db.connection(), org, usr)


def clear_tenant(db: Session) -> None:
    """Forget the tenant. Sets the placeholders to '' rather than NULL, exactly what a pooled connection shows
    after a transaction that used SET LOCAL; the policies' NULLIF(..., '') turns that into "no rows"."""
    db.info.pop(_TENANT_INFO_KEY, None)
    if db.in_transaction():
        _apply(db.connection(), "", "")


def current_tenant(db: Session) -> Optional[str]:
    value = db.info.get(_TENANT_INFO_KEY)
    return value[0] if value else None


@event.listens_for(Session, "after_begin")
def _reapply_tenant(session: Session, transaction, connection: Connection) -> None:
    # A session without a tenant sets '' explicitly rather than leaving the setting alone: a value set earlier on
    # the same connection inside an enclosing transaction (the test suite's per-test transaction, for one) must
    # never carry over into an anonymous unit of work.
    _apply(connection, *session.info.get(_TENANT_INFO_KEY, ("", "")))
