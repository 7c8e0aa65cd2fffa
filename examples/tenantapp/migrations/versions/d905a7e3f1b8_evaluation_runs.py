"""evaluation runs and results

Results get a bigint identity key: they are the high-volume table. The identity's sequence needs its own
USAGE grant for the app role, or every insert fails with "permission denied for sequence".

Revision ID: d905a7e3f1b8
Revises: b37e91f0c2d4
Create Date: 2024-05-14 13:22:10.447019
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from migrations.rls_helpers import disable_tenant_rls, enable_tenant_rls, grant_dml, revoke_dml

revision = "d905a7e3f1b8"
down_revision = "b37e91f0c2d4"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)


def upgrade() -> None:
    op.create_table(
        "evaluation_runs",
        sa.Column("id", UUID, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("organization_id", UUID, sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("test_set_id", UUID, nullable=False),
        sa.Column("created_by_id", UUID, nullable=False),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="queued"),
        sa.Column("total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("passed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("errored", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("pass_rate", sa.Float()),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("organization_id", "id", name="uq_evaluation_runs_org_id"),
        sa.ForeignKeyConstraint(["organization_id", "test_set_id"], ["test_sets.organization_id", "test_sets.id"],
                                name="fk_evaluation_runs_test_set", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["organization_id", "created_by_id"], ["users.organization_id", "users.id"],
                                name="fk_evaluation_runs_created_by"),
        sa.CheckConstraint("status IN ('queued', 'running', 'completed', 'failed')",
                           name="ck_evaluation_runs_status"),
    )
    op.create_table(
        "evaluation_results",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("organization_id", UUID, sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("run_id", UUID, nullable=False),
        sa.Column("test_case_id", UUID, nullable=False),
        sa.Column("response", sa.Text()),
        sa.Column("score", sa.Float(), nullable=False, server_default="0"),
        sa.Column("passed", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("latency_ms", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.ForeignKeyConstraint(["organization_id", "run_id"],
                                ["evaluation_runs.organization_id", "evaluation_runs.id"],
                                name="fk_evaluation_results_run", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["organization_id", "test_case_id"], ["test_cases.organization_id", "test_cases.id"],
                                name="fk_evaluation_results_test_case", ondelete="CASCADE"),
    )
    op.create_index("ix_evaluation_runs_organization_id", "evaluation_runs", ["organization_id"])
    op.create_index("ix_evaluation_runs_test_set_id", "evaluation_runs", ["test_set_id"])
    op.create_index("ix_evaluation_results_organization_id", "evaluation_results", ["organization_id"])
    op.create_index("ix_evaluation_results_run_id", "evaluation_results", ["run_id"])

    enable_tenant_rls("evaluation_runs")
    grant_dml("evaluation_runs")
    enable_tenant_rls("evaluation_results")
    grant_dml("evaluation_results", sequences=("evaluation_results_id_seq",))


def downgrade() -> None:
    for table in ("evaluation_results", "evaluation_runs"):
        revoke_dml(table)
        disable_tenant_rls(table)
        op.drop_table(table)
