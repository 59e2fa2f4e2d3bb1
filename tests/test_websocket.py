"""Client streams over WebSocket (RFC 7395), in memory: the HTTP site over
a string transport, the client side spoken by the ``websockets`` library's
sans-I/O protocol (an independent implementation of RFC 6455)."""

import base64

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from tests.harness import (Client, TLSStringTransport, add_user, error_condition, make_server,
                           online)
from tests.test_c2s import offline_bodies
from xmppd.control import Controller
from xmppd.core.websocket import NS_FRAMING, WebSocketFactory
from xmppd.core.xmlstream import FrameParser, StreamError, parse_stanza
from xmppd.http.listener import WebSite
from xmppd.jid import JID

OPEN = f"<open xmlns='{NS_FRAMING}' to='example.com' version='1.0'/>"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


class WebSocketClient:
    """A WebSocket client of ``server``'s HTTP site over a string transport."""

    def __init__(self, server, subprotocols=("xmpp",), secure=True, address="192.0.2.7",
                 headers=()):
        self.server = server
        self.transport = TLSStringTransport(peerAddress=IPv4Address("TCP", address, 40000))
        site = WebSite(server, WebSocketFactory(server, tls=secure))
        self.channel = site.buildProtocol(None)
        self.transport.protocol = self.channel
        self.channel.makeConnection(self.transport)
        self.ws = ClientProtocol(parse_uri("wss://example.com/xmpp-websocket"),
                                 subprotocols=list(subprotocols) or None)
        request = self.ws.connect()
        for name, value in headers:
            request.headers[name] = value
        self.ws.send_request(request)
        self._write()
        self.response = self.ws.handshake_exc is None and self.ws.state.name == "OPEN"

    def _write(self):
        for data in self.ws.data_to_send():
            if data:
                self.transport.protocol.dataReceived(data)
        self._read()

    def _read(self):
        data = self.transport.value()
        self.transport.clear()
        if data:
            self.ws.receive_data(data)
        if self.transport.disconnecting and self.ws.state.name != "CLOSED":
            self.ws.receive_eof()

    def send(self, text):
        self.ws.send_text(text.encode() if isinstance(text, str) else text)
        self._write()

    def send_binary(self, data):
        self.ws.send_binary(data)
        self._write()

    def frames(self):
        """The text frames the server sent since the last call, and the
        close frame's code as an int, if one came."""
        self._read()
        found = []
        for event in self.ws.events_received():
            if isinstance(event, Frame) and event.opcode == Opcode.CLOSE:
                found.append(int.from_bytes(event.data[:2], "big"))
            elif isinstance(event, Frame) and event.opcode == Opcode.TEXT:
                found.append(event.data.decode())
            elif not isinstance(event, Frame):
                self.handshake = event
        return found

    def elements(self):
        return [parse_stanza(f) if isinstance(f, str) else f for f in self.frames()]


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, extra='[http]\nlisten = ["ssl:5281"]')
    add_user(server, "alice@example.com")
    return server


def test_a_handshake_without_the_xmpp_subprotocol_is_refused(server):
    client = WebSocketClient(server, subprotocols=())
    assert not client.response
    assert client.ws.handshake_exc is not None
    assert "400" in str(client.ws.handshake_exc)
    assert server.connections.total == 0


def test_open_is_answered_with_open_and_features(server):
    client = WebSocketClient(server)
    assert client.response
    assert client.ws.subprotocol == "xmpp"
    client.send(OPEN)
    opened, features = client.elements()
    assert (opened.uri, opened.name) == (NS_FRAMING, "open")
    assert opened["from"] == "example.com" and opened["version"] == "1.0" and opened["id"]
    assert features.name == "features"
    mechanisms = [m for f in features.elements() if f.uri == SASL for m in f.elements()]
    assert "PLAIN" in [str(m) for m in mechanisms]
    assert server.connections.total == 1


def test_a_shutdown_ends_a_websocket_stream_with_system_shutdown(server):
    client = WebSocketClient(server)
    client.send(OPEN)
    client.frames()
    Controller(server, server.clock).stopService()
    error, close, code = client.elements()
    assert error.name == "error" and [c.name for c in error.elements()][0] == "system-shutdown"
    assert (close.uri, close.name, code) == (NS_FRAMING, "close", 1000)


def login(client, resource="web"):
    client.send(OPEN)
    client.frames()
    token = base64.b64encode(b"\0alice\0secret").decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    assert client.elements()[0].name == "success"
    client.send(OPEN)  # the restart (RFC 7395 §3.5)
    opened, features = client.elements()
    assert opened.name == "open" and any(f.name == "bind" for f in features.elements())
    client.send("<iq type='set' id='b' xmlns='jabber:client'><bind "
                f"xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource>"
                "</bind></iq>")
    result = client.elements()[0]
    assert result["type"] == "result"


def test_a_websocket_counts_as_a_stream_not_as_an_http_connection(server):
    client = WebSocketClient(server)
    assert client.response
    assert server.http_connections.count("192.0.2.7") == 0
    assert server.connections.count("192.0.2.7") == 1
    server.clock.advance(server.config.http.timeout * 2)  # no HTTP deadline left behind
    assert not client.transport.disconnecting


def test_sasl_bind_and_a_session_as_on_tcp(server):
    add_user(server, "bob@example.com")
    bob = online(server, "bob@example.com")
    client = WebSocketClient(server)
    login(client)
    assert server.sessions.count(JID.parse("alice@example.com")) == 1
    client.send("<message xmlns='jabber:client' to='bob@example.com/res' type='chat'>"
                "<body>over a WebSocket</body></message>")
    message = bob.take()[0]
    assert message["from"] == "alice@example.com/web"
    assert str(next(message.elements())) == "over a WebSocket"
    bob.send("<message to='alice@example.com/web' type='chat'><body>over TCP</body></message>")
    reply = client.elements()[0]
    assert reply.name == "message" and reply["from"] == "bob@example.com/res"
    assert reply.uri == "jabber:client"


def test_close_is_answered_with_close_and_the_websocket_closes(server):
    client = WebSocketClient(server)
    client.send(OPEN)
    client.frames()
    client.send(f"<close xmlns='{NS_FRAMING}'/>")
    frames = client.frames()
    assert parse_stanza(frames[0]).name == "close" and frames[1] == 1000


def test_a_frame_over_the_stanza_limit_is_a_policy_violation(server):
    client = WebSocketClient(server)
    client.send(OPEN)
    client.frames()
    limit = server.config.c2s.max_stanza_size
    client.send("<message xmlns='jabber:client'><body>" + "x" * limit + "</body></message>")
    error, close, code = client.elements()
    assert error.name == "error" and error_condition(error) == "policy-violation"
    assert close.name == "close" and code == 1000


def test_a_binary_frame_closes_with_1003(server):
    client = WebSocketClient(server)
    client.send(OPEN)
    client.frames()
    client.send_binary(b"<presence/>")
    assert client.frames() == [1003]


def test_elements_before_open_are_refused(server):
    client = WebSocketClient(server)
    client.send("<presence xmlns='jabber:client'/>")
    opened, error, close, code = client.elements()
    assert opened.name == "open" and error_condition(error) == "not-authorized"


def test_an_unencrypted_websocket_offers_nothing_and_takes_nothing(server):
    client = WebSocketClient(server, secure=False, address="127.0.0.1")
    client.send(OPEN)
    opened, features = client.elements()
    assert list(features.elements()) == []
    token = base64.b64encode(b"\0alice\0secret").decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    error, close, code = client.elements()
    assert error_condition(error) == "policy-violation"


def test_a_trusted_proxy_that_terminated_tls_makes_it_secure(tmp_path):
    server = make_server(tmp_path, extra='[http]\nlisten = ["tcp:5280:interface=127.0.0.1"]\n'
                         'trusted_proxies = ["127.0.0.1"]')
    client = WebSocketClient(server, secure=False, address="127.0.0.1",
                             headers=[("X-Forwarded-Proto", "https"),
                                      ("X-Forwarded-For", "198.51.100.9")])
    client.send(OPEN)
    opened, features = client.elements()
    assert any(f.uri == SASL for f in features.elements())
    assert server.connections.count("198.51.100.9") == 1


def test_an_untrusted_peer_cannot_claim_tls_or_an_address(server):
    client = WebSocketClient(server, secure=False, address="127.0.0.1",
                             headers=[("X-Forwarded-Proto", "https"),
                                      ("X-Forwarded-For", "198.51.100.9")])
    client.send(OPEN)
    opened, features = client.elements()
    assert list(features.elements()) == []
    assert server.connections.count("127.0.0.1") == 1


def test_pings_and_the_idle_timeout(server):
    client = WebSocketClient(server)
    login(client)
    http = server.config.http
    server.clock.advance(http.websocket_ping_interval)
    client._read()
    pings = [e for e in client.ws.events_received() if e.opcode == Opcode.PING]
    assert len(pings) == 1
    client.ws.data_to_send()  # the pong is not sent: nothing comes from the client
    server.clock.advance(http.websocket_idle_timeout)
    frames = [f for f in client.frames()]
    texts = [parse_stanza(f) for f in frames if isinstance(f, str)]
    assert [error_condition(e) for e in texts if e.name == "error"] == ["connection-timeout"]
    assert frames[-1] == 1000


def test_the_servers_own_output_does_not_keep_a_silent_client(tmp_path):
    server = make_server(tmp_path, extra='[ping]\nidle_timeout = 0\n'  # no XMPP pings
                         '[http]\nlisten = ["ssl:5281"]')
    add_user(server, "alice@example.com")
    client = WebSocketClient(server)
    login(client)
    jid = "alice@example.com/web"
    http = server.config.http
    for _ in range(int(http.websocket_idle_timeout // http.websocket_ping_interval) + 1):
        server.router.route(parse_stanza(
            f"<message xmlns='jabber:client' from='example.com' to='{jid}'><body>news</body>"
            "</message>"))
        server.clock.advance(http.websocket_ping_interval)
        client._read()
        client.ws.data_to_send()  # neither pongs nor anything else come from the client
    texts = [parse_stanza(f) for f in client.frames() if isinstance(f, str)]
    assert "connection-timeout" in [error_condition(e) for e in texts if e.name == "error"]


@pytest.mark.parametrize("payload,condition", [
    (b"<presence/><presence/>", "not-well-formed"),
    (b"<presence>", "not-well-formed"),
    (b"<!DOCTYPE x [<!ENTITY a 'b'>]><presence/>", "restricted-xml"),
    (b"<presence><!-- c --></presence>", "restricted-xml"),
    (b"<?xml version='1.0'?><presence/>", None),
])
def test_frames_are_parsed_with_the_stream_restrictions(payload, condition):
    with pytest.raises(StreamError) as info:
        FrameParser(10000).parse(payload)
    if condition is not None:
        assert info.value.condition == condition


def test_a_frame_is_one_element_in_jabber_client():
    element = FrameParser(10000).parse(b"<message to='a@example.com'><body>hi</body></message>")
    assert (element.uri, element.name) == ("jabber:client", "message")


def test_one_parser_reads_the_frames_of_a_connection():
    frames = FrameParser(10000)
    first = frames.parse(b"<message to='a@example.com'><body>one</body></message>")
    second = frames.parse(b" <presence xml:lang='en'/> ")
    assert (str(first.body), second.name) == ("one", "presence")
    # A frame ending inside an element, or in the middle of a tag, is refused:
    # what follows it would otherwise be read as its continuation.
    for payload in (b"<presence/><message>", b"<presence/><message to='>"):
        with pytest.raises(StreamError):
            FrameParser(10000).parse(payload)
    assert frames.release() and not frames.release()
    assert frames.parse(b"<iq type='get' id='1'/>").name == "iq"


# Stream management (XEP-0198) across WebSocket reconnects: a session
# hibernates when its WebSocket is lost and is resumed on a new one, or on
# TCP (and the reverse): a session may move between carriers.

NS_SM = "urn:xmpp:sm:3"


def lose(client):
    """The connection under the WebSocket is gone: no <close/>, no close frame."""
    client.transport.protocol.connectionLost(Failure(ConnectionDone()))


def managed_websocket(server, resource="web"):
    """alice@example.com/RESOURCE over WebSocket with resumable stream
    management; the client and the id of its <enabled/>."""
    client = WebSocketClient(server)
    login(client, resource)
    client.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    [enabled] = client.elements()
    assert (enabled.uri, enabled.name, enabled["resume"]) == (NS_SM, "enabled", "true")
    return client, enabled["id"]


def resume_websocket(server, previd, h):
    """A new WebSocket that authenticates as alice and resumes ``previd``
    instead of binding; the client and what it got."""
    client = WebSocketClient(server)
    client.send(OPEN)
    client.frames()
    token = base64.b64encode(b"\0alice\0secret").decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    assert client.elements()[0].name == "success"
    client.send(OPEN)
    opened, features = client.elements()
    assert any((f.uri, f.name) == (NS_SM, "sm") for f in features.elements())
    client.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{h}'/>")
    return client, client.elements()


def chat_bodies(elements):
    return [str(e.body) for e in elements if not isinstance(e, int) and e.name == "message"]


def alice_session(server, resource="web"):
    return server.sessions.get(JID.parse(f"alice@example.com/{resource}"))


def to_alice(bob, body, resource="web"):
    bob.send(f"<message to='alice@example.com/{resource}' type='chat'><body>{body}</body>"
             "</message>")


@pytest.fixture
def bob(server):
    add_user(server, "bob@example.com")
    return online(server, "bob@example.com")


def test_a_lost_websocket_hibernates_and_a_new_websocket_resumes(server, bob):
    alice, previd = managed_websocket(server)
    for body in ("one", "two", "three"):
        to_alice(bob, body)
    assert chat_bodies(alice.elements()) == ["one", "two", "three"]
    alice.send(f"<a xmlns='{NS_SM}' h='1'/>")  # "one" only
    assert alice.elements() == []
    session = alice_session(server)
    carrier = alice.transport.protocol
    lose(alice)
    assert carrier.closed and carrier not in server.streams
    assert alice_session(server) is session and session.hibernating
    assert server.connections.count("192.0.2.7") == 0  # the lost WebSocket is not counted
    to_alice(bob, "while away")
    assert bob.take() == []  # neither bounced nor an unavailable presence

    new, got = resume_websocket(server, previd, 1)
    assert (got[0].uri, got[0].name, got[0]["previd"]) == (NS_SM, "resumed", previd)
    assert chat_bodies(got) == ["two", "three", "while away"]
    assert got[-1].name == "r"
    assert alice_session(server) is session and not session.hibernating
    to_alice(bob, "after")
    assert chat_bodies(new.elements()) == ["after"]
    new.send(f"<a xmlns='{NS_SM}' h='5'/>")
    new.send("<message xmlns='jabber:client' to='bob@example.com/res' type='chat'>"
             "<body>back</body></message>")
    [message] = bob.take()
    assert message["from"] == "alice@example.com/web" and str(message.body) == "back"
    new.send(f"<r xmlns='{NS_SM}'/>")
    [answer] = new.elements()
    assert (answer.name, answer["h"]) == ("a", "1")


def test_a_websocket_session_resumes_over_tcp(server, bob):
    alice, previd = managed_websocket(server)
    to_alice(bob, "unacknowledged")
    alice.elements()
    lose(alice)
    to_alice(bob, "while away")
    tcp = Client(server)
    tcp.starttls()
    tcp.open()
    assert tcp.auth_plain("alice@example.com").name == "success"
    tcp.open()
    tcp.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
    got = tcp.take()
    assert got[0].name == "resumed"
    assert chat_bodies(got) == ["unacknowledged", "while away"]
    assert alice_session(server).carrier is tcp.stream
    to_alice(bob, "on tcp")
    assert chat_bodies(tcp.take()) == ["on tcp"]


def test_a_tcp_session_resumes_over_websocket(server, bob):
    tcp = Client(server)
    tcp.login("alice@example.com", "web")
    tcp.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    [enabled] = tcp.take()
    to_alice(bob, "unacknowledged")
    assert chat_bodies(tcp.take()) == ["unacknowledged"]
    tcp.lose()
    assert alice_session(server).hibernating
    to_alice(bob, "while away")
    new, got = resume_websocket(server, enabled["id"], 0)
    assert got[0].name == "resumed"
    assert chat_bodies(got) == ["unacknowledged", "while away"]
    to_alice(bob, "on the web")
    assert chat_bodies(new.elements()) == ["on the web"]


def test_resuming_over_tcp_replaces_a_websocket_still_open(server, bob):
    alice, previd = managed_websocket(server)
    tcp = Client(server)
    tcp.starttls()
    tcp.open()
    assert tcp.auth_plain("alice@example.com").name == "success"
    tcp.open()
    tcp.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
    assert tcp.take()[0].name == "resumed"
    error, close, code = alice.elements()
    assert error_condition(error) == "conflict" and close.name == "close" and code == 1000
    lose(alice)
    assert alice_session(server).carrier is tcp.stream
    to_alice(bob, "to tcp")
    assert chat_bodies(tcp.take()) == ["to tcp"]


def test_close_ends_a_managed_session_without_hibernation(server, bob):
    alice, previd = managed_websocket(server)
    to_alice(bob, "unacknowledged")
    alice.elements()
    alice.send(f"<close xmlns='{NS_FRAMING}'/>")
    frames = alice.frames()
    assert parse_stanza(frames[0]).name == "close" and frames[1] == 1000
    assert alice_session(server) is None
    assert server.sql.count_offline("alice", "example.com") == 1  # not acknowledged
    _, got = resume_websocket(server, previd, 0)
    assert (got[0].name, [c.name for c in got[0].elements()]) == ("failed", ["item-not-found"])


def test_a_lost_websocket_without_resumption_ends_the_session(server, bob):
    alice = WebSocketClient(server)
    login(alice)
    alice.send(f"<enable xmlns='{NS_SM}'/>")
    assert alice.elements()[0].name == "enabled"
    lose(alice)
    assert alice_session(server) is None


def test_a_hibernating_websocket_session_expires(server, bob):
    alice, previd = managed_websocket(server)
    lose(alice)
    to_alice(bob, "kept offline")
    alice.transport.clear()
    server.clock.advance(server.config.c2s.resume_timeout - 1)
    assert alice.transport.value() == b""  # no pings to a lost WebSocket
    assert alice_session(server).hibernating
    server.clock.advance(1)
    assert alice_session(server) is None
    assert server.sql.count_offline("alice", "example.com") == 1


def test_a_close_frame_without_close_hibernates_as_a_lost_connection(server, bob):
    """A browser leaving the page closes the WebSocket (1001, going away)
    without ending the XMPP stream: the session can still be resumed."""
    alice, previd = managed_websocket(server)
    to_alice(bob, "unacknowledged")
    alice.elements()
    alice.ws.send_close(1001)
    alice._write()
    assert alice.frames() == [1000]  # the server's answering close frame, no <close/>
    # The server has dropped the TCP connection, which may take a while to go:
    # from the close frame on, the WebSocket carries nothing.
    assert alice.transport.disconnecting and alice.transport.protocol.closed
    assert alice_session(server).hibernating
    to_alice(bob, "while it goes")
    assert bob.take() == [] and alice.transport.value() == b""
    lose(alice)
    _, got = resume_websocket(server, previd, 0)
    assert got[0].name == "resumed"
    assert chat_bodies(got) == ["unacknowledged", "while it goes"]


def test_a_websocket_failed_by_a_protocol_error_carries_nothing_more(server, bob):
    """An unmasked client frame fails the WebSocket (RFC 6455 §5.1: 1002)
    and the server drops the connection: the session hibernates at once and
    what is sent to it meanwhile waits for the resumption (no error)."""
    alice, previd = managed_websocket(server)
    alice.transport.protocol.dataReceived(b"\x81\x05hello")  # a text frame, not masked
    alice.transport.clear()
    assert alice.transport.disconnecting and alice.transport.protocol.closed
    assert alice_session(server).hibernating
    to_alice(bob, "while it goes")
    assert bob.take() == [] and alice.transport.value() == b""
    lose(alice)
    _, got = resume_websocket(server, previd, 0)
    assert got[0].name == "resumed" and chat_bodies(got) == ["while it goes"]


def not_reading_websocket(tmp_path):
    """alice over WebSocket (``login``), whose connection's buffer is full;
    bob on TCP."""
    server = make_server(tmp_path, extra="[c2s]\nmax_output_buffer = 65536\n")
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    bob = Client(server)
    bob.login("bob@example.com")
    alice = WebSocketClient(server)
    login(alice, "web")
    alice.transport.producer.pauseProducing()  # the transport's buffer is full
    return server, alice, bob


def kilobyte_messages(count):
    return "".join(f"<message to='alice@example.com/web' type='chat'><body>{'x' * 1000}"
                   "</body></message>" for _ in range(count))


def test_a_websocket_client_that_does_not_read_is_cut_off(tmp_path):
    server, alice, bob = not_reading_websocket(tmp_path)
    for _ in range(70):
        bob.send(kilobyte_messages(1))
        bob.transport.producerState = "producing"  # not held, for this test
    assert alice.transport.disconnecting
    assert len(alice.transport.value()) < 1000  # what waited is dropped
    assert server.sessions.count() == 1  # alice's session ended at once
    bob.send("<message to='alice@example.com/web' type='chat'><body>later</body></message>")
    assert offline_bodies(server, "alice")[-1] == "later"
    assert not bob.closed


def test_writers_are_held_while_a_websocket_reader_is_backlogged(tmp_path):
    server, alice, bob = not_reading_websocket(tmp_path)
    bob.send(kilobyte_messages(10))
    assert bob.transport.producerState == "producing"
    bob.send(kilobyte_messages(10))  # past a quarter of the limit
    assert bob.transport.producerState == "paused"
    alice.transport.producer.resumeProducing()  # alice reads
    assert bob.transport.producerState == "producing"
    assert sum("xxxx" in f for f in alice.frames() if isinstance(f, str)) == 20


def test_the_parser_sweep_releases_a_quiet_websocket_parser(server):
    from xmppd.core.stream import ParserSweep
    add_user(server, "bob@example.com")
    bob = online(server, "bob@example.com")
    client = WebSocketClient(server)
    login(client)
    sweep = ParserSweep(server, server.clock, interval=5.0, quiet=10.0)
    assert sweep.sweep() == 0  # it just spoke
    server.clock.advance(11)
    assert sweep.sweep() == 2 and sweep.sweep() == 0  # bob's TCP stream and the WebSocket
    [carrier] = [s for s in server.streams if hasattr(s, "_frames")]
    assert carrier._frames._parser is None
    client.send("<message xmlns='jabber:client' to='bob@example.com/res' type='chat'>"
                "<body>after a pause</body></message>")
    assert [str(m.body) for m in bob.take() if m.name == "message"] == ["after a pause"]
