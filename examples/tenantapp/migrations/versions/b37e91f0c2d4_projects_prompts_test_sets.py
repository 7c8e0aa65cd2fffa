"""projects, prompts, test sets and test cases

References between tenant tables are composite (organization_id, id) foreign keys: FK checks are not subject to
RLS, so a plain id reference would let a tenant attach rows to another tenant's test set if it learned its UUID.

Revision ID: b37e91f0c2d4
Revises: 8c2e4a6b9d01
Create Date: 2024-04-02 09:05:57.902641
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from migrations.rls_helpers import disable_tenant_rls, enable_tenant_rls, grant_dml, revoke_dml

revision = "b37e91f0c2d4"
down_revision = "8c2e4a6b9d01"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TABLES = ("projects", "prompts", "test_sets", "test_cases")


def _id():
    return sa.Column("id", UUID, primary_key=True, server_default=sa.text("gen_random_uuid()"))


def _org():
    return sa.Column("organization_id", UUID, sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)


def _created():
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()"))


def upgrade() -> None:
    op.create_table(
        "projects", _id(), _org(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        _created(),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("organization_id", "id", name="uq_projects_org_id"),
        sa.ForeignKeyConstraint(["organization_id", "owner_id"], ["users.organization_id", "users.id"],
                                name="fk_projects_owner"),
    )
    op.create_table(
        "prompts", _id(), _org(),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("language_code", sa.String(10), nullable=False, server_default="en"),
        sa.Column("expected_response", sa.Text()),
        sa.Column("created_by_id", UUID, nullable=False),
        _created(),
        sa.UniqueConstraint("organization_id", "id", name="uq_prompts_org_id"),
        sa.ForeignKeyConstraint(["organization_id", "created_by_id"], ["users.organization_id", "users.id"],
                                name="fk_prompts_created_by"),
    )
    op.create_table(
        "test_sets", _id(), _org(),
        sa.Column("project_id", UUID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("status_id", UUID),
        _created(),
        sa.UniqueConstraint("organization_id", "id", name="uq_test_sets_org_id"),
        sa.ForeignKeyConstraint(["organization_id", "project_id"], ["projects.organization_id", "projects.id"],
                                name="fk_test_sets_project", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["organization_id", "status_id"], ["statuses.organization_id", "statuses.id"],
                                name="fk_test_sets_status"),
    )
    op.create_table(
        "test_cases", _id(), _org(),
        sa.Column("test_set_id", UUID, nullable=False),
        sa.Column("prompt_id", UUID, nullable=False),
        sa.Column("behavior_id", UUID),
        sa.Column("status_id", UUID),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="3"),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), nullable=False, server_default="{}"),
        _created(),
        sa.UniqueConstraint("organization_id", "id", name="uq_test_cases_org_id"),
        sa.ForeignKeyConstraint(["organization_id", "test_set_id"], ["test_sets.organization_id", "test_sets.id"],
                                name="fk_test_cases_test_set", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["organization_id", "prompt_id"], ["prompts.organization_id", "prompts.id"],
                                name="fk_test_cases_prompt"),
        sa.ForeignKeyConstraint(["organization_id", "behavior_id"], ["behaviors.organization_id", "behaviors.id"],
                                name="fk_test_cases_behavior"),
        sa.ForeignKeyConstraint(["organization_id", "status_id"], ["statuses.organization_id", "statuses.id"],
                                name="fk_test_cases_status"),
        sa.CheckConstraint("priority BETWEEN 1 AND 5", name="ck_test_cases_priority"),
    )
    for table in TABLES:
        op.create_index(f"ix_{table}_organization_id", table, ["organization_id"])
    op.create_index("ix_test_sets_project_id", "test_sets", ["project_id"])
    op.create_index("ix_test_cases_test_set_id", "test_cases", ["test_set_id"])

    for table in TABLES:
        enable_tenant_rls(table)
        grant_dml(table)


def downgrade() -> None:
    for table in reversed(TABLES):
        revoke_dml(table)
        disable_tenant_rls(table)
        op.drop_table(table)
