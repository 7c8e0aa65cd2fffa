from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from tenantapp.database import make_engine

from ..conftest import _alembic_head

pytestmark = pytest.mark.integration


@pytest.mark.critical
def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.critical
def test_database_readiness_reports_the_head_revision(client):
    response = client.get("/health/db")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "revision": _alembic_head()}


def test_database_identity(db, record_property):
    """Records which database this test ran against. testshard's own tests read the "database" property from the
    JUnit XML to show that every agent (or shard) was given a database of its own."""
    name, user = db.execute(text("SELECT current_database(), current_user")).one()
    record_property("database", name)
    record_property("role", user)
    assert user != "postgres"


def test_socket_url_forms_connect(engine):
    """The libpq URL forms testshard may hand over reach the same database through SQLAlchemy 1.4 + psycopg2."""
    url = engine.url
    socket_dir = url.query.get("host")
    if not socket_dir or not socket_dir.startswith("/"):
        pytest.skip("the test database is not reached over a unix socket")
    port = url.query.get("port", "5432")
    user = url.username or ""
    forms = [
        f"postgresql://{user}@/{url.database}?host={socket_dir}&port={port}",
        f"postgresql://{user}@{quote(socket_dir, safe='')}:{port}/{url.database}",  # percent-encoded host
        f"postgres:///{url.database}?host={socket_dir}&port={port}&user={user}",
    ]
    for form in forms:
        probe = make_engine(form, poolclass=NullPool)
        try:
            with probe.connect() as conn:
                assert conn.execute(text("SELECT current_database()")).scalar_one() == url.database, form
        finally:
            probe.dispose()
