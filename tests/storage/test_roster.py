"""Contract of the ``roster`` store (xmppd.storage.kinds.RosterStore):
RFC 6121 §2 items with the §3 subscription states, versioned (§2.6)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from xmppd.storage import RosterFull, RosterItem, UserNotFound

from .conftest import KEYS


@pytest.fixture
def roster(store, alice):
    return store.open("roster")


def test_items_and_versions(roster):
    assert roster.get("alice", "example.org") == (0, [])

    bob = RosterItem("bob@example.net", "Bob", "to", groups=("Work", "Friends", "Work"))
    assert roster.set_item("alice", "example.org", bob) == 1
    stored_bob = RosterItem("bob@example.net", "Bob", "to", groups=("Friends", "Work"))
    assert roster.get_item("alice", "example.org", "bob@example.net") == stored_bob

    state = {"subscription": "both", "ask": True, "pending_in": True, "approved": True}
    bob = RosterItem("bob@example.net", groups=("Work", "Família ☃"), **state)
    assert roster.set_item("alice", "example.org", bob) == 2
    carol = RosterItem("carol@example.com", "Carol")
    assert roster.set_item("alice", "example.org", carol) == 3
    stored_bob = RosterItem("bob@example.net", groups=("Família ☃", "Work"), **state)
    assert roster.get("alice", "example.org") == (3, [stored_bob, carol])

    assert roster.remove_item("alice", "example.org", "bob@example.net") == 4
    assert roster.remove_item("alice", "example.org", "bob@example.net") is None
    assert roster.get_item("alice", "example.org", "bob@example.net") is None
    assert roster.get("alice", "example.org") == (4, [carol])


def test_per_account(store, roster):
    store.open("accounts").create("alice", "example.net", KEYS)
    roster.set_item("alice", "example.org", RosterItem("bob@example.com", "Bob"))
    assert roster.get("alice", "example.net") == (0, [])
    assert roster.get_item("alice", "example.net", "bob@example.com") is None
    assert roster.remove_item("alice", "example.net", "bob@example.com") is None


def test_missing_account(roster):
    item = RosterItem("bob@example.net")
    with pytest.raises(UserNotFound):
        roster.set_item("bob", "example.org", item)
    with pytest.raises(UserNotFound):
        roster.remove_item("bob", "example.org", item.jid)
    with pytest.raises(UserNotFound):
        roster.get("bob", "example.org")
    assert roster.get_item("bob", "example.org", item.jid) is None


def test_invalid_subscription(roster):
    with pytest.raises(ValueError):
        roster.set_item("alice", "example.org", RosterItem("bob@example.net", subscription="all"))


def test_maximum_size(roster):
    roster.set_item("alice", "example.org", RosterItem("a@example.net"), max_items=2)
    roster.set_item("alice", "example.org", RosterItem("b@example.net"), max_items=2)
    with pytest.raises(RosterFull):
        roster.set_item("alice", "example.org", RosterItem("c@example.net"), 2)
    assert roster.get_item("alice", "example.org", "c@example.net") is None

    renamed = RosterItem("b@example.net", "Bob")
    assert roster.set_item("alice", "example.org", renamed, max_items=2) == 3
    assert roster.get("alice", "example.org") == (3, [RosterItem("a@example.net"), renamed])
    assert roster.set_item("alice", "example.org", RosterItem("c@example.net")) == 4


def test_concurrent_writes_get_distinct_versions(roster):
    jids = [f"contact{n}@example.net" for n in range(40)]

    def add(jid):
        return roster.set_item("alice", "example.org", RosterItem(jid, groups=("G",)))

    with ThreadPoolExecutor(max_workers=8) as pool:
        versions = list(pool.map(add, jids))
    assert sorted(versions) == list(range(1, len(jids) + 1))
    version, items = roster.get("alice", "example.org")
    assert version == len(jids)
    assert [item.jid for item in items] == sorted(jids)
