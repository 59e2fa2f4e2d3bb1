"""Contract of the ``archive`` and ``room_archive`` stores
(xmppd.storage.kinds.ArchiveStore): archive ids given by the caller,
carrying their time, XEP-0313 queries with XEP-0059 paging.  Each test runs
on both kinds: the archives of accounts, and those of rooms (XEP-0313 §5),
where ``(username, domain)`` is a room's ``(name, service)``."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, event

from xmppd.storage import StorageError, UnknownArchiveId, UserNotFound
from xmppd.storage.kinds import (
    BULK,
    ID_TIME_SHIFT,
    ArchivedMessage,
    ArchiveRecord,
    Room,
    archive_id_time,
    first_archive_id,
    lane,
    methods,
)

from .conftest import KEYS

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
US = timedelta(microseconds=1)
LAST = (1 << ID_TIME_SHIFT) - 1  # the low bits of a microsecond's last id
WITH = ["bob@example.net/phone", "carol@example.com", "bob@example.net/laptop",
        "bob@example.net", "carol@example.com/x"]


def archive_id(n: int) -> str:
    """The id ``n`` after the first of T0 (n < 4096: in T0's microsecond)."""
    return str(first_archive_id(T0) + n)


def id_at(moment: datetime, low: int = 0) -> str:
    return str(first_archive_id(moment) | low)


OWNERS = {"archive": "accounts", "room_archive": "muc_rooms"}  # the tables of the owners


@pytest.fixture(params=sorted(OWNERS))
def kind(request):
    return request.param


@pytest.fixture
def owner(store, kind):
    """Makes ``(username, domain)`` own archives of the kind: an account, or
    a room of the rooms stores ``mam`` and ``muc`` (those of the archives of
    these names)."""

    def make(username: str, domain: str = "example.org") -> None:
        if kind == "archive":
            store.open("accounts").create(username, domain, KEYS)
        else:
            for name in ("mam", "muc"):
                store.open("rooms", name).create_room(domain, Room(username, {}, "", {}))

    return make


@pytest.fixture
def archive(store, kind, owner):
    """The archive ``mam`` of the kind; alice@example.org owns one."""
    owner("alice")
    return store.open(kind, "mam")


@pytest.fixture
def ids(archive):
    """Five messages, a minute apart from T0, with the correspondents of WITH."""
    ids = [id_at(T0 + timedelta(minutes=n), low=n) for n in range(len(WITH))]
    for n, jid in enumerate(WITH):
        archive.append("alice", "example.org", jid, f"s{n}", "in" if n % 2 else "out",
                       f"<message id='s{n}'/>", id=ids[n])
    return ids


def numbers(page):
    return [int(item.stanza_id[1:]) for item in page.items]


def test_append_and_read_back(archive, ids):
    page = archive.find("alice", "example.org")
    assert page.items[1] == ArchivedMessage(ids[1], "carol@example.com", "s1",
                                            T0 + timedelta(minutes=1), "in",
                                            "<message id='s1'/>")
    assert numbers(page) == [0, 1, 2, 3, 4]
    assert (page.first, page.last, page.complete) == (ids[0], ids[4], True)
    assert len(set(ids)) == 5


def test_the_time_is_the_ids_in_utc(archive):
    paris = timezone(timedelta(hours=1))
    archive.append("alice", "example.org", "bob@example.net", None, "in", "<message/>",
                   id=id_at(datetime(2026, 12, 1, 13, 0, 0, 7, tzinfo=paris), low=LAST))
    [item] = archive.find("alice", "example.org").items
    assert item.timestamp == T0 + 7 * US and item.timestamp.utcoffset() == timedelta(0)


def test_archive_id_time_round_trip():
    for moment in (T0, T0 + 999_999 * US, datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc)):
        first = first_archive_id(moment)
        assert archive_id_time(str(first)) == moment
        assert archive_id_time(str(first + LAST)) == moment
        assert archive_id_time(str(first + LAST + 1)) == moment + US
    assert first_archive_id(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc)) == 4096
    assert first_archive_id(T0) == 1_796_126_400_000_000 << 12
    assert first_archive_id(T0.astimezone(timezone(timedelta(hours=-5)))) == first_archive_id(T0)
    # The largest id (2**63 - 1), its time the last the ids can carry.
    assert archive_id_time(str(2**63 - 1)) == datetime(2041, 5, 10, 11, 56, 53, 685247,
                                                       tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        first_archive_id(datetime(2026, 12, 1))


def test_time_range_is_inclusive(archive, ids):
    page = archive.find("alice", "example.org", start=T0 + timedelta(minutes=1),
                        end=T0 + timedelta(minutes=3))
    assert numbers(page) == [1, 2, 3]
    paris = timezone(timedelta(hours=1))
    assert numbers(archive.find("alice", "example.org",
                                start=(T0 + timedelta(minutes=3)).astimezone(paris))) == [3, 4]
    assert numbers(archive.find("alice", "example.org", end=T0 + timedelta(minutes=1) - US)) == [0]
    with pytest.raises(ValueError):
        archive.find("alice", "example.org", start=datetime(2026, 12, 1))


def edges(archive) -> list[str]:
    """Messages in the last id of T0's microsecond, in the first and last
    ids of the next one, and in the first id of the one after."""
    ids = [id_at(T0, LAST), id_at(T0 + US), id_at(T0 + US, LAST), id_at(T0 + 2 * US)]
    archive.append_many([record("alice", archive_id) for archive_id in ids])
    return ids


def test_time_range_is_inclusive_to_the_microsecond(archive):
    ids = edges(archive)

    def found(**bounds):
        return [item.id for item in archive.find("alice", "example.org", **bounds).items]

    assert found(start=T0 + US, end=T0 + US) == ids[1:3]
    assert found(start=T0, end=T0) == ids[:1]
    assert found(end=T0 + US) == ids[:3]
    assert found(start=T0 + US) == ids[1:]
    assert found(start=T0 + 2 * US) == ids[3:]
    assert found(start=T0 + 3 * US) == found(end=T0 - US) == []
    assert archive.find("alice", "example.org", start=T0 + US, end=T0 + US,
                        count=True).count == 2


def test_time_range_beyond_the_ids(archive):
    ids = edges(archive)
    earliest = datetime.min.replace(tzinfo=timezone.utc)
    latest = datetime.max.replace(tzinfo=timezone.utc)
    for start, end, expected in ((earliest, latest, ids), (None, latest, ids),
                                 (earliest, None, ids), (latest, None, []),
                                 (None, earliest, []), (T0 + US, latest, ids[1:])):
        page = archive.find("alice", "example.org", start=start, end=end, count=True)
        assert ([item.id for item in page.items], page.count) == (expected, len(expected))


def test_with_bare_jid_matches_its_full_jids(archive, ids):
    assert numbers(archive.find("alice", "example.org", with_jid="bob@example.net")) == [0, 2, 3]
    assert numbers(archive.find("alice", "example.org",
                                with_jid="bob@example.net/laptop")) == [2]
    assert numbers(archive.find("alice", "example.org", with_jid="carol@example.com")) == [1, 4]
    assert numbers(archive.find("alice", "example.org", with_jid="dave@example.com")) == []


def test_paging_forward(archive, ids):
    page = archive.find("alice", "example.org", limit=2)
    assert (numbers(page), page.first, page.last, page.complete) == ([0, 1], ids[0], ids[1], False)
    page = archive.find("alice", "example.org", after=page.last, limit=2)
    assert (numbers(page), page.complete) == ([2, 3], False)
    page = archive.find("alice", "example.org", after=page.last, limit=2)
    assert (numbers(page), page.complete) == ([4], True)
    page = archive.find("alice", "example.org", after=page.last, limit=2)
    assert (page.items, page.first, page.last, page.complete) == ([], None, None, True)


def test_paging_backward_from_the_last_page(archive, ids):
    page = archive.find("alice", "example.org", before="", limit=2)
    assert (numbers(page), page.first, page.last, page.complete) == ([3, 4], ids[3], ids[4], False)
    page = archive.find("alice", "example.org", before=page.first, limit=2)
    assert (numbers(page), page.complete) == ([1, 2], False)
    page = archive.find("alice", "example.org", before=page.first, limit=2)
    assert (numbers(page), page.complete) == ([0], True)


def test_paging_within_a_filter(archive, ids):
    page = archive.find("alice", "example.org", with_jid="bob@example.net", limit=2)
    assert (numbers(page), page.complete) == ([0, 2], False)
    page = archive.find("alice", "example.org", with_jid="bob@example.net", after=page.last)
    assert (numbers(page), page.complete) == ([3], True)


def test_empty_page_counts_only(archive, ids):
    page = archive.find("alice", "example.org", limit=0)
    assert (page.items, page.complete) == ([], False)


@pytest.mark.parametrize("paging", ["after", "before", "after_id", "before_id"])
def test_unknown_id(owner, archive, ids, paging):
    with pytest.raises(UnknownArchiveId):
        archive.find("alice", "example.org", **{paging: "not-an-id"})
    with pytest.raises(UnknownArchiveId):
        archive.find("alice", "example.org", **{paging: str(int(ids[-1]) + 1000)})
    owner("bob")
    with pytest.raises(UnknownArchiveId):  # an id of someone else's archive
        archive.find("bob", "example.org", **{paging: ids[0]})


def test_scoped_per_name_and_account(store, owner, kind, archive, ids):
    owner("bob")
    other = store.open(kind, "muc")
    other.append("alice", "example.org", "room@conference.example.org/bob", None, "in",
                 "<m/>", id=ids[0])  # ids are unique in a named archive only
    assert numbers(archive.find("alice", "example.org")) == [0, 1, 2, 3, 4]
    assert len(other.find("alice", "example.org").items) == 1
    assert archive.find("bob", "example.org").items == []


def test_delete_up_to_an_id(owner, archive, ids):
    owner("bob")
    archive.append("bob", "example.org", "alice@example.org", None, "in", "<m/>",
                   id=archive_id(-1))
    assert archive.delete_until(up_to=ids[1], username="alice", domain="example.org") == 2
    assert numbers(archive.find("alice", "example.org")) == [2, 3, 4]
    assert len(archive.find("bob", "example.org").items) == 1


def test_retention_deletes_older_messages_of_everyone(store, owner, kind, archive, ids):
    owner("bob")
    archive.append("bob", "example.org", "alice@example.org", None, "in", "<m/>",
                   id=archive_id(5))
    other = store.open(kind, "muc")
    other.append("alice", "example.org", "room@conference.example.org", None, "in", "<m/>",
                 id=archive_id(6))
    assert archive.delete_until(before=T0 + timedelta(minutes=2)) == 3
    assert numbers(archive.find("alice", "example.org")) == [2, 3, 4]
    assert archive.find("bob", "example.org").items == []
    assert len(other.find("alice", "example.org").items) == 1


def test_retention_by_the_time_of_the_ids(archive):
    ids = edges(archive)
    assert archive.delete_until(before=datetime.min.replace(tzinfo=timezone.utc)) == 0
    assert archive.delete_until(before=T0) == 0
    assert archive.delete_until(before=T0 + US) == 1  # T0's last id, not the next microsecond's
    assert [item.id for item in archive.find("alice", "example.org").items] == ids[1:]
    assert archive.delete_until(before=T0 + 2 * US, username="alice", domain="example.org") == 2
    assert archive.delete_until(before=datetime.max.replace(tzinfo=timezone.utc)) == 1
    with pytest.raises(ValueError):
        archive.delete_until(before=datetime(2026, 12, 1))


def test_delete_needs_a_bound(archive, ids):
    with pytest.raises(ValueError):
        archive.delete_until(username="alice", domain="example.org")
    assert len(archive.find("alice", "example.org").items) == 5


def test_missing_account(archive):
    with pytest.raises(UserNotFound):
        archive.append("bob", "example.org", "alice@example.org", None, "in", "<m/>", id="1")
    assert archive.find("bob", "example.org").items == []


def test_invalid_direction(archive):
    with pytest.raises(ValueError):
        archive.append("alice", "example.org", "bob@example.net", None, "sideways", "<m/>",
                       id="1")


def test_writes_are_bulk(kind):
    assert {name for name, method in methods(kind).items() if lane(method) == BULK} == {
        "append", "append_many", "trim", "delete_until"}


# Archive ids given by the caller


def test_caller_ids_order_the_archive(archive):
    for n in (3, 1, 2):  # not stored in their order
        archive.append("alice", "example.org", "bob@example.net", f"s{n}", "in", "<m/>",
                       id=archive_id(n))
    page = archive.find("alice", "example.org")
    assert [item.id for item in page.items] == [archive_id(1), archive_id(2), archive_id(3)]
    assert numbers(page) == [1, 2, 3]
    assert numbers(archive.find("alice", "example.org", before="", limit=1)) == [3]
    assert numbers(archive.find("alice", "example.org", after=archive_id(1))) == [2, 3]


def test_largest_id(archive):
    archive.append("alice", "example.org", "bob@example.net", None, "in", "<m/>",
                   id=str(2**63 - 1))
    [item] = archive.find("alice", "example.org").items
    assert (item.id, item.timestamp) == (str(2**63 - 1), archive_id_time(str(2**63 - 1)))


@pytest.mark.parametrize("bad", ["0", "-1", "+1", "007", "1.0", " 1", "", "x1", "\u0661",
                                 str(2**63)])
def test_invalid_ids(archive, bad):
    with pytest.raises(ValueError):
        archive.append("alice", "example.org", "bob@example.net", None, "in", "<m/>", id=bad)
    assert archive.find("alice", "example.org").items == []


def test_an_id_is_unique_in_its_named_archive(store, owner, kind, archive, ids):
    owner("bob")
    with pytest.raises(StorageError):
        archive.append("bob", "example.org", "alice@example.org", None, "in", "<m/>",
                       id=ids[0])
    with pytest.raises(StorageError):  # the whole batch fails
        archive.append_many([record("bob", archive_id(10)), record("bob", ids[1])])
    assert archive.find("bob", "example.org").items == []
    store.open(kind, "muc").append("bob", "example.org", "alice@example.org", None,
                                        "in", "<m/>", id=ids[0])


def record(username: str, id: str, with_jid: str = "carol@example.com") -> ArchiveRecord:
    return ArchiveRecord(username, "example.org", id, with_jid, f"{username}-{id}", "out",
                         f"<message id='{id}'/>")


def test_append_many_skips_missing_accounts(owner, archive):
    owner("bob")
    records = [record("alice", archive_id(1)), record("nobody", archive_id(2)),
               record("bob", archive_id(3)), record("alice", archive_id(4))]
    assert archive.append_many(records) == [True, False, True, True]
    assert [item.id for item in archive.find("alice", "example.org").items] == [
        archive_id(1), archive_id(4)]
    [item] = archive.find("bob", "example.org").items
    assert item == ArchivedMessage(archive_id(3), "carol@example.com", f"bob-{archive_id(3)}",
                                   T0, "out", f"<message id='{archive_id(3)}'/>")
    assert archive.append_many([]) == []
    assert archive.append_many([record("nobody", archive_id(5))]) == [False]


def test_append_many_checks_every_record_first(archive):
    with pytest.raises(ValueError):
        archive.append_many([record("alice", archive_id(1)), record("alice", "007")])
    assert archive.find("alice", "example.org").items == []


def test_append_many_looks_each_account_up_once(backend, owner, kind, archive):
    """One lookup of the owners and one statement for the rows, INSERT
    (SQLite) or COPY (PostgreSQL: psycopg's, unseen by SQLAlchemy)."""
    owner("bob")
    statements = []

    def executed(connection, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    records = [record(("alice", "bob", "nobody")[n % 3], archive_id(n)) for n in range(30)]
    event.listen(Engine, "before_cursor_execute", executed)
    try:
        assert archive.append_many(records) == [n % 3 != 2 for n in range(30)]
    finally:
        event.remove(Engine, "before_cursor_execute", executed)
    assert sum(OWNERS[kind] in statement for statement in statements) == 1
    inserts = sum(statement.lstrip().startswith("INSERT") for statement in statements)
    assert inserts == (1 if backend.name == "sqlite" else 0)
    assert [item.id for item in archive.find("bob", "example.org").items] == [
        archive_id(n) for n in range(30) if n % 3 == 1]


def test_append_many_keeps_any_text(archive):
    """Tabs, line ends, backslashes and other scripts arrive as written (a
    COPY's rows escape them)."""
    xml = "<message id='a\\b'><body>\tone\\two\r\nthree \\N é 中 😀</body></message>"
    record = ArchiveRecord("alice", "example.org", archive_id(5), "bob@example.com/a\\b\t",
                           None, "in", xml)
    assert archive.append_many([record]) == [True]
    [item] = archive.find("alice", "example.org").items
    assert (item.xml, item.with_jid, item.stanza_id) == (xml, record.with_jid, None)


def test_last_id(store, owner, kind, archive):
    assert archive.last_id() is None
    owner("bob")
    archive.append_many([record("bob", archive_id(7)), record("alice", archive_id(3))])
    store.open(kind, "muc").append_many([record("alice", archive_id(9))])
    assert archive.last_id() == archive_id(7)
    assert store.open(kind, "other").last_id() is None


# Filters of XEP-0313 §4.1.3 and counts


def test_ids_filter(owner, archive, ids):
    assert numbers(archive.find("alice", "example.org", ids=[ids[3], ids[1]])) == [1, 3]
    assert numbers(archive.find("alice", "example.org", ids=[ids[1], ids[2], ids[3]],
                                with_jid="bob@example.net")) == [2, 3]
    page = archive.find("alice", "example.org", ids=ids[1:], limit=2)
    assert (numbers(page), page.complete) == ([1, 2], False)
    page = archive.find("alice", "example.org", ids=ids[1:], after=page.last, limit=2)
    assert (numbers(page), page.complete) == ([3, 4], True)
    assert archive.find("alice", "example.org", ids=[]).items == []
    with pytest.raises(UnknownArchiveId):
        archive.find("alice", "example.org", ids=[ids[0], archive_id(99)])
    owner("bob")
    with pytest.raises(UnknownArchiveId):  # an id of someone else's archive
        archive.find("bob", "example.org", ids=[ids[0]])


def test_after_id_and_before_id_filter(archive, ids):
    page = archive.find("alice", "example.org", after_id=ids[0], before_id=ids[4])
    assert (numbers(page), page.complete) == ([1, 2, 3], True)
    # Filters, not paging: the first page of what they let through...
    page = archive.find("alice", "example.org", before_id=ids[4], limit=2)
    assert (numbers(page), page.complete) == ([0, 1], False)
    # ... or the last, with paging backward within them.
    page = archive.find("alice", "example.org", after_id=ids[0], before="", limit=2)
    assert (numbers(page), page.complete) == ([3, 4], False)
    page = archive.find("alice", "example.org", after_id=ids[0], before=page.first, limit=2)
    assert (numbers(page), page.complete) == ([1, 2], True)
    assert numbers(archive.find("alice", "example.org", after_id=ids[1],
                                with_jid="bob@example.net")) == [2, 3]
    assert archive.find("alice", "example.org", after_id=ids[4]).items == []


def test_count(archive, ids):
    assert archive.find("alice", "example.org").count is None
    page = archive.find("alice", "example.org", limit=2, count=True)
    assert (numbers(page), page.count) == ([0, 1], 5)
    page = archive.find("alice", "example.org", after=page.last, limit=2, count=True)
    assert (numbers(page), page.count) == ([2, 3], 5)  # paging leaves the count alone
    assert archive.find("alice", "example.org", limit=0, count=True).count == 5
    assert archive.find("alice", "example.org", with_jid="bob@example.net", count=True,
                        limit=1).count == 3
    assert archive.find("alice", "example.org", with_jid="bob@example.net/laptop",
                        count=True).count == 1
    assert archive.find("alice", "example.org", start=T0 + timedelta(minutes=1),
                        end=T0 + timedelta(minutes=3), count=True).count == 3
    assert archive.find("alice", "example.org", after_id=ids[2], count=True).count == 2
    assert archive.find("alice", "example.org", ids=ids[:2], count=True).count == 2
    assert archive.find("alice", "example.org", with_jid="dave@example.com",
                        count=True).count == 0
    assert archive.find("nobody", "example.org", count=True).count == 0


# Metadata (XEP-0313 §5) and quotas


def test_bounds(store, owner, kind, archive):
    assert archive.bounds("alice", "example.org") == (None, None)
    assert archive.bounds("nobody", "example.org") == (None, None)
    owner("bob")
    archive.append_many([record("bob", archive_id(1)), record("alice", archive_id(2)),
                         record("alice", archive_id(3)), record("bob", archive_id(4))])
    store.open(kind, "muc").append_many([record("alice", archive_id(9))])
    first, last = archive.bounds("alice", "example.org")
    assert (first.id, last.id) == (archive_id(2), archive_id(3))
    assert first == archive.find("alice", "example.org").items[0]
    archive.trim("alice", "example.org", 1)
    first, last = archive.bounds("alice", "example.org")
    assert first == last == archive.find("alice", "example.org").items[0]


def test_replace_keeps_the_id_and_changes_only_that_message(store, kind, owner, archive, ids):
    owner("bob")
    archive.append("bob", "example.org", "carol@example.com", "s9", "in", "<message id='s9'/>",
                   id=archive_id(9999))
    assert archive.replace("alice", "example.org", ids[1], "<message id='tombstone'/>")
    page = archive.find("alice", "example.org")
    assert [item.xml for item in page.items][:3] == [
        "<message id='s0'/>", "<message id='tombstone'/>", "<message id='s2'/>"]
    assert page.items[1].id == ids[1] and page.items[1].stanza_id == "s1"
    assert not archive.replace("bob", "example.org", ids[1], "<message/>")  # alice's
    assert not archive.replace("alice", "example.org", "0", "<message/>")
    assert not archive.replace("alice", "example.org", "not-an-id", "<message/>")
    assert not store.open(kind, "muc").replace("alice", "example.org", ids[1], "<message/>")
    assert archive.find("bob", "example.org").items[0].xml == "<message id='s9'/>"


def test_trim_keeps_the_newest(store, owner, kind, archive, ids):
    owner("bob")
    archive.append_many([record("bob", archive_id(-1))])
    store.open(kind, "muc").append_many([record("alice", archive_id(-2))])
    assert archive.trim("alice", "example.org", 2) == 3
    assert numbers(archive.find("alice", "example.org")) == [3, 4]
    assert archive.trim("alice", "example.org", 2) == 0
    assert archive.trim("alice", "example.org", 5) == 0
    assert archive.trim("alice", "example.org", 0) == 2
    assert archive.find("alice", "example.org").items == []
    assert len(archive.find("bob", "example.org").items) == 1
    assert len(store.open(kind, "muc").find("alice", "example.org").items) == 1
    assert archive.trim("nobody", "example.org", 0) == 0
    with pytest.raises(ValueError):
        archive.trim("bob", "example.org", -1)


# Archives of rooms (XEP-0313 §5)


def test_a_room_archive_is_of_the_rooms_store_of_its_name(store):
    service = "conference.example.org"
    store.open("rooms", "muc").create_room(service, Room("lobby", {}, "", {}))
    store.open("rooms", "other").create_room(service, Room("cellar", {}, "", {}))
    store.open("accounts").create("cellar", service, KEYS)  # an account is no room
    archive = store.open("room_archive", "muc")
    archive.append("lobby", service, f"lobby@{service}/alice", None, "in", "<m/>", id="1")
    for username, domain in (("cellar", service), ("lobby", "conference.example.net"),
                             ("nobody", service)):
        with pytest.raises(UserNotFound):
            archive.append(username, domain, f"{username}@{domain}/alice", None, "in", "<m/>",
                           id="2")
        assert archive.find(username, domain, count=True).count == 0
    with pytest.raises(UserNotFound):
        store.open("room_archive", "other").append("lobby", service, "x@y/z", None, "in",
                                                   "<m/>", id="3")
    assert archive.append_many([ArchiveRecord("cellar", service, "4", "x@y", None, "in", "<m/>"),
                                ArchiveRecord("lobby", service, "5", "x@y", None, "in", "<m/>")]
                               ) == [False, True]
    assert [item.id for item in archive.find("lobby", service).items] == ["1", "5"]
    assert store.open("archive", "muc").find("cellar", service).items == []


def test_remove_deletes_only_that_message_of_that_owner(store, kind, owner, archive, ids):
    owner("bob")
    archive.append("bob", "example.org", "carol@example.com", "s9", "in", "<message id='s9'/>",
                   id=archive_id(9999))
    assert not archive.remove("bob", "example.org", ids[1])  # alice's
    assert not store.open(kind, "muc").remove("alice", "example.org", ids[1])
    assert not archive.remove("alice", "example.org", "not-an-id")
    assert archive.remove("alice", "example.org", ids[1])
    assert not archive.remove("alice", "example.org", ids[1])
    assert ids[1] not in [item.id for item in archive.find("alice", "example.org").items]
    assert len(archive.find("alice", "example.org").items) == len(ids) - 1
    assert archive.find("bob", "example.org").items[0].xml == "<message id='s9'/>"
