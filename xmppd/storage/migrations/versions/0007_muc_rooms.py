"""Rooms of multi-user chat services (XEP-0045) with their affiliations,
and their message archives (XEP-0313 §5), which go with them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "muc_rooms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=1023), nullable=False),
        sa.Column("name", sa.String(length=1023), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_muc_rooms")),
        sa.UniqueConstraint(
            "store", "service", "name", name=op.f("uq_muc_rooms_store_service_name")
        ),
    )
    op.create_table(
        "muc_affiliations",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("jid", sa.String(length=2047), nullable=False),
        sa.Column("affiliation", sa.String(length=7), nullable=False),
        sa.CheckConstraint(
            "affiliation IN ('owner', 'admin', 'member', 'outcast')",
            name=op.f("ck_muc_affiliations_affiliation"),
        ),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["muc_rooms.id"],
            name=op.f("fk_muc_affiliations_room_id_muc_rooms"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("room_id", "jid", name=op.f("pk_muc_affiliations")),
    )
    op.create_index("ix_muc_affiliations_jid_room_id", "muc_affiliations", ["jid", "room_id"])
    op.create_table(
        "room_archive_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("with_bare", sa.String(length=2047), nullable=False),
        sa.Column("with_resource", sa.String(length=1023), nullable=False),
        sa.Column("stanza_id", sa.String(length=1023), nullable=True),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("stanza", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "direction IN ('in', 'out')", name=op.f("ck_room_archive_messages_direction")
        ),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["muc_rooms.id"],
            name=op.f("fk_room_archive_messages_room_id_muc_rooms"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("store", "id", name=op.f("pk_room_archive_messages")),
    )
    op.create_index(
        "ix_room_archive_messages_room_id_store_id", "room_archive_messages",
        ["room_id", "store", "id"],
    )
    op.create_index(
        "ix_room_archive_messages_room_id_store_with_bare_id", "room_archive_messages",
        ["room_id", "store", "with_bare", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_room_archive_messages_room_id_store_with_bare_id",
                  table_name="room_archive_messages")
    op.drop_index("ix_room_archive_messages_room_id_store_id", table_name="room_archive_messages")
    op.drop_table("room_archive_messages")
    op.drop_index("ix_muc_affiliations_jid_room_id", table_name="muc_affiliations")
    op.drop_table("muc_affiliations")
    op.drop_table("muc_rooms")
