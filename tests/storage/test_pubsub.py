"""Contract of the ``pubsub`` store (xmppd.storage.kinds.PubSubStore):
nodes of XEP-0060 services with their items, affiliations and
subscriptions, scoped by store name and by service."""

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, event

from xmppd.storage import NodeExists, NodeNotFound, TooManyNodes, UserNotFound
from xmppd.storage.deferred import AsyncStore, immediate_runner
from xmppd.storage.kinds import (
    INTERACTIVE,
    PubSubItem,
    PubSubNode,
    PubSubSubscription,
    lane,
    methods,
)
from xmppd.storage.models import (
    PubSubAffiliationRow,
    PubSubItemRow,
    PubSubNodeRow,
    PubSubSubscriptionRow,
)

from .conftest import KEYS, row_count

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
ALICE = "alice@example.org"
MOOD = "http://jabber.org/protocol/mood"
TUNE = "http://jabber.org/protocol/tune"
CONFIG = {"pubsub#max_items": "1", "pubsub#access_model": "presence"}


def item(item_id: str, minute: int = 0, publisher: str = ALICE + "/phone") -> PubSubItem:
    return PubSubItem(item_id, publisher, f"<mood xmlns='{MOOD}'><{item_id}/></mood>",
                      T0 + timedelta(minutes=minute))


def ids(items) -> list[str]:
    return [found.id for found in items]


@pytest.fixture
def pep(store, alice):
    """The ``pep`` store, with the node MOOD of alice's service."""
    pep = store.open("pubsub", "pep")
    pep.create_node(ALICE, MOOD, CONFIG, account=alice)
    return pep


@pytest.fixture
def published(pep):
    """Five items, a to e, published in that order to MOOD."""
    for n, item_id in enumerate("abcde"):
        assert pep.publish(ALICE, MOOD, item(item_id, n)) == []
    return list("edcba")


# Nodes (XEP-0060 §8)


def test_create_get_configure_delete_node(pep):
    assert pep.get_node(ALICE, MOOD) == PubSubNode(MOOD, CONFIG)
    pep.create_node(ALICE, TUNE, {"pubsub#roster_groups_allowed": ["Friends", "Family"]})
    assert pep.nodes(ALICE) == [
        PubSubNode(MOOD, CONFIG),
        PubSubNode(TUNE, {"pubsub#roster_groups_allowed": ["Friends", "Family"]})]

    pep.configure_node(ALICE, MOOD, {"pubsub#max_items": "10"})
    assert pep.get_node(ALICE, MOOD) == PubSubNode(MOOD, {"pubsub#max_items": "10"})

    assert pep.delete_node(ALICE, MOOD) is True
    assert pep.delete_node(ALICE, MOOD) is False
    assert pep.get_node(ALICE, MOOD) is None
    assert [node.name for node in pep.nodes(ALICE)] == [TUNE]
    assert pep.nodes("bob@example.org") == []


def test_config_values(pep):
    pep.configure_node(ALICE, MOOD, {"a": ("x", "y"), "b": [], "c": "", "d": "☃"})
    assert pep.get_node(ALICE, MOOD).config == {"a": ["x", "y"], "b": [], "c": "", "d": "☃"}
    for bad in ({"a": 1}, {"a": ["x", 2]}, {"a": None}):
        with pytest.raises((ValueError, TypeError)):
            pep.configure_node(ALICE, MOOD, bad)
    assert pep.get_node(ALICE, MOOD).config["d"] == "☃"


def test_node_exists(pep):
    with pytest.raises(NodeExists):
        pep.create_node(ALICE, MOOD, {})
    with pytest.raises(NodeExists):  # before the limit
        pep.create_node(ALICE, MOOD, {}, max_nodes=1)
    assert pep.get_node(ALICE, MOOD) == PubSubNode(MOOD, CONFIG)


def test_too_many_nodes(store, pep, alice):
    pep.create_node(ALICE, TUNE, {}, account=alice, max_nodes=2)
    with pytest.raises(TooManyNodes):
        pep.create_node(ALICE, "urn:xmpp:avatar:data", {}, account=alice, max_nodes=2)
    with pytest.raises(TooManyNodes):
        pep.create_node(ALICE, "urn:xmpp:avatar:data", {}, max_nodes=1)
    assert [node.name for node in pep.nodes(ALICE)] == [MOOD, TUNE]
    pep.create_node(ALICE, "urn:xmpp:avatar:data", {}, max_nodes=3)
    # The limit is the service's in this store.
    store.open("pubsub", "pubsub").create_node(ALICE, MOOD, {}, max_nodes=1)
    pep.create_node("bob@example.org", MOOD, {}, max_nodes=1)


def test_node_of_a_missing_account(store):
    pep = store.open("pubsub", "pep")
    with pytest.raises(UserNotFound):
        pep.create_node("bob@example.org", MOOD, {}, account=("bob", "example.org"))
    assert pep.nodes("bob@example.org") == []


def test_invalid_names(pep):
    with pytest.raises(ValueError):
        pep.create_node(ALICE, "x" * 1024, {})
    with pytest.raises(ValueError):
        pep.publish(ALICE, MOOD, item("x" * 256))
    pep.create_node(ALICE, "x" * 1023, {})
    pep.publish(ALICE, MOOD, item("x" * 255))
    assert ids(pep.get_items(ALICE, MOOD)) == ["x" * 255]


def test_unknown_node(pep):
    sub = PubSubSubscription("bob@example.net", "1", "subscribed", {})
    for write in (lambda: pep.configure_node(ALICE, TUNE, {}),
                  lambda: pep.publish(ALICE, TUNE, item("a")),
                  lambda: pep.set_affiliation(ALICE, TUNE, "bob@example.net", "member"),
                  lambda: pep.subscribe(ALICE, TUNE, sub)):
        with pytest.raises(NodeNotFound):
            write()
    assert pep.get_node(ALICE, TUNE) is None
    assert pep.get_items(ALICE, TUNE) == []
    assert pep.count_items(ALICE, TUNE) == 0
    assert pep.retract(ALICE, TUNE, "a") is False
    assert pep.purge(ALICE, TUNE) == []
    assert pep.affiliations(ALICE, TUNE) == {}
    assert pep.subscriptions(ALICE, TUNE) == []
    assert pep.unsubscribe(ALICE, TUNE, "bob@example.net") is False
    assert pep.delete_node(ALICE, TUNE) is False


# Items (XEP-0060 §6.5, §7)


def test_publish_and_get_items(pep, published):
    items = pep.get_items(ALICE, MOOD)
    assert ids(items) == published
    assert items[0] == item("e", 4)
    assert pep.count_items(ALICE, MOOD) == 5


def test_published_is_read_back_in_utc(pep):
    paris = timezone(timedelta(hours=1))
    pep.publish(ALICE, MOOD, PubSubItem("a", ALICE, "", datetime(2026, 12, 1, 13, tzinfo=paris)))
    [found] = pep.get_items(ALICE, MOOD)
    assert found == PubSubItem("a", ALICE, "", T0)
    assert found.published.utcoffset() == timedelta(0)
    with pytest.raises(ValueError):
        pep.publish(ALICE, MOOD, PubSubItem("b", ALICE, "", datetime(2026, 12, 1)))


def test_republishing_replaces_and_makes_newest(pep, published):
    replacement = item("b", 9, publisher=ALICE + "/laptop")
    assert pep.publish(ALICE, MOOD, replacement) == []
    assert ids(pep.get_items(ALICE, MOOD)) == ["b", "e", "d", "c", "a"]
    assert pep.get_items(ALICE, MOOD, ids=["b"]) == [replacement]
    assert pep.count_items(ALICE, MOOD) == 5
    assert pep.last_items(ALICE, [MOOD]) == {MOOD: replacement}


def test_max_items_keeps_the_newest(pep, published):
    assert pep.publish(ALICE, MOOD, item("f", 5), max_items=3) == ["a", "b", "c"]
    assert ids(pep.get_items(ALICE, MOOD)) == ["f", "e", "d"]
    # The replaced item is not one removed to make room.
    assert pep.publish(ALICE, MOOD, item("d", 6), max_items=3) == []
    assert ids(pep.get_items(ALICE, MOOD)) == ["d", "f", "e"]
    assert pep.publish(ALICE, MOOD, item("e", 7), max_items=1) == ["f", "d"]
    assert ids(pep.get_items(ALICE, MOOD)) == ["e"]
    assert pep.publish(ALICE, MOOD, item("g", 8), max_items=None) == []
    assert ids(pep.get_items(ALICE, MOOD)) == ["g", "e"]


def test_max_items_zero_keeps_nothing(pep, published):
    assert pep.publish(ALICE, MOOD, item("f", 5), max_items=0) == ["a", "b", "c", "d", "e"]
    assert pep.get_items(ALICE, MOOD) == []
    assert pep.publish(ALICE, MOOD, item("g", 6), max_items=0) == []
    with pytest.raises(ValueError):
        pep.publish(ALICE, MOOD, item("h", 7), max_items=-1)


def test_get_items_by_id_and_limit(pep, published):
    assert ids(pep.get_items(ALICE, MOOD, ids=["a", "d", "zz", "c", "a"])) == ["d", "c", "a"]
    assert pep.get_items(ALICE, MOOD, ids=[]) == []
    assert pep.get_items(ALICE, MOOD, ids=["zz"]) == []
    assert ids(pep.get_items(ALICE, MOOD, limit=2)) == ["e", "d"]
    assert ids(pep.get_items(ALICE, MOOD, limit=9)) == published
    assert pep.get_items(ALICE, MOOD, limit=0) == []
    assert ids(pep.get_items(ALICE, MOOD, ids=["a", "b", "e"], limit=2)) == ["e", "b"]
    with pytest.raises(ValueError):
        pep.get_items(ALICE, MOOD, limit=-1)


def test_last_items_in_one_query(pep, published):
    pep.create_node(ALICE, TUNE, {})
    pep.create_node(ALICE, "empty", {})
    pep.publish(ALICE, TUNE, item("t1", 1))
    pep.publish(ALICE, TUNE, item("t2", 0))
    statements = []

    def executed(connection, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", executed)
    try:
        last = pep.last_items(ALICE, [MOOD, TUNE, "empty", "unknown"])
    finally:
        event.remove(Engine, "before_cursor_execute", executed)
    assert last == {MOOD: item("e", 4), TUNE: item("t2", 0)}
    assert sum(statement.lstrip().startswith("SELECT") for statement in statements) == 1
    assert pep.last_items(ALICE, []) == {}
    assert pep.last_items(ALICE, ["empty"]) == {}
    assert pep.last_items("bob@example.org", [MOOD]) == {}


def test_retract(pep, published):
    assert pep.retract(ALICE, MOOD, "c") is True
    assert pep.retract(ALICE, MOOD, "c") is False
    assert ids(pep.get_items(ALICE, MOOD)) == ["e", "d", "b", "a"]
    assert pep.count_items(ALICE, MOOD) == 4
    assert pep.retract(ALICE, MOOD, "e") is True
    pep.publish(ALICE, MOOD, item("f", 5))
    assert ids(pep.get_items(ALICE, MOOD)) == ["f", "d", "b", "a"]


def test_purge(pep, published):
    pep.create_node(ALICE, TUNE, {})
    pep.publish(ALICE, TUNE, item("t"))
    assert pep.purge(ALICE, MOOD) == ["a", "b", "c", "d", "e"]
    assert pep.get_items(ALICE, MOOD) == []
    assert pep.count_items(ALICE, MOOD) == 0
    assert pep.purge(ALICE, MOOD) == []
    assert pep.get_node(ALICE, MOOD) == PubSubNode(MOOD, CONFIG)
    assert ids(pep.get_items(ALICE, TUNE)) == ["t"]


def test_concurrent_publications(pep):
    def publish(prefix):
        for n in range(10):
            pep.publish(ALICE, MOOD, item(f"{prefix}{n}"), max_items=15)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(publish, "xy"))
    newest = ids(pep.get_items(ALICE, MOOD))
    assert len(newest) == 15
    for prefix in "xy":  # each thread's items in the order it published them
        mine = [item_id for item_id in newest if item_id[0] == prefix]
        assert mine == sorted(mine, reverse=True)
    assert {"x9", "y9"} <= set(newest)


# Affiliations (XEP-0060 §4.1, §8.9)


def test_affiliations(pep):
    assert pep.affiliations(ALICE, MOOD) == {}
    pep.set_affiliation(ALICE, MOOD, ALICE, "owner")
    pep.set_affiliation(ALICE, MOOD, "bob@example.net", "member")
    pep.set_affiliation(ALICE, MOOD, "eve@example.com", "outcast")
    pep.set_affiliation(ALICE, MOOD, "bob@example.net", "publish-only")
    assert pep.affiliations(ALICE, MOOD) == {
        ALICE: "owner", "bob@example.net": "publish-only", "eve@example.com": "outcast"}
    pep.set_affiliation(ALICE, MOOD, "bob@example.net", None)
    pep.set_affiliation(ALICE, MOOD, "eve@example.com", "none")
    pep.set_affiliation(ALICE, MOOD, "carol@example.net", "none")
    assert pep.affiliations(ALICE, MOOD) == {ALICE: "owner"}
    with pytest.raises(ValueError):
        pep.set_affiliation(ALICE, MOOD, "bob@example.net", "king")
    assert pep.affiliations(ALICE, MOOD) == {ALICE: "owner"}


# Subscriptions (XEP-0060 §4.2, §6.1, §6.2, §8.8)


def test_subscribe_and_replace(pep):
    first = PubSubSubscription("bob@example.net/phone", "s1", "pending", {})
    second = PubSubSubscription("bob@example.net/phone", "s2", "subscribed",
                                {"pubsub#deliver": "true", "pubsub#show-values": ["away"]})
    other = PubSubSubscription("bob@example.net", "s0", "unconfigured", {})
    for subscription in (second, first, other):
        pep.subscribe(ALICE, MOOD, subscription)
    assert pep.subscriptions(ALICE, MOOD) == [other, first, second]

    approved = PubSubSubscription("bob@example.net/phone", "s1", "subscribed",
                                  {"pubsub#deliver": "false"})
    pep.subscribe(ALICE, MOOD, approved)
    assert pep.subscriptions(ALICE, MOOD) == [other, approved, second]
    with pytest.raises(ValueError):
        pep.subscribe(ALICE, MOOD, PubSubSubscription("bob@example.net", "s3", "none", {}))
    with pytest.raises(ValueError):
        pep.subscribe(ALICE, MOOD, PubSubSubscription("bob@example.net", "s" * 256,
                                                      "subscribed", {}))
    assert len(pep.subscriptions(ALICE, MOOD)) == 3


def test_unsubscribe(pep):
    for jid, subid in (("bob@example.net", "1"), ("bob@example.net", "2"),
                       ("bob@example.net/phone", "3"), ("carol@example.net", "4")):
        pep.subscribe(ALICE, MOOD, PubSubSubscription(jid, subid, "subscribed", {}))
    assert pep.unsubscribe(ALICE, MOOD, "bob@example.net", "1") is True
    assert pep.unsubscribe(ALICE, MOOD, "bob@example.net", "1") is False
    assert pep.unsubscribe(ALICE, MOOD, "bob@example.net", "3") is False  # not that JID's
    assert pep.unsubscribe(ALICE, MOOD, "bob@example.net", "9") is False
    assert [(s.jid, s.subid) for s in pep.subscriptions(ALICE, MOOD)] == [
        ("bob@example.net", "2"), ("bob@example.net/phone", "3"), ("carol@example.net", "4")]
    assert pep.unsubscribe(ALICE, MOOD, "bob@example.net") is True
    assert pep.unsubscribe(ALICE, MOOD, "bob@example.net") is False
    assert [(s.jid, s.subid) for s in pep.subscriptions(ALICE, MOOD)] == [
        ("bob@example.net/phone", "3"), ("carol@example.net", "4")]


def test_subscriptions_of(store, pep):
    pep.create_node(ALICE, TUNE, {})
    pep.create_node(ALICE, "urn:xmpp:avatar:metadata", {})
    bob = PubSubSubscription("bob@example.net", "1", "subscribed", {"pubsub#deliver": "true"})
    for node in (TUNE, MOOD):
        pep.subscribe(ALICE, node, bob)
    pep.subscribe(ALICE, TUNE, PubSubSubscription("bob@example.net", "0", "pending", {}))
    pep.subscribe(ALICE, TUNE, PubSubSubscription("bob@example.net/x", "2", "subscribed", {}))
    pep.subscribe(ALICE, "urn:xmpp:avatar:metadata",
                  PubSubSubscription("carol@example.net", "3", "subscribed", {}))
    store.open("pubsub", "pubsub").create_node(ALICE, MOOD, {})
    store.open("pubsub", "pubsub").subscribe(ALICE, MOOD, bob)
    assert pep.subscriptions_of(ALICE, "bob@example.net") == [
        (MOOD, bob),
        (TUNE, PubSubSubscription("bob@example.net", "0", "pending", {})),
        (TUNE, bob)]
    assert pep.subscriptions_of(ALICE, "dave@example.net") == []
    assert pep.subscriptions_of("carol@example.org", "bob@example.net") == []


# Deletion and scopes


def test_delete_node_takes_everything(backend, pep, published):
    pep.set_affiliation(ALICE, MOOD, ALICE, "owner")
    pep.subscribe(ALICE, MOOD, PubSubSubscription("bob@example.net", "1", "subscribed", {}))
    assert pep.delete_node(ALICE, MOOD) is True
    for model in (PubSubNodeRow, PubSubItemRow, PubSubAffiliationRow, PubSubSubscriptionRow):
        assert row_count(backend, model) == 0
    pep.create_node(ALICE, MOOD, {})
    assert pep.get_items(ALICE, MOOD) == []
    assert pep.affiliations(ALICE, MOOD) == {}
    assert pep.subscriptions(ALICE, MOOD) == []


def test_delete_service(store, pep, published):
    pep.create_node(ALICE, TUNE, {})
    pep.create_node("bob@example.org", MOOD, {})
    store.open("pubsub", "pubsub").create_node(ALICE, MOOD, {})
    pep.delete_service(ALICE)
    assert pep.nodes(ALICE) == []
    assert pep.get_items(ALICE, MOOD) == []
    assert [node.name for node in pep.nodes("bob@example.org")] == [MOOD]
    assert [node.name for node in store.open("pubsub", "pubsub").nodes(ALICE)] == [MOOD]
    pep.delete_service(ALICE)


def test_nodes_go_with_their_account(backend, store, pep, published):
    store.open("accounts").create("bob", "example.org", KEYS)
    pep.create_node("bob@example.org", MOOD, {}, account=("bob", "example.org"))
    pep.create_node(ALICE, TUNE, {})  # of alice's service, but of no account
    pep.set_affiliation(ALICE, MOOD, ALICE, "owner")
    pep.subscribe(ALICE, MOOD, PubSubSubscription("bob@example.org", "1", "subscribed", {}))
    service = store.open("pubsub", "pubsub")
    service.create_node("pubsub.example.org", "news", {}, account=("alice", "example.org"))
    service.create_node("pubsub.example.org", "weather", {})

    store.open("accounts").delete("alice", "example.org")
    assert [node.name for node in pep.nodes(ALICE)] == [TUNE]
    assert [node.name for node in pep.nodes("bob@example.org")] == [MOOD]
    assert [node.name for node in service.nodes("pubsub.example.org")] == ["weather"]
    for model in (PubSubItemRow, PubSubAffiliationRow, PubSubSubscriptionRow):
        assert row_count(backend, model) == 0


def test_store_names_do_not_see_each_other(store, pep, published):
    other = store.open("pubsub", "pubsub")
    assert other.get_node(ALICE, MOOD) is None
    assert other.get_items(ALICE, MOOD) == []
    other.create_node(ALICE, MOOD, {"pubsub#title": "other"})
    other.publish(ALICE, MOOD, item("z"))
    other.set_affiliation(ALICE, MOOD, ALICE, "publisher")
    assert ids(other.get_items(ALICE, MOOD)) == ["z"]
    assert ids(pep.get_items(ALICE, MOOD)) == published
    assert pep.get_node(ALICE, MOOD) == PubSubNode(MOOD, CONFIG)
    assert pep.affiliations(ALICE, MOOD) == {}
    assert other.delete_node(ALICE, MOOD) is True
    assert pep.count_items(ALICE, MOOD) == 5


def test_services_do_not_see_each_other(store, pep, published):
    bob = "bob@example.org"
    pep.create_node(bob, MOOD, {})
    pep.publish(bob, MOOD, item("b1"), max_items=1)
    pep.subscribe(bob, MOOD, PubSubSubscription(ALICE, "1", "subscribed", {}))
    assert ids(pep.get_items(bob, MOOD)) == ["b1"]
    assert ids(pep.get_items(ALICE, MOOD)) == published
    assert pep.last_items(bob, [MOOD]) == {MOOD: item("b1")}
    assert pep.subscriptions(ALICE, MOOD) == []
    assert pep.retract(bob, MOOD, "a") is False
    assert pep.purge(bob, MOOD) == ["b1"]
    assert pep.count_items(ALICE, MOOD) == 5


def test_every_call_is_interactive():
    assert {lane(method) for method in methods("pubsub").values()} == {INTERACTIVE}


def test_through_async_store(store, alice):
    pep = AsyncStore(store, immediate_runner).open("pubsub", "pep")
    results = []
    pep.create_node(ALICE, MOOD, CONFIG, account=alice).addCallback(results.append)
    pep.publish(ALICE, MOOD, item("a"), max_items=1).addCallback(results.append)
    pep.last_items(ALICE, [MOOD]).addCallback(results.append)
    pep.publish(ALICE, TUNE, item("a")).addErrback(lambda failure: results.append(
        failure.trap(NodeNotFound)))
    assert results == [None, [], {MOOD: item("a")}, NodeNotFound]
