import pytest
from sqlalchemy import text

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
