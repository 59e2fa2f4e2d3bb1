"""SQLAlchemy implementation of the xmppd storage, with blocking methods.

Each method is one unit of work in its own transaction.  Reads see a single
snapshot (PostgreSQL runs them in REPEATABLE READ; SQLite transactions are
serializable), so a roster's version always matches its items.  Writes are
serialised per account: on PostgreSQL they lock the account row, on SQLite
they take the database write lock when they begin (``BEGIN IMMEDIATE``).

SQLite databases run in WAL mode with ``synchronous=FULL`` and foreign keys
enforced; SQLAlchemy, not the ``sqlite3`` module, begins their transactions,
so that reads and schema changes are transactional too.

Database failures surface as ``StorageError``; its subclasses ``UserExists``,
``UserNotFound`` and ``RosterFull`` report the state of the data, not a
failure.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from . import (
    SUBSCRIPTIONS,
    RosterFull,
    RosterItem,
    SchemaOutdated,
    ScramKeys,
    StorageError,
    UserExists,
    UserNotFound,
)
from .models import (
    HASH_NAMES,
    Account,
    OfflineMessage,
    RosterEntry,
    RosterGroup,
    ScramCredential,
    UserValue,
)

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000
_SQLITE_BEGIN = "xmppd_sqlite_begin"  # execution option: how to begin a transaction


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configuration of the xmppd migrations; ``env.py`` runs them
    on ``connection``.  Also usable with ``alembic.command`` to write a new
    revision (``command.revision(config, message, autogenerate=True)``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except (SQLAlchemyError, CommandError) as exc:
        raise StorageError(str(getattr(exc, "orig", None) or exc)) from exc


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def connect(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None  # transactions begin in begin() below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
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


def _credential_rows(keys: dict[str, ScramKeys]) -> list[ScramCredential]:
    unknown = set(keys) - set(HASH_NAMES)
    if unknown:
        raise ValueError(f"unsupported SCRAM hash functions: {', '.join(sorted(unknown))}")
    return [
        ScramCredential(
            hash_name=hash_name,
            salt=scram.salt,
            iterations=scram.iterations,
            stored_key=scram.stored_key,
            server_key=scram.server_key,
        )
        for hash_name, scram in keys.items()
    ]


def _roster_item(entry: RosterEntry) -> RosterItem:
    return RosterItem(
        jid=entry.jid,
        name=entry.name,
        subscription=entry.subscription,
        ask=entry.ask,
        pending_in=entry.pending_in,
        approved=entry.approved,
        groups=tuple(sorted(group.name for group in entry.groups)),
    )


def _named(username: str, domain: str) -> ColumnElement[bool]:
    return (Account.username == username) & (Account.domain == domain)


def _account(session: Session, username: str, domain: str, *, lock: bool = False) -> Account:
    query = select(Account).where(_named(username, domain))
    account = session.scalar(query.with_for_update() if lock else query)
    if account is None:
        raise UserNotFound(f"no account {username}@{domain}")
    return account


def _account_id(username: str, domain: str):
    """A scalar subquery: the id of the account, NULL if none."""
    return select(Account.id).where(_named(username, domain)).scalar_subquery()


class SQLStore:
    """Accounts, rosters, per-user values and offline messages in the
    database at ``url`` (an SQLAlchemy URL, e.g.
    ``sqlite:////var/lib/xmppd/xmppd.sqlite`` or
    ``postgresql+psycopg://xmppd@/xmppd``).  Thread-safe.

    A missing SQLite database file is created, with its parent directory,
    only when ``create`` is true (``xmppctl``); the server opens an existing
    one, so a failed start leaves no empty file behind.  The file is created
    readable by its owner only (it holds the SCRAM keys); SQLite gives its
    ``-wal`` and ``-shm`` files the same mode.  A driver that is not
    installed is a ``StorageError``.
    """

    def __init__(self, url: str, create: bool = True) -> None:
        with _database_errors():
            parsed = make_url(url)
            sqlite = parsed.get_backend_name() == "sqlite"
            if sqlite and parsed.database not in (None, "", ":memory:"):
                _sqlite_file(Path(parsed.database), create)
            # A server database can drop connections (a restart, a failover):
            # check each before use.  A local SQLite file cannot.
            try:
                self._engine = create_engine(parsed, pool_pre_ping=not sqlite)
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

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    @contextmanager
    def _session(self, bind: Engine) -> Iterator[Session]:
        with _database_errors(), Session(bind) as session, session.begin():
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

    # Accounts

    def create_account(self, username: str, domain: str, keys: dict[str, ScramKeys]) -> None:
        """Create an account with its SCRAM keys (by hash name, ``HASH_NAMES``)."""
        credentials = _credential_rows(keys)
        with self._session(self._writes) as session:
            session.add(Account(username=username, domain=domain, credentials=credentials))
            try:
                session.flush()
            except IntegrityError as exc:
                raise UserExists(f"account {username}@{domain} already exists") from exc

    def set_credentials(self, username: str, domain: str, keys: dict[str, ScramKeys]) -> None:
        """Replace all the SCRAM keys of an account."""
        credentials = _credential_rows(keys)
        with self._session(self._writes) as session:
            _account(session, username, domain, lock=True).credentials = credentials

    def get_credentials(self, username: str, domain: str) -> dict[str, ScramKeys] | None:
        """The SCRAM keys of an account by hash name; None if no such account."""
        with self._session(self._reads) as session:
            account = session.scalar(
                select(Account)
                .where(_named(username, domain))
                .options(selectinload(Account.credentials))
            )
            if account is None:
                return None
            return {
                row.hash_name: ScramKeys(
                    row.salt, row.iterations, row.stored_key, row.server_key
                )
                for row in account.credentials
            }

    def delete_account(self, username: str, domain: str) -> None:
        """Delete an account with its keys, roster, values and offline
        messages."""
        with self._session(self._writes) as session:
            result = session.execute(delete(Account).where(_named(username, domain)))
            if result.rowcount == 0:
                raise UserNotFound(f"no account {username}@{domain}")

    def account_exists(self, username: str, domain: str) -> bool:
        """Whether the account exists."""
        with self._session(self._reads) as session:
            account_id = session.scalar(select(Account.id).where(_named(username, domain)))
            return account_id is not None

    def list_accounts(self, domain: str | None = None) -> list[tuple[str, str]]:
        """All ``(username, domain)`` pairs, or those of one domain, sorted."""
        query = select(Account.username, Account.domain)
        if domain is not None:
            query = query.where(Account.domain == domain)
        with self._session(self._reads) as session:
            return sorted(tuple(row) for row in session.execute(query))

    # Rosters (RFC 6121 §2); each change increments the roster version (§2.6)

    def get_roster(self, username: str, domain: str) -> tuple[int, list[RosterItem]]:
        """The roster version and the items sorted by JID; UserNotFound if no
        such account."""
        with self._session(self._reads) as session:
            account = _account(session, username, domain)
            entries = session.scalars(
                select(RosterEntry)
                .where(RosterEntry.account_id == account.id)
                .options(selectinload(RosterEntry.groups))
            )
            items = sorted(map(_roster_item, entries), key=lambda item: item.jid)
            return account.roster_version, items

    def get_roster_item(self, username: str, domain: str, jid: str) -> RosterItem | None:
        """One roster item; None if absent (or no such account)."""
        with self._session(self._reads) as session:
            entry = session.scalar(
                select(RosterEntry)
                .join(Account)
                .where(_named(username, domain), RosterEntry.jid == jid)
                .options(selectinload(RosterEntry.groups))
            )
            return None if entry is None else _roster_item(entry)

    def set_roster_item(
        self, username: str, domain: str, item: RosterItem, max_items: int | None = None
    ) -> int:
        """Add or replace (groups included) the item for ``item.jid``;
        returns the new roster version.  RosterFull if adding a new item
        would make the roster exceed ``max_items`` items."""
        if item.subscription not in SUBSCRIPTIONS:
            raise ValueError(f"invalid subscription state {item.subscription!r}")
        with self._session(self._writes) as session:
            account = _account(session, username, domain, lock=True)
            entry = session.scalar(
                select(RosterEntry).where(
                    RosterEntry.account_id == account.id, RosterEntry.jid == item.jid
                )
            )
            if entry is None:
                if max_items is not None:
                    count = session.scalar(
                        select(func.count()).where(RosterEntry.account_id == account.id)
                    )
                    if count >= max_items:
                        raise RosterFull(f"the roster of {username}@{domain} is full")
                entry = RosterEntry(account_id=account.id, jid=item.jid)
                session.add(entry)
            entry.name = item.name
            entry.subscription = item.subscription
            entry.ask = item.ask
            entry.pending_in = item.pending_in
            entry.approved = item.approved
            entry.groups = [RosterGroup(name=name) for name in sorted(set(item.groups))]
            account.roster_version += 1
            return account.roster_version

    def remove_roster_item(self, username: str, domain: str, jid: str) -> int | None:
        """Remove the item for ``jid``; returns the new roster version, or
        None (version unchanged) if there was no such item."""
        with self._session(self._writes) as session:
            account = _account(session, username, domain, lock=True)
            result = session.execute(
                delete(RosterEntry).where(
                    RosterEntry.account_id == account.id, RosterEntry.jid == jid
                )
            )
            if result.rowcount == 0:
                return None
            account.roster_version += 1
            return account.roster_version

    # Per-user key/value stores, each named by its caller ("vcard", "private"...)

    def get_value(self, username: str, domain: str, store: str, key: str) -> str | None:
        """The value of ``key`` in ``store``; None if absent (or no such
        account)."""
        with self._session(self._reads) as session:
            return session.scalar(
                select(UserValue.value).where(
                    UserValue.account_id == _account_id(username, domain),
                    UserValue.store == store,
                    UserValue.key == key,
                )
            )

    def set_value(
        self, username: str, domain: str, store: str, key: str, value: str | None
    ) -> None:
        """Set the value of ``key`` in ``store``, or delete it if ``value``
        is None."""
        with self._session(self._writes) as session:
            account = _account(session, username, domain, lock=True)
            row = session.get(UserValue, (account.id, store, key))
            if value is None:
                if row is not None:
                    session.delete(row)
            elif row is None:
                session.add(UserValue(account_id=account.id, store=store, key=key, value=value))
            else:
                row.value = value

    def get_values(self, username: str, domain: str, store: str) -> dict[str, str]:
        """All the values of ``store`` by key; empty if no such account."""
        with self._session(self._reads) as session:
            rows = session.execute(
                select(UserValue.key, UserValue.value).where(
                    UserValue.account_id == _account_id(username, domain),
                    UserValue.store == store,
                )
            )
            return dict(rows.all())

    def delete_values(self, username: str, domain: str, store: str) -> None:
        """Delete all the values of ``store`` (nothing if no such account)."""
        with self._session(self._writes) as session:
            session.execute(
                delete(UserValue).where(
                    UserValue.account_id == _account_id(username, domain),
                    UserValue.store == store,
                )
            )

    # Offline messages (RFC 6121 §8.5.2.2.1, XEP-0160)

    def store_offline(self, username: str, domain: str, stanza: str, limit: int) -> bool:
        """Keep the serialised ``stanza`` for the user; False (nothing
        stored) if the user already has ``limit`` messages or more."""
        with self._session(self._writes) as session:
            account = _account(session, username, domain, lock=True)
            count = session.scalar(
                select(func.count()).where(OfflineMessage.account_id == account.id)
            )
            if count >= limit:
                return False
            session.add(OfflineMessage(account_id=account.id, stanza=stanza))
            return True

    def take_offline(self, username: str, domain: str) -> list[str]:
        """Remove and return the user's messages, oldest first; empty if no
        such account."""
        with self._session(self._writes) as session:
            account_id = _account_id(username, domain)
            rows = session.execute(
                select(OfflineMessage.id, OfflineMessage.stanza)
                .where(OfflineMessage.account_id == account_id)
                .order_by(OfflineMessage.id)
                .with_for_update()
            ).all()
            session.execute(
                delete(OfflineMessage).where(OfflineMessage.id.in_([row.id for row in rows]))
            )
            return [row.stanza for row in rows]

    def total_offline(self) -> int:
        """How many messages are kept for all users."""
        with self._session(self._reads) as session:
            return session.scalar(select(func.count()).select_from(OfflineMessage))

    def count_offline(self, username: str, domain: str) -> int:
        """How many messages are kept for the user (0 if no such account)."""
        with self._session(self._reads) as session:
            return session.scalar(
                select(func.count()).where(
                    OfflineMessage.account_id == _account_id(username, domain)
                )
            )
