"""SCRAM-SHA-512 verifiers (RFC 5802 with SHA-512) beside SHA-1 and SHA-256.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 18:30:00
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

NAME = "ck_scram_credentials_hash_name"


def upgrade() -> None:
    with op.batch_alter_table("scram_credentials") as batch:
        batch.drop_constraint(op.f(NAME), type_="check")
        batch.create_check_constraint(op.f(NAME), "hash_name IN ('SHA-1', 'SHA-256', 'SHA-512')")


def downgrade() -> None:
    op.execute("DELETE FROM scram_credentials WHERE hash_name = 'SHA-512'")
    with op.batch_alter_table("scram_credentials") as batch:
        batch.drop_constraint(op.f(NAME), type_="check")
        batch.create_check_constraint(op.f(NAME), "hash_name IN ('SHA-1', 'SHA-256')")
