"""The database under the typed stores: schema migrations, connection
failures, an account's data deleted with it, the SQLite file."""

import os
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import DateTime, bindparam, create_engine, inspect, make_url, text

from xmppd.storage import RosterItem, SchemaOutdated, ScramKeys, StorageError
from xmppd.storage.kinds import (PubSubItem, Room, Upload, archive_id_time,
                                 first_archive_id)
from xmppd.storage.models import (
    ArchiveEntry,
    Base,
    OfflineMessage,
    PubSubItemRow,
    PubSubNodeRow,
    RosterEntry,
    RosterGroup,
    ScramCredential,
    UploadRow,
    UserValue,
)
from xmppd.storage.sql import SQLStore, alembic_config

from .conftest import KEYS, row_count

HEAD = "0010"  # the latest revision: every upgrade ends there

SHA512_KEYS = ScramKeys(b"salt512", 4096, b"\x05" * 64, b"\x06" * 64)


class TestDatabase:
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

    def test_sqlite_database_in_wal_mode_durable_and_checkpointed_seldom(self, backend, store):
        if backend.name != "sqlite":
            pytest.skip("SQLite only")
        with sqlite3.connect(make_url(backend.url).database) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        with store._engine.connect() as connection:  # per connection: the server's own
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 10_000

    def test_ping(self, empty_store):
        empty_store.ping()

    def test_unreachable_database(self, backend):
        with pytest.raises(StorageError) as raised:
            store = SQLStore(backend.unreachable_url)
            try:
                store.open("accounts").get_credentials("alice", "example.org")
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

    def test_upgrade_from_0001_keeps_data(self, backend, empty_store):
        engine = create_engine(backend.url)
        try:
            with engine.begin() as connection:
                command.upgrade(alembic_config(connection), "0001")
        finally:
            engine.dispose()
        accounts, roster = empty_store.open("accounts"), empty_store.open("roster")
        accounts.create("alice", "example.org", KEYS)
        roster.set_item("alice", "example.org", RosterItem("bob@example.net"))

        assert empty_store.migrate() == ("0001", HEAD)
        empty_store.check_schema()
        assert accounts.get_credentials("alice", "example.org") == KEYS
        assert roster.get("alice", "example.org") == (1, [RosterItem("bob@example.net")])
        vcard, offline = empty_store.open("keyval", "vcard"), empty_store.open("offline")
        vcard.set("alice", "example.org", "", "<vCard/>")
        assert offline.append("alice", "example.org", "<message/>", 10)
        archive = empty_store.open("archive", "mam")
        archive.append("alice", "example.org", "bob@example.net", None, "in", "<message/>",
                       id="1")
        assert vcard.get("alice", "example.org", "") == "<vCard/>"
        assert offline.take_all("alice", "example.org") == ["<message/>"]
        assert len(archive.find("alice", "example.org").items) == 1

    def test_upgrade_from_0003_keeps_the_archive(self, backend, empty_store):
        engine = create_engine(backend.url)
        try:
            with engine.begin() as connection:
                command.upgrade(alembic_config(connection), "0003")
                connection.execute(text(
                    "INSERT INTO accounts (username, domain, roster_version) "
                    "VALUES ('alice', 'example.org', 0)"))
                connection.execute(text(  # the id numbered by the database
                    "INSERT INTO archive_messages (account_id, store, with_bare, with_resource,"
                    " stamp, direction, stanza) SELECT id, 'mam', 'bob@example.net', '',"
                    " CURRENT_TIMESTAMP, 'in', '<message/>' FROM accounts"))
        finally:
            engine.dispose()
        [old] = empty_store.open("archive", "mam").find("alice", "example.org").items

        assert empty_store.migrate() == ("0003", HEAD)
        archive = empty_store.open("archive", "mam")
        archive.append("alice", "example.org", "bob@example.net", None, "out", "<message/>",
                       id="9")
        with pytest.raises(StorageError):
            archive.append("alice", "example.org", "bob@example.net", None, "out",
                           "<message/>", id="9")
        empty_store.open("archive", "muc").append(
            "alice", "example.org", "bob@example.net", None, "out", "<message/>", id="9")
        assert archive.find("alice", "example.org").items[0] == old
        assert [item.id for item in archive.find("alice", "example.org").items] == [old.id, "9"]
        assert archive.last_id() == "9"

    def test_upgrade_from_0005_reads_the_time_from_the_ids(self, backend, empty_store):
        stamp = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
        archive_id = first_archive_id(stamp) | 0xABC  # as xmppd.archive.ArchiveIds makes them
        engine = create_engine(backend.url)
        try:
            with engine.begin() as connection:
                command.upgrade(alembic_config(connection), "0005")
                connection.execute(text(
                    "INSERT INTO accounts (username, domain, roster_version) "
                    "VALUES ('alice', 'example.org', 0)"))
                connection.execute(text(
                    "INSERT INTO archive_messages (id, account_id, store, with_bare,"
                    " with_resource, stanza_id, stamp, direction, stanza) SELECT :id, id, 'mam',"
                    " 'bob@example.net', 'phone', 's1', :stamp, 'in', '<message/>'"
                    " FROM accounts").bindparams(bindparam("stamp", type_=DateTime(timezone=True))),
                    {"id": archive_id, "stamp": stamp})
        finally:
            engine.dispose()

        assert empty_store.migrate() == ("0005", HEAD)
        empty_store.check_schema()
        archive = empty_store.open("archive", "mam")
        [item] = archive.find("alice", "example.org", start=stamp, end=stamp).items
        assert (item.id, item.with_jid, item.stanza_id, item.timestamp, item.xml) == (
            str(archive_id), "bob@example.net/phone", "s1", stamp, "<message/>")
        assert archive.find("alice", "example.org", end=stamp - timedelta(microseconds=1),
                            count=True).count == 0
        assert archive.delete_until(before=stamp + timedelta(microseconds=1)) == 1

    def test_downgrade_to_0005_writes_the_stamps_back(self, backend, store):
        store.open("accounts").create("alice", "example.org", KEYS)
        stamp = datetime(2026, 12, 1, 12, 0, 0, 999999, tzinfo=timezone.utc)
        archive_id = first_archive_id(stamp) | 0xFFF
        store.open("archive", "mam").append("alice", "example.org", "bob@example.net", None,
                                            "in", "<message/>", id=str(archive_id))
        engine = create_engine(backend.url)
        try:
            with engine.begin() as connection:
                command.downgrade(alembic_config(connection), "0005")
                written = connection.scalar(text("SELECT stamp FROM archive_messages"))
        finally:
            engine.dispose()
        if backend.name == "sqlite":  # the form SQLAlchemy's DateTime reads back
            written = datetime.fromisoformat(written).replace(tzinfo=timezone.utc)
        assert written == stamp == archive_id_time(str(archive_id))
        assert store.migrate() == ("0005", HEAD)
        [item] = store.open("archive", "mam").find("alice", "example.org").items
        assert (item.id, item.timestamp) == (str(archive_id), stamp)

    def test_delete_account_cascades(self, backend, store):
        accounts = store.open("accounts")
        accounts.create("alice", "example.org", KEYS)
        item = RosterItem("bob@example.net", groups=("A",))
        store.open("roster").set_item("alice", "example.org", item)
        store.open("keyval", "vcard").set("alice", "example.org", "", "<vCard/>")
        store.open("offline").append("alice", "example.org", "<message/>", 10)
        store.open("archive", "mam").append("alice", "example.org", "bob@example.net", "x",
                                            "out", "<message/>", id="1")
        pep = store.open("pubsub", "pep")
        pep.create_node("alice@example.org", "urn:xmpp:avatar:data", {},
                        account=("alice", "example.org"))
        pep.publish("alice@example.org", "urn:xmpp:avatar:data",
                    PubSubItem("1", "alice@example.org", "<data/>", datetime.now(timezone.utc)))
        store.open("uploads").add(Upload("slot", "alice", "example.org", "a.jpg", 1,
                                         "image/jpeg", datetime.now(timezone.utc)))
        accounts.delete("alice", "example.org")
        for model in (ScramCredential, RosterEntry, RosterGroup, UserValue, OfflineMessage,
                      ArchiveEntry, PubSubNodeRow, PubSubItemRow, UploadRow):
            assert row_count(backend, model) == 0

        accounts.create("alice", "example.org", {"SHA-256": KEYS["SHA-256"]})
        assert store.open("roster").get("alice", "example.org") == (0, [])
        assert accounts.get_credentials("alice", "example.org") == {"SHA-256": KEYS["SHA-256"]}
        assert store.open("keyval", "vcard").get_all("alice", "example.org") == {}
        assert store.open("offline").count("alice", "example.org") == 0
        assert store.open("archive", "mam").find("alice", "example.org").items == []
        assert pep.nodes("alice@example.org") == []

    def test_downgrade_from_0005_and_back(self, backend, store):
        store.open("pubsub", "pep").create_node("alice@example.org", "urn:xmpp:tune", {})
        engine = create_engine(backend.url)
        try:
            with engine.begin() as connection:
                command.downgrade(alembic_config(connection), "0004")
        finally:
            engine.dispose()
        assert store.migrate() == ("0004", HEAD)
        assert store.open("pubsub", "pep").nodes("alice@example.org") == []

    def test_downgrade_from_0007_and_back(self, backend, store):
        service = "conference.example.org"
        store.open("rooms", "muc").create_room(
            service, Room("lobby", {}, "", {"alice@example.org": "owner"}))
        store.open("room_archive", "muc").append("lobby", service, "x@y/z", None, "in",
                                                 "<message/>", id="1")
        engine = create_engine(backend.url)
        try:
            with engine.begin() as connection:
                command.downgrade(alembic_config(connection), "0006")
        finally:
            engine.dispose()
        assert store.migrate() == ("0006", HEAD)
        assert store.open("rooms", "muc").rooms(service) == []
        assert store.open("room_archive", "muc").find("lobby", service).items == []

    def test_downgrade_from_0008_and_back(self, backend, store):
        store.open("accounts").create("alice", "example.org", KEYS)
        uploads = store.open("uploads")
        uploads.add(Upload("slot1", "alice", "example.org", "a.txt", 3, "text/plain",
                           datetime(2026, 1, 2, tzinfo=timezone.utc)))
        assert row_count(backend, UploadRow) == 1
        engine = create_engine(backend.url)
        try:
            with engine.begin() as connection:
                command.downgrade(alembic_config(connection), "0007")
                assert "uploads" not in inspect(connection).get_table_names()
        finally:
            engine.dispose()
        assert store.schema_status() == ("0007", HEAD)
        assert store.migrate() == ("0007", HEAD)
        assert uploads.uploads("alice", "example.org") == []


    def test_downgrade_from_0009_drops_sha512_verifiers(self, backend, store):
        accounts = store.open("accounts")
        accounts.create("alice", "example.org", {**KEYS, "SHA-512": SHA512_KEYS})
        engine = create_engine(backend.url)
        try:
            with engine.begin() as connection:
                command.downgrade(alembic_config(connection), "0008")
        finally:
            engine.dispose()
        assert store.migrate() == ("0008", HEAD)
        assert accounts.get_credentials("alice", "example.org") == KEYS


class TestSQLiteFile:
    """The SQLite database file: who may read it, and when it is created."""

    def test_created_readable_by_its_owner_only(self, tmp_path):
        path = tmp_path / "xmppd.sqlite"
        old = os.umask(0o022)
        try:
            store = SQLStore(f"sqlite:///{path}")
            store.migrate()
            store.open("accounts").create("alice", "example.org", KEYS)
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
