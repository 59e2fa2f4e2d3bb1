"""The SQL message archive (:class:`xmppd.storage.kinds.ArchiveStore`,
XEP-0313): rows of ``archive_messages``, ordered by their id, which is also
the archive id (as text).  Timestamps are kept in UTC."""

from datetime import datetime, timezone

from sqlalchemy import ColumnElement, delete, select

from . import UnknownArchiveId
from .kinds import DIRECTIONS, ArchivedMessage, ArchivePage
from .models import ArchiveEntry
from .sql_stores import account, account_id


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"a timestamp needs a time zone: {moment!r}")
    return moment.astimezone(timezone.utc)


def _read_utc(moment: datetime) -> datetime:
    """SQLite gives back the UTC time without its zone; PostgreSQL with it."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _row_id(archive_id: str) -> int:
    try:
        return int(archive_id)
    except ValueError:
        raise UnknownArchiveId(f"no archived message {archive_id!r}") from None


def _message(entry: ArchiveEntry) -> ArchivedMessage:
    with_jid = f"{entry.with_bare}/{entry.with_resource}" if entry.with_resource else entry.with_bare
    return ArchivedMessage(str(entry.id), with_jid, entry.stanza_id, _read_utc(entry.stamp),
                           entry.direction, entry.stanza)


class SQLArchive:
    """The archive named ``name`` of every user."""

    def __init__(self, database, name: str) -> None:
        self._db = database
        self.name = name

    def _of(self, username: str, domain: str) -> ColumnElement[bool]:
        return (ArchiveEntry.account_id == account_id(username, domain)) & (
            ArchiveEntry.store == self.name)

    def append(self, username: str, domain: str, with_jid: str, stanza_id: str | None,
               timestamp: datetime, direction: str, xml: str) -> str:
        if direction not in DIRECTIONS:
            raise ValueError(f"invalid direction {direction!r}; expected one of {DIRECTIONS}")
        bare, _, resource = with_jid.partition("/")
        with self._db.writing() as session:
            entry = ArchiveEntry(
                account_id=account(session, username, domain).id, store=self.name,
                with_bare=bare, with_resource=resource, stanza_id=stanza_id,
                stamp=_utc(timestamp), direction=direction, stanza=xml)
            session.add(entry)
            session.flush()
            return str(entry.id)

    def find(self, username: str, domain: str, *, start: datetime | None = None,
             end: datetime | None = None, with_jid: str | None = None,
             after: str | None = None, before: str | None = None,
             limit: int = 50) -> ArchivePage:
        if limit < 0:
            raise ValueError(f"a page holds 0 messages or more, not {limit}")
        owned = self._of(username, domain)
        conditions = [owned]
        if start is not None:
            conditions.append(ArchiveEntry.stamp >= _utc(start))
        if end is not None:
            conditions.append(ArchiveEntry.stamp <= _utc(end))
        if with_jid is not None:
            bare, _, resource = with_jid.partition("/")
            conditions.append(ArchiveEntry.with_bare == bare)
            if resource:
                conditions.append(ArchiveEntry.with_resource == resource)
        with self._db.reading() as session:
            for archive_id, compare in ((after, ArchiveEntry.id.__gt__),
                                        (before, ArchiveEntry.id.__lt__)):
                if archive_id:  # before="" asks for the last page
                    row_id = _row_id(archive_id)
                    if session.scalar(select(ArchiveEntry.id).where(
                            owned, ArchiveEntry.id == row_id)) is None:
                        raise UnknownArchiveId(f"no archived message {archive_id!r}")
                    conditions.append(compare(row_id))
            backward = before is not None
            order = ArchiveEntry.id.desc() if backward else ArchiveEntry.id
            items = [_message(entry) for entry in session.scalars(
                select(ArchiveEntry).where(*conditions).order_by(order).limit(limit + 1))]
        complete = len(items) <= limit
        items = items[:limit]
        if backward:
            items.reverse()
        return ArchivePage(items, items[0].id if items else None,
                           items[-1].id if items else None, complete)

    def delete_until(self, *, up_to: str | None = None, before: datetime | None = None,
                     username: str | None = None, domain: str | None = None) -> int:
        if up_to is None and before is None:
            raise ValueError("delete up to an id or a time, not everything")
        if (username is None) != (domain is None):
            raise ValueError("a user is a username and a domain")
        conditions = [ArchiveEntry.store == self.name]
        if username is not None:
            conditions.append(ArchiveEntry.account_id == account_id(username, domain))
        if up_to is not None:
            conditions.append(ArchiveEntry.id <= _row_id(up_to))
        if before is not None:
            conditions.append(ArchiveEntry.stamp < _utc(before))
        with self._db.writing() as session:
            return session.execute(delete(ArchiveEntry).where(*conditions)).rowcount
