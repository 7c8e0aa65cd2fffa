"""app role, tenant row level security, statuses and behaviors

Until this revision the service connected as the table owner and filtered by organization_id in Python. From here
on it connects as a dedicated role that owns nothing and every tenant table has a policy on
app.current_organization, so a forgotten WHERE clause can no longer leak another tenant's rows.

Revision ID: 8c2e4a6b9d01
Revises: 6f1d2c3b4a50
Create Date: 2024-03-19 16:40:02.530117
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from migrations.rls_helpers import (
    app_role, disable_tenant_rls, enable_tenant_rls, ensure_app_role, grant_dml, revoke_dml,
)

revision = "8c2e4a6b9d01"
down_revision = "6f1d2c3b4a50"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ensure_app_role()
    # The app reads the revision to detect a database that is behind the code; it must not be able to change it.
    op.execute(f"GRANT SELECT ON TABLE alembic_version TO {app_role()}")

    op.create_table(
        "statuses",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("organization_id", postgresql.UUID(as_uuid=True),
                  sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("entity_type", sa.String(40), nullable=False),
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("description", sa.Text()),
        sa.UniqueConstraint("organization_id", "entity_type", "name", name="uq_statuses_org_type_name"),
        sa.UniqueConstraint("organization_id", "id", name="uq_statuses_org_id"),
    )
    op.create_index("ix_statuses_organization_id", "statuses", ["organization_id"])
    op.create_table(
        "behaviors",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("organization_id", postgresql.UUID(as_uuid=True),
                  sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text()),
        sa.UniqueConstraint("organization_id", "name", name="uq_behaviors_org_name"),
        sa.UniqueConstraint("organization_id", "id", name="uq_behaviors_org_id"),
    )
    op.create_index("ix_behaviors_organization_id", "behaviors", ["organization_id"])

    # organizations is keyed on its own id; everything else on organization_id.
    enable_tenant_rls("organizations", column="id")
    for table in ("users", "statuses", "behaviors"):
        enable_tenant_rls(table)
    for table in ("organizations", "users", "statuses", "behaviors"):
        grant_dml(table)


def downgrade() -> None:
    for table in ("organizations", "users", "statuses", "behaviors"):
        revoke_dml(table)
    for table in ("users", "organizations"):
        disable_tenant_rls(table)
    op.drop_table("behaviors")
    op.drop_table("statuses")
    op.execute(f"REVOKE ALL ON TABLE alembic_version FROM {app_role()}")
    # The role itself stays: roles are cluster-wide and other databases on the server may still use it.
