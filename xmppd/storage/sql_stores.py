"""The SQL stores of accounts, rosters, key/value stores and offline
messages (the interfaces of :mod:`xmppd.storage.kinds`).

Each method is one unit of work in one transaction of the database
(:class:`xmppd.storage.sql.SQLStore`): ``reads`` see one snapshot,
``writes`` are serialised per account (see :mod:`xmppd.storage.sql`).
"""

from collections import Counter
from collections.abc import Mapping, Sequence

from sqlalchemy import ColumnElement, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from . import SUBSCRIPTIONS, RosterFull, RosterItem, ScramKeys, UserExists, UserNotFound
from .kinds import Appended
from .models import (
    HASH_NAMES,
    Account,
    HostValue,
    OfflineMessage,
    RosterEntry,
    RosterGroup,
    ScramCredential,
    UserValue,
)


def named(username: str, domain: str) -> ColumnElement[bool]:
    return (Account.username == username) & (Account.domain == domain)


def account(session: Session, username: str, domain: str, *, lock: bool = False) -> Account:
    """The account (its row locked with ``lock``); UserNotFound if none."""
    query = select(Account).where(named(username, domain))
    found = session.scalar(query.with_for_update() if lock else query)
    if found is None:
        raise UserNotFound(f"no account {username}@{domain}")
    return found


def put_value(session: Session, model, primary: tuple, column: str, value, /, **ids) -> None:
    """Set ``column`` of the row of ``model`` whose primary key is
    ``primary`` to ``value``, adding the row (its key columns ``ids``) if
    absent; None deletes the row."""
    row = session.get(model, primary)
    if value is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(model(**ids, **{column: value}))
    else:
        setattr(row, column, value)


def account_id(username: str, domain: str):
    """A scalar subquery: the id of the account, NULL if none."""
    return select(Account.id).where(named(username, domain)).scalar_subquery()


# The reads of every login, built once (see SQLStore.rows): an account's
# SCRAM verifiers (no row: no account; one row of NULLs: no verifier), a
# user's value and values in a key/value store.
_NAMED = named(bindparam("username"), bindparam("domain"))
_CREDENTIALS = (
    select(ScramCredential.hash_name, ScramCredential.salt, ScramCredential.iterations,
           ScramCredential.stored_key, ScramCredential.server_key)
    .select_from(Account)
    .outerjoin(ScramCredential, ScramCredential.account_id == Account.id)
    .where(_NAMED)
)
_VALUES = (
    select(UserValue.key, UserValue.value)
    .join(Account, UserValue.account_id == Account.id)
    .where(_NAMED, UserValue.store == bindparam("store"))
)
_VALUE = _VALUES.where(UserValue.key == bindparam("key"))
# The writes of a key/value store (a FAST token's count at every login).
_OWNER = select(Account.id).where(_NAMED).with_for_update()
_ONE_VALUE = ((UserValue.account_id == bindparam("owner"))
              & (UserValue.store == bindparam("store_name"))
              & (UserValue.key == bindparam("item_key")))
_UPDATE_VALUE = update(UserValue).where(_ONE_VALUE).values(value=bindparam("new_value"))
_INSERT_VALUE = insert(UserValue).values(
    account_id=bindparam("owner"), store=bindparam("store_name"), key=bindparam("item_key"),
    value=bindparam("new_value"))
_DELETE_VALUE = delete(UserValue).where(_ONE_VALUE)


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


class SQLAccounts:
    """:class:`~xmppd.storage.kinds.AccountStore` in the database."""

    def __init__(self, database) -> None:
        self._db = database

    def create(self, username: str, domain: str, keys: dict[str, ScramKeys]) -> None:
        credentials = _credential_rows(keys)
        with self._db.writing() as session:
            session.add(Account(username=username, domain=domain, credentials=credentials))
            try:
                session.flush()
            except IntegrityError as exc:
                raise UserExists(f"account {username}@{domain} already exists") from exc

    def set_credentials(self, username: str, domain: str, keys: dict[str, ScramKeys]) -> None:
        credentials = _credential_rows(keys)
        with self._db.writing() as session:
            account(session, username, domain, lock=True).credentials = credentials

    def add_credentials(self, username: str, domain: str, keys: dict[str, ScramKeys],
                        current: dict[str, ScramKeys]) -> bool:
        added = _credential_rows(keys)
        with self._db.writing() as session:
            try:
                found = account(session, username, domain, lock=True)
            except UserNotFound:
                return False
            rows = {row.hash_name: ScramKeys(row.salt, row.iterations, row.stored_key,
                                             row.server_key) for row in found.credentials}
            if rows != current or set(keys) & set(rows):
                return False
            found.credentials.extend(added)
            return True

    def get_credentials(self, username: str, domain: str) -> dict[str, ScramKeys] | None:
        rows = self._db.rows(_CREDENTIALS, username=username, domain=domain)
        if not rows:
            return None
        return {
            row.hash_name: ScramKeys(row.salt, row.iterations, row.stored_key, row.server_key)
            for row in rows if row.hash_name is not None
        }

    def delete(self, username: str, domain: str) -> None:
        with self._db.writing() as session:
            result = session.execute(delete(Account).where(named(username, domain)))
            if result.rowcount == 0:
                raise UserNotFound(f"no account {username}@{domain}")

    def exists(self, username: str, domain: str) -> bool:
        with self._db.reading() as session:
            return session.scalar(select(Account.id).where(named(username, domain))) is not None

    def list(self, domain: str | None = None) -> list[tuple[str, str]]:
        query = select(Account.username, Account.domain)
        if domain is not None:
            query = query.where(Account.domain == domain)
        with self._db.reading() as session:
            return sorted(tuple(row) for row in session.execute(query))


class SQLRosters:
    """:class:`~xmppd.storage.kinds.RosterStore` in the database."""

    def __init__(self, database) -> None:
        self._db = database

    def get(self, username: str, domain: str) -> tuple[int, list[RosterItem]]:
        with self._db.reading() as session:
            owner = account(session, username, domain)
            entries = session.scalars(
                select(RosterEntry)
                .where(RosterEntry.account_id == owner.id)
                .options(selectinload(RosterEntry.groups))
            )
            items = sorted(map(_roster_item, entries), key=lambda item: item.jid)
            return owner.roster_version, items

    def get_item(self, username: str, domain: str, jid: str) -> RosterItem | None:
        with self._db.reading() as session:
            entry = session.scalar(
                select(RosterEntry)
                .join(Account)
                .where(named(username, domain), RosterEntry.jid == jid)
                .options(selectinload(RosterEntry.groups))
            )
            return None if entry is None else _roster_item(entry)

    def set_item(
        self, username: str, domain: str, item: RosterItem, max_items: int | None = None
    ) -> int:
        if item.subscription not in SUBSCRIPTIONS:
            raise ValueError(f"invalid subscription state {item.subscription!r}")
        with self._db.writing() as session:
            owner = account(session, username, domain, lock=True)
            entry = session.scalar(
                select(RosterEntry).where(
                    RosterEntry.account_id == owner.id, RosterEntry.jid == item.jid
                )
            )
            if entry is None:
                if max_items is not None:
                    count = session.scalar(
                        select(func.count()).where(RosterEntry.account_id == owner.id)
                    )
                    if count >= max_items:
                        raise RosterFull(f"the roster of {username}@{domain} is full")
                entry = RosterEntry(account_id=owner.id, jid=item.jid)
                session.add(entry)
            entry.name = item.name
            entry.subscription = item.subscription
            entry.ask = item.ask
            entry.pending_in = item.pending_in
            entry.approved = item.approved
            entry.groups = [RosterGroup(name=name) for name in sorted(set(item.groups))]
            owner.roster_version += 1
            return owner.roster_version

    def remove_item(self, username: str, domain: str, jid: str) -> int | None:
        with self._db.writing() as session:
            owner = account(session, username, domain, lock=True)
            result = session.execute(
                delete(RosterEntry).where(RosterEntry.account_id == owner.id,
                                          RosterEntry.jid == jid)
            )
            if result.rowcount == 0:
                return None
            owner.roster_version += 1
            return owner.roster_version


class SQLKeyValues:
    """:class:`~xmppd.storage.kinds.KeyValueStore` named ``name`` in the
    database."""

    def __init__(self, database, name: str) -> None:
        self._db = database
        self.name = name

    def _of(self, username: str, domain: str) -> ColumnElement[bool]:
        return (UserValue.account_id == account_id(username, domain)) & (
            UserValue.store == self.name)

    def get(self, username: str, domain: str, key: str) -> str | None:
        rows = self._db.rows(_VALUE, username=username, domain=domain, store=self.name, key=key)
        return rows[0].value if rows else None

    def get_all(self, username: str, domain: str) -> dict[str, str]:
        return dict(self._db.rows(_VALUES, username=username, domain=domain, store=self.name))

    def set(self, username: str, domain: str, key: str, value: str) -> None:
        self.set_many(username, domain, {key: value})

    def set_many(self, username: str, domain: str, values: Mapping[str, str | None]) -> None:
        with self._db.writing() as session:
            connection = session.connection()
            owner = connection.execute(_OWNER, {"username": username, "domain": domain}).scalar()
            if owner is None:
                raise UserNotFound(f"no account {username}@{domain}")
            for key, value in values.items():  # in order: the item that fails is the one named
                row = {"owner": owner, "store_name": self.name, "item_key": key,
                       "new_value": value}
                if value is None:
                    connection.execute(_DELETE_VALUE, row)
                elif connection.execute(_UPDATE_VALUE, row).rowcount == 0:
                    connection.execute(_INSERT_VALUE, row)

    def delete(self, username: str, domain: str, key: str) -> None:
        with self._db.writing() as session:
            session.execute(delete(UserValue).where(self._of(username, domain),
                                                    UserValue.key == key))

    def delete_all(self, username: str, domain: str) -> None:
        with self._db.writing() as session:
            session.execute(delete(UserValue).where(self._of(username, domain)))


class _Taken(Exception):
    """The key of an insert exists."""


class SQLHostValues:
    """:class:`~xmppd.storage.kinds.HostValueStore` named ``name`` in the
    database."""

    def __init__(self, database, name: str) -> None:
        self._db = database
        self.name = name

    def _of(self, domain: str) -> ColumnElement[bool]:
        return (HostValue.store == self.name) & (HostValue.domain == domain)

    def get(self, domain: str, key: str) -> str | None:
        with self._db.reading() as session:
            return session.scalar(select(HostValue.value).where(
                self._of(domain), HostValue.key == key))

    def items(self, domain: str) -> dict[str, str]:
        with self._db.reading() as session:
            return dict(session.execute(
                select(HostValue.key, HostValue.value).where(self._of(domain))).all())

    def add(self, domain: str, key: str, value: str) -> bool:
        try:
            with self._db.writing() as session:
                session.add(HostValue(store=self.name, domain=domain, key=key, value=value))
                try:
                    session.flush()
                except IntegrityError:
                    raise _Taken from None
        except _Taken:
            return False
        return True

    def set(self, domain: str, key: str, value: str) -> None:
        with self._db.writing() as session:
            updated = session.execute(update(HostValue).where(
                self._of(domain), HostValue.key == key).values(value=value)).rowcount
            if not updated:
                session.add(HostValue(store=self.name, domain=domain, key=key, value=value))

    def take(self, domain: str, key: str) -> str | None:
        with self._db.writing() as session:
            return session.execute(delete(HostValue).where(
                self._of(domain), HostValue.key == key).returning(HostValue.value)).scalar()

    def delete(self, domain: str, key: str) -> bool:
        with self._db.writing() as session:
            return session.execute(delete(HostValue).where(
                self._of(domain), HostValue.key == key)).rowcount > 0


class SQLOffline:
    """:class:`~xmppd.storage.kinds.OfflineStore` in the database."""

    def __init__(self, database) -> None:
        self._db = database

    def append(self, username: str, domain: str, stanza: str, limit: int | None) -> bool:
        [appended] = self.append_many([(username, domain, stanza)], limit)
        if appended is Appended.NO_ACCOUNT:
            raise UserNotFound(f"no account {username}@{domain}")
        return appended is Appended.STORED

    def append_many(
        self, messages: Sequence[tuple[str, str, str]], limit: int | None
    ) -> list[Appended]:
        users = sorted({(username, domain) for username, domain, _ in messages})
        if not users:
            return []
        with self._db.writing() as session:
            # Locked in one order, so that concurrent batches cannot deadlock.
            rows = session.execute(
                select(Account.id, Account.username, Account.domain)
                .where(tuple_(Account.username, Account.domain).in_(users))
                .order_by(Account.id)
                .with_for_update()
            ).all()
            ids = {(row.username, row.domain): row.id for row in rows}
            counts = Counter(dict(session.execute(
                select(OfflineMessage.account_id, func.count())
                .where(OfflineMessage.account_id.in_(ids.values()))
                .group_by(OfflineMessage.account_id)
            ).all()))
            outcomes = []
            for username, domain, stanza in messages:
                owner = ids.get((username, domain))
                if owner is None:
                    outcomes.append(Appended.NO_ACCOUNT)
                elif limit is not None and counts[owner] >= limit:
                    outcomes.append(Appended.FULL)
                else:
                    session.add(OfflineMessage(account_id=owner, stanza=stanza))
                    counts[owner] += 1
                    outcomes.append(Appended.STORED)
            return outcomes

    def take_all(self, username: str, domain: str) -> list[str]:
        with self._db.writing() as session:
            rows = session.execute(
                select(OfflineMessage.id, OfflineMessage.stanza)
                .where(OfflineMessage.account_id == account_id(username, domain))
                .order_by(OfflineMessage.id)
                .with_for_update()
            ).all()
            session.execute(
                delete(OfflineMessage).where(OfflineMessage.id.in_([row.id for row in rows])))
            return [row.stanza for row in rows]

    def peek(self, username: str, domain: str) -> list[str]:
        with self._db.reading() as session:
            return list(session.scalars(
                select(OfflineMessage.stanza)
                .where(OfflineMessage.account_id == account_id(username, domain))
                .order_by(OfflineMessage.id)))

    def count(self, username: str, domain: str) -> int:
        with self._db.reading() as session:
            return session.scalar(
                select(func.count()).where(
                    OfflineMessage.account_id == account_id(username, domain)))

    def total(self) -> int:
        with self._db.reading() as session:
            return session.scalar(select(func.count()).select_from(OfflineMessage))
