"""Values of hosted domains rather than of accounts (the ``hostval`` kind):
invitations, API tokens, abuse reports.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_values",
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("domain", sa.String(length=1023), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("store", "domain", "key", name=op.f("pk_host_values")),
    )


def downgrade() -> None:
    op.drop_table("host_values")
