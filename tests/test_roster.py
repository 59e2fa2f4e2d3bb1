"""Roster get/set/remove, pushes and versioning (RFC 6121 §2), in memory."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server, reload
from xmppd.storage import RosterItem

NS = "jabber:iq:roster"


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path)
    add_user(server, "alice@example.com")
    return server


def login(server, resource):
    client = Client(server)
    client.login("alice@example.com", resource)
    return client


def roster_get(client, ver=None):
    attr = "" if ver is None else f" ver='{ver}'"
    client.send(f"<iq type='get' id='g'><query xmlns='{NS}'{attr}/></iq>")
    [result] = client.take()
    assert result["type"] == "result", result.toXml()
    return result.firstChildElement()


def roster_set(client, item, id_="s"):
    client.send(f"<iq type='set' id='{id_}'><query xmlns='{NS}'>{item}</query></iq>")
    return client.take()


def items(query):
    return [(i["jid"], i.getAttribute("name"), i["subscription"],
             [str(g) for g in i.elements(NS, "group")]) for i in query.elements(NS, "item")]


def test_empty_roster_has_a_version(server):
    query = roster_get(login(server, "a"))
    assert items(query) == [] and query.getAttribute("ver") is not None


def test_set_pushes_to_interested_resources_only(server):
    a, b, c = login(server, "a"), login(server, "b"), login(server, "c")
    roster_get(a)
    roster_get(b)
    sent = roster_set(a, "<item jid='Bob@Example.com' name='Bob'><group>Friends</group></item>")
    push, result = sorted(sent, key=lambda e: e["type"])[::-1]
    assert result["type"] == "result" and result["id"] == "s"
    assert push["type"] == "set" and push["to"] == "alice@example.com/a"
    [pushed_b] = b.take()
    assert items(pushed_b.firstChildElement()) == [("bob@example.com", "Bob", "none", ["Friends"])]
    assert c.take() == []
    assert items(roster_get(c)) == [("bob@example.com", "Bob", "none", ["Friends"])]


def test_update_keeps_subscription_state_and_ignores_client_subscription(server):
    a = login(server, "a")
    roster_set(a, "<item jid='bob@example.com' subscription='both' ask='subscribe'/>")
    assert items(roster_get(a)) == [("bob@example.com", None, "none", [])]
    roster_set(a, "<item jid='bob@example.com' name='B'><group>X</group><group>Y</group></item>")
    assert items(roster_get(a)) == [("bob@example.com", "B", "none", ["X", "Y"])]


def test_remove(server):
    a, b = login(server, "a"), login(server, "b")
    roster_set(a, "<item jid='bob@example.com'/>")
    roster_get(b)
    roster_set(a, "<item jid='bob@example.com' subscription='remove'/>")
    [push] = b.take()
    assert push.firstChildElement().firstChildElement()["subscription"] == "remove"
    assert items(roster_get(a)) == []
    [error] = roster_set(a, "<item jid='bob@example.com' subscription='remove'/>")
    assert error_condition(error) == "item-not-found"


def test_versioning(server):
    a = login(server, "a")
    ver0 = roster_get(a)["ver"]
    roster_set(a, "<item jid='bob@example.com'/>")
    query = roster_get(a, ver0)
    ver1 = query["ver"]
    assert ver1 != ver0 and len(items(query)) == 1
    a.send(f"<iq type='get' id='g'><query xmlns='{NS}' ver='{ver1}'/></iq>")
    [result] = a.take()
    assert result["type"] == "result" and result.firstChildElement() is None


def test_rosterver_feature_advertised(server):
    client = Client(server)
    client.starttls()
    client.open()
    client.auth_plain("alice@example.com")
    features = client.open()
    assert "urn:xmpp:features:rosterver" in {e.uri for e in features.elements()}


@pytest.mark.parametrize("item,condition", [
    ("<item jid='a@example.com'/><item jid='b@example.com'/>", "bad-request"),
    ("", "bad-request"),
    ("<item jid='@bad'/>", "jid-malformed"),
    ("<item jid='a@example.com'><group>G</group><group>G</group></item>", "bad-request"),
    ("<item jid='a@example.com'><group></group></item>", "not-acceptable"),
    ("<item jid='a@example.com' name='" + "n" * 2000 + "'/>", "not-acceptable"),
])
def test_invalid_sets(server, item, condition):
    a = login(server, "a")
    [error] = roster_set(a, item)
    assert error_condition(error) == condition


def test_someone_elses_roster_is_forbidden(server):
    add_user(server, "bob@example.com")
    a = login(server, "a")
    a.send(f"<iq type='get' id='x' to='bob@example.com'><query xmlns='{NS}'/></iq>")
    assert error_condition(a.take()[0]) == "forbidden"


def test_roster_size_limit(tmp_path):
    server = make_server(tmp_path, modules=("bind", "roster"), extra="[roster]\nmax_items = 2")
    add_user(server, "alice@example.com")
    a = login(server, "a")
    for jid in ("one@example.com", "two@example.com"):
        assert roster_set(a, f"<item jid='{jid}'/>")[-1]["type"] == "result"
    [error] = roster_set(a, "<item jid='three@example.com'/>")
    assert error_condition(error) == "not-allowed"
    assert "full" in str(error.error.text)
    assert roster_set(a, "<item jid='two@example.com' name='Two'/>")[-1]["type"] == "result"
    assert len(items(roster_get(a))) == 2


def test_roster_size_limit_follows_a_reload(tmp_path):
    server = make_server(tmp_path, modules=("bind", "roster"), extra="[roster]\nmax_items = 1")
    add_user(server, "alice@example.com")
    a = login(server, "a")
    assert roster_set(a, "<item jid='one@example.com'/>")[-1]["type"] == "result"
    assert error_condition(roster_set(a, "<item jid='two@example.com'/>")[0]) == "not-allowed"
    reload(server, tmp_path, "[roster]\nmax_items = 2")
    assert roster_set(a, "<item jid='two@example.com'/>")[-1]["type"] == "result"
    [error] = roster_set(a, "<item jid='three@example.com'/>")
    assert "at most 2 items" in str(error.error.text)


@pytest.fixture
def subscribed(tmp_path):
    """alice and bob subscribed to each other, both online and available."""
    server = make_server(tmp_path, modules=("bind", "roster", "presence", "subscription"))
    for user, contact in (("alice", "bob"), ("bob", "alice")):
        add_user(server, f"{user}@example.com")
        server.sql.set_roster_item(user, "example.com", RosterItem(
            jid=f"{contact}@example.com", subscription="both"))
    alice, bob = login(server, "a"), Client(server)
    bob.login("bob@example.com", "b")
    for client in (alice, bob):
        roster_get(client)
        client.send("<presence/>")
    alice.take(), bob.take()
    return server, alice, bob


def test_remove_cancels_both_subscriptions(subscribed):
    server, alice, bob = subscribed
    roster_set(alice, "<item jid='bob@example.com' subscription='remove'/>")
    received = bob.take()
    presences = [(e["from"], e.getAttribute("type")) for e in received if e.name == "presence"]
    assert presences == [("alice@example.com", "unsubscribe"),
                         ("alice@example.com/a", "unavailable"),
                         ("alice@example.com", "unsubscribed")]
    [push] = [e for e in received if e.name == "iq"][-1:]
    assert push.query.item["subscription"] == "none"
    contact = server.sql.get_roster_item("bob", "example.com", "alice@example.com")
    assert contact.subscription == "none"
    assert server.sql.get_roster_item("alice", "example.com", "bob@example.com") is None


def test_remove_withdraws_a_pending_request(subscribed):
    server, alice, bob = subscribed
    roster_set(alice, "<item jid='bob@example.com' subscription='remove'/>")
    bob.send("<presence type='subscribe' to='alice@example.com'/>")
    assert server.sql.get_value("alice", "example.com", "subscription-requests",
                                "bob@example.com") is not None
    roster_set(bob, "<item jid='alice@example.com' subscription='remove'/>")
    assert server.sql.get_value("alice", "example.com", "subscription-requests",
                                "bob@example.com") is None
