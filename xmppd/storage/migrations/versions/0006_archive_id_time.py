"""Archive ids carry the time (XEP-0313): the ``stamp`` column of
``archive_messages`` and its index go; ``start``/``end`` filter by id.

Rows archived before keep their ids, and their time is now read from the
id (microseconds since the epoch in the bits above the 12 low ones), which
``xmppd.modules.mam.ArchiveIds`` made from the clock within microseconds of
the stamp.  The downgrade writes the stamps back from the ids.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The time an id carries, in the form SQLAlchemy reads back from each database.
STAMP_FROM_ID = {
    "postgresql": "TIMESTAMPTZ 'epoch' + (id >> 12) * INTERVAL '1 microsecond'",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%S', (id >> 12) / 1000000, 'unixepoch')"
              " || printf('.%06d', (id >> 12) % 1000000)",
}


def upgrade() -> None:
    op.drop_index("ix_archive_messages_account_id_store_stamp", table_name="archive_messages")
    dialect = op.get_bind().dialect
    if dialect.name == "sqlite" and dialect.server_version_info < (3, 35):
        with op.batch_alter_table("archive_messages") as batch:  # a copy of the table
            batch.drop_column("stamp")
    else:
        op.drop_column("archive_messages", "stamp")


def downgrade() -> None:
    op.add_column("archive_messages", sa.Column("stamp", sa.DateTime(timezone=True)))
    op.execute(f"UPDATE archive_messages SET stamp = {STAMP_FROM_ID[op.get_bind().dialect.name]}")
    with op.batch_alter_table("archive_messages") as batch:
        batch.alter_column("stamp", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index(
        "ix_archive_messages_account_id_store_stamp", "archive_messages",
        ["account_id", "store", "stamp"],
    )
