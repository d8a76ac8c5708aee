"""orders: an index built without CONCURRENTLY, one with it

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute("SET lock_timeout = '2s'")
    op.add_column("users", sa.Column("name", sa.Text, nullable=True))
    op.create_index("users_name", "users", ["name"])
    with op.get_context().autocommit_block():
        op.create_index(
            "users_name_lower",
            "users",
            [sa.text("lower(name)")],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_column("users", "name")
