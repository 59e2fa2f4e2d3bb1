"""Negotiation by modules and the session lifecycle
(xmppd.core.negotiation): what stream management (XEP-0198), SASL2
(XEP-0388), Bind2 (XEP-0386) and client state indication (XEP-0352)
modules build on, shown with toy modules loaded from the tests."""

import gc
import types

import pytest
from twisted.internet import defer
from twisted.words.xish import domish

from tests.harness import Client, ElementCarrier, error_condition
from xmppd.core.api import AUTHENTICATED
from xmppd.core.negotiation import SESSION_CARRIER_LOST, stream_element_event
from xmppd.core.events import SESSION_UNBOUND

NS_TEST = "urn:example:test"
PING_STREAM = f"<ping-stream xmlns='{NS_TEST}'/>"
MESSAGE = "<message to='alice@example.com/res' type='chat'><body>{}</body></message>"


def module(setup):
    """A feature module made of ``setup(api)``."""
    toy = types.ModuleType("tests.toy")
    toy.setup = setup
    return toy


def test_stream_element_event_names():
    assert stream_element_event(NS_TEST, "ping-stream") == f"stream/{NS_TEST}:ping-stream"
    with pytest.raises(ValueError):
        stream_element_event("", "ping-stream")
    with pytest.raises(ValueError):
        stream_element_event(NS_TEST, None)


def ping_stream(api):
    """Offers <ping-stream/> after SASL and answers it on bound streams."""
    def offer(stream):
        return domish.Element((NS_TEST, "ping-stream"))

    def answer(stream, element):
        if stream.session is None:
            return False
        stream.send(domish.Element((NS_TEST, "pong-stream")))
        return True

    api.stream_feature(offer, AUTHENTICATED)
    api.streams.on_element(NS_TEST, "ping-stream", answer)


def test_a_module_adds_a_stream_feature_and_element(server):
    server.load(module(ping_stream))
    client = Client(server)
    client.starttls()
    client.open()
    client.auth_plain("alice@example.com")
    features = client.open()
    assert (NS_TEST, "ping-stream") in {(f.uri, f.name) for f in features.elements()}
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    client.take()
    client.send(PING_STREAM)
    [pong] = client.take()
    assert (pong.uri, pong.name) == (NS_TEST, "pong-stream")
    assert not client.closed


def test_an_unclaimed_element_before_binding_is_not_authorized(server):
    server.load(module(ping_stream))
    client = Client(server)
    client.starttls()
    client.open()
    client.send(PING_STREAM)
    assert error_condition(client.take()[-1]) == "not-authorized" and client.closed


def test_an_element_with_no_namespace_is_unclaimed_not_a_crash(server):
    client = Client(server)
    client.starttls()
    client.open()
    client.send("<foo xmlns=''/>")
    assert error_condition(client.take()[-1]) == "not-authorized" and client.closed


def test_a_pending_step_keeps_later_elements_waiting(server):
    pending = []

    def setup(api):
        def hold(stream, element):
            d = defer.Deferred()
            pending.append(d)
            return d.addCallback(lambda _: stream.send(domish.Element((NS_TEST, "done"))))
        api.streams.on_element(NS_TEST, "slow", hold)
        ping_stream(api)

    server.load(module(setup))
    client = Client(server)
    client.login("alice@example.com")
    client.send(f"<slow xmlns='{NS_TEST}'/>" + PING_STREAM)
    assert client.take() == []
    pending.pop().callback(None)
    assert [e.name for e in client.take()] == ["done", "pong-stream"]


def test_stanzas_wait_for_the_one_before_and_pause_reading(server, monkeypatch):
    """RFC 6120 §10.1 through the connection's serial queue."""
    alice = Client(server)
    alice.login("alice@example.com")
    waiting, routed = [], []

    def dispatch(stanza):
        routed.append(str(stanza.element.body))
        d = defer.Deferred()
        waiting.append(d)
        return d

    monkeypatch.setattr(server.router, "dispatch", dispatch)
    for i in range(70):
        alice.send(MESSAGE.format(i))
    assert routed == ["0"]
    assert alice.transport.producerState == "paused"
    while waiting:
        waiting.pop().callback(True)
    assert routed == [str(i) for i in range(70)]
    assert alice.transport.producerState == "producing"


def test_inbound_and_outbound_filters(server):
    seen = []

    def setup(api):
        def inbound(session, element):
            seen.append(("in", session.jid.resource, element.name))
            return None if element.getAttribute("type") == "headline" else element

        def outbound(session, element):
            seen.append(("out", session.jid.resource, element.name))
            element.addElement((NS_TEST, "stamp"))
            return element

        api.streams.add_inbound_filter(inbound)
        api.streams.add_outbound_filter(outbound)

    server.load(module(setup))
    alice, bob = Client(server), Client(server)
    alice.login("alice@example.com")
    bob.login("bob@example.com", "bob")
    seen.clear()
    bob.send(MESSAGE.format("hi"))
    bob.send("<message to='alice@example.com/res' type='headline'><body>no</body></message>")
    [message] = alice.take()
    assert str(message.body) == "hi" and message.stamp.uri == NS_TEST
    assert seen == [("in", "bob", "message"), ("out", "res", "message"),
                    ("in", "bob", "message")]


def test_filters_run_by_priority(server):
    order = []

    def setup(api):
        def named(name):
            def function(session, element):
                order.append(name)
                return element
            return function

        api.streams.add_outbound_filter(named("counts"))
        api.streams.add_outbound_filter(named("holds back"), priority=10)
        api.streams.add_inbound_filter(named("in late"), priority=-1)
        api.streams.add_inbound_filter(named("in first"))

    server.load(module(setup))
    alice, bob = Client(server), Client(server)
    alice.login("alice@example.com")
    bob.login("bob@example.com", "bob")
    order.clear()
    bob.send(MESSAGE.format("hi"))
    assert order == ["in first", "in late", "holds back", "counts"]


class Hibernation:
    """A toy stream management: keeps sessions whose carrier is lost and
    queues what is sent to them, until resumed on another stream."""

    def __init__(self):
        self.queued = []
        self.unbound = []

    def setup(self, api):
        self.api = api

        def keep(session):
            api.streams.remember("token", session)
            return True

        def queue(session, element):
            if session.carrier is None:
                self.queued.append(element)
                return None
            return element

        api.hook(SESSION_CARRIER_LOST, keep)
        api.hook(SESSION_UNBOUND, self.unbound.append)
        api.streams.add_outbound_filter(queue)


def test_a_module_keeps_a_session_whose_carrier_is_lost(server):
    hibernation = Hibernation()
    server.load(module(hibernation.setup))
    alice, bob = Client(server), Client(server)
    alice.login("alice@example.com")
    bob.login("bob@example.com", "bob")
    [session] = server.sessions.resources(alice.stream.user)
    alice.stream.connectionLost(None)
    assert server.sessions.get(session.jid) is session and session.carrier is None
    assert hibernation.unbound == []

    bob.send(MESSAGE.format("while away"))
    assert [str(e.body) for e in hibernation.queued] == ["while away"]

    carrier = ElementCarrier(server)
    carrier.open()
    carrier.receive("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                    "AGFsaWNlAHNlY3JldA==</auth>")
    carrier.take()
    found = hibernation.api.streams.find("token")
    assert found is session
    hibernation.api.streams.resume(carrier.connection, found)
    assert session.carrier is carrier and carrier.connection.session is session
    bob.send(MESSAGE.format("back"))
    assert [str(e.body) for e in carrier.take()] == ["back"]

    carrier.lose()
    assert session.carrier is None and server.sessions.count() == 2
    hibernation.api.streams.unbind(session)
    assert server.sessions.get(session.jid) is None and hibernation.unbound == [session]


def test_a_session_the_server_ends_does_not_hibernate(server):
    hibernation = Hibernation()
    server.load(module(hibernation.setup))
    first, second = Client(server), Client(server)
    first.login("alice@example.com")
    [old] = server.sessions.all()
    second.login("alice@example.com")
    assert error_condition(first.take()[-1]) == "conflict"
    first.stream.connectionLost(None)
    assert server.sessions.count() == 1 and hibernation.unbound == [old]
    assert hibernation.api.streams.find("token") is None  # the replaced one was not kept
    second.send("<foo xmlns='urn:example:unknown'/>")
    assert second.closed
    second.stream.connectionLost(None)
    assert server.sessions.count() == 0 and hibernation.queued == []


def test_sessions_are_found_by_key_while_they_exist(server):
    alice = Client(server)
    alice.login("alice@example.com")
    [session] = server.sessions.all()
    streams = server.negotiation
    streams.remember(("sm", "abc"), session)
    assert streams.find(("sm", "abc")) is session
    streams.forget(("sm", "abc"))
    assert streams.find(("sm", "abc")) is None
    streams.remember("weak", session)
    alice.stream.connectionLost(None)
    del session
    gc.collect()
    assert streams.find("weak") is None
