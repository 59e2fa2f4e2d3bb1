"""Alembic environment: runs the migrations on the connection that
``xmppd.storage.sql.alembic_config`` put in ``config.attributes``."""

from alembic import context

from xmppd.storage.models import Base

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
