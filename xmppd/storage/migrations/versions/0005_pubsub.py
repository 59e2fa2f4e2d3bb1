"""Publish-subscribe nodes (XEP-0060) with their items, affiliations and
subscriptions; the nodes of an account go with it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 17:45:30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pubsub_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=2047), nullable=False),
        sa.Column("name", sa.String(length=1023), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("config", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_pubsub_nodes_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pubsub_nodes")),
        sa.UniqueConstraint(
            "store", "service", "name", name=op.f("uq_pubsub_nodes_store_service_name")
        ),
    )
    op.create_index("ix_pubsub_nodes_account_id", "pubsub_nodes", ["account_id"])
    op.create_table(
        "pubsub_items",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("publisher", sa.String(length=3071), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("published", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["pubsub_nodes.id"],
            name=op.f("fk_pubsub_items_node_id_pubsub_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", "id", name=op.f("pk_pubsub_items")),
    )
    op.create_index("ix_pubsub_items_node_id_seq", "pubsub_items", ["node_id", "seq"],
                    unique=True)
    op.create_table(
        "pubsub_affiliations",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("jid", sa.String(length=2047), nullable=False),
        sa.Column("affiliation", sa.String(length=12), nullable=False),
        sa.CheckConstraint(
            "affiliation IN ('owner', 'publisher', 'publish-only', 'member', 'outcast')",
            name=op.f("ck_pubsub_affiliations_affiliation"),
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["pubsub_nodes.id"],
            name=op.f("fk_pubsub_affiliations_node_id_pubsub_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", "jid", name=op.f("pk_pubsub_affiliations")),
    )
    op.create_table(
        "pubsub_subscriptions",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("jid", sa.String(length=3071), nullable=False),
        sa.Column("subid", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "state IN ('subscribed', 'pending', 'unconfigured')",
            name=op.f("ck_pubsub_subscriptions_state"),
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["pubsub_nodes.id"],
            name=op.f("fk_pubsub_subscriptions_node_id_pubsub_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "node_id", "jid", "subid", name=op.f("pk_pubsub_subscriptions")
        ),
    )
    op.create_index(
        "ix_pubsub_subscriptions_jid_node_id", "pubsub_subscriptions", ["jid", "node_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_pubsub_subscriptions_jid_node_id", table_name="pubsub_subscriptions")
    op.drop_table("pubsub_subscriptions")
    op.drop_table("pubsub_affiliations")
    op.drop_index("ix_pubsub_items_node_id_seq", table_name="pubsub_items")
    op.drop_table("pubsub_items")
    op.drop_index("ix_pubsub_nodes_account_id", table_name="pubsub_nodes")
    op.drop_table("pubsub_nodes")
