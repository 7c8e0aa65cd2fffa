"""test case position within its test set

Test cases were ordered by created_at, but a bulk import inserts hundreds of rows within the same few microseconds
(and server-side now() is one value per transaction), so the order of an import was not stable. An explicit
position fixes that and lets users reorder cases.

Revision ID: f2a7c9e1b3d5
Revises: e41c0b8a2f6d
Create Date: 2024-08-08 15:03:19.771630
"""
from alembic import op
import sqlalchemy as sa

revision = "f2a7c9e1b3d5"
down_revision = "e41c0b8a2f6d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("test_cases", sa.Column("position", sa.Integer(), nullable=False, server_default="0"))
    # Backfill the existing order. Runs as the admin role (a superuser, exempt from RLS): all tenants at once.
    op.execute("""
UPDATE test_cases tc
   SET position = ordered.rn
  FROM (SELECT id, row_number() OVER (PARTITION BY test_set_id ORDER BY created_at, id) AS rn
          FROM test_cases) ordered
 WHERE ordered.id = tc.id
""")
    op.create_index("ix_test_cases_set_position", "test_cases", ["test_set_id", "position"])


def downgrade() -> None:
    op.drop_index("ix_test_cases_set_position", table_name="test_cases")
    op.drop_column("test_cases", "position")
