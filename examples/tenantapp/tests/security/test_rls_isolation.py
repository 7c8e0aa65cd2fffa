"""Tenant isolation enforced by PostgreSQL itself: raw SQL, as the app role, no application code in the way.

These tests are only meaningful if the connection is subject to RLS (not a superuser, no BYPASSRLS, not the owner
of a non-FORCE'd table); conftest's preflight and test_app_role_is_not_privileged check exactly that.
"""

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from tenantapp.models import TENANT_TABLES
from tenantapp.seed import OTHER_ORGANIZATION, TEST_ORGANIZATION

pytestmark = pytest.mark.security

A, B = TEST_ORGANIZATION, OTHER_ORGANIZATION


def use_tenant(conn: Connection, org) -> None:
    conn.execute(text("SELECT set_config('app.current_organization', :org, true)"),
                 {"org": "" if org is None else str(org.id)})


def _org_column(table: str) -> str:
    return "id" if table == "organizations" else "organization_id"


@pytest.fixture
def rows_in_both_tenants(connection: Connection) -> Connection:
    """The seed gives both tenants rows in every table except the evaluation ones; add a run and a result each.
    (This also proves the app role may use the results' identity sequence.)"""
    for org in (A, B):
        use_tenant(connection, org)
        test_set_id = connection.execute(text("SELECT id FROM test_sets LIMIT 1")).scalar_one()
        test_case_id = connection.execute(text("SELECT id FROM test_cases LIMIT 1")).scalar_one()
        run_id = connection.execute(text(
            "INSERT INTO evaluation_runs (organization_id, test_set_id, created_by_id, model_name, status) "
            "VALUES (:org, :ts, :user, 'mock-deployment', 'completed') RETURNING id"),
            {"org": org.id, "ts": test_set_id, "user": org.owner.id}).scalar_one()
        connection.execute(text(
            "INSERT INTO evaluation_results (organization_id, run_id, test_case_id, score, passed) "
            "VALUES (:org, :run, :tc, 0.9, true)"), {"org": org.id, "run": run_id, "tc": test_case_id})
    use_tenant(connection, None)
    return connection


@pytest.mark.critical
def test_app_role_is_not_privileged(connection):
    is_super, bypass = connection.execute(text(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")).one()
    owned = connection.execute(text(
        "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
    )).scalar_one()
    assert (is_super, bypass, owned) == (False, False, 0)


@pytest.mark.critical
@pytest.mark.parametrize("table", TENANT_TABLES)
def test_table_has_forced_rls_and_a_tenant_policy(connection, table):
    enabled, forced = connection.execute(text(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}).one()
    policies = connection.execute(text(
        "SELECT cmd, qual, with_check FROM pg_policies WHERE schemaname = 'public' AND tablename = :t"),
        {"t": table}).all()
    assert enabled and forced
    assert len(policies) == 1
    cmd, qual, with_check = policies[0]
    assert cmd == "ALL"
    for expr in (qual, with_check):
        assert "NULLIF(current_setting('app.current_organization'" in expr
        assert expr.startswith(f"({_org_column(table)} = ")


def test_every_table_with_organization_id_is_covered(connection):
    """Lint: a new tenant table without a policy must not slip through (it would not be in TENANT_TABLES)."""
    tables = set(connection.execute(text(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND column_name = 'organization_id'")).scalars())
    assert tables | {"organizations"} == set(TENANT_TABLES)


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_visibility_follows_the_current_organization(rows_in_both_tenants, table):
    conn = rows_in_both_tenants
    column = _org_column(table)
    counts = {}
    for org in (None, A, B):
        use_tenant(conn, org)
        rows = conn.execute(text(f"SELECT {column} FROM {table}")).scalars().all()
        counts[org.slug if org else None] = len(rows)
        assert all(str(value) == str(org.id) for value in rows) if org else rows == []
    assert counts[A.slug] > 0 and counts[B.slug] > 0


@pytest.mark.parametrize(
    ("table", "assignment"),
    [("projects", "name = 'hijacked'"), ("users", "is_superuser = true"),
     ("evaluation_results", "score = 1.0")],
)
def test_cross_tenant_update_changes_nothing(rows_in_both_tenants, table, assignment):
    conn = rows_in_both_tenants
    use_tenant(conn, B)
    victim_ids = conn.execute(text(f"SELECT id FROM {table}")).scalars().all()
    use_tenant(conn, A)
    result = conn.execute(text(f"UPDATE {table} SET {assignment} WHERE id = ANY(:ids)"), {"ids": victim_ids})
    assert result.rowcount == 0


@pytest.mark.parametrize("table", ["test_sets", "evaluation_runs"])
def test_cross_tenant_delete_deletes_nothing(rows_in_both_tenants, table):
    conn = rows_in_both_tenants
    use_tenant(conn, A)
    assert conn.execute(text(f"DELETE FROM {table} WHERE organization_id = :b"), {"b": B.id}).rowcount == 0
    use_tenant(conn, B)
    assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() > 0


@pytest.mark.critical
def test_insert_for_another_tenant_is_refused(connection):
    use_tenant(connection, A)
    with pytest.raises(ProgrammingError, match="new row violates row-level security policy"):
        with connection.begin_nested():
            connection.execute(text("INSERT INTO projects (organization_id, owner_id, name) VALUES (:b, :u, 'x')"),
                               {"b": B.id, "u": B.owner.id})


def test_moving_a_row_to_another_tenant_is_refused(connection):
    use_tenant(connection, A)
    with pytest.raises(ProgrammingError, match="new row violates row-level security policy"):
        with connection.begin_nested():
            connection.execute(text("UPDATE projects SET organization_id = :b"), {"b": B.id})


def test_insert_without_a_tenant_is_refused(connection):
    use_tenant(connection, None)
    with pytest.raises(ProgrammingError, match="row-level security"):
        with connection.begin_nested():
            connection.execute(text("INSERT INTO behaviors (organization_id, name) VALUES (:a, 'sneaky')"),
                               {"a": A.id})


@pytest.mark.critical
def test_cross_tenant_reference_is_refused_by_the_composite_foreign_key(connection):
    """Foreign-key checks bypass RLS. Tenant A attaching a test case to B's test set (whose id it learned somehow)
    must still fail, which is what the (organization_id, test_set_id) foreign key guarantees."""
    use_tenant(connection, B)
    b_test_set = connection.execute(text("SELECT id FROM test_sets LIMIT 1")).scalar_one()
    use_tenant(connection, A)
    a_prompt = connection.execute(text("SELECT id FROM prompts LIMIT 1")).scalar_one()
    with pytest.raises(IntegrityError, match="fk_test_cases_test_set"):
        with connection.begin_nested():
            connection.execute(text("INSERT INTO test_cases (organization_id, test_set_id, prompt_id) "
                                    "VALUES (:a, :ts, :p)"), {"a": A.id, "ts": b_test_set, "p": a_prompt})


def test_empty_setting_on_a_pooled_connection_means_no_rows(engine):
    """The pooled-connection trap: after a transaction used SET LOCAL, current_setting(..., true) is '' (not NULL)
    on that connection. Without NULLIF, ''::uuid would raise instead of returning nothing."""
    with engine.connect() as conn:
        with conn.begin():
            use_tenant(conn, A)
            assert conn.execute(text("SELECT count(*) FROM projects")).scalar_one() > 0
        with conn.begin():
            assert conn.execute(text("SELECT current_setting('app.current_organization', true)")).scalar() == ""
            assert conn.execute(text("SELECT count(*) FROM projects")).scalar_one() == 0


def test_row_security_off_is_an_error_for_the_app_role(connection):
    """SET row_security = off is a tripwire: for a role subject to RLS it raises instead of silently filtering."""
    use_tenant(connection, A)
    connection.execute(text("SET LOCAL row_security = off"))
    with pytest.raises(DBAPIError, match="row-level security"):
        with connection.begin_nested():
            connection.execute(text("SELECT count(*) FROM projects"))


def test_malformed_tenant_value_fails_loudly(connection):
    connection.execute(text("SELECT set_config('app.current_organization', 'not-a-uuid', true)"))
    with pytest.raises(DBAPIError, match="invalid input syntax for type uuid"):
        with connection.begin_nested():
            connection.execute(text("SELECT count(*) FROM projects"))


def test_app_role_cannot_weaken_the_schema(connection):
    for statement, message in [
        ("ALTER TABLE projects DISABLE ROW LEVEL SECURITY", "must be owner"),
        ("DROP POLICY projects_tenant_isolation ON projects", "must be owner"),
        ("UPDATE alembic_version SET version_num = 'x'", "permission denied"),
        ("CREATE TABLE escape_hatch (id int)", "permission denied"),
    ]:
        with pytest.raises(ProgrammingError, match=message):
            with connection.begin_nested():
                connection.execute(text(statement))
