"""Message Carbons (XEP-0280), in memory.

Presence is simulated: a test sets ``Session.available`` and
``Session.priority`` as the presence module would."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server
from xmppd.core.events import ROUTE_REMOTE
from xmppd.jid import JID

NS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
MODULES = ("bind", "message", "closed_domain", "carbons")


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, hosts=("example.com", "other.example"), modules=MODULES)
    for user in ("alice@example.com", "bob@example.com", "carol@other.example"):
        add_user(server, user)
    return server


def connect(server, user, resource, priority=0, available=True, carbons=True):
    client = Client(server, user.split("@")[1])
    jid = client.login(user, resource)
    session = server.sessions.get(JID.parse(jid))
    session.available, session.priority = available, priority
    if carbons:
        client.send(f"<iq type='set' id='on'><enable xmlns='{NS}'/></iq>")
        assert client.take()[0]["type"] == "result"
    return client


@pytest.fixture
def alice(server):
    return connect(server, "alice@example.com", "a", carbons=False)


def chat(client, to, type_="chat", extra="", body="<body>hi</body>"):
    client.send(f"<message to='{to}' type='{type_}' id='m'>{body}{extra}</message>")


def carbon_of(element, direction):
    """The forwarded original of a carbon copy, checking the wrapper."""
    assert element.name == "message", element.toXml()
    wrapper = next(element.elements(NS, direction))
    [forwarded] = wrapper.elements(NS_FORWARD, "forwarded")
    return forwarded.firstChildElement()


# Enabling and disabling (§4, §5)


def test_enable_disable_and_repeat(server):
    client = connect(server, "bob@example.com", "b", carbons=False)
    session = server.sessions.get(JID.parse("bob@example.com/b"))
    for payload, expected in (("enable", True), ("enable", True), ("disable", False),
                              ("disable", False)):
        client.send(f"<iq type='set' id='{payload}'><{payload} xmlns='{NS}'/></iq>")
        [result] = client.take()
        assert result["type"] == "result" and result["id"] == payload
        assert ("carbons" in session.flags) is expected
    client.send(f"<iq type='set' id='h' to='example.com'><enable xmlns='{NS}'/></iq>")
    assert client.take()[0]["type"] == "result" and "carbons" in session.flags


@pytest.mark.parametrize("iq,condition", [
    (f"<iq type='set' id='x' to='alice@example.com'><enable xmlns='{NS}'/></iq>", "not-allowed"),
    (f"<iq type='set' id='x'><private xmlns='{NS}'/></iq>", "bad-request"),
])
def test_enable_errors(server, iq, condition):
    bob = connect(server, "bob@example.com", "b", carbons=False)
    bob.send(iq)
    assert error_condition(bob.take()[0]) == condition


def test_advertised_and_switchable_per_host(tmp_path):
    server = make_server(tmp_path, hosts=("other.example",), modules=MODULES,
                         extra='[hosts."example.com"]\ndisabled_modules = ["carbons"]')
    add_user(server, "bob@example.com")
    assert NS in server.features_for("other.example")
    assert NS not in server.features_for("example.com")
    bob = connect(server, "bob@example.com", "b", carbons=False)
    bob.send(f"<iq type='set' id='x'><enable xmlns='{NS}'/></iq>")
    assert error_condition(bob.take()[0]) == "service-unavailable"


# Received (§7)


def test_received_copies_go_to_enabled_available_resources_without_the_original(server, alice):
    high = connect(server, "bob@example.com", "high", priority=5)
    low = connect(server, "bob@example.com", "low", priority=1)
    off = connect(server, "bob@example.com", "off", carbons=False)
    quiet = connect(server, "bob@example.com", "quiet", available=False)
    chat(alice, "bob@example.com")
    [original] = high.take()
    assert str(original.body) == "hi"
    [copy] = low.take()
    assert (copy["from"], copy["to"], copy["type"]) == (
        "bob@example.com", "bob@example.com/low", "chat")
    forwarded = carbon_of(copy, "received")
    assert (forwarded["from"], forwarded["to"], str(forwarded.body)) == (
        "alice@example.com/a", "bob@example.com", "hi")
    assert off.take() == [] and quiet.take() == [] and alice.take() == []


def test_received_to_a_full_jid(server, alice):
    high = connect(server, "bob@example.com", "high", priority=5)
    low = connect(server, "bob@example.com", "low", priority=1)
    chat(alice, "bob@example.com/low")
    assert str(low.take()[0].body) == "hi"
    assert carbon_of(high.take()[0], "received")["to"] == "bob@example.com/low"


def test_no_copy_of_a_message_no_resource_receives(server, alice):
    hidden = connect(server, "bob@example.com", "hidden", priority=-5)  # takes no bare JID's
    chat(alice, "bob@example.com")  # kept offline (refused here: no offline storage)
    chat(alice, "bob@example.com/gone", type_="normal")  # refused
    assert [e.getAttribute("type") for e in alice.take()] == ["error", "error"]
    assert hidden.take() == []


def test_no_copy_for_resources_that_got_the_original(server, alice):
    one = connect(server, "bob@example.com", "one", priority=2)
    two = connect(server, "bob@example.com", "two", priority=2)
    chat(alice, "bob@example.com")
    assert [m.body is not None for m in one.take() + two.take()] == [True, True]


@pytest.mark.parametrize("type_,body,copied", [
    ("normal", "<body>hi</body>", True),
    ("normal", "<subject>s</subject>", False),
    ("chat", "<active xmlns='http://jabber.org/protocol/chatstates'/>", True),
    ("headline", "<body>hi</body>", False),
])
def test_eligible_messages(server, alice, type_, body, copied):
    connect(server, "bob@example.com", "high", priority=5)
    low = connect(server, "bob@example.com", "low", priority=1)
    chat(alice, "bob@example.com/high", type_, body=body)
    assert len(low.take()) == (1 if copied else 0)


@pytest.mark.parametrize("type_", ["error", "groupchat"])
def test_errors_and_groupchat_are_never_copied(server, alice, type_):
    high = connect(server, "bob@example.com", "high", priority=5)
    low = connect(server, "bob@example.com", "low", priority=1)
    chat(alice, "bob@example.com/high", type_)
    assert len(high.take()) == 1 and low.take() == []
    other = connect(server, "alice@example.com", "other")
    chat(alice, "bob@example.com/high", type_)
    assert other.take() == []


@pytest.mark.parametrize("extra", [
    f"<private xmlns='{NS}'/><no-copy xmlns='urn:xmpp:hints'/>",
    f"<private xmlns='{NS}'/>",
    "<no-copy xmlns='urn:xmpp:hints'/>",
    f"<received xmlns='{NS}'/>",
])
def test_private_no_copy_and_carbons_are_not_copied(server, alice, extra):
    other = connect(server, "alice@example.com", "other")
    high = connect(server, "bob@example.com", "high", priority=5)
    low = connect(server, "bob@example.com", "low", priority=1)
    chat(alice, "bob@example.com/high", extra=extra)
    [original] = high.take()
    assert next(original.elements(NS, "private"), None) is None
    assert low.take() == [] and other.take() == []


def test_received_from_a_muc_is_not_copied_but_a_sent_private_message_is(server, alice):
    other = connect(server, "alice@example.com", "other")
    high = connect(server, "bob@example.com", "high", priority=5)
    low = connect(server, "bob@example.com", "low", priority=1)
    chat(alice, "bob@example.com/high", extra="<x xmlns='http://jabber.org/protocol/muc#user'/>")
    assert len(high.take()) == 1 and low.take() == []
    carbon_of(other.take()[0], "sent")


def test_disabled_resources_get_no_more_copies(server, alice):
    connect(server, "bob@example.com", "high", priority=5)
    low = connect(server, "bob@example.com", "low", priority=1)
    low.send(f"<iq type='set' id='off'><disable xmlns='{NS}'/></iq>")
    low.take()
    chat(alice, "bob@example.com")
    assert low.take() == []


# Sent (§8)


def test_sent_copies_go_to_the_senders_other_enabled_resources(server, alice):
    alice.send(f"<iq type='set' id='on'><enable xmlns='{NS}'/></iq>")
    alice.take()
    other = connect(server, "alice@example.com", "other")
    off = connect(server, "alice@example.com", "off", carbons=False)
    bob = connect(server, "bob@example.com", "b")
    chat(alice, "bob@example.com")
    assert len(bob.take()) == 1 and alice.take() == [] and off.take() == []
    [copy] = other.take()
    assert (copy["from"], copy["to"]) == ("alice@example.com", "alice@example.com/other")
    forwarded = carbon_of(copy, "sent")
    assert (forwarded["from"], forwarded["to"]) == ("alice@example.com/a", "bob@example.com")


def test_sent_copies_for_a_remote_recipient(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=MODULES,
                         extra='[hosts."example.com"]\ncross_domain_messages = true')
    add_user(server, "alice@example.com")
    remote = []
    server.hooks.add(ROUTE_REMOTE, lambda stanza: remote.append(stanza) or True)
    alice = connect(server, "alice@example.com", "a", carbons=False)
    other = connect(server, "alice@example.com", "other")
    chat(alice, "juliet@capulet.example/balcony")
    assert [str(s.recipient) for s in remote] == ["juliet@capulet.example/balcony"]
    assert carbon_of(other.take()[0], "sent")["to"] == "juliet@capulet.example/balcony"


def test_no_sent_copy_of_a_refused_message(server, alice):
    other = connect(server, "alice@example.com", "other")
    chat(alice, "carol@other.example")
    assert error_condition(alice.take()[0]) == "service-unavailable"
    assert other.take() == []


def test_a_message_to_ones_own_account_is_copied_once(server):
    sender = connect(server, "alice@example.com", "a", priority=-1)
    target = connect(server, "alice@example.com", "b", priority=-1)
    third = connect(server, "alice@example.com", "c", priority=-1)
    chat(sender, "alice@example.com/b")
    assert len(target.take()) == 1 and sender.take() == []
    [copy] = third.take()
    carbon_of(copy, "received")
