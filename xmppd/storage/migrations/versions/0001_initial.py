"""Initial schema: accounts, SCRAM credentials and rosters.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 21:17:55
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=1023), nullable=False),
        sa.Column("domain", sa.String(length=1023), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("roster_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("domain", "username", name=op.f("uq_accounts_domain_username")),
    )
    op.create_table(
        "scram_credentials",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("hash_name", sa.String(length=16), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("iterations", sa.Integer(), nullable=False),
        sa.Column("stored_key", sa.LargeBinary(), nullable=False),
        sa.Column("server_key", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "hash_name IN ('SHA-1', 'SHA-256')", name=op.f("ck_scram_credentials_hash_name")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_scram_credentials_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "hash_name", name=op.f("pk_scram_credentials")),
    )
    op.create_table(
        "roster_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("jid", sa.String(length=2047), nullable=False),
        sa.Column("name", sa.String(length=1023), nullable=True),
        sa.Column("subscription", sa.String(length=4), nullable=False),
        sa.Column("ask", sa.Boolean(), nullable=False),
        sa.Column("pending_in", sa.Boolean(), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "subscription IN ('none', 'to', 'from', 'both')",
            name=op.f("ck_roster_items_subscription"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_roster_items_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roster_items")),
        sa.UniqueConstraint("account_id", "jid", name=op.f("uq_roster_items_account_id_jid")),
    )
    op.create_table(
        "roster_groups",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=1023), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["roster_items.id"],
            name=op.f("fk_roster_groups_item_id_roster_items"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("item_id", "name", name=op.f("pk_roster_groups")),
    )


def downgrade() -> None:
    op.drop_table("roster_groups")
    op.drop_table("roster_items")
    op.drop_table("scram_credentials")
    op.drop_table("accounts")
