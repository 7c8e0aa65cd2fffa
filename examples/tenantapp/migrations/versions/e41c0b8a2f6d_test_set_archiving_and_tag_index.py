"""test set archiving and a GIN index on test case tags

Archiving used to be a status named "Archived"; it becomes a timestamp so archived sets can be filtered cheaply.
The data migration runs as the admin role (a superuser, exempt from RLS), so it sees every tenant's rows.

Revision ID: e41c0b8a2f6d
Revises: d905a7e3f1b8
Create Date: 2024-06-27 11:48:33.006512
"""
from alembic import op
import sqlalchemy as sa

revision = "e41c0b8a2f6d"
down_revision = "d905a7e3f1b8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("test_sets", sa.Column("archived_at", sa.DateTime(timezone=True)))
    op.execute("""
UPDATE test_sets ts
   SET archived_at = now()
  FROM statuses s
 WHERE s.id = ts.status_id AND s.organization_id = ts.organization_id AND s.name = 'Archived'
""")
    op.create_index("ix_test_sets_active", "test_sets", ["organization_id", "created_at"],
                    postgresql_where=sa.text("archived_at IS NULL"))
    op.create_index("ix_test_cases_tags", "test_cases", ["tags"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_test_cases_tags", table_name="test_cases")
    op.drop_index("ix_test_sets_active", table_name="test_sets")
    op.drop_column("test_sets", "archived_at")
