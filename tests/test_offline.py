"""Offline messages (XEP-0160, XEP-0203), in memory.

Presence is simulated: a test sets ``Session.available`` and
``Session.priority`` and fires SESSION_REACHABLE as the presence module
would (and two tests use the presence module itself)."""

import pytest
from twisted.internet import defer
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from tests.harness import Client, add_user, error_condition, make_server, reload
from xmppd.core.events import SESSION_REACHABLE
from xmppd.jid import JID
from xmppd.storage import StorageError
from xmppd.storage.deferred import current_lane
from xmppd.storage.kinds import BULK

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


class HeldWrites:
    """A storage runner that holds the bulk writes, and the calls named in
    ``also``, until :meth:`commit` (or :meth:`fail`); other calls run at
    once."""

    def __init__(self):
        self.held = []  # [(Deferred, fn, args)]
        self.also = set()

    def __call__(self, fn, *args, **kw):
        if current_lane.get() != BULK and fn.__name__ not in self.also:
            return defer.maybeDeferred(fn, *args, **kw)
        d = defer.Deferred()
        self.held.append((d, fn, args))
        return d

    def commit(self):
        d, fn, args = self.held.pop(0)
        d.callback(fn(*args))

    def fail(self, error):
        d, _, _ = self.held.pop(0)
        d.errback(Failure(error))


def held_server(tmp_path, extra=""):
    """The server of :func:`make` with its bulk writes held."""
    writes = HeldWrites()
    server = make_server(tmp_path, modules=("bind", "message", "offline"), extra=extra,
                         runner=writes)
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    return server, writes


def test_messages_arriving_during_a_write_are_stored_in_one_transaction(tmp_path):
    server, writes = held_server(tmp_path)
    senders = []
    for name in ("alice", "bob"):
        client = Client(server)
        client.login(f"{name}@example.com", "s")
        senders.append(client)
    alice, bob = senders
    send(alice, "m0", to="bob@example.com")
    send(bob, "m1", to="alice@example.com")
    send(alice, "m2", to="bob@example.com")
    assert len(writes.held) == 1 and stored(server) == 0
    writes.commit()  # m0
    assert len(writes.held) == 1 and stored(server) == 1
    writes.commit()  # m1 and m2 together
    assert writes.held == [] and stored(server) == 2
    assert server.sql.count_offline("alice", "example.com") == 1
    assert queued(server) == 3


def test_refused_only_once_the_write_is_done(tmp_path):
    server, writes = held_server(tmp_path, "[offline]\nmax_messages = 1")
    alice = Client(server)
    alice.login("alice@example.com", "a")
    send(alice, "m0", id_="m0")
    send(alice, "m1", id_="m1")
    writes.commit()
    assert alice.take() == []
    writes.commit()
    [error] = alice.take()
    assert error["id"] == "m1" and error_condition(error) == "service-unavailable"


def test_a_failed_write_bounces_its_messages_and_logs_one_line(tmp_path):
    server, writes = held_server(tmp_path)
    add_user(server, "carol@example.com")
    alice, bob, carol = (Client(server) for _ in range(3))
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        client.login(f"{name}@example.com", "r")
    send(alice, "m0", id_="m0")
    send(bob, "m1", to="alice@example.com", id_="m1")
    send(carol, "m2", id_="m2")
    writes.commit()  # m0; m1 and m2 wait for the next write
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        writes.fail(StorageError("database or disk is full"))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    for client, id_ in ((bob, "m1"), (carol, "m2")):
        [error] = client.take()
        assert (error["id"], error_condition(error)) == (id_, "service-unavailable")
    [line] = [event for event in logged if event["log_level"] >= LogLevel.warn]
    assert line["log_level"] == LogLevel.error and "log_failure" not in line
    assert "disk is full" in str(line["error"]) and line["count"] == 2
    assert stored(server) == 1
    send(carol, "m3", id_="m3")
    writes.commit()
    assert stored(server) == 2


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


def test_limit_follows_a_reload(tmp_path):
    server = make(tmp_path, "[offline]\nmax_messages = 1")
    alice = Client(server)
    alice.login("alice@example.com", "a")
    send(alice, "m0", id_="m0")
    send(alice, "m1", id_="m1")
    assert [error["id"] for error in alice.take()] == ["m1"]
    reload(server, tmp_path, "[offline]\nmax_messages = 2")
    send(alice, "m1", id_="m1")
    assert alice.take() == [] and stored(server) == 2


def test_disabled_for_a_host(tmp_path):
    server = make(tmp_path, '[hosts."example.com"]\ndisabled_modules = ["offline"]', hosts=())
    alice = Client(server)
    alice.login("alice@example.com", "a")
    send(alice, "x")
    assert error_condition(alice.take()[0]) == "service-unavailable"
    assert "msgoffline" not in server.features_for("example.com")


def test_advertised(server):
    assert "msgoffline" in server.features_for("example.com")


def test_messages_go_back_when_the_session_ended_before_they_arrived(tmp_path):
    server, writes = held_server(tmp_path, "[offline]\nmax_messages = 2")
    alice = Client(server)
    alice.login("alice@example.com", "a")
    for i in range(2):
        send(alice, f"m{i}")
        writes.commit()
    writes.also.add("offline_take_all")
    bob, _ = come_online(server)
    taking, = writes.held
    writes.held.remove(taking)
    d, take, args = taking
    taken = take(*args)
    bob.stream.connectionLost(Failure(ConnectionError("gone")))
    d.callback(taken)
    writes.commit()
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


def reader_not_reading(server):
    """Bob logs in and his transport stops taking bytes (its buffer is full)."""
    client = Client(server)
    jid = client.login("bob@example.com", "b")
    session = server.sessions.get(JID.parse(jid))
    session.available = True
    client.transport.producer.pauseProducing()
    return client, session


def long_backlog(tmp_path):
    """100 messages of 2 kB stored for bob (more than his output bound of
    64 kB holds), then bob comes online without reading: (server, bob)."""
    server = make(tmp_path, extra="[c2s]\nmax_output_buffer = 65536\n")
    alice = Client(server)
    alice.login("alice@example.com", "a")
    for n in range(100):
        send(alice, f"{n:03d}" + "x" * 2000)
    bob, session = reader_not_reading(server)
    server.hooks.fire(SESSION_REACHABLE, session)
    return server, bob


def test_a_long_backlog_goes_as_fast_as_the_client_reads(tmp_path):
    """More stored than the output bound holds: sent as the client reads,
    never cutting it off with the messages taken from storage."""
    server, bob = long_backlog(tmp_path)
    assert not bob.closed and stored(server) == 0
    received = []
    for _ in range(100):  # each read takes at least one message: never a hang
        if len(received) == 100:
            break
        bob.transport.producer.resumeProducing()  # bob reads what waited
        received += [str(m.body)[:3] for m in bob.take() if m.name == "message"]
        assert not bob.closed
        bob.transport.producer.pauseProducing()
        server.clock.advance(0.05)
    assert received == [f"{n:03d}" for n in range(100)]


def test_what_a_leaving_client_did_not_get_of_its_backlog_is_stored_back(tmp_path):
    server, bob = long_backlog(tmp_path)
    bob.transport.producer.resumeProducing()
    got = [m for m in bob.take() if m.name == "message"]
    bob.lose()
    server.clock.advance(0.05)
    assert 0 < len(got) < 100 and stored(server) == 100 - len(got)
