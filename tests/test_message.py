"""Message delivery to local accounts (RFC 6121 §8.5), in memory.

Presence is simulated: a test sets ``Session.available`` and
``Session.priority`` as the presence module would."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server
from xmppd.core.events import MESSAGE_OFFLINE
from xmppd.core.stanzas import Stanza, make_stanza
from xmppd.jid import JID


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, modules=("bind", "message"))
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    return server


@pytest.fixture
def offline_claims(server):
    """Stanzas MESSAGE_OFFLINE was fired with; the handler claims them."""
    claimed = []
    server.hooks.add(MESSAGE_OFFLINE, lambda stanza: claimed.append(stanza) or True)
    return claimed


def connect(server, user, resource, priority=0, available=True):
    client = Client(server, user.split("@")[1])
    jid = client.login(user, resource)
    session = server.sessions.get(JID.parse(jid))
    session.available, session.priority = available, priority
    return client


@pytest.fixture
def alice(server):
    return connect(server, "alice@example.com", "a")


def send(client, to, type_=None, body="hi", id_="m1"):
    type_attr = "" if type_ is None else f" type='{type_}'"
    client.send(f"<message to='{to}' id='{id_}'{type_attr}><body>{body}</body></message>")


def bodies(client):
    return [str(m.body) for m in client.take()]


@pytest.mark.parametrize("type_", [None, "normal", "chat", "bogus"])
def test_bare_jid_goes_to_the_highest_priority(server, alice, type_):
    high = connect(server, "bob@example.com", "high", priority=5)
    low = connect(server, "bob@example.com", "low", priority=1)
    send(alice, "bob@example.com", type_)
    assert bodies(high) == ["hi"]
    assert low.take() == [] and alice.take() == []


def test_bare_jid_goes_to_every_resource_sharing_the_highest_priority(server, alice):
    one = connect(server, "bob@example.com", "one", priority=3)
    two = connect(server, "bob@example.com", "two", priority=3)
    zero = connect(server, "bob@example.com", "zero", priority=0)
    send(alice, "bob@example.com", "chat")
    assert bodies(one) == ["hi"] and bodies(two) == ["hi"] and zero.take() == []


def test_negative_priority_and_unavailable_resources_never_get_bare_jid_messages(
        server, alice, offline_claims):
    negative = connect(server, "bob@example.com", "neg", priority=-1)
    connected = connect(server, "bob@example.com", "conn", priority=10, available=False)
    send(alice, "bob@example.com", "chat")
    assert negative.take() == [] and connected.take() == []
    assert [str(s.recipient) for s in offline_claims] == ["bob@example.com"]
    assert alice.take() == []


def test_headline_goes_to_every_non_negative_available_resource(server, alice):
    high = connect(server, "bob@example.com", "high", priority=5)
    zero = connect(server, "bob@example.com", "zero", priority=0)
    negative = connect(server, "bob@example.com", "neg", priority=-5)
    send(alice, "bob@example.com", "headline")
    assert bodies(high) == ["hi"] and bodies(zero) == ["hi"] and negative.take() == []


def test_groupchat_to_a_bare_jid_is_refused(server, alice):
    bob = connect(server, "bob@example.com", "b", priority=1)
    send(alice, "bob@example.com", "groupchat")
    assert bob.take() == []
    [error] = alice.take()
    assert error["id"] == "m1" and error_condition(error) == "service-unavailable"


@pytest.mark.parametrize("to", ["bob@example.com", "bob@example.com/gone", "nobody@example.com"])
def test_errors_are_dropped(server, alice, to):
    bob = connect(server, "bob@example.com", "b", priority=1)
    send(alice, to, "error")
    assert bob.take() == [] and alice.take() == []


@pytest.mark.parametrize("type_", ["chat", "normal"])
def test_nobody_available_without_offline_storage_is_service_unavailable(server, alice, type_):
    connect(server, "bob@example.com", "neg", priority=-1)
    send(alice, "bob@example.com", type_)
    [error] = alice.take()
    assert error_condition(error) == "service-unavailable"


def test_headline_with_nobody_available_is_dropped(server, alice):
    send(alice, "bob@example.com", "headline")
    assert alice.take() == []


@pytest.mark.parametrize("type_", ["chat", "normal", "headline"])
def test_nobody_available_fires_message_offline(server, alice, offline_claims, type_):
    send(alice, "bob@example.com", type_)
    assert [(s.type, str(s.recipient)) for s in offline_claims] == [(type_, "bob@example.com")]
    assert alice.take() == []


def test_full_jid_reaches_a_bound_resource_even_if_not_available(server, alice):
    connect(server, "bob@example.com", "high", priority=5)
    quiet = connect(server, "bob@example.com", "quiet", available=False)
    send(alice, "bob@example.com/quiet", "normal")
    [message] = quiet.take()
    assert message["to"] == "bob@example.com/quiet" and message["from"] == "alice@example.com/a"


def test_chat_to_an_unbound_full_jid_is_handled_as_to_the_bare_jid(server, alice, offline_claims):
    high = connect(server, "bob@example.com", "high", priority=5)
    low = connect(server, "bob@example.com", "low", priority=1)
    send(alice, "bob@example.com/gone", "chat")
    [message] = high.take()
    assert message["to"] == "bob@example.com/gone"
    assert low.take() == [] and alice.take() == []
    for resource in ("high", "low"):
        server.sessions.get(JID.parse(f"bob@example.com/{resource}")).available = False
    send(alice, "bob@example.com/gone", "chat", id_="m2")
    assert [str(s.recipient) for s in offline_claims] == ["bob@example.com/gone"]


@pytest.mark.parametrize("type_", ["normal", "headline", "groupchat"])
def test_other_types_to_an_unbound_full_jid_are_refused(server, alice, offline_claims, type_):
    bob = connect(server, "bob@example.com", "b", priority=5)
    send(alice, "bob@example.com/gone", type_)
    assert bob.take() == [] and offline_claims == []
    assert error_condition(alice.take()[0]) == "service-unavailable"


@pytest.mark.parametrize("to", ["nobody@example.com", "nobody@example.com/r"])
@pytest.mark.parametrize("type_", ["chat", "normal", "headline"])
def test_unknown_account_is_service_unavailable(server, alice, to, type_):
    send(alice, to, type_)
    [error] = alice.take()
    assert error["from"] == to and error_condition(error) == "service-unavailable"


def test_unknown_account_is_left_to_the_offline_handler(server, alice, offline_claims):
    send(alice, "nobody@example.com", "chat")
    assert [str(s.recipient) for s in offline_claims] == ["nobody@example.com"]
    assert alice.take() == []


def test_message_service_names_the_recipients(server, alice):
    high = connect(server, "bob@example.com", "high", priority=5)
    connect(server, "bob@example.com", "low", priority=1)
    quiet = connect(server, "bob@example.com", "quiet", available=False)
    delivery = server.services["message"]

    def recipients(to, type_):
        sender = JID.parse("alice@example.com/a")
        element = make_stanza("message", to=to, from_=sender, type_=type_)
        stanza = Stanza(element, sender, JID.parse(to), server.sessions.get(sender))
        return sorted(s.jid.resource for s in delivery.recipients(stanza))

    assert recipients("bob@example.com", "chat") == ["high"]
    assert recipients("bob@example.com", "headline") == ["high", "low"]
    assert recipients("bob@example.com", "groupchat") == []
    assert recipients("bob@example.com/quiet", "chat") == ["quiet"]
    assert recipients("bob@example.com/gone", "chat") == ["high"]
    assert recipients("bob@example.com/gone", "normal") == []
    assert recipients("bob@example.com/quiet", "error") == []
    assert high.take() == [] and quiet.take() == []


def test_priorities_from_the_presence_module(tmp_path):
    server = make_server(tmp_path, modules=("bind", "roster", "presence", "message"))
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    alice = Client(server)
    alice.login("alice@example.com", "a")
    clients = {}
    for resource, priority in (("high", 7), ("low", 2), ("neg", -3)):
        clients[resource] = Client(server)
        clients[resource].login("bob@example.com", resource)
        clients[resource].send(f"<presence><priority>{priority}</priority></presence>")
    for client in clients.values():
        client.take()
    send(alice, "bob@example.com", "chat")
    assert {r: bodies(c) for r, c in clients.items()} == {"high": ["hi"], "low": [], "neg": []}
