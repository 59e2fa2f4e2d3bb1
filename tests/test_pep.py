"""Personal eventing (XEP-0163) over XEP-0060: publishing with
publish-options, the access models on retrieval and notifications,
filtered notifications and the last published item, the owner's node
management, the limits.  Capabilities (XEP-0115) come from a toy
``client_caps`` service that says what each full JID wants."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server
from tests.pep_support import CAPS, Caps, online, pep_server
from xmppd.modules.blocking import NS_BLOCKING
from xmppd.pubsub import NS_ERRORS, NS_EVENT, NS_OWNER, NS_PUBLISH_OPTIONS, NS_PUBSUB
from xmppd.storage import RosterItem
from xmppd.tap import MODULES

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
NODE = "urn:xmpp:example:0"
DEVICES = "eu.siacs.conversations.axolotl.devicelist"


@pytest.fixture
def caps():
    return Caps()


@pytest.fixture
def server(tmp_path, caps):
    return pep_server(tmp_path, caps, (ALICE, BOB, CAROL, "dave@example.com"))


def befriend(server, a, b, groups=()):
    """``a`` and ``b`` subscribed to each other's presence."""
    for user, contact in ((a, b), (b, a)):
        local, domain = user.split("@")
        server.sql.set_roster_item(local, domain, RosterItem(contact, subscription="both",
                                                             groups=tuple(groups)))


def options_form(**fields):
    values = "".join(f"<field var='pubsub#{var}'><value>{value}</value></field>"
                     for var, value in fields.items())
    return (f"<publish-options><x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{NS_PUBLISH_OPTIONS}</value></field>"
            f"{values}</x></publish-options>")


def publish(client, node=NODE, item_id="1", payload="<data xmlns='urn:example'>x</data>",
            **options):
    item = f"<item id='{item_id}'>{payload}</item>" if item_id else f"<item>{payload}</item>"
    client.send(f"<iq type='set' id='pub'><pubsub xmlns='{NS_PUBSUB}'>"
                f"<publish node='{node}'>{item}</publish>"
                f"{options_form(**options) if options else ''}</pubsub></iq>")
    return answer(client, "pub")


def get_items(client, owner, node=NODE, extra="", attributes=""):
    client.send(f"<iq type='get' id='get' to='{owner}'><pubsub xmlns='{NS_PUBSUB}'>"
                f"<items node='{node}'{attributes}>{extra}</items></pubsub></iq>")
    return answer(client, "get")


def owner_iq(client, type_, payload, id_="own"):
    client.send(f"<iq type='{type_}' id='{id_}'><pubsub xmlns='{NS_OWNER}'>{payload}"
                f"</pubsub></iq>")
    return answer(client, id_)


def answer(client, id_):
    return next(e for e in client.take() if e.name == "iq" and e.getAttribute("id") == id_)


def item_ids(result):
    assert result["type"] == "result", result.toXml()
    items = next(next(result.elements(NS_PUBSUB, "pubsub")).elements(NS_PUBSUB))
    return [item["id"] for item in items.elements(NS_PUBSUB, "item")]


def events(client):
    """``(kind, node, [ids])`` of each pubsub event the client received."""
    found = []
    for element in client.take():
        event = next(element.elements(NS_EVENT, "event"), None) if element.name == "message" \
            else None
        if event is None:
            continue
        for child in event.elements():
            ids = [entry.getAttribute("id") for entry in child.elements()]
            kinds = {entry.name for entry in child.elements()}
            found.append(("retract" if kinds == {"retract"} else child.name,
                          child["node"], ids))
    return found


def pubsub_condition(element):
    error = next(child for child in element.elements() if child.name == "error")
    return next((child.name for child in error.elements() if child.uri == NS_ERRORS), None)


# Publishing

def test_publish_creates_the_node_and_the_owner_reads_it(server):
    alice = online(server, ALICE)
    result = publish(alice)
    assert result["type"] == "result"
    assert item_ids(result) == ["1"]
    assert item_ids(get_items(alice, ALICE)) == ["1"]


def test_an_item_without_id_gets_one(server):
    alice = online(server, ALICE)
    result = publish(alice, item_id=None)
    assert item_ids(result)[0]
    assert item_ids(get_items(alice, ALICE)) == item_ids(result)


def test_only_the_account_publishes(server):
    bob = online(server, BOB)
    bob.send(f"<iq type='set' id='pub' to='{ALICE}'><pubsub xmlns='{NS_PUBSUB}'>"
             f"<publish node='{NODE}'><item id='1'><x xmlns='urn:e'/></item></publish>"
             f"</pubsub></iq>")
    assert error_condition(answer(bob, "pub")) == "forbidden"


def test_publish_options_create_then_must_hold(server):
    alice = online(server, ALICE)
    assert publish(alice, node=DEVICES, access_model="open")["type"] == "result"
    config = owner_iq(alice, "get", f"<configure node='{DEVICES}'/>")
    assert "<value>open</value>" in config.toXml()
    refused = publish(alice, node=DEVICES, item_id="2", access_model="presence")
    assert error_condition(refused) == "conflict"
    assert pubsub_condition(refused) == "precondition-not-met"
    assert publish(alice, node=DEVICES, item_id="2", access_model="open")["type"] == "result"
    unknown = publish(alice, node=DEVICES, item_id="3", no_such_field="1")
    assert pubsub_condition(unknown) == "precondition-not-met"
    assert item_ids(get_items(alice, ALICE, DEVICES)) == ["2"]


def test_max_items_keeps_the_newest(server):
    alice = online(server, ALICE)
    for item_id in "abc":
        publish(alice, item_id=item_id, max_items="2")
    assert item_ids(get_items(alice, ALICE)) == ["b", "c"]
    assert item_ids(get_items(alice, ALICE, attributes=" max_items='1'")) == ["c"]
    assert item_ids(get_items(alice, ALICE, extra="<item id='b'/><item id='x'/>")) == ["b"]


def test_max_items_max_is_the_operators_limit(tmp_path, caps):
    server = make_server(tmp_path, modules=MODULES + ("pep",), extra="[pep]\nmax_items = 3")
    add_user(server, ALICE)
    alice = online(server, ALICE)
    for item_id in "abcde":
        publish(alice, item_id=item_id, max_items="max")
    assert item_ids(get_items(alice, ALICE)) == ["c", "d", "e"]


def test_a_republished_id_replaces_its_item(server):
    alice = online(server, ALICE)
    publish(alice, item_id="a", max_items="5")
    publish(alice, item_id="b", max_items="5")
    publish(alice, item_id="a", payload="<data xmlns='urn:example'>new</data>", max_items="5")
    result = get_items(alice, ALICE)
    assert item_ids(result) == ["b", "a"]
    assert "new" in result.toXml()


def test_items_not_persisted_are_notified_only(server, caps):
    alice, other = online(server, ALICE), online(server, ALICE, "other")
    caps.learn(f"{ALICE}/other", NODE)
    publish(alice, persist_items="false")
    assert events(other) == [("items", NODE, ["1"])]
    assert item_ids(get_items(alice, ALICE)) == []


def test_bad_items_are_refused(tmp_path, caps):
    server = make_server(tmp_path, modules=MODULES + ("pep",),
                         extra="[pep]\nmax_item_size = 100\nmax_nodes = 2")
    add_user(server, ALICE)
    alice = online(server, ALICE)
    big = publish(alice, payload=f"<data xmlns='urn:example'>{'x' * 100}</data>")
    assert (error_condition(big), pubsub_condition(big)) == ("not-acceptable", "payload-too-big")
    empty = publish(alice, payload="")
    assert (error_condition(empty), pubsub_condition(empty)) == ("bad-request",
                                                                 "payload-required")
    two = publish(alice, payload="<a xmlns='urn:e'/><b xmlns='urn:e'/>")
    assert pubsub_condition(two) == "invalid-payload"
    assert publish(alice, node="one")["type"] == "result"
    assert publish(alice, node="two")["type"] == "result"
    assert error_condition(publish(alice, node="three")) == "resource-constraint"
    assert publish(alice, node="two", item_id="2")["type"] == "result"


# Access models (XEP-0060 §4.5)

def test_presence_access_needs_a_subscription(server):
    befriend(server, ALICE, BOB)
    alice, bob, carol = (online(server, user) for user in (ALICE, BOB, CAROL))
    publish(alice)
    assert item_ids(get_items(bob, ALICE)) == ["1"]
    refused = get_items(carol, ALICE)
    assert (error_condition(refused), pubsub_condition(refused)) == (
        "not-authorized", "presence-subscription-required")
    assert "<data" not in refused.toXml()


def test_open_access_lets_anyone_read(server):
    alice, carol = online(server, ALICE), online(server, CAROL)
    publish(alice, node=DEVICES, access_model="open")
    assert item_ids(get_items(carol, ALICE, DEVICES)) == ["1"]


def test_roster_access_needs_an_allowed_group(server):
    befriend(server, ALICE, BOB, groups=("Friends",))
    befriend(server, ALICE, CAROL, groups=("Work",))
    alice, bob, carol = (online(server, user) for user in (ALICE, BOB, CAROL))
    publish(alice, access_model="roster")
    owner_iq(alice, "set", f"<configure node='{NODE}'><x xmlns='jabber:x:data' type='submit'>"
             "<field var='FORM_TYPE' type='hidden'>"
             "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
             "<field var='pubsub#roster_groups_allowed'><value>Friends</value></field>"
             "</x></configure>")
    assert item_ids(get_items(bob, ALICE)) == ["1"]
    assert pubsub_condition(get_items(carol, ALICE)) == "not-in-roster-group"


def test_whitelist_access_follows_affiliations(server):
    befriend(server, ALICE, BOB)
    alice, bob = online(server, ALICE), online(server, BOB)
    publish(alice, access_model="whitelist")
    refused = get_items(bob, ALICE)
    assert (error_condition(refused), pubsub_condition(refused)) == ("not-allowed",
                                                                     "closed-node")
    changed = owner_iq(alice, "set", f"<affiliations node='{NODE}'>"
                       f"<affiliation jid='{BOB}' affiliation='member'/></affiliations>")
    assert changed["type"] == "result"
    assert item_ids(get_items(bob, ALICE)) == ["1"]
    listed = owner_iq(alice, "get", f"<affiliations node='{NODE}'/>")
    assert "affiliation='member'" in listed.toXml().replace('"', "'")
    owner_iq(alice, "set", f"<affiliations node='{NODE}'>"
             f"<affiliation jid='{BOB}' affiliation='outcast'/></affiliations>")
    assert error_condition(get_items(bob, ALICE)) == "forbidden"


def test_an_unknown_node_is_item_not_found(server):
    bob = online(server, BOB)
    assert error_condition(get_items(bob, ALICE, "nothing")) == "item-not-found"


# Notifications (XEP-0163 §4.3)

def test_notifications_go_to_interested_resources_and_contacts(server, caps):
    befriend(server, ALICE, BOB)
    alice = online(server, ALICE)
    other, deaf = online(server, ALICE, "other"), online(server, ALICE, "deaf")
    caps.learn(f"{ALICE}/other", NODE)
    caps.learn(f"{ALICE}/deaf", "urn:something:else")
    caps.learn(f"{BOB}/res", NODE)
    bob = online(server, BOB)
    alice.take()
    publish(alice)
    assert events(other) == [("items", NODE, ["1"])]
    assert events(bob) == [("items", NODE, ["1"])]
    assert events(deaf) == []


def test_notifications_respect_the_access_model(server, caps):
    alice, carol = online(server, ALICE), online(server, CAROL)
    caps.learn(f"{CAROL}/res", NODE, DEVICES)
    carol.send(f"<presence to='{ALICE}'>{CAPS}</presence>")  # directed: alice knows of carol
    publish(alice)
    publish(alice, node=DEVICES, access_model="open")
    assert events(carol) == [("items", DEVICES, ["1"])]


def test_no_notifications_to_a_blocked_contact(server, caps):
    befriend(server, ALICE, BOB)
    alice = online(server, ALICE)
    caps.learn(f"{BOB}/res", NODE)
    bob = online(server, BOB)
    alice.send(f"<iq type='set' id='b'><block xmlns='{NS_BLOCKING}'>"
               f"<item jid='{BOB}'/></block></iq>")
    alice.take()
    publish(alice)
    assert events(bob) == []


def test_retract_purge_and_delete_are_notified(server, caps):
    alice, other = online(server, ALICE), online(server, ALICE, "other")
    caps.learn(f"{ALICE}/other", NODE)
    publish(alice, item_id="a", max_items="5")
    publish(alice, item_id="b", max_items="5")
    other.take()
    alice.send(f"<iq type='set' id='r'><pubsub xmlns='{NS_PUBSUB}'><retract node='{NODE}'>"
               "<item id='a'/></retract></pubsub></iq>")
    assert answer(alice, "r")["type"] == "result"
    assert events(other) == [("retract", NODE, ["a"])]
    alice.send(f"<iq type='set' id='r2'><pubsub xmlns='{NS_PUBSUB}'><retract node='{NODE}'>"
               "<item id='a'/></retract></pubsub></iq>")
    assert error_condition(answer(alice, "r2")) == "item-not-found"
    assert owner_iq(alice, "set", f"<purge node='{NODE}'/>")["type"] == "result"
    assert events(other) == [("purge", NODE, [])]
    assert item_ids(get_items(alice, ALICE)) == []
    assert owner_iq(alice, "set", f"<delete node='{NODE}'/>")["type"] == "result"
    assert events(other) == [("delete", NODE, [])]
    assert error_condition(get_items(alice, ALICE)) == "item-not-found"


def test_the_last_item_comes_with_presence(server, caps):
    befriend(server, ALICE, BOB)
    alice = online(server, ALICE)
    publish(alice, item_id="old")
    publish(alice, item_id="new")
    caps.learn(f"{BOB}/res", NODE)
    bob = Client(server)
    bob.login(BOB)
    bob.send(f"<presence>{CAPS}</presence>")
    received = bob.take()
    notices = [e for e in received if e.name == "message"]
    assert len(notices) == 1
    assert "id='new'" in notices[0].toXml().replace('"', "'")
    assert next(notices[0].elements("urn:xmpp:delay", "delay"), None) is not None


def test_the_last_item_comes_when_capabilities_are_learnt(server, caps):
    befriend(server, ALICE, BOB)
    alice = online(server, ALICE)
    publish(alice)
    bob = online(server, BOB)
    own = online(server, ALICE, "own")
    assert events(bob) == [] and events(own) == []
    caps.learn(f"{BOB}/res", NODE, later=True)
    caps.learn(f"{ALICE}/own", NODE, later=True)
    assert events(bob) == [("items", NODE, ["1"])]
    assert events(own) == [("items", NODE, ["1"])]
    caps.learn(f"{BOB}/res", NODE)  # a presence update: nothing again
    bob.send(f"<presence><show>away</show>{CAPS}</presence>")
    assert events(bob) == []


def test_a_new_subscriber_gets_the_last_item(server, caps):
    alice = online(server, ALICE)
    publish(alice)
    caps.learn("dave@example.com/res", NODE)
    dave = online(server, "dave@example.com")
    alice.send("<presence type='subscribe' to='dave@example.com'/>")
    dave.send(f"<presence type='subscribed' to='{ALICE}'/>")
    assert events(dave) == []  # alice receives its presence, but it may not read
    dave.send(f"<presence type='subscribe' to='{ALICE}'/>")
    alice.send("<presence type='subscribed' to='dave@example.com'/>")
    assert events(dave) == [("items", NODE, ["1"])]


def test_no_notifications_without_capabilities(server, caps):
    befriend(server, ALICE, BOB)
    alice = online(server, ALICE)
    caps.learn(f"{BOB}/res", NODE)
    bob = online(server, BOB, presence="<presence/>")
    publish(alice)
    assert events(bob) == []


def test_a_contact_gone_unavailable_is_not_notified(server, caps):
    befriend(server, ALICE, BOB)
    alice = online(server, ALICE)
    caps.learn(f"{BOB}/res", NODE)
    bob = online(server, BOB)
    bob.send("<presence type='unavailable'/>")
    publish(alice)
    assert events(bob) == []


# The owner's configuration

def test_configure_and_default(server):
    alice = online(server, ALICE)
    for item_id in "abc":
        publish(alice, item_id=item_id, max_items="5")
    default = owner_iq(alice, "get", "<default/>")
    assert "presence" in default.toXml()
    form = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
            "<field var='pubsub#max_items'><value>1</value></field></x>")
    assert owner_iq(alice, "set", f"<configure node='{NODE}'>{form}</configure>")["type"] \
        == "result"
    assert item_ids(get_items(alice, ALICE)) == ["c"]
    bad = form.replace("<value>1</value>", "<value>lots</value>")
    assert error_condition(owner_iq(alice, "set", f"<configure node='{NODE}'>{bad}"
                                    "</configure>")) == "not-acceptable"


def test_create_with_configuration_and_conflict(server):
    alice = online(server, ALICE)
    form = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
            "<field var='pubsub#access_model'><value>open</value></field></x>")
    create = (f"<iq type='set' id='c'><pubsub xmlns='{NS_PUBSUB}'><create node='n'/>"
              f"<configure>{form}</configure></pubsub></iq>")
    alice.send(create)
    assert answer(alice, "c")["type"] == "result"
    alice.send(create)
    assert error_condition(answer(alice, "c")) == "conflict"
    assert "<value>open</value>" in owner_iq(alice, "get", "<configure node='n'/>").toXml()


def subscribe(client, owner, node=NODE, jid=None, verb="subscribe"):
    client.send(f"<iq type='set' id='s' to='{owner}'><pubsub xmlns='{NS_PUBSUB}'>"
                f"<{verb} node='{node}' jid='{jid or client.stream.session.jid}'/></pubsub></iq>")
    return answer(client, "s")


def test_explicit_subscriptions_to_an_open_node(server):
    alice, carol = online(server, ALICE), online(server, CAROL)  # not contacts
    publish(alice, node=DEVICES, item_id="d1", access_model="open")
    result = subscribe(carol, ALICE, DEVICES, jid=CAROL)
    subscription = next(next(result.elements(NS_PUBSUB, "pubsub")).elements())
    assert (subscription["jid"], subscription["subscription"]) == (CAROL, "subscribed")
    server.clock.advance(0)
    assert events(carol) == [("items", DEVICES, ["d1"])]  # the last item, after (§6.1.7)
    publish(alice, node=DEVICES, item_id="d2")
    assert events(carol) == [("items", DEVICES, ["d2"])]
    carol.send(f"<iq type='get' id='l' to='{ALICE}'><pubsub xmlns='{NS_PUBSUB}'>"
               "<subscriptions/></pubsub></iq>")
    listed = next(next(answer(carol, "l").elements(NS_PUBSUB, "pubsub")).elements())
    assert [(s["node"], s["jid"]) for s in listed.elements()] == [(DEVICES, CAROL)]
    assert subscribe(carol, ALICE, DEVICES, jid=CAROL, verb="unsubscribe")["type"] == "result"
    publish(alice, node=DEVICES, item_id="d3")
    assert events(carol) == []
    refused = subscribe(carol, ALICE, DEVICES, jid=CAROL, verb="unsubscribe")
    assert pubsub_condition(refused) == "not-subscribed"


def test_explicit_subscriptions_follow_the_access_model_and_the_requester(server):
    alice, carol = online(server, ALICE), online(server, CAROL)
    publish(alice)  # presence access
    refused = subscribe(carol, ALICE)
    assert (error_condition(refused), pubsub_condition(refused)) == (
        "not-authorized", "presence-subscription-required")
    refused = subscribe(carol, ALICE, jid=BOB)
    assert (error_condition(refused), pubsub_condition(refused)) == ("bad-request", "invalid-jid")
    assert error_condition(subscribe(carol, ALICE, node="none")) == "item-not-found"
    publish(alice, node=DEVICES, access_model="open")
    assert subscribe(carol, ALICE, DEVICES)["type"] == "result"  # the full JID
    owner_iq(alice, "set", f"<configure node='{DEVICES}'><x xmlns='jabber:x:data' type='submit'>"
             "<field var='FORM_TYPE' type='hidden'>"
             "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
             "<field var='pubsub#access_model'><value>presence</value></field></x></configure>")
    carol.take()
    publish(alice, node=DEVICES, item_id="2")
    assert events(carol) == []  # it may no longer read the node


def test_a_deleted_node_notifies_its_explicit_subscribers(server):
    alice, carol = online(server, ALICE), online(server, CAROL)  # not contacts
    publish(alice, node=DEVICES, access_model="open")
    assert subscribe(carol, ALICE, DEVICES, jid=CAROL)["type"] == "result"
    server.clock.advance(0)
    carol.take()
    assert owner_iq(alice, "set", f"<delete node='{DEVICES}'/>")["type"] == "result"
    server.clock.advance(0)
    assert events(carol) == [("delete", DEVICES, [])]  # XEP-0060 §8.4.2


def test_a_deleted_whitelist_node_notifies_its_members(server, caps):
    befriend(server, ALICE, BOB)
    alice = online(server, ALICE)
    caps.learn(f"{BOB}/res", NODE)
    bob = online(server, BOB)
    publish(alice, access_model="whitelist")
    owner_iq(alice, "set", f"<affiliations node='{NODE}'>"
             f"<affiliation jid='{BOB}' affiliation='member'/></affiliations>")
    bob.take()
    assert owner_iq(alice, "set", f"<delete node='{NODE}'/>")["type"] == "result"
    server.clock.advance(0)
    assert events(bob) == [("delete", NODE, [])]

def test_the_account_says_it_has_pep(server):
    alice = online(server, ALICE)
    alice.send(f"<iq type='get' id='d' to='{ALICE}'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    info = answer(alice, "d").toXml().replace('"', "'")
    assert "category='pubsub'" in info and "type='pep'" in info
    assert f"{NS_PUBSUB}#publish-options" in info
    for feature in ("subscribe", "config-node-max", "auto-create", "filtered-notifications"):
        assert f"{NS_PUBSUB}#{feature}'" in info
