"""Per-user key/value stores and offline messages.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:02:13
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_values",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=2047), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_user_values_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "store", "key", name=op.f("pk_user_values")),
    )
    op.create_table(
        "offline_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("stanza", sa.Text(), nullable=False),
        sa.Column(
            "stored_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_offline_messages_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offline_messages")),
    )
    op.create_index(
        "ix_offline_messages_account_id_id", "offline_messages", ["account_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_offline_messages_account_id_id", table_name="offline_messages")
    op.drop_table("offline_messages")
    op.drop_table("user_values")
