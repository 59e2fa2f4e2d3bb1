"""Carriers (xmppd.core.carrier): a client stream negotiated and served the
same way over TCP and over a carrier that moves elements only, as
WebSocket (RFC 7395) and BOSH (XEP-0206) carriers will."""

import base64

from twisted.internet.testing import StringTransport
from zope.interface.verify import verifyObject

from tests.harness import Client, ElementCarrier
from xmppd.core.c2s import ClientStream
from xmppd.core.carrier import ICarrier, IStreamReceiver

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
PLAIN_ALICE = base64.b64encode(b"\0alice\0secret").decode()


def bind(carrier, resource="memory"):
    """SASL PLAIN and bind over ``carrier``; returns the bound full JID."""
    features = carrier.open()
    assert [f.name for f in features.elements()] == ["mechanisms", "authentication"]
    carrier.receive(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{PLAIN_ALICE}</auth>")
    assert [e.name for e in carrier.take()] == ["success"]
    assert carrier.restarts == 1
    assert {f.name for f in carrier.open().elements()} >= {"bind", "session"}
    carrier.receive("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                    f"<resource>{resource}</resource></bind></iq>")
    [result] = carrier.take()
    assert result["type"] == "result"
    return str(result.bind.jid)


def test_the_tcp_stream_and_the_memory_carrier_are_carriers(server):
    stream = ClientStream(server)
    stream.makeConnection(StringTransport())
    assert verifyObject(ICarrier, stream)
    assert verifyObject(IStreamReceiver, stream.connection)
    carrier = ElementCarrier(server)
    assert verifyObject(ICarrier, carrier)
    assert carrier.connection.carrier is carrier


def test_a_memory_session_talks_to_a_tcp_session_through_the_router(server):
    bob = Client(server)
    bob.login("bob@example.com", "tcp")
    carrier = ElementCarrier(server)
    assert bind(carrier) == "alice@example.com/memory"
    [session] = server.sessions.resources(carrier.connection.user)
    assert session.carrier is carrier

    carrier.receive("<message to='bob@example.com/tcp' type='chat'><body>hi</body></message>")
    [message] = bob.take()
    assert message["from"] == "alice@example.com/memory" and str(message.body) == "hi"

    bob.send("<message to='alice@example.com/memory' type='chat'><body>hello</body></message>")
    [reply] = carrier.take()
    assert reply["from"] == "bob@example.com/tcp" and str(reply.body) == "hello"

    carrier.receive("<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
    [pong] = carrier.take()
    assert pong["type"] == "result" and pong["id"] == "p"


def test_the_memory_carrier_gets_stream_errors_and_unbinds(server):
    carrier = ElementCarrier(server)
    bind(carrier)
    carrier.receive("<unknown xmlns='urn:example:x'/>")
    assert carrier.closed and carrier.error == "unsupported-stanza-type"
    assert server.sessions.count() == 0


def test_no_sasl_before_a_stream_is_opened_on_an_insecure_carrier(server):
    carrier = ElementCarrier(server)
    carrier.secure = False
    features = carrier.open()
    assert list(features.elements()) == []
    carrier.receive(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{PLAIN_ALICE}</auth>")
    assert carrier.error == "not-authorized"


def test_losing_the_carrier_unbinds(server):
    carrier = ElementCarrier(server)
    bind(carrier)
    carrier.lose()
    assert server.sessions.count() == 0
