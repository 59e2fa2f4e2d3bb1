"""Backends of the storage contract tests: SQLite (a temporary file)
always; PostgreSQL when XMPPD_TEST_POSTGRES_URL is set (e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), each test then in a
new schema with a random name, dropped afterwards."""

import os
import secrets
import socket
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, func, make_url, select, text

from xmppd.storage import ScramKeys
from xmppd.storage.sql import SQLStore

POSTGRES_URL = os.environ.get("XMPPD_TEST_POSTGRES_URL")

KEYS = {
    "SHA-1": ScramKeys(b"\x00salt\xff", 4096, b"\x01" * 20, b"\x02" * 20),
    "SHA-256": ScramKeys(b"salt\x00256", 10000, b"\x03" * 32, b"\xfe" * 32),
}


@dataclass(frozen=True)
class Backend:
    name: str
    url: str  # an empty database
    unreachable_url: str


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        (tmp_path / "file").write_text("")
        yield Backend(
            "sqlite",
            f"sqlite:///{tmp_path / 'new-dir' / 'xmppd.sqlite'}",
            f"sqlite:///{tmp_path / 'file' / 'xmppd.sqlite'}",
        )
        return
    if not POSTGRES_URL:
        pytest.skip("XMPPD_TEST_POSTGRES_URL is not set")
    schema = f"xmppd_test_{secrets.token_hex(8)}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(POSTGRES_URL)
        yield Backend(
            "postgresql",
            url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False
            ),
            url.set(host="127.0.0.1", port=closed_port()).render_as_string(hide_password=False),
        )
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def empty_store(backend):
    store = SQLStore(backend.url)
    yield store
    store.close()


@pytest.fixture
def store(empty_store):
    """The database, migrated."""
    empty_store.migrate()
    return empty_store


@pytest.fixture
def alice(store):
    """The account alice@example.org exists."""
    store.open("accounts").create("alice", "example.org", KEYS)
    return ("alice", "example.org")


def row_count(backend, model) -> int:
    engine = create_engine(backend.url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(model))
    finally:
        engine.dispose()
