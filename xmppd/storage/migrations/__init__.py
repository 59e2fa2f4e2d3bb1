"""Alembic migrations of the xmppd schema (``xmppd.storage.models``).

There is no ``alembic.ini``: ``xmppd.storage.sql.alembic_config`` builds the
configuration and ``SQLStore.migrate`` (``xmppctl migrate``) applies the
revisions in ``versions/``.
"""
