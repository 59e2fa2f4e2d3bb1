"""Offline messages (XEP-0160, XEP-0203), in memory.

Presence is simulated: a test sets ``Session.available`` and
``Session.priority`` and fires SESSION_REACHABLE as the presence module
would (and two tests use the presence module itself)."""

from functools import partial

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from tests.harness import Client, add_user, error_condition, make_server
from xmppd.core.events import SESSION_REACHABLE
from xmppd.jid import JID
from xmppd.storage.deferred import AsyncStore, immediate_runner

NS_DELAY = "urn:xmpp:delay"


def make(tmp_path, extra="", hosts=("example.com",)):
    server = make_server(tmp_path, hosts, modules=("bind", "message", "offline"), extra=extra)
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


@pytest.fixture
def alice(server):
    client = Client(server)
    client.login("alice@example.com", "a")
    return client


def send(client, body, to="bob@example.com", type_="chat", extra="", id_="m"):
    client.send(f"<message to='{to}' type='{type_}' id='{id_}'>"
                f"<body>{body}</body>{extra}</message>")


def stored(server):
    return server.sql.count_offline("bob", "example.com")


def come_online(server, resource="b", priority=0):
    client = Client(server)
    jid = client.login("bob@example.com", resource)
    session = server.sessions.get(JID.parse(jid))
    session.available, session.priority = True, priority
    if priority >= 0:
        server.hooks.fire(SESSION_REACHABLE, session)
    return client, session


def queued(server):
    return server.metrics.registry.get_sample_value("xmppd_offline_messages")


def test_stored_then_delivered_in_order_with_a_delay(server, alice):
    server.clock.advance(3600)
    for i in range(3):
        send(alice, f"m{i}", id_=f"m{i}")
        server.clock.advance(0.000001)
    assert alice.take() == [] and stored(server) == 3
    assert queued(server) == 3
    bob, _ = come_online(server)
    messages = bob.take()
    assert queued(server) == 0
    assert [str(m.body) for m in messages] == ["m0", "m1", "m2"]
    assert [m["from"] for m in messages] == ["alice@example.com/a"] * 3
    delay = next(messages[0].elements(NS_DELAY, "delay"))
    assert (delay["from"], delay["stamp"]) == ("example.com", "1970-01-01T01:00:00.000000Z")
    assert stored(server) == 0


def test_delivered_in_the_order_received_whatever_the_order_of_the_writes(server, alice):
    writes = []
    server.storage = AsyncStore(server.sql, lambda fn, *args: writes.append(partial(fn, *args))
                                or defer.Deferred())
    for i in range(3):
        send(alice, f"m{i}")
        server.clock.advance(0.000001)
    server.storage = AsyncStore(server.sql, immediate_runner)
    for write in reversed(writes):  # the database holds m2, m1, m0
        write()
    bob, _ = come_online(server)
    assert [str(m.body) for m in bob.take()] == ["m0", "m1", "m2"]


def test_not_delivered_to_a_negative_priority(server, alice):
    send(alice, "later")
    bob, session = come_online(server, priority=-1)
    assert bob.take() == [] and stored(server) == 1
    session.priority = 1
    server.hooks.fire(SESSION_REACHABLE, session)
    assert [str(m.body) for m in bob.take()] == ["later"]


def test_delivered_once(server, alice):
    send(alice, "once")
    first, _ = come_online(server, "one")
    second, _ = come_online(server, "two")
    assert len(first.take()) == 1 and second.take() == []


@pytest.mark.parametrize("type_,to", [("normal", "bob@example.com"),
                                      ("chat", "bob@example.com/gone")])
def test_normal_to_a_bare_and_chat_to_an_unbound_full_jid_are_stored(server, alice, type_, to):
    send(alice, "x", to=to, type_=type_)
    assert alice.take() == [] and stored(server) == 1


def test_a_payload_without_body_is_stored(server, alice):
    alice.send("<message to='bob@example.com' type='chat'>"
               "<received xmlns='urn:xmpp:receipts' id='r1'/></message>")
    assert alice.take() == [] and stored(server) == 1


@pytest.mark.parametrize("message", [
    "<message to='bob@example.com' type='chat' id='m'>"
    "<composing xmlns='http://jabber.org/protocol/chatstates'/><thread>t</thread></message>",
    "<message to='bob@example.com' type='chat' id='m'><body>x</body>"
    "<no-store xmlns='urn:xmpp:hints'/></message>",
])
def test_chat_states_alone_and_no_store_are_not_stored(server, alice, message):
    alice.send(message)
    assert error_condition(alice.take()[0]) == "service-unavailable"
    assert stored(server) == 0


@pytest.mark.parametrize("to", ["nobody@example.com", "nobody@example.com/r"])
def test_unknown_account_is_service_unavailable(server, alice, to):
    send(alice, "x", to=to)
    [error] = alice.take()
    assert error["from"] == to and error_condition(error) == "service-unavailable"


def test_headline_is_not_stored(server, alice):
    send(alice, "news", type_="headline")
    assert alice.take() == [] and stored(server) == 0


def test_limit(tmp_path):
    server = make(tmp_path, "[offline]\nmax_messages = 2")
    alice = Client(server)
    alice.login("alice@example.com", "a")
    for i in range(3):
        send(alice, f"m{i}", id_=f"m{i}")
    [error] = alice.take()
    assert error["id"] == "m2" and error_condition(error) == "service-unavailable"
    assert "full" in str(error.error.text)
    assert next(error.elements(NS_DELAY, "delay"), None) is None
    assert stored(server) == 2


def test_disabled_for_a_host(tmp_path):
    server = make(tmp_path, '[hosts."example.com"]\ndisabled_modules = ["offline"]', hosts=())
    alice = Client(server)
    alice.login("alice@example.com", "a")
    send(alice, "x")
    assert error_condition(alice.take()[0]) == "service-unavailable"
    assert "msgoffline" not in server.features_for("example.com")


def test_advertised(server):
    assert "msgoffline" in server.features_for("example.com")


def test_messages_go_back_when_the_session_ended_before_they_arrived(server, alice):
    for i in range(2):
        send(alice, f"m{i}")
    taking = []
    take = server.storage.take_offline

    def slow_take(*args):
        d = defer.Deferred()
        taking.append((d, take(*args)))
        return d

    server.storage.take_offline = slow_take
    bob, _ = come_online(server)
    bob.stream.connectionLost(Failure(ConnectionError("gone")))
    d, result = taking[0]
    result.chainDeferred(d)
    assert bob.take() == []
    assert [m.split("<body>")[1][:2] for m in server.sql.take_offline("bob", "example.com")] == [
        "m0", "m1"]


def test_delivered_on_initial_presence_with_the_presence_module(tmp_path):
    server = make_server(tmp_path, modules=("bind", "roster", "presence", "message", "offline"))
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    alice = Client(server)
    alice.login("alice@example.com", "a")
    send(alice, "while you were away")
    bob = Client(server)
    bob.login("bob@example.com", "b")
    assert bob.take() == []
    bob.send("<presence><priority>-1</priority></presence>")
    assert [m.name for m in bob.take()] == ["presence"]
    bob2 = Client(server)
    bob2.login("bob@example.com", "b2")
    bob2.send("<presence><priority>1</priority></presence>")
    messages = [m for m in bob2.take() if m.name == "message"]
    assert [str(m.body) for m in messages] == ["while you were away"]


def test_delivered_when_the_priority_rises_with_the_presence_module(tmp_path):
    server = make_server(tmp_path, modules=("bind", "roster", "presence", "message", "offline"))
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    alice = Client(server)
    alice.login("alice@example.com", "a")
    send(alice, "kept")
    bob = Client(server)
    bob.login("bob@example.com", "b")
    bob.send("<presence><priority>-5</priority></presence>")
    assert [m.name for m in bob.take()] == ["presence"]
    bob.send("<presence><priority>0</priority></presence>")
    assert [str(m.body) for m in bob.take() if m.name == "message"] == ["kept"]
    bob.send("<presence><priority>3</priority></presence>")
    assert [m for m in bob.take() if m.name == "message"] == []
