"""SQLAlchemy implementation of the xmppd storage, with blocking methods.

Each method is one unit of work in its own transaction.  Reads see a single
snapshot (PostgreSQL runs them in REPEATABLE READ; SQLite transactions are
serializable), so a roster's version always matches its items.  Writes are
serialised per account: on PostgreSQL they lock the account row, on SQLite
they take the database write lock when they begin (``BEGIN IMMEDIATE``).

SQLite databases run in WAL mode with ``synchronous=FULL`` and foreign keys
enforced; SQLAlchemy, not the ``sqlite3`` module, begins their transactions,
so that reads and schema changes are transactional too.  The WAL is copied
back into the database (checkpointed) once it holds ``SQLITE_WAL_PAGES``
pages, ten times SQLite's default: an index page that many commits change
(an archive's, an offline store's) is then written back once for all of
them, for a WAL of up to 40 MB (a tenth more archived messages a second,
bench/RESULTS.md).

Database failures surface as ``StorageError``; its subclasses (``UserExists``,
``UserNotFound``, ``RosterFull``, ``UnknownArchiveId``, ``NodeExists``,
``RoomExists``...) report the state of the data, not a failure.  The stores
themselves are in :mod:`xmppd.storage.sql_stores`,
:mod:`xmppd.storage.sql_archive` (the archives of accounts and of rooms),
:mod:`xmppd.storage.sql_pubsub`, :mod:`xmppd.storage.sql_rooms` and
:mod:`xmppd.storage.sql_uploads`.
"""

import os
from collections import namedtuple
from collections.abc import Iterator
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from . import SchemaOutdated, StorageError
from .kinds import SCOPED, methods
from .models import STORE_NAME_LENGTH
from .sql_archive import ROOMS, SQLArchive
from .sql_pubsub import SQLPubSub
from .sql_rooms import SQLRooms
from .sql_stores import SQLAccounts, SQLHostValues, SQLKeyValues, SQLOffline, SQLRosters
from .sql_uploads import SQLUploads

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_WAL_PAGES = 10_000  # pages in the WAL before a checkpoint (SQLite's default: 1,000)
_SQLITE_BEGIN = "xmppd_sqlite_begin"  # execution option: how to begin a transaction
_SCOPED_STORES = {"keyval": SQLKeyValues, "hostval": SQLHostValues, "archive": SQLArchive,
                  "pubsub": SQLPubSub, "rooms": SQLRooms,
                  "room_archive": partial(SQLArchive, owners=ROOMS)}


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configuration of the xmppd migrations; ``env.py`` runs them
    on ``connection``.  Also usable with ``alembic.command`` to write a new
    revision (``command.revision(config, message, autogenerate=True)``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@contextmanager
def _database_errors(*driver_errors) -> Iterator[None]:
    """SQLAlchemy's and Alembic's errors, and ``driver_errors`` (of a DBAPI
    connection used directly), as StorageError."""
    try:
        yield
    except (SQLAlchemyError, CommandError, *driver_errors) as exc:
        raise StorageError(str(getattr(exc, "orig", None) or exc)) from exc


class _Read:
    """A read statement compiled for one dialect: its SQL, its parameters
    in the driver's style, a named tuple of its columns."""

    __slots__ = ("sql", "_compiled", "_order", "row")

    def __init__(self, statement, dialect) -> None:
        self._compiled = statement.compile(dialect=dialect)
        self.sql = self._compiled.string
        self._order = self._compiled.positiontup if self._compiled.positional else None
        self.row = namedtuple("Row", [column.key for column in statement.selected_columns])

    def parameters(self, params: dict):
        values = self._compiled.construct_params(params)
        return values if self._order is None else [values[name] for name in self._order]


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def connect(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None  # transactions begin in begin() below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_PAGES}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection):
        options = connection.get_execution_options()
        connection.exec_driver_sql(options.get(_SQLITE_BEGIN, "BEGIN"))


def _sqlite_file(path: Path, create: bool) -> None:
    """Make sure the SQLite database file exists: created empty with mode
    0600 when ``create`` allows it, else StorageError."""
    if path.exists():
        return
    if not create:
        raise StorageError(f"the database {path} does not exist: run 'xmppctl migrate'")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise StorageError(f"cannot create the database file: {exc}") from exc


class SQLStore:
    """Accounts, rosters, per-user values, offline messages, archives,
    pubsub nodes, multi-user chat rooms and uploads' metadata in the
    database at ``url`` (an SQLAlchemy URL, e.g.
    ``sqlite:////var/lib/xmppd/xmppd.sqlite`` or
    ``postgresql+psycopg://xmppd@/xmppd``).  Thread-safe.

    A missing SQLite database file is created, with its parent directory,
    only when ``create`` is true (``xmppctl``); the server opens an existing
    one, so a failed start leaves no empty file behind.  The file is created
    readable by its owner only (it holds the SCRAM keys); SQLite gives its
    ``-wal`` and ``-shm`` files the same mode.  A driver that is not
    installed is a ``StorageError``.

    :meth:`open` gives the typed stores (:mod:`xmppd.storage.kinds`).
    """

    def __init__(self, url: str, create: bool = True) -> None:
        with _database_errors():
            parsed = make_url(url)
            sqlite = parsed.get_backend_name() == "sqlite"
            if sqlite and parsed.database not in (None, "", ":memory:"):
                _sqlite_file(Path(parsed.database), create)
            # A server database can drop connections (a restart, a failover):
            # check each before use.  A local SQLite file cannot.  As many
            # connections kept as the storage pool has threads (its 8): past
            # the engine's default 5, each use would open and close one.
            try:
                self._engine = create_engine(parsed, pool_pre_ping=not sqlite, pool_size=8)
            except ImportError as exc:
                raise StorageError(
                    f"the driver for {parsed.drivername} is not installed ({exc})") from exc
        if sqlite:
            _configure_sqlite(self._engine)
            self._reads = self._engine
            self._writes = self._engine.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
        else:
            self._reads = self._engine.execution_options(isolation_level="REPEATABLE READ")
            self._writes = self._engine
        self._compiled = {}  # statement -> _Read, for rows()
        self._driver_error = self._engine.dialect.loaded_dbapi.Error
        self._shared = {"accounts": SQLAccounts(self), "roster": SQLRosters(self),
                        "offline": SQLOffline(self), "uploads": SQLUploads(self)}

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session in a read transaction (one snapshot), committed at the
        end; database failures raise StorageError."""
        with _database_errors(), Session(self._reads) as session, session.begin():
            yield session

    def rows(self, statement, **params) -> list:
        """The rows of one read ``statement`` with its bound ``params``, as
        named tuples: for the reads of every login, built once with
        ``bindparam``.  They run on a pooled DBAPI connection, compiled
        once for its dialect (:class:`_Read`), outside a transaction of
        SQLAlchemy's: one statement sees one snapshot anyway, and
        SQLAlchemy's own execution costs four times the query
        (bench/RESULTS.md).  The values are the driver's (bytes, integers,
        text): no SQLAlchemy type processing."""
        read = self._compiled.get(statement)
        if read is None:
            read = self._compiled[statement] = _Read(statement, self._engine.dialect)
        with (_database_errors(self._driver_error),
              closing(self._engine.raw_connection()) as connection,  # back to the pool
              closing(connection.cursor()) as cursor):
            cursor.execute(read.sql, read.parameters(params))
            return [read.row._make(row) for row in cursor.fetchall()]

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A session in a write transaction, committed at the end (rolled
        back if the block raises); database failures raise StorageError."""
        with _database_errors(), Session(self._writes) as session, session.begin():
            yield session

    # Schema

    def migrate(self) -> tuple[str | None, str]:
        """Upgrade the schema to the latest revision; returns the revisions
        before and after."""
        with _database_errors(), self._writes.begin() as connection:
            before = MigrationContext.configure(connection).get_current_revision()
            command.upgrade(alembic_config(connection), "head")
            return before, MigrationContext.configure(connection).get_current_revision()

    def schema_status(self) -> tuple[str | None, str]:
        """The schema revision of the database (None when empty) and the
        latest revision this xmppd knows."""
        with _database_errors(), self._reads.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
            return current, ScriptDirectory.from_config(alembic_config()).get_current_head()

    def check_schema(self) -> None:
        """Raise SchemaOutdated unless the schema is at the latest revision."""
        current, head = self.schema_status()
        if current != head:
            raise SchemaOutdated(
                f"the database schema is at revision {current or '(empty)'}, this xmppd "
                f"needs {head}: run 'xmppctl migrate'"
            )

    def ping(self) -> None:
        """Raise StorageError unless the database answers."""
        with _database_errors(), self._reads.connect() as connection:
            connection.execute(text("SELECT 1"))

    # Typed stores

    def open(self, kind: str, name: str | None = None):
        """The store of ``kind`` (:data:`xmppd.storage.kinds.KINDS`), named
        ``name`` if the kind is scoped (``SCOPED``); ValueError for an
        unknown kind or a scoped kind without a valid name."""
        methods(kind)
        if kind not in SCOPED:
            return self._shared[kind]
        if not name or len(name) > STORE_NAME_LENGTH:
            raise ValueError(f"a {kind} store needs a name of 1 to {STORE_NAME_LENGTH} characters")
        return _SCOPED_STORES[kind](self, name)

    # Shortcuts to the typed stores for synchronous callers (xmppctl, tests)

    def create_account(self, username, domain, keys):
        return self._shared["accounts"].create(username, domain, keys)

    def set_credentials(self, username, domain, keys):
        return self._shared["accounts"].set_credentials(username, domain, keys)

    def get_credentials(self, username, domain):
        return self._shared["accounts"].get_credentials(username, domain)

    def delete_account(self, username, domain):
        return self._shared["accounts"].delete(username, domain)

    def account_exists(self, username, domain):
        return self._shared["accounts"].exists(username, domain)

    def list_accounts(self, domain=None):
        return self._shared["accounts"].list(domain)

    def get_roster(self, username, domain):
        return self._shared["roster"].get(username, domain)

    def get_roster_item(self, username, domain, jid):
        return self._shared["roster"].get_item(username, domain, jid)

    def set_roster_item(self, username, domain, item, max_items=None):
        return self._shared["roster"].set_item(username, domain, item, max_items)

    def get_value(self, username, domain, store, key):
        return self.open("keyval", store).get(username, domain, key)

    def set_value(self, username, domain, store, key, value):
        return self.open("keyval", store).set_many(username, domain, {key: value})

    def get_values(self, username, domain, store):
        return self.open("keyval", store).get_all(username, domain)

    def take_offline(self, username, domain):
        return self._shared["offline"].take_all(username, domain)

    def count_offline(self, username, domain):
        return self._shared["offline"].count(username, domain)
