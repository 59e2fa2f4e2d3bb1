"""The SQL message archives (:class:`xmppd.storage.kinds.ArchiveStore`,
XEP-0313): rows of ``archive_messages`` for accounts (the ``archive``
kind), of ``room_archive_messages`` for the rooms of multi-user chat
services (``room_archive``, XEP-0313 §5), keyed by the name of the archive
and the archive id the caller gave (as an integer), ordered by it and
filtered by time through it (the id carries the time)."""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from sqlalchemy import (ColumnElement, Text, bindparam, delete, false, func, select, true, tuple_,
                        update)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute

from . import StorageError, UnknownArchiveId, UserNotFound
from .kinds import (
    DIRECTIONS,
    ID_TIME_SHIFT,
    ArchivedMessage,
    ArchivePage,
    ArchiveRecord,
    archive_id_time,
    first_archive_id,
)
from .models import Account, ArchivedColumns, ArchiveEntry, MucRoomRow, RoomArchiveEntry

MAX_ID = 2**63 - 1


def _number(archive_id: str) -> int | None:
    """The integer an archive id writes, None unless it is one from 1 to
    MAX_ID in decimal digits without a leading zero."""
    if archive_id.isascii() and archive_id.isdigit() and archive_id[0] != "0":
        number = int(archive_id)
        if number <= MAX_ID:
            return number
    return None


def _row_id(archive_id: str) -> int:
    number = _number(archive_id)
    if number is None:
        raise UnknownArchiveId(f"no archived message {archive_id!r}")
    return number


def _ids_within(entry_id: InstrumentedAttribute[int], low: int | None,
                high: int | None) -> list[ColumnElement[bool]]:
    """The conditions of the ids (the column ``entry_id``) from ``low`` on
    and below ``high`` (None: no bound); bounds beyond the ids' range do
    not reach the database, whose integers may not hold them."""
    conditions = []
    if low is not None and low > 1:
        conditions.append(entry_id >= low if low <= MAX_ID else false())
    if high is not None and high <= MAX_ID:
        conditions.append(entry_id < high if high > 1 else false())
    return conditions


@dataclass(frozen=True, eq=False)
class Owners:
    """Whose archives a table holds.  ``entries`` is the model of its rows,
    ``owner_id`` their column of their owner's ``id``; the owner
    ``(username, domain)`` is the row whose columns ``username`` and
    ``domain`` hold them, among those where ``scope(name)`` holds for the
    archive named ``name``.  ``what`` names an owner in errors."""

    entries: type[ArchivedColumns]
    owner_id: InstrumentedAttribute[int]
    id: InstrumentedAttribute[int]
    username: InstrumentedAttribute[str]
    domain: InstrumentedAttribute[str]
    scope: Callable[[str], ColumnElement[bool]]
    what: str


ACCOUNTS = Owners(ArchiveEntry, ArchiveEntry.account_id, Account.id, Account.username,
                  Account.domain, lambda name: true(), "account")
# The rooms (name, service) of the rooms store of the archive's name.
ROOMS = Owners(RoomArchiveEntry, RoomArchiveEntry.room_id, MucRoomRow.id, MucRoomRow.name,
               MucRoomRow.service, lambda name: MucRoomRow.store == name, "room")


# The columns of a new row (its owner, then those of _row), written by the
# driver: psycopg 3's COPY (a fifth of the CPU of its executemany per row),
# else the driver's executemany (SQLAlchemy's insert() with a dict per row
# costs up to twice the CPU per row).
_COLUMNS = ("store", "id", "with_bare", "with_resource", "stanza_id", "direction", "stanza")
_MARKERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # by DBAPI paramstyle


@cache
def _insert(owners: Owners, paramstyle: str) -> str:
    """The INSERT of a row of the table of ``owners``, in the placeholders
    of the driver's paramstyle (qmark for sqlite3, format for psycopg)."""
    columns = (owners.owner_id.key, *_COLUMNS)
    return (f"INSERT INTO {owners.entries.__tablename__} ({', '.join(columns)}) "
            f"VALUES ({', '.join([_MARKERS[paramstyle]] * len(columns))})")


@cache
def _copy(owners: Owners) -> str:
    """The COPY of rows into the table of ``owners`` (PostgreSQL)."""
    return (f"COPY {owners.entries.__tablename__} "
            f"({', '.join((owners.owner_id.key, *_COLUMNS))}) FROM STDIN")


def _write_rows(connection, owners: Owners, rows: list[tuple]) -> None:
    """Insert ``rows`` in the transaction of ``connection`` (SQLAlchemy's)."""
    if connection.dialect.driver == "psycopg":
        try:
            with connection.connection.driver_connection.cursor() as cursor, \
                    cursor.copy(_copy(owners)) as copy:
                for row in rows:
                    copy.write_row(row)
        except connection.dialect.loaded_dbapi.Error as exc:  # not SQLAlchemy's: not wrapped
            raise StorageError(str(exc)) from exc
    else:
        connection.exec_driver_sql(_insert(owners, connection.dialect.paramstyle), rows)


def _row(record: ArchiveRecord, store: str) -> tuple:
    """The columns of a new row (_COLUMNS) but its owner; ValueError if
    the record is invalid."""
    number = _number(record.id)
    if number is None:
        raise ValueError(f"an archive id is a decimal integer from 1 to {MAX_ID}, "
                         f"not {record.id!r}")
    if record.direction not in DIRECTIONS:
        raise ValueError(f"invalid direction {record.direction!r}; expected one of {DIRECTIONS}")
    bare, _, resource = record.with_jid.partition("/")
    return (store, number, bare, resource, record.stanza_id, record.direction, record.xml)


def _named(owners: Owners, names: list[tuple[str, str]], dialect: str) -> ColumnElement[bool]:
    """The condition of the owners whose ``(username, domain)`` is in
    ``names``: on PostgreSQL through two arrays, one statement text for any
    number of names (psycopg parses each new text: an ``IN`` list of its
    own per batch cost more than the batch's rows)."""
    named = tuple_(owners.username, owners.domain)
    if dialect != "postgresql":
        return named.in_(names)
    pairs = func.unnest(
        bindparam("usernames", [username for username, _ in names], ARRAY(Text)),
        bindparam("domains", [domain for _, domain in names], ARRAY(Text)),
    ).table_valued("username", "domain").render_derived()
    return named.in_(select(pairs.c.username, pairs.c.domain))


def _message(row) -> ArchivedMessage:
    with_jid = f"{row.with_bare}/{row.with_resource}" if row.with_resource else row.with_bare
    archive_id = str(row.id)
    return ArchivedMessage(archive_id, with_jid, row.stanza_id, archive_id_time(archive_id),
                           row.direction, row.stanza)


class SQLArchive:
    """The archive named ``name`` of every account, or, with ``owners``
    ROOMS, of every room of the rooms store of that name (XEP-0313 §5),
    whose ``(username, domain)`` is ``(room name, service)``."""

    def __init__(self, database, name: str, owners: Owners = ACCOUNTS) -> None:
        self._db = database
        self.name = name
        self._owners = owners
        self._entries = entry = owners.entries
        # The columns of an ArchivedMessage: rows, not ORM objects, which cost more.
        self._message_rows = select(entry.id, entry.with_bare, entry.with_resource,
                                    entry.stanza_id, entry.direction, entry.stanza)

    def _owner(self, username: str, domain: str):
        """The query of the id of the owner ``(username, domain)``."""
        owners = self._owners
        return select(owners.id).where(
            owners.scope(self.name), owners.username == username, owners.domain == domain)

    def _of(self, owner) -> ColumnElement[bool]:
        """The rows of the owner ``owner`` (an id or a subquery)."""
        return (self._owners.owner_id == owner) & (self._entries.store == self.name)

    def append(self, username: str, domain: str, with_jid: str, stanza_id: str | None,
               direction: str, xml: str, *, id: str) -> None:
        record = ArchiveRecord(username, domain, id, with_jid, stanza_id, direction, xml)
        if not self.append_many([record])[0]:
            raise UserNotFound(f"no {self._owners.what} {username}@{domain}")

    def append_many(self, entries: Sequence[ArchiveRecord]) -> list[bool]:
        rows = [_row(entry, self.name) for entry in entries]
        users = [(entry.username, entry.domain) for entry in entries]
        if not users:
            return []
        owners = self._owners
        with self._db.writing() as session:
            connection = session.connection()
            # Shared locks: an owner cannot go before its rows are in.
            found = {(username, domain): owner for owner, username, domain in connection.execute(
                select(owners.id, owners.username, owners.domain)
                .where(owners.scope(self.name),
                       _named(owners, sorted(set(users)), connection.dialect.name))
                .order_by(owners.id)
                .with_for_update(read=True, key_share=True)).all()}
            kept = [(found[user], *row) for user, row in zip(users, rows) if user in found]
            if kept:
                _write_rows(connection, owners, kept)
            return [user in found for user in users]

    def last_id(self) -> str | None:
        entry = self._entries
        with self._db.reading() as session:
            top = session.scalar(select(func.max(entry.id)).where(entry.store == self.name))
        return None if top is None else str(top)

    def _check_known(self, session, owner: int | None, archive_ids: Iterable[str]) -> None:
        """UnknownArchiveId unless the owner's archive holds every id."""
        wanted = {archive_id: _row_id(archive_id) for archive_id in archive_ids}
        if not wanted:
            return
        entry = self._entries
        found = set() if owner is None else set(session.scalars(select(entry.id).where(
            self._of(owner), entry.id.in_(sorted(set(wanted.values()))))))
        for archive_id, number in wanted.items():
            if number not in found:
                raise UnknownArchiveId(f"no archived message {archive_id!r}")

    def find(self, username: str, domain: str, *, start: datetime | None = None,
             end: datetime | None = None, with_jid: str | None = None,
             ids: Sequence[str] | None = None, after_id: str | None = None,
             before_id: str | None = None, after: str | None = None,
             before: str | None = None, limit: int = 50, count: bool = False) -> ArchivePage:
        if limit < 0:
            raise ValueError(f"a page holds 0 messages or more, not {limit}")
        entry = self._entries
        with self._db.reading() as session:
            owner = session.scalar(self._owner(username, domain))
            self._check_known(session, owner, [
                *(archive_id for archive_id in (after_id, before_id) if archive_id is not None),
                *(archive_id for archive_id in (after, before) if archive_id),  # before="" too
                *(ids or ())])
            if owner is None:
                return ArchivePage([], None, None, True, 0 if count else None)
            conditions = [self._of(owner)]
            conditions += _ids_within(
                entry.id, None if start is None else first_archive_id(start),
                # The first id of the microsecond after end (end + 1 µs may overflow).
                None if end is None else first_archive_id(end) + (1 << ID_TIME_SHIFT))
            if with_jid is not None:
                bare, _, resource = with_jid.partition("/")
                conditions.append(entry.with_bare == bare)
                if resource:
                    conditions.append(entry.with_resource == resource)
            if ids is not None:
                conditions.append(entry.id.in_(sorted({_row_id(item) for item in ids})))
            if after_id is not None:
                conditions.append(entry.id > _row_id(after_id))
            if before_id is not None:
                conditions.append(entry.id < _row_id(before_id))
            total = session.scalar(select(func.count()).where(*conditions)) if count else None
            if after:
                conditions.append(entry.id > _row_id(after))
            if before:
                conditions.append(entry.id < _row_id(before))
            backward = before is not None
            order = entry.id.desc() if backward else entry.id
            items = [_message(row) for row in session.execute(
                self._message_rows.where(*conditions).order_by(order).limit(limit + 1))]
        complete = len(items) <= limit
        items = items[:limit]
        if backward:
            items.reverse()
        return ArchivePage(items, items[0].id if items else None,
                           items[-1].id if items else None, complete, total)

    def bounds(self, username: str, domain: str
               ) -> tuple[ArchivedMessage | None, ArchivedMessage | None]:
        owned = self._of(self._owner(username, domain).scalar_subquery())
        entry = self._entries
        with self._db.reading() as session:
            first, last = (
                session.execute(self._message_rows.where(owned).order_by(order).limit(1)).first()
                for order in (entry.id, entry.id.desc()))
            return (first and _message(first), last and _message(last))

    def replace(self, username: str, domain: str, archive_id: str, xml: str) -> bool:
        return self._one(username, domain, archive_id,
                         lambda entry: update(entry).values(stanza=xml))

    def remove(self, username: str, domain: str, archive_id: str) -> bool:
        return self._one(username, domain, archive_id, delete)

    def _one(self, username: str, domain: str, archive_id: str, statement) -> bool:
        """Run ``statement(entries)`` (an UPDATE or a DELETE) on the
        user's message ``archive_id``; whether there was one."""
        number = _number(archive_id)
        if number is None:
            return False
        owned = self._of(self._owner(username, domain).scalar_subquery())
        entry = self._entries
        with self._db.writing() as session:
            return session.execute(statement(entry).where(owned, entry.id == number)
                                   ).rowcount == 1

    def trim(self, username: str, domain: str, keep: int) -> int:
        if keep < 0:
            raise ValueError(f"keep 0 messages or more, not {keep}")
        owned = self._of(self._owner(username, domain).scalar_subquery())
        entry = self._entries
        with self._db.writing() as session:
            newest_gone = session.scalar(select(entry.id).where(owned)
                                         .order_by(entry.id.desc()).offset(keep).limit(1))
            if newest_gone is None:
                return 0
            return session.execute(
                delete(entry).where(owned, entry.id <= newest_gone)).rowcount

    def delete_until(self, *, up_to: str | None = None, before: datetime | None = None,
                     username: str | None = None, domain: str | None = None) -> int:
        if up_to is None and before is None:
            raise ValueError("delete up to an id or a time, not everything")
        if (username is None) != (domain is None):
            raise ValueError("a user is a username and a domain")
        entry = self._entries
        conditions = [entry.store == self.name]
        if username is not None:
            conditions.append(
                self._owners.owner_id == self._owner(username, domain).scalar_subquery())
        if up_to is not None:
            conditions.append(entry.id <= _row_id(up_to))
        if before is not None:
            conditions += _ids_within(entry.id, None, first_archive_id(before))
        with self._db.writing() as session:
            return session.execute(delete(entry).where(*conditions)).rowcount
