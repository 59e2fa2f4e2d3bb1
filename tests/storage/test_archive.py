"""Contract of the ``archive`` store (xmppd.storage.kinds.ArchiveStore):
XEP-0313 queries with XEP-0059 paging."""

from datetime import datetime, timedelta, timezone

import pytest

from xmppd.storage import UnknownArchiveId, UserNotFound
from xmppd.storage.kinds import ArchivedMessage

from .conftest import KEYS

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
WITH = ["bob@example.net/phone", "carol@example.com", "bob@example.net/laptop",
        "bob@example.net", "carol@example.com/x"]


@pytest.fixture
def archive(store, alice):
    return store.open("archive", "mam")


@pytest.fixture
def ids(archive):
    """Five messages, a minute apart, with the correspondents of WITH."""
    return [archive.append("alice", "example.org", jid, f"s{n}", T0 + timedelta(minutes=n),
                           "in" if n % 2 else "out", f"<message id='s{n}'/>")
            for n, jid in enumerate(WITH)]


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


def test_timestamps_in_any_zone_are_utc(archive):
    paris = timezone(timedelta(hours=1))
    archive.append("alice", "example.org", "bob@example.net", None,
                   datetime(2026, 12, 1, 13, 0, tzinfo=paris), "in", "<message/>")
    [item] = archive.find("alice", "example.org").items
    assert item.timestamp == T0 and item.timestamp.utcoffset() == timedelta(0)
    with pytest.raises(ValueError):
        archive.append("alice", "example.org", "bob@example.net", None,
                       datetime(2026, 12, 1), "in", "<message/>")


def test_time_range_is_inclusive(archive, ids):
    page = archive.find("alice", "example.org", start=T0 + timedelta(minutes=1),
                        end=T0 + timedelta(minutes=3))
    assert numbers(page) == [1, 2, 3]


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


@pytest.mark.parametrize("paging", ["after", "before"])
def test_unknown_id(store, archive, ids, paging):
    with pytest.raises(UnknownArchiveId):
        archive.find("alice", "example.org", **{paging: "not-an-id"})
    with pytest.raises(UnknownArchiveId):
        archive.find("alice", "example.org", **{paging: str(int(ids[-1]) + 1000)})
    store.open("accounts").create("bob", "example.org", KEYS)
    with pytest.raises(UnknownArchiveId):  # an id of someone else's archive
        archive.find("bob", "example.org", **{paging: ids[0]})


def test_scoped_per_name_and_account(store, archive, ids):
    store.open("accounts").create("bob", "example.org", KEYS)
    other = store.open("archive", "muc")
    other.append("alice", "example.org", "room@conference.example.org/bob", None, T0, "in", "<m/>")
    assert numbers(archive.find("alice", "example.org")) == [0, 1, 2, 3, 4]
    assert len(other.find("alice", "example.org").items) == 1
    assert archive.find("bob", "example.org").items == []


def test_delete_up_to_an_id(store, archive, ids):
    store.open("accounts").create("bob", "example.org", KEYS)
    archive.append("bob", "example.org", "alice@example.org", None, T0, "in", "<m/>")
    assert archive.delete_until(up_to=ids[1], username="alice", domain="example.org") == 2
    assert numbers(archive.find("alice", "example.org")) == [2, 3, 4]
    assert len(archive.find("bob", "example.org").items) == 1


def test_retention_deletes_older_messages_of_everyone(store, archive, ids):
    store.open("accounts").create("bob", "example.org", KEYS)
    archive.append("bob", "example.org", "alice@example.org", None, T0, "in", "<m/>")
    other = store.open("archive", "muc")
    other.append("alice", "example.org", "room@conference.example.org", None, T0, "in", "<m/>")
    assert archive.delete_until(before=T0 + timedelta(minutes=2)) == 3
    assert numbers(archive.find("alice", "example.org")) == [2, 3, 4]
    assert archive.find("bob", "example.org").items == []
    assert len(other.find("alice", "example.org").items) == 1


def test_delete_needs_a_bound(archive, ids):
    with pytest.raises(ValueError):
        archive.delete_until(username="alice", domain="example.org")
    assert len(archive.find("alice", "example.org").items) == 5


def test_missing_account(archive):
    with pytest.raises(UserNotFound):
        archive.append("bob", "example.org", "alice@example.org", None, T0, "in", "<m/>")
    assert archive.find("bob", "example.org").items == []


def test_invalid_direction(archive):
    with pytest.raises(ValueError):
        archive.append("alice", "example.org", "bob@example.net", None, T0, "sideways", "<m/>")
