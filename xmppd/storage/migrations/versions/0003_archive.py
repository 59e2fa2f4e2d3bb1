"""Message archives (XEP-0313).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archive_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("with_bare", sa.String(length=2047), nullable=False),
        sa.Column("with_resource", sa.String(length=1023), nullable=False),
        sa.Column("stanza_id", sa.String(length=1023), nullable=True),
        sa.Column("stamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("stanza", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "direction IN ('in', 'out')", name=op.f("ck_archive_messages_direction")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_archive_messages_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_messages")),
    )
    op.create_index(
        "ix_archive_messages_account_id_store_id", "archive_messages",
        ["account_id", "store", "id"],
    )
    op.create_index(
        "ix_archive_messages_account_id_store_stamp", "archive_messages",
        ["account_id", "store", "stamp"],
    )


def downgrade() -> None:
    op.drop_index("ix_archive_messages_account_id_store_stamp", table_name="archive_messages")
    op.drop_index("ix_archive_messages_account_id_store_id", table_name="archive_messages")
    op.drop_table("archive_messages")
