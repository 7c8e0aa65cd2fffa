"""Helpers shared by the migrations: the application role, its grants, and the tenant policies.

Kept next to the revisions (not in the app package) so that a migration's meaning cannot change when the app
changes, and so that the template hash, which covers ``migrations/**``, covers these helpers too.
"""

from __future__ import annotations

import os
import re

import sqlalchemy as sa
from alembic import op

# The policy predicate. current_setting(..., true) returns NULL when the placeholder was never set in this session
# but '' once any transaction on this pooled connection ran set_config/SET LOCAL on it; ''::uuid would raise
# "invalid input syntax for type uuid", so NULLIF turns both into NULL, which matches no row.
CURRENT_ORG = "NULLIF(current_setting('app.current_organization', true), '')::uuid"

_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def app_role() -> str:
    """The role the service and the tests connect as (env TENANTAPP_APP_ROLE, default app_user)."""
    role = os.environ.get("TENANTAPP_APP_ROLE", "").strip() or "app_user"
    if not _ROLE_RE.match(role):
        raise ValueError(f"TENANTAPP_APP_ROLE={role!r} is not a plain lower-case SQL identifier")
    return role


def ensure_app_role() -> None:
    """Create the app role if it does not exist yet: LOGIN NOSUPERUSER NOBYPASSRLS, not the owner of anything.

    Roles are cluster-wide: the role may already exist from another database on the same server (another
    template, another test run), and two template builds may race to create it, hence the exception handler
    (a concurrent CREATE ROLE fails with unique_violation on pg_authid rather than duplicate_object).
    """
    role = app_role()
    op.execute(f"""
DO $do$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{role}') THEN
    CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$do$;
""")
    # Only for servers that need password auth; testshard's embedded servers use trust on a private socket.
    password = os.environ.get("TENANTAPP_APP_PASSWORD", "")
    if password:
        op.execute(sa.text(f"ALTER ROLE {role} PASSWORD :pw").bindparams(pw=password))
    # Refuse to carry on with a role that would silently bypass every policy.
    op.execute(f"""
DO $do$
BEGIN
  IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{role}' AND (rolsuper OR rolbypassrls)) THEN
    RAISE EXCEPTION 'role {role} is a superuser or has BYPASSRLS: Row Level Security would not apply to it';
  END IF;
END
$do$;
""")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")


def grant_dml(table: str, *, sequences: tuple[str, ...] = ()) -> None:
    role = app_role()
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {table} TO {role}")
    for seq in sequences:
        op.execute(f"GRANT USAGE, SELECT ON SEQUENCE {seq} TO {role}")


def revoke_dml(table: str) -> None:
    op.execute(f"REVOKE ALL ON TABLE {table} FROM {app_role()}")


def enable_tenant_rls(table: str, column: str = "organization_id") -> None:
    """ENABLE + FORCE row level security and add the tenant policy for every command.

    FORCE matters when the tables are owned by a non-superuser migration role: without it the owner is exempt.
    (Superusers are exempt regardless, which is why the app must not connect as one.)
    """
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"""
CREATE POLICY {table}_tenant_isolation ON {table}
  USING ({column} = {CURRENT_ORG})
  WITH CHECK ({column} = {CURRENT_ORG})
""")


def disable_tenant_rls(table: str) -> None:
    op.execute(f"DROP POLICY IF EXISTS {table}_tenant_isolation ON {table}")
    op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
