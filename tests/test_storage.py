"""Contract tests of xmppd.storage, run against every database backend.

SQLite (a temporary file) is always tested.  PostgreSQL is tested when
XMPPD_TEST_POSTGRES_URL is set (e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/test``): each test then runs
in a new schema with a random name, dropped afterwards.
"""

import os
import secrets
import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, make_url, select, text
from twisted.python.failure import Failure

from xmppd.storage import (
    RosterFull,
    RosterItem,
    SchemaOutdated,
    ScramKeys,
    StorageError,
    UserExists,
    UserNotFound,
)
from xmppd.storage.deferred import AsyncStore, immediate_runner
from xmppd.storage.models import (
    Base,
    OfflineMessage,
    RosterEntry,
    RosterGroup,
    ScramCredential,
    UserValue,
)
from xmppd.storage.sql import SQLStore, alembic_config

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
    empty_store.migrate()
    return empty_store


def row_count(backend, model) -> int:
    engine = create_engine(backend.url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(model))
    finally:
        engine.dispose()


def result_of(deferred):
    results = []
    deferred.addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


class TestStore:
    def test_migrate_from_empty(self, empty_store):
        current, head = empty_store.schema_status()
        assert current is None
        with pytest.raises(SchemaOutdated, match="xmppctl migrate"):
            empty_store.check_schema()

        assert empty_store.migrate() == (None, head)
        assert empty_store.schema_status() == (head, head)
        empty_store.check_schema()
        assert empty_store.migrate() == (head, head)

    def test_migrated_schema_matches_models(self, backend, store):
        engine = create_engine(backend.url)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection)
                assert compare_metadata(context, Base.metadata) == []
        finally:
            engine.dispose()

    def test_sqlite_database_in_wal_mode(self, backend, store):
        if backend.name != "sqlite":
            pytest.skip("SQLite only")
        with sqlite3.connect(make_url(backend.url).database) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    def test_ping(self, empty_store):
        empty_store.ping()

    def test_unreachable_database(self, backend):
        with pytest.raises(StorageError) as raised:
            store = SQLStore(backend.unreachable_url)
            try:
                store.get_credentials("alice", "example.org")
            finally:
                store.close()
        assert type(raised.value) is StorageError

        if backend.name == "postgresql":
            store = SQLStore(backend.unreachable_url)
            with pytest.raises(StorageError):
                store.ping()
            with pytest.raises(StorageError):
                store.schema_status()
            store.close()

    def test_accounts(self, store):
        assert not store.account_exists("alice", "example.org")
        assert store.get_credentials("alice", "example.org") is None

        store.create_account("alice", "example.org", KEYS)
        assert store.account_exists("alice", "example.org")
        assert not store.account_exists("alice", "example.net")
        with pytest.raises(UserExists):
            store.create_account("alice", "example.org", KEYS)

        store.delete_account("alice", "example.org")
        assert not store.account_exists("alice", "example.org")
        with pytest.raises(UserNotFound):
            store.delete_account("alice", "example.org")
        with pytest.raises(UserNotFound):
            store.set_credentials("alice", "example.org", KEYS)

    def test_credentials(self, store):
        store.create_account("alice", "example.org", KEYS)
        assert store.get_credentials("alice", "example.org") == KEYS

        new_keys = {"SHA-256": ScramKeys(b"new salt", 20000, b"\x04" * 32, b"\x05" * 32)}
        store.set_credentials("alice", "example.org", new_keys)
        assert store.get_credentials("alice", "example.org") == new_keys

        with pytest.raises(ValueError):
            store.set_credentials("alice", "example.org", {"MD5": KEYS["SHA-1"]})
        assert store.get_credentials("alice", "example.org") == new_keys

    def test_upgrade_from_0001_keeps_data(self, backend, empty_store):
        engine = create_engine(backend.url)
        try:
            with engine.begin() as connection:
                command.upgrade(alembic_config(connection), "0001")
        finally:
            engine.dispose()
        empty_store.create_account("alice", "example.org", KEYS)
        empty_store.set_roster_item("alice", "example.org", RosterItem("bob@example.net"))

        assert empty_store.migrate() == ("0001", "0002")
        empty_store.check_schema()
        assert empty_store.get_credentials("alice", "example.org") == KEYS
        assert empty_store.get_roster("alice", "example.org") == (
            1,
            [RosterItem("bob@example.net")],
        )
        empty_store.set_value("alice", "example.org", "vcard", "", "<vCard/>")
        assert empty_store.store_offline("alice", "example.org", "<message/>", 10)
        assert empty_store.get_value("alice", "example.org", "vcard", "") == "<vCard/>"
        assert empty_store.take_offline("alice", "example.org") == ["<message/>"]

    def test_delete_account_cascades(self, backend, store):
        store.create_account("alice", "example.org", KEYS)
        item = RosterItem("bob@example.net", groups=("A",))
        store.set_roster_item("alice", "example.org", item)
        store.set_value("alice", "example.org", "vcard", "", "<vCard/>")
        store.store_offline("alice", "example.org", "<message/>", 10)
        store.delete_account("alice", "example.org")
        for model in (ScramCredential, RosterEntry, RosterGroup, UserValue, OfflineMessage):
            assert row_count(backend, model) == 0

        store.create_account("alice", "example.org", {"SHA-256": KEYS["SHA-256"]})
        assert store.get_roster("alice", "example.org") == (0, [])
        assert store.get_credentials("alice", "example.org") == {"SHA-256": KEYS["SHA-256"]}
        assert store.get_values("alice", "example.org", "vcard") == {}
        assert store.count_offline("alice", "example.org") == 0

    def test_list_accounts(self, store):
        for user in [("zoe", "a.example"), ("bob", "b.example"), ("amy", "a.example")]:
            store.create_account(*user, KEYS)
        assert store.list_accounts() == [
            ("amy", "a.example"),
            ("bob", "b.example"),
            ("zoe", "a.example"),
        ]
        assert store.list_accounts("a.example") == [("amy", "a.example"), ("zoe", "a.example")]
        assert store.list_accounts("c.example") == []

    def test_roster(self, store):
        store.create_account("alice", "example.org", KEYS)
        assert store.get_roster("alice", "example.org") == (0, [])

        bob = RosterItem("bob@example.net", "Bob", "to", groups=("Work", "Friends", "Work"))
        assert store.set_roster_item("alice", "example.org", bob) == 1
        stored_bob = RosterItem("bob@example.net", "Bob", "to", groups=("Friends", "Work"))
        assert store.get_roster_item("alice", "example.org", "bob@example.net") == stored_bob

        state = {"subscription": "both", "ask": True, "pending_in": True, "approved": True}
        bob = RosterItem("bob@example.net", groups=("Work", "Família ☃"), **state)
        assert store.set_roster_item("alice", "example.org", bob) == 2
        carol = RosterItem("carol@example.com", "Carol")
        assert store.set_roster_item("alice", "example.org", carol) == 3
        stored_bob = RosterItem("bob@example.net", groups=("Família ☃", "Work"), **state)
        assert store.get_roster("alice", "example.org") == (3, [stored_bob, carol])

        assert store.remove_roster_item("alice", "example.org", "bob@example.net") == 4
        assert store.remove_roster_item("alice", "example.org", "bob@example.net") is None
        assert store.get_roster_item("alice", "example.org", "bob@example.net") is None
        assert store.get_roster("alice", "example.org") == (4, [carol])

    def test_rosters_are_per_account(self, store):
        store.create_account("alice", "example.org", KEYS)
        store.create_account("alice", "example.net", KEYS)
        store.set_roster_item("alice", "example.org", RosterItem("bob@example.com", "Bob"))
        assert store.get_roster("alice", "example.net") == (0, [])
        assert store.get_roster_item("alice", "example.net", "bob@example.com") is None
        assert store.remove_roster_item("alice", "example.net", "bob@example.com") is None

    def test_roster_of_missing_account(self, store):
        item = RosterItem("bob@example.net")
        with pytest.raises(UserNotFound):
            store.set_roster_item("alice", "example.org", item)
        with pytest.raises(UserNotFound):
            store.remove_roster_item("alice", "example.org", item.jid)
        with pytest.raises(UserNotFound):
            store.get_roster("alice", "example.org")
        assert store.get_roster_item("alice", "example.org", item.jid) is None

    def test_invalid_subscription(self, store):
        store.create_account("alice", "example.org", KEYS)
        item = RosterItem("bob@example.net", subscription="all")
        with pytest.raises(ValueError):
            store.set_roster_item("alice", "example.org", item)

    def test_roster_full(self, store):
        store.create_account("alice", "example.org", KEYS)
        store.set_roster_item("alice", "example.org", RosterItem("a@example.net"), max_items=2)
        store.set_roster_item("alice", "example.org", RosterItem("b@example.net"), max_items=2)
        with pytest.raises(RosterFull):
            store.set_roster_item("alice", "example.org", RosterItem("c@example.net"), 2)
        assert store.get_roster_item("alice", "example.org", "c@example.net") is None

        renamed = RosterItem("b@example.net", "Bob")
        assert store.set_roster_item("alice", "example.org", renamed, max_items=2) == 3
        assert store.get_roster("alice", "example.org") == (
            3,
            [RosterItem("a@example.net"), renamed],
        )
        assert store.set_roster_item("alice", "example.org", RosterItem("c@example.net")) == 4

    def test_values(self, store):
        store.create_account("alice", "example.org", KEYS)
        assert store.get_value("alice", "example.org", "private", "urn:a") is None
        assert store.get_values("alice", "example.org", "private") == {}

        store.set_value("alice", "example.org", "private", "urn:a", "<a xmlns='urn:a'/>")
        store.set_value("alice", "example.org", "private", "urn:b", "<b ☃/>")
        store.set_value("alice", "example.org", "private", "urn:a", "<a xmlns='urn:a'>2</a>")
        assert store.get_value("alice", "example.org", "private", "urn:a") == (
            "<a xmlns='urn:a'>2</a>"
        )
        assert store.get_values("alice", "example.org", "private") == {
            "urn:a": "<a xmlns='urn:a'>2</a>",
            "urn:b": "<b ☃/>",
        }

        store.set_value("alice", "example.org", "private", "urn:a", None)
        store.set_value("alice", "example.org", "private", "urn:missing", None)
        assert store.get_value("alice", "example.org", "private", "urn:a") is None
        assert store.get_values("alice", "example.org", "private") == {"urn:b": "<b ☃/>"}

        store.delete_values("alice", "example.org", "private")
        assert store.get_values("alice", "example.org", "private") == {}

    def test_values_are_per_store_and_account(self, store):
        store.create_account("alice", "example.org", KEYS)
        store.create_account("alice", "example.net", KEYS)
        store.set_value("alice", "example.org", "blocking", "eve@example.com", "")
        store.set_value("alice", "example.org", "last", "eve@example.com", "status")
        store.set_value("alice", "example.net", "blocking", "mallory@example.com", "")

        assert store.get_values("alice", "example.org", "blocking") == {"eve@example.com": ""}
        assert store.get_value("alice", "example.org", "last", "eve@example.com") == "status"
        assert store.get_value("alice", "example.net", "blocking", "eve@example.com") is None

        store.delete_values("alice", "example.org", "blocking")
        assert store.get_values("alice", "example.org", "blocking") == {}
        assert store.get_values("alice", "example.org", "last") == {"eve@example.com": "status"}
        assert store.get_values("alice", "example.net", "blocking") == {
            "mallory@example.com": ""
        }

    def test_values_of_missing_account(self, store):
        assert store.get_value("alice", "example.org", "vcard", "") is None
        assert store.get_values("alice", "example.org", "vcard") == {}
        store.delete_values("alice", "example.org", "vcard")
        with pytest.raises(UserNotFound):
            store.set_value("alice", "example.org", "vcard", "", "<vCard/>")
        with pytest.raises(UserNotFound):
            store.set_value("alice", "example.org", "vcard", "", None)

    def test_offline_messages(self, store):
        store.create_account("alice", "example.org", KEYS)
        store.create_account("bob", "example.org", KEYS)
        assert store.take_offline("alice", "example.org") == []

        stanzas = [f"<message id='{n}'>☃</message>" for n in range(3)]
        assert [store.store_offline("alice", "example.org", s, 3) for s in stanzas] == [
            True,
            True,
            True,
        ]
        assert not store.store_offline("alice", "example.org", "<message id='x'/>", 3)
        assert store.store_offline("bob", "example.org", "<message id='b'/>", 3)
        assert store.count_offline("alice", "example.org") == 3
        assert store.total_offline() == 4

        assert store.take_offline("alice", "example.org") == stanzas
        assert store.count_offline("alice", "example.org") == 0
        assert store.total_offline() == 1
        assert store.take_offline("alice", "example.org") == []
        assert store.take_offline("bob", "example.org") == ["<message id='b'/>"]

        assert store.store_offline("alice", "example.org", "<message id='y'/>", 3)
        assert store.take_offline("alice", "example.org") == ["<message id='y'/>"]

    def test_offline_messages_of_missing_account(self, store):
        with pytest.raises(UserNotFound):
            store.store_offline("alice", "example.org", "<message/>", 10)
        assert store.count_offline("alice", "example.org") == 0
        assert store.take_offline("alice", "example.org") == []

    def test_concurrent_roster_writes_get_distinct_versions(self, store):
        store.create_account("alice", "example.org", KEYS)
        jids = [f"contact{n}@example.net" for n in range(40)]

        def add(jid):
            return store.set_roster_item("alice", "example.org", RosterItem(jid, groups=("G",)))

        with ThreadPoolExecutor(max_workers=8) as pool:
            versions = list(pool.map(add, jids))
        assert sorted(versions) == list(range(1, len(jids) + 1))
        version, items = store.get_roster("alice", "example.org")
        assert version == len(jids)
        assert [item.jid for item in items] == sorted(jids)

    def test_async_store(self, empty_store):
        store = AsyncStore(empty_store, immediate_runner)
        result_of(store.migrate())
        assert result_of(store.create_account("alice", "example.org", KEYS)) is None
        assert result_of(store.get_credentials("alice", "example.org")) == KEYS
        assert result_of(store.set_roster_item("alice", "example.org", RosterItem("b@c"))) == 1
        assert result_of(store.get_roster("alice", "example.org")) == (1, [RosterItem("b@c")])
        with pytest.raises(RosterFull):
            result_of(store.set_roster_item("alice", "example.org", RosterItem("d@c"), 1))
        result_of(store.set_value("alice", "example.org", "vcard", "", "<vCard/>"))
        assert result_of(store.get_values("alice", "example.org", "vcard")) == {"": "<vCard/>"}
        assert result_of(store.store_offline("alice", "example.org", "<message/>", 1))
        assert result_of(store.count_offline("alice", "example.org")) == 1
        assert result_of(store.take_offline("alice", "example.org")) == ["<message/>"]
        with pytest.raises(UserExists):
            result_of(store.create_account("alice", "example.org", KEYS))
        with pytest.raises(AttributeError):
            store._session
        with pytest.raises(AttributeError):
            store.no_such_method


class TestSQLiteFile:
    """The SQLite database file: who may read it, and when it is created."""

    def test_created_readable_by_its_owner_only(self, tmp_path):
        path = tmp_path / "xmppd.sqlite"
        old = os.umask(0o022)
        try:
            store = SQLStore(f"sqlite:///{path}")
            store.migrate()
            store.create_account("alice", "example.org", KEYS)
            modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
            store.close()
        finally:
            os.umask(old)
        assert modes == {"xmppd.sqlite": 0o600, "xmppd.sqlite-wal": 0o600,
                         "xmppd.sqlite-shm": 0o600}

    def test_not_created_unless_asked(self, tmp_path):
        path = tmp_path / "missing" / "xmppd.sqlite"
        with pytest.raises(StorageError, match="does not exist: run 'xmppctl migrate'"):
            SQLStore(f"sqlite:///{path}", create=False)
        assert not path.parent.exists()

    def test_existing_database_opened_without_create(self, tmp_path):
        url = f"sqlite:///{tmp_path / 'xmppd.sqlite'}"
        SQLStore(url).migrate()
        store = SQLStore(url, create=False)
        store.check_schema()
        store.close()


def test_driver_not_installed():
    try:
        import pg8000  # noqa: F401
        pytest.skip("pg8000 is installed")
    except ImportError:
        pass
    with pytest.raises(StorageError, match="driver for postgresql\\+pg8000 is not installed"):
        SQLStore("postgresql+pg8000://xmppd@localhost/xmppd")
