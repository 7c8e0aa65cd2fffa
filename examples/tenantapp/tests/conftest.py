"""Shared fixtures.

Contract with whoever prepares the database (testshard, CI, a developer):

* ``SQLALCHEMY_DATABASE_TEST_URL`` points at a database on which ``alembic upgrade head`` and
  ``python -m tenantapp.seed`` have run, and names the *app role* (not a superuser, not the owner), so Row Level
  Security applies exactly as in production. Unix-socket URLs work:
  ``postgresql://app_user@/tsdb_ab12?host=/tmp/ts-xyz/sock&port=5432``.
* Each test runs inside a transaction that is rolled back at the end; the code under test commits into a
  SAVEPOINT (SQLAlchemy's "joining a Session into an external transaction" recipe). The database is left exactly
  as it was found, so any subset of tests runs in any order, and two subsets run at once on two databases.

Unit tests need no database: a run that selects only tests without database fixtures works with the variable
unset; a run that selects any test needing the database stops before running anything and says what to set.
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

# The reference plan's test environment: mock secrets, no real AI or Auth0 endpoints. setdefault so CI or
# testshard's [tool.testshard.env] can override them.
for _name, _value in {
    "JWT_SECRET_KEY": "mock-jwt-secret-key-for-testing-only",
    "JWT_ALGORITHM": "HS256",
    "LOG_LEVEL": "WARNING",
    "AUTH0_DOMAIN": "mock-domain.auth0.com",
    "AUTH0_AUDIENCE": "mock-audience",
    "AZURE_OPENAI_API_KEY": "mock-azure-key-for-testing",
    "AZURE_OPENAI_ENDPOINT": "https://mock-endpoint.openai.azure.com",
    "AZURE_OPENAI_DEPLOYMENT_NAME": "mock-deployment",
    "AI_RETRY_BACKOFF_SECONDS": "0",
}.items():
    os.environ.setdefault(_name, _value)

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.engine import Connection, Engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from tenantapp.ai.client import get_ai_client  # noqa: E402
from tenantapp.auth import create_access_token  # noqa: E402
from tenantapp.config import ConfigError, get_settings  # noqa: E402
from tenantapp.database import clear_tenant, get_db, make_engine, set_tenant  # noqa: E402
from tenantapp.dburl import describe, normalize_database_url  # noqa: E402
from tenantapp.seed import OTHER_ORGANIZATION, TEST_ORGANIZATION, SeedOrganization, SeedUser  # noqa: E402

from .fakes import FakeAIClient  # noqa: E402

URL_VAR = "SQLALCHEMY_DATABASE_TEST_URL"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Fixtures that reach the database; used to decide whether a missing URL is an error for this selection.
DATABASE_FIXTURES = {"engine", "connection", "db", "client", "app_client"}


@pytest.hookimpl(trylast=True)  # after -m/-k deselection, so "pytest -m unit" needs no database
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(URL_VAR, "").strip() or config.option.collectonly:
        return
    needing = [item.nodeid for item in items if DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if needing:
        pytest.exit(
            f"{URL_VAR} is not set, and {len(needing)} of the {len(items)} selected tests need the database "
            f"(first: {needing[0]}). Point it at a migrated and seeded database, connecting as the app role, e.g.\n"
            f"  {URL_VAR}='postgresql://app_user@/tenantapp_test?host=/run/postgresql'\n"
            f"(see examples/tenantapp/README.md), or select only unit tests with -m unit.",
            returncode=pytest.ExitCode.USAGE_ERROR)


# ---------------------------------------------------------------------------------------------------------------
# Database

def _alembic_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    return ScriptDirectory.from_config(config).get_current_head()


def _preflight(engine: Engine) -> None:
    """Fail fast, with a message that says what to do, when the database cannot give meaningful results."""
    with engine.connect() as conn:
        user, is_super, bypass = conn.execute(text(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")).one()
        if is_super or bypass:
            pytest.exit(f"{URL_VAR} connects as {user!r}, which is a superuser or has BYPASSRLS: Row Level Security "
                        f"would not apply and the tenant isolation tests would prove nothing. Connect as the app "
                        f"role (TENANTAPP_APP_ROLE, default app_user) instead.", returncode=pytest.ExitCode.USAGE_ERROR)
        has_schema = conn.execute(text("SELECT to_regclass('public.alembic_version') IS NOT NULL")).scalar_one()
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() if has_schema else None
        head = _alembic_head()
        if revision != head:
            pytest.exit(f"database {describe(engine.url)} is at migration {revision or '(none)'} but the code expects "
                        f"{head}: run '/usr/bin/python3 -m alembic upgrade head' and "
                        f"'/usr/bin/python3 -m tenantapp.seed' as the admin role first.",
                        returncode=pytest.ExitCode.USAGE_ERROR)
        # Still in the transaction the first SELECT autobegan; the setting dies with its rollback below.
        conn.execute(text("SELECT set_config('app.current_organization', :org, true)"),
                     {"org": str(TEST_ORGANIZATION.id)})
        seeded = conn.execute(text("SELECT count(*) FROM organizations")).scalar_one()
        conn.rollback()
        if seeded != 1:
            pytest.exit(f"database {describe(engine.url)} has no seed data: run '/usr/bin/python3 -m tenantapp.seed' "
                        f"as the admin role first.", returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    raw = os.environ.get(URL_VAR, "")
    try:
        url = normalize_database_url(raw)
    except ConfigError as exc:
        pytest.exit(f"{URL_VAR}: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    # A small pool, reused across tests: the same pooled-connection reuse as production, which is what exposes the
    # "current_setting() returns '' after SET LOCAL" trap if a policy ever loses its NULLIF.
    eng = make_engine(url, pool_size=2, max_overflow=2)
    _preflight(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that is always rolled back: nothing a test does survives it."""
    conn = engine.connect()
    outer = conn.begin()
    try:
        yield conn
    finally:
        if outer.is_active:
            outer.rollback()
        conn.close()


@pytest.fixture
def db(connection: Connection) -> Iterator[Session]:
    """A Session whose commits land in a SAVEPOINT of the test's transaction and whose rollbacks return to it."""
    session = Session(bind=connection, future=True, autoflush=False, expire_on_commit=False)
    nested = connection.begin_nested()

    @event.listens_for(session, "after_transaction_end")
    def _restart_savepoint(sess, transaction):
        nonlocal nested
        if not nested.is_active:
            nested = connection.begin_nested()

    try:
        yield session
    finally:
        session.close()


def as_tenant(db: Session, organization: SeedOrganization | uuid.UUID | str, user_id=None) -> Session:
    set_tenant(db, getattr(organization, "id", organization), user_id)
    return db


@pytest.fixture
def test_org() -> SeedOrganization:
    return TEST_ORGANIZATION


@pytest.fixture
def other_org() -> SeedOrganization:
    return OTHER_ORGANIZATION


@pytest.fixture
def tenant_db(db: Session) -> Session:
    """``db`` scoped to the seeded test organisation, acting as its owner."""
    return as_tenant(db, TEST_ORGANIZATION, TEST_ORGANIZATION.owner.id)


# ---------------------------------------------------------------------------------------------------------------
# API

@pytest.fixture(scope="session")
def app():
    from tenantapp.main import create_app

    get_settings.cache_clear()
    return create_app()


@pytest.fixture
def fake_ai() -> FakeAIClient:
    return FakeAIClient()


@pytest.fixture
def client(app, db: Session, fake_ai: FakeAIClient) -> Iterator[TestClient]:
    """TestClient whose requests share the test's Session (so the test can see and roll back what they did).

    Each request starts with an empty identity map and no tenant, and ends by discarding uncommitted work, which
    is what a fresh production Session per request gives; without it, objects cached by one request (for tenant A)
    could be served to the next (for tenant B) without asking the database, hiding RLS bugs.
    """
    def override_get_db() -> Iterator[Session]:
        db.expunge_all()
        clear_tenant(db)
        try:
            yield db
        finally:
            db.rollback()
            clear_tenant(db)
            db.expunge_all()

    app.dependency_overrides[get_db] = override_get_db
    app.dependency_overrides[get_ai_client] = lambda: fake_ai
    try:
        with TestClient(app) as test_client:
            yield test_client
    finally:
        app.dependency_overrides.clear()


TokenFactory = Callable[..., dict]


@pytest.fixture
def make_headers() -> TokenFactory:
    def factory(user: SeedUser | str, organization: SeedOrganization | uuid.UUID | str | None, *,
                expires_in: Optional[timedelta] = None, **extra) -> dict:
        subject = user.auth0_id if isinstance(user, SeedUser) else user
        org = getattr(organization, "id", organization)
        token = create_access_token(subject, org, expires_in=expires_in, extra_claims=extra or None)
        return {"Authorization": f"Bearer {token}"}
    return factory


@pytest.fixture
def auth_headers(make_headers) -> dict:
    """The seeded test organisation's owner (an administrator)."""
    return make_headers(TEST_ORGANIZATION.owner, TEST_ORGANIZATION)


@pytest.fixture
def member_headers(make_headers) -> dict:
    """A regular (non-administrator) member of the test organisation."""
    return make_headers(TEST_ORGANIZATION.members[0], TEST_ORGANIZATION)


@pytest.fixture
def other_headers(make_headers) -> dict:
    """The owner of the second tenant."""
    return make_headers(OTHER_ORGANIZATION.owner, OTHER_ORGANIZATION)
