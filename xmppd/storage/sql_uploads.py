"""The SQL uploads store (:class:`xmppd.storage.kinds.UploadStore`,
XEP-0363): the slots of HTTP upload services and the metadata of their
files in ``uploads``, one row per slot, which goes with its account.

A new slot is checked against the quotas in the transaction that adds it,
with the account's row locked (on PostgreSQL; SQLite writes one at a
time), so that concurrent requests of one account cannot together exceed
them.  Times are kept in UTC."""

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select, update

from . import QuotaExceeded
from .kinds import Upload
from .models import UPLOAD_ID_LENGTH, UPLOAD_NAME_LENGTH, Account, UploadRow
from .sql_pubsub import _read_utc, _utc
from .sql_stores import account, named

Row = UploadRow
DAY = timedelta(days=1)
_COLUMNS = (Row.id, Account.username, Account.domain, Row.filename, Row.size,
            Row.content_type, Row.created, Row.stored)


def _check(upload: Upload) -> None:
    if not 0 < len(upload.id) <= UPLOAD_ID_LENGTH:
        raise ValueError(f"an upload id has 1 to {UPLOAD_ID_LENGTH} characters")
    if not 0 < len(upload.filename) <= UPLOAD_NAME_LENGTH:
        raise ValueError(f"a file name has 1 to {UPLOAD_NAME_LENGTH} characters")
    if not 0 < len(upload.content_type) <= UPLOAD_NAME_LENGTH:
        raise ValueError(f"a content type has 1 to {UPLOAD_NAME_LENGTH} characters")
    if upload.size < 0:
        raise ValueError("an upload's size is not negative")


def _upload(row) -> Upload:
    return Upload(row.id, row.username, row.domain, row.filename, row.size,
                  row.content_type, _read_utc(row.created), row.stored)


def _counted(pending_since: datetime | None) -> ColumnElement[bool]:
    """The slots a quota counts: stored ones, and pending ones whose URL
    may still be used."""
    if pending_since is None:
        return Row.id == Row.id  # all of them
    return Row.stored.is_not(None) | (Row.created >= _utc(pending_since))


class SQLUploads:
    """The slots and file metadata of every upload service."""

    def __init__(self, database) -> None:
        self._db = database

    def add(self, upload: Upload, *, quota: int | None = None,
            daily_quota: int | None = None, pending_since: datetime | None = None) -> None:
        _check(upload)
        created = _utc(upload.created)
        with self._db.writing() as session:
            owner = account(session, upload.username, upload.domain, lock=True)
            counted = (Row.account_id == owner.id) & _counted(pending_since)
            if quota is not None:
                used = session.scalar(select(func.coalesce(func.sum(Row.size), 0))
                                      .where(counted))
                if used + upload.size > quota:
                    raise QuotaExceeded(f"{upload.username}@{upload.domain} would exceed "
                                        f"its quota of {quota} bytes", "quota")
            if daily_quota is not None:
                day = session.execute(select(Row.created, Row.size)
                                      .where(counted, Row.created > created - DAY)
                                      .order_by(Row.created)).all()
                excess = sum(size for _, size in day) + upload.size - daily_quota
                if excess > 0:
                    retry = None
                    if upload.size <= daily_quota:
                        for moment, size in day:
                            excess -= size
                            if excess <= 0:
                                retry = _read_utc(moment) + DAY
                                break
                    raise QuotaExceeded(f"{upload.username}@{upload.domain} would exceed "
                                        f"its daily quota of {daily_quota} bytes", "daily",
                                        retry)
            session.add(Row(id=upload.id, account_id=owner.id, filename=upload.filename,
                            size=upload.size, content_type=upload.content_type,
                            created=created, stored=upload.stored))

    def get(self, id: str) -> Upload | None:
        with self._db.reading() as session:
            row = session.execute(select(*_COLUMNS).join(Account, Row.account_id == Account.id)
                                  .where(Row.id == id)).first()
        return None if row is None else _upload(row)

    def mark_stored(self, id: str) -> bool:
        with self._db.writing() as session:
            return session.execute(update(Row).where(Row.id == id, Row.stored.is_(None))
                                   .values(stored=Row.size)).rowcount > 0

    def uploads(self, username: str, domain: str) -> list[Upload]:
        with self._db.reading() as session:
            rows = session.execute(select(*_COLUMNS).join(Account, Row.account_id == Account.id)
                                   .where(named(username, domain))
                                   .order_by(Row.created, Row.id)).all()
        return [_upload(row) for row in rows]

    def expired(self, domain: str, before: datetime, pending_before: datetime,
                limit: int) -> list[str]:
        with self._db.reading() as session:
            return list(session.scalars(
                select(Row.id).join(Account, Row.account_id == Account.id)
                .where(Account.domain == domain,
                       (Row.created < _utc(before))
                       | (Row.stored.is_(None) & (Row.created < _utc(pending_before))))
                .order_by(Row.created, Row.id).limit(limit)))

    def existing(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        with self._db.reading() as session:
            return set(session.scalars(select(Row.id).where(Row.id.in_(list(ids)))))

    def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with self._db.writing() as session:
            return session.execute(delete(Row).where(Row.id.in_(list(ids)))).rowcount
