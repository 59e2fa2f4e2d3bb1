"""The publish-subscribe service (XEP-0060) at pubsub.example.com: who
creates nodes, subscriptions and their options, publish models, owners'
management, notifications, discovery, limits."""

import pytest

from tests.harness import add_user, error_condition, make_server, online
from xmppd.pubsub import NS_ERRORS, NS_EVENT, NS_OWNER, NS_PUBSUB
from xmppd.storage import RosterItem
from xmppd.tap import MODULES

SERVICE = "pubsub.example.com"
ADMIN, ALICE, BOB = "admin@example.com", "alice@example.com", "bob@example.com"
CONFIG = "http://jabber.org/protocol/pubsub#node_config"


def make(tmp_path, extra=""):
    server = make_server(tmp_path, modules=MODULES + ("pubsub",),
                         extra=f'[pubsub]\nadmins = ["{ADMIN}"]\n{extra}')
    for user in (ADMIN, ALICE, BOB):
        add_user(server, user)
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


def iq(client, type_, payload, ns=NS_PUBSUB, id_="q"):
    """The answer to a request; what else came stays to be taken."""
    client.send(f"<iq type='{type_}' id='{id_}' to='{SERVICE}'><pubsub xmlns='{ns}'>"
                f"{payload}</pubsub></iq>")
    received = client.take()
    answer = next(e for e in received if e.name == "iq" and e.getAttribute("id") == id_)
    client.received.extend(e for e in received if e is not answer)
    return answer


def form(ns, **fields):
    values = "".join(f"<field var='pubsub#{var}'><value>{value}</value></field>"
                     for var, value in fields.items())
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{ns}</value></field>{values}</x>")


def create(client, node="news", **config):
    configure = f"<configure>{form(CONFIG, **config)}</configure>" if config else ""
    return iq(client, "set", f"<create node='{node}'/>{configure}")


def publish(client, node="news", item_id="1", text="hello"):
    return iq(client, "set", f"<publish node='{node}'><item id='{item_id}'>"
                             f"<entry xmlns='urn:example'>{text}</entry></item></publish>")


def subscribe(client, jid, node="news", options=""):
    return iq(client, "set", f"<subscribe node='{node}' jid='{jid}'/>{options}")


def pubsub_condition(element):
    error = next(child for child in element.elements() if child.name == "error")
    return next((child.name for child in error.elements() if child.uri == NS_ERRORS), None)


def notifications(client):
    found = []
    for element in client.take():
        event = (next(element.elements(NS_EVENT, "event"), None)
                 if element.name == "message" else None)
        if event is not None:
            assert element["from"] == SERVICE
            child = next(event.elements())
            found.append((child.name, child["node"],
                          [entry.getAttribute("id") for entry in child.elements()]))
    return found


def test_only_admins_create_by_default(server):
    admin, alice = online(server, ADMIN), online(server, ALICE)
    assert error_condition(create(alice)) == "forbidden"
    assert create(admin)["type"] == "result"
    assert error_condition(create(admin)) == "conflict"
    assert error_condition(publish(alice, node="other")) == "item-not-found"


def test_local_accounts_create_when_allowed(tmp_path):
    server = make(tmp_path, 'create_nodes = "local"')
    alice = online(server, ALICE)
    assert create(alice)["type"] == "result"
    instant = iq(alice, "set", "<create/>")
    name = next(next(instant.elements()).elements())["node"]
    assert name
    assert publish(alice, node="auto")["type"] == "result"  # auto-created
    owners = iq(alice, "get", "<affiliations node='auto'/>", ns=NS_OWNER)
    assert f"jid='{ALICE}'" in owners.toXml().replace('"', "'")


def test_subscribe_publish_notify(server):
    admin, alice, bob = (online(server, user) for user in (ADMIN, ALICE, BOB))
    create(admin)
    result = subscribe(alice, f"{ALICE}/res")
    subscription = next(next(result.elements()).elements())
    assert subscription["subscription"] == "subscribed" and subscription["subid"]
    assert subscribe(bob, BOB)["type"] == "result"
    assert publish(admin)["type"] == "result"
    assert notifications(alice) == [("items", "news", ["1"])]
    assert notifications(bob) == [("items", "news", ["1"])]
    items = iq(bob, "get", "<items node='news'/>")
    assert "hello" in items.toXml()


def test_a_subscription_is_for_the_requesters_own_jid(server):
    admin, alice = online(server, ADMIN), online(server, ALICE)
    create(admin)
    refused = subscribe(alice, BOB)
    assert (error_condition(refused), pubsub_condition(refused)) == ("bad-request",
                                                                     "invalid-jid")


def test_unsubscribe_and_not_subscribed(server):
    admin, alice = online(server, ADMIN), online(server, ALICE)
    create(admin)
    subscribe(alice, ALICE)
    assert iq(alice, "set", f"<unsubscribe node='news' jid='{ALICE}'/>")["type"] == "result"
    publish(admin)
    assert notifications(alice) == []
    again = iq(alice, "set", f"<unsubscribe node='news' jid='{ALICE}'/>")
    assert (error_condition(again), pubsub_condition(again)) == ("unexpected-request",
                                                                 "not-subscribed")


def test_subscription_options_stop_deliveries(server):
    admin, alice = online(server, ADMIN), online(server, ALICE)
    create(admin)
    subscribe(alice, ALICE)
    got = iq(alice, "get", f"<options node='news' jid='{ALICE}'/>")
    assert "pubsub#deliver" in got.toXml()
    options = form("http://jabber.org/protocol/pubsub#subscribe_options", deliver="false")
    changed = iq(alice, "set", f"<options node='news' jid='{ALICE}'>{options}</options>")
    assert changed["type"] == "result"
    publish(admin)
    assert notifications(alice) == []


def test_publish_models(server):
    admin, alice, bob = (online(server, user) for user in (ADMIN, ALICE, BOB))
    create(admin)
    assert error_condition(publish(alice)) == "forbidden"
    iq(admin, "set", f"<affiliations node='news'><affiliation jid='{ALICE}' "
                     "affiliation='publisher'/></affiliations>", ns=NS_OWNER)
    assert publish(alice)["type"] == "result"
    create(admin, "board", publish_model="subscribers")
    assert error_condition(publish(bob, node="board")) == "forbidden"
    subscribe(bob, BOB, node="board")
    assert publish(bob, node="board")["type"] == "result"


def test_retract_by_publisher_or_owner(server):
    admin, alice, bob = (online(server, user) for user in (ADMIN, ALICE, BOB))
    create(admin, publish_model="open")
    publish(alice, item_id="a")
    subscribe(bob, BOB)
    assert error_condition(iq(bob, "set", "<retract node='news'><item id='a'/></retract>")) \
        == "forbidden"
    assert iq(alice, "set", "<retract node='news'><item id='a'/></retract>")["type"] == "result"
    assert notifications(bob) == [("items", "news", ["a"])]
    assert "<item " not in iq(bob, "get", "<items node='news'/>").toXml()


def test_whitelist_and_presence_access(server):
    server.sql.set_roster_item("admin", "example.com", RosterItem(BOB, subscription="from"))
    admin, alice, bob = (online(server, user) for user in (ADMIN, ALICE, BOB))
    create(admin, "closed", access_model="whitelist")
    refused = subscribe(alice, ALICE, node="closed")
    assert (error_condition(refused), pubsub_condition(refused)) == ("not-allowed",
                                                                     "closed-node")
    iq(admin, "set", f"<affiliations node='closed'><affiliation jid='{ALICE}' "
                     "affiliation='member'/></affiliations>", ns=NS_OWNER)
    assert subscribe(alice, ALICE, node="closed")["type"] == "result"
    create(admin, "friends", access_model="presence")
    assert subscribe(bob, BOB, node="friends")["type"] == "result"
    assert pubsub_condition(subscribe(alice, ALICE, node="friends")) == \
        "presence-subscription-required"


def test_a_subscriber_who_may_no_longer_read_gets_no_notifications(server):
    admin, alice, bob = (online(server, user) for user in (ADMIN, ALICE, BOB))
    create(admin)
    subscribe(alice, ALICE)
    subscribe(bob, BOB)
    outcast = iq(admin, "set", f"<affiliations node='news'><affiliation jid='{BOB}' "
                               "affiliation='outcast'/></affiliations>", ns=NS_OWNER)
    assert outcast["type"] == "result"
    publish(admin, item_id="1")
    assert notifications(alice) == [("items", "news", ["1"])]
    assert notifications(bob) == []
    configure = iq(admin, "set", f"<configure node='news'>{form(CONFIG, access_model='whitelist')}"
                                 "</configure>", ns=NS_OWNER)
    assert configure["type"] == "result"
    publish(admin, item_id="2")
    assert notifications(alice) == []  # not on the whitelist


def test_owner_management_and_notified_deletion(server):
    admin, alice = online(server, ADMIN), online(server, ALICE)
    create(admin, max_items="2")
    subscribe(alice, ALICE)
    for item_id in "abc":
        publish(admin, item_id=item_id)
    alice.take()
    assert "<item id='a'" not in iq(alice, "get", "<items node='news'/>").toXml()
    subscriptions = iq(admin, "get", "<subscriptions node='news'/>", ns=NS_OWNER)
    assert ALICE in subscriptions.toXml()
    assert error_condition(iq(alice, "get", "<configure node='news'/>", ns=NS_OWNER)) == \
        "forbidden"
    configure = iq(admin, "set", f"<configure node='news'>{form(CONFIG, title='News')}"
                                 "</configure>", ns=NS_OWNER)
    assert configure["type"] == "result"
    assert "News" in iq(admin, "get", "<configure node='news'/>", ns=NS_OWNER).toXml()
    assert iq(admin, "set", "<purge node='news'/>", ns=NS_OWNER)["type"] == "result"
    assert notifications(alice) == [("purge", "news", [])]
    last_owner = iq(admin, "set", f"<affiliations node='news'><affiliation jid='{ADMIN}' "
                                  "affiliation='none'/></affiliations>", ns=NS_OWNER)
    assert error_condition(last_owner) == "not-acceptable"
    assert iq(admin, "set", "<delete node='news'/>", ns=NS_OWNER)["type"] == "result"
    assert notifications(alice) == [("delete", "news", [])]
    assert error_condition(iq(alice, "get", "<items node='news'/>")) == "item-not-found"


def test_the_last_item_on_subscription(server):
    admin, alice = online(server, ADMIN), online(server, ALICE)
    create(admin, send_last_published_item="on_sub")
    publish(admin, item_id="first")
    publish(admin, item_id="last")
    subscribe(alice, ALICE)
    assert notifications(alice) == []  # after the result (§6.1.7)
    server.clock.advance(0)
    assert notifications(alice) == [("items", "news", ["last"])]


def test_own_subscriptions_and_affiliations(server):
    admin, alice = online(server, ADMIN), online(server, ALICE)
    create(admin)
    create(admin, "other")
    subscribe(alice, ALICE)
    mine = iq(alice, "get", "<subscriptions/>")
    assert mine.toXml().count("<subscription ") == 1
    assert "affiliation='owner'" in iq(admin, "get", "<affiliations/>").toXml().replace('"', "'")


def test_discovery(server):
    admin, alice = online(server, ADMIN), online(server, ALICE)
    create(admin, title="Daily news")
    publish(admin, item_id="x")
    alice.send("<iq type='get' id='d' to='example.com'>"
               "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    assert SERVICE in alice.take()[0].toXml()
    for node, expected in ((None, "type='service'"), ("news", "type='leaf'")):
        attribute = f" node='{node}'" if node else ""
        alice.send(f"<iq type='get' id='i' to='{SERVICE}'>"
                   f"<query xmlns='http://jabber.org/protocol/disco#info'{attribute}/></iq>")
        assert expected in alice.take()[0].toXml().replace('"', "'")
    alice.send(f"<iq type='get' id='n' to='{SERVICE}'>"
               "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    listed = alice.take()[0].toXml().replace('"', "'")
    assert "node='news'" in listed and "Daily news" in listed
    alice.send(f"<iq type='get' id='n' to='{SERVICE}'>"
               "<query xmlns='http://jabber.org/protocol/disco#items' node='news'/></iq>")
    assert "name='x'" in alice.take()[0].toXml().replace('"', "'")


def test_limits(tmp_path):
    server = make(tmp_path, "max_nodes = 1\nmax_item_size = 60\nmax_subscriptions = 1")
    admin, alice, bob = (online(server, user) for user in (ADMIN, ALICE, BOB))
    create(admin)
    assert error_condition(create(admin, "more")) == "resource-constraint"
    big = publish(admin, text="x" * 60)
    assert pubsub_condition(big) == "payload-too-big"
    subscribe(alice, ALICE)
    assert error_condition(subscribe(bob, BOB)) == "resource-constraint"


def test_not_an_account_service(server):
    """Account modules never see the service's stanzas: a message to it is
    refused, not delivered or stored."""
    alice = online(server, ALICE)
    alice.send(f"<message to='{SERVICE}' id='m' type='chat'><body>hi</body></message>")
    assert error_condition(alice.take()[0]) == "service-unavailable"
