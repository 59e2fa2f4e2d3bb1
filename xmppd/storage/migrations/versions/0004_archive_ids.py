"""Archive ids given by the caller, unique per named archive; an index for
queries with one correspondent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # the id was a BIGSERIAL
        op.alter_column("archive_messages", "id", server_default=None)
        op.execute("DROP SEQUENCE archive_messages_id_seq")
    with op.batch_alter_table("archive_messages") as batch:
        batch.drop_constraint("pk_archive_messages", type_="primary")
        batch.create_primary_key("pk_archive_messages", ["store", "id"])
    op.create_index(
        "ix_archive_messages_account_id_store_with_bare_id", "archive_messages",
        ["account_id", "store", "with_bare", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_archive_messages_account_id_store_with_bare_id",
                  table_name="archive_messages")
    with op.batch_alter_table("archive_messages") as batch:
        batch.drop_constraint("pk_archive_messages", type_="primary")
        batch.create_primary_key("pk_archive_messages", ["id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE archive_messages_id_seq OWNED BY archive_messages.id")
        op.execute("SELECT setval('archive_messages_id_seq', max(id)) FROM archive_messages")
        op.alter_column("archive_messages", "id",
                        server_default=sa.text("nextval('archive_messages_id_seq')"))
