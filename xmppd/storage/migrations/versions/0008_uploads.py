"""Slots of HTTP upload services (XEP-0363) and the metadata of their
files, which go with their accounts.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-11 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_uploads_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    op.create_index("ix_uploads_account_id_created", "uploads", ["account_id", "created"])
    op.create_index("ix_uploads_created", "uploads", ["created"])


def downgrade() -> None:
    op.drop_index("ix_uploads_created", table_name="uploads")
    op.drop_index("ix_uploads_account_id_created", table_name="uploads")
    op.drop_table("uploads")
