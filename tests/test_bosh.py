"""Client streams over BOSH (XEP-0124, XEP-0206), in memory: the HTTP site
over string transports, one connection per request, the server's clock
injected; responses read with the standard library's XML parser."""

import base64
import dataclasses
import hashlib
import xml.etree.ElementTree as ET

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from tests.harness import TLSStringTransport, add_user, make_server, online
from xmppd.core.bosh import NS_HTTPBIND, NS_XBOSH, parse_body
from xmppd.core.websocket import WebSocketFactory
from xmppd.core.xmlstream import FrameParser, StreamError
from xmppd.http.listener import WebSite
from xmppd.jid import JID

BIND = f"{{{NS_HTTPBIND}}}"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
STREAMS = "http://etherx.jabber.org/streams"


class Pending:
    """One HTTP request and, once it came, its response."""

    def __init__(self, transport, channel):
        self.transport, self.channel = transport, channel

    @property
    def answered(self):
        return b"\r\n\r\n" in self.transport.value()

    def response(self):
        head, _, data = self.transport.value().partition(b"\r\n\r\n")
        assert head, "not answered"
        status, *lines = head.decode().split("\r\n")
        self.status = int(status.split()[1])
        self.headers = {k.strip().lower(): v.strip()
                        for k, _, v in (line.partition(":") for line in lines)}
        return ET.fromstring(data)

    def drop(self):
        self.channel.connectionLost(Failure(ConnectionDone()))


class BoshClient:
    """A BOSH client of ``server``'s HTTP site."""

    def __init__(self, server, secure=True, address="192.0.2.7", rid=1000):
        self.server = server
        self.site = WebSite(server, WebSocketFactory(server, tls=secure))
        self.address = address
        self.rid = rid
        self.sid = None

    def post(self, data):
        transport = TLSStringTransport(peerAddress=IPv4Address("TCP", self.address, 40000))
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        data = data.encode() if isinstance(data, str) else data
        channel.dataReceived(b"POST /http-bind HTTP/1.1\r\nHost: example.com\r\n"
                             b"Content-Type: text/xml; charset=utf-8\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
        return Pending(transport, channel)

    def body(self, payload="", rid=None, **attributes):
        """A request of the session (the next rid unless ``rid``)."""
        if rid is None:
            self.rid += 1
            rid = self.rid
        attrs = "".join(f" {name.replace('__', ':')}='{value}'"
                        for name, value in attributes.items())
        return self.post(f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' rid='{rid}' "
                         f"sid='{self.sid}'{attrs}>{payload}</body>")

    def create(self, to="example.com", wait=60, hold=1, **attributes):
        attrs = "".join(f" {name}='{value}'" for name, value in attributes.items())
        pending = self.post(f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' "
                            f"rid='{self.rid}' to='{to}' wait='{wait}' hold='{hold}' "
                            f"xml:lang='en' xmpp:version='1.0' ver='1.11'{attrs}/>")
        body = pending.response()
        self.sid = body.get("sid")
        return pending, body

    def login(self, resource="web"):
        self.create()
        token = base64.b64encode(b"\0alice\0secret").decode()
        success = self.body(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>").response()
        assert success[0].tag == f"{{{SASL}}}success"
        features = self.body(**{"xmpp__restart": "true", "to": "example.com"}).response()
        assert features[0].find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
        bound = self.body("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns="
                          "'urn:ietf:params:xml:ns:xmpp-bind'>"
                          f"<resource>{resource}</resource></bind></iq>").response()
        assert bound[0].get("type") == "result"


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, extra='[http]\nlisten = ["ssl:5281"]\nbosh_max_wait = 30\n')
    add_user(server, "alice@example.com")
    return server


def test_session_creation_and_its_attributes(server):
    client = BoshClient(server)
    pending, body = client.create(wait=120, hold=5, ack="1")
    assert pending.status == 200
    assert pending.headers["content-type"] == "text/xml; charset=utf-8"
    assert len(client.sid) >= 32
    assert body.get("wait") == "30"  # capped by bosh_max_wait
    assert body.get("hold") == "1" and body.get("requests") == "2"
    assert body.get("inactivity") == "60" and body.get("polling") == "5"
    assert body.get("ver") == "1.11" and body.get("from") == "example.com"
    assert body.get("ack") == "1000"
    assert body.get(f"{{{NS_XBOSH}}}version") == "1.0"
    assert body.get(f"{{{NS_XBOSH}}}restartlogic") == "true"
    session = server.streams.copy().pop()
    assert body.get("authid") == session.stream_id
    features = body[0]
    assert features.tag == f"{{{STREAMS}}}features"
    assert "PLAIN" in [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
    assert server.connections.count("192.0.2.7") == 1


def test_an_unknown_host_is_host_unknown(server):
    pending, body = BoshClient(server).create(to="example.org")
    assert body.get("type") == "terminate" and body.get("condition") == "host-unknown"
    assert server.connections.total == 0


def test_login_restart_bind_and_messages_with_a_tcp_client(server):
    add_user(server, "bob@example.com")
    bob = online(server, "bob@example.com")
    client = BoshClient(server)
    client.login()
    assert server.sessions.count(JID.parse("alice@example.com")) == 1
    held = client.body("<message xmlns='jabber:client' to='bob@example.com/res' type='chat'>"
                       "<body>over BOSH</body></message>")
    message = bob.take()[0]
    assert message["from"] == "alice@example.com/web"
    assert str(next(message.elements())) == "over BOSH"
    assert not held.answered  # nothing to send yet: held
    bob.send("<message to='alice@example.com/web' type='chat'><body>over TCP</body></message>")
    reply = held.response()[0]
    assert reply.tag == "{jabber:client}message" and reply.get("from") == "bob@example.com/res"
    assert reply.findtext("{jabber:client}body") == "over TCP"


def test_stanzas_in_the_body_namespace_are_read_as_jabber_client():
    body = parse_body(f"<body xmlns='{NS_HTTPBIND}' rid='1'><message to='a@example.com'>"
                      "<body>hi</body></message></body>".encode(), FrameParser(10000))
    message = next(body.elements())
    assert (message.uri, message.name) == ("jabber:client", "message")
    assert next(message.elements()).uri == "jabber:client"


def test_out_of_order_requests_wait_for_the_gap(server):
    add_user(server, "bob@example.com")
    bob = online(server, "bob@example.com")
    client = BoshClient(server)
    client.login()
    later = client.body("<message xmlns='jabber:client' to='bob@example.com/res'>"
                        "<body>second</body></message>", rid=client.rid + 2)
    assert bob.take() == [] and not later.answered
    first = client.body("<message xmlns='jabber:client' to='bob@example.com/res'>"
                        "<body>first</body></message>", rid=client.rid + 1)
    client.rid += 2
    assert [str(next(m.elements())) for m in bob.take()] == ["first", "second"]
    assert first.response().get("ack") == str(client.rid)  # §9.2: the later one came
    assert not later.answered  # held (hold = 1)


def test_a_repeated_rid_gets_the_same_response(server):
    client = BoshClient(server)
    client.create()
    token = base64.b64encode(b"\0alice\0secret").decode()
    first = client.body(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    again = client.body(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>", rid=client.rid)
    assert again.response()[0].tag == f"{{{SASL}}}success"
    assert ET.tostring(again.response()) == ET.tostring(first.response())


def test_a_rid_outside_the_window_terminates(server):
    client = BoshClient(server)
    client.create()
    body = client.body(rid=client.rid + 5).response()
    assert body.get("type") == "terminate" and body.get("condition") == "item-not-found"
    assert server.connections.total == 0
    assert client.body().response().get("condition") == "item-not-found"


def test_hold_and_wait(server):
    client = BoshClient(server)
    client.create()
    first = client.body()
    assert not first.answered
    second = client.body("<presence xmlns='jabber:client'/>")  # not authenticated: refused
    assert first.answered and len(first.response()) == 0
    terminated = second.response()
    assert terminated.get("condition") == "remote-stream-error"
    client = BoshClient(server, address="192.0.2.8")
    client.login()
    held = client.body()
    server.clock.advance(29)
    assert not held.answered
    server.clock.advance(1)
    body = held.response()
    assert len(body) == 0 and body.get("type") is None


def test_too_frequent_empty_requests_are_a_policy_violation(server):
    client = BoshClient(server)
    client.create(hold=1)
    client.body()
    body = client.body().response()
    assert body.get("type") == "terminate" and body.get("condition") == "policy-violation"


def test_terminate_ends_the_session(server):
    client = BoshClient(server)
    client.login()
    body = client.body("<presence xmlns='jabber:client' type='unavailable'/>",
                       type="terminate").response()
    assert body.get("type") == "terminate" and body.get("condition") is None
    assert server.sessions.count(JID.parse("alice@example.com")) == 0
    assert server.connections.total == 0 and not server.streams
    assert client.body().response().get("condition") == "item-not-found"


def test_inactivity_ends_the_session(server):
    client = BoshClient(server)
    client.login()
    server.clock.advance(59)
    assert server.sessions.count(JID.parse("alice@example.com")) == 1
    server.clock.advance(1)
    assert server.sessions.count(JID.parse("alice@example.com")) == 0
    assert server.connections.total == 0
    assert client.body().response().get("condition") == "item-not-found"


def test_a_dropped_request_does_not_lose_what_it_would_carry(server):
    add_user(server, "bob@example.com")
    bob = online(server, "bob@example.com")
    client = BoshClient(server)
    client.login()
    held = client.body()
    held.drop()
    bob.send("<message to='alice@example.com/web'><body>kept</body></message>")
    again = client.body(rid=client.rid)  # the client sends the lost request again
    assert again.response()[0].findtext("{jabber:client}body") == "kept"


def test_the_output_queue_is_bounded(tmp_path):
    server = make_server(tmp_path, extra='[http]\nlisten = ["ssl:5281"]\n'
                         '[c2s]\nmax_output_buffer = 65536\n')
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    bob = online(server, "bob@example.com")
    client = BoshClient(server)
    client.login()
    session = next(s for s in server.streams if hasattr(s, "sid"))
    bob.send("<message to='alice@example.com/web'><body>" + "x" * 20000 + "</body></message>")
    assert session.backlogged()
    for _ in range(3):
        bob.send("<message to='alice@example.com/web'><body>" + "x" * 20000 + "</body></message>")
    body = client.body().response()
    assert body.get("type") == "terminate" and body.get("condition") == "policy-violation"
    assert len(body) == 0


@pytest.mark.parametrize("data", [
    b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'",
    b"<!DOCTYPE x [<!ENTITY a 'b'>]><body xmlns='http://jabber.org/protocol/httpbind'/>",
    b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'><!-- c --></body>",
    b"<iq xmlns='jabber:client'/>",
    b"<body xmlns='http://jabber.org/protocol/httpbind' rid='x'/>",
    b"\xff\xfe<\x00",
])
def test_a_malformed_body_is_400(server, data):
    pending = BoshClient(server).post(data)
    body = pending.response()
    assert pending.status == 400 and body.get("condition") == "bad-request"
    assert server.connections.total == 0


def test_a_body_over_the_size_limit_is_a_policy_violation(server):
    client = BoshClient(server)
    client.create()
    big = "<message xmlns='jabber:client'><body>" + "x" * 300000 + "</body></message>"
    assert client.body(big).response().get("condition") == "policy-violation"


def test_keys_chain_and_a_wrong_key_terminates(server):
    keys = ["seed"]
    for _ in range(3):
        keys.append(hashlib.sha1(keys[-1].encode()).hexdigest())
    client = BoshClient(server)
    client.create(newkey=keys[3])
    token = base64.b64encode(b"\0alice\0secret").decode()
    body = client.body(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>", key=keys[2])
    assert body.response()[0].tag == f"{{{SASL}}}success"
    body = client.body(key=keys[2]).response()
    assert body.get("condition") == "item-not-found"


def test_an_unencrypted_session_offers_nothing_and_takes_nothing(server):
    client = BoshClient(server, secure=False, address="127.0.0.1")
    pending, body = client.create()
    assert list(body[0]) == []
    token = base64.b64encode(b"\0alice\0secret").decode()
    body = client.body(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>").response()
    assert body.get("condition") == "remote-stream-error"
    error = body.find(f"{{{STREAMS}}}error")
    assert error.find("{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None


def test_a_parse_error_is_a_stream_error():
    with pytest.raises(StreamError):
        parse_body(b"<body xmlns='http://jabber.org/protocol/httpbind'><a></body>",
                   FrameParser(10000))


def test_one_parser_serves_every_body_and_recovers_from_a_broken_one(server):
    first = BoshClient(server)
    first.create()
    resource = first.site.resource.children[b"http-bind"]
    parser = resource._parser
    broken = first.post(b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'><a></body>")
    assert broken.response().get("condition") == "bad-request"
    second = BoshClient(server, address="192.0.2.8")
    pending, body = second.create()
    assert pending.status == 200 and body.get("sid") != first.sid
    assert resource._parser is parser  # the same FrameParser, with a new expat parser inside
    token = base64.b64encode(b"\0alice\0secret").decode()
    auth = first.body(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    assert auth.response()[0].tag == f"{{{SASL}}}success"


def test_the_body_size_limit_follows_a_reload(server):
    client = BoshClient(server)
    client.create()
    server.config = dataclasses.replace(
        server.config, c2s=dataclasses.replace(server.config.c2s, max_stanza_size=1000))
    big = "<message xmlns='jabber:client'><body>" + "x" * 2000 + "</body></message>"
    assert client.body(big).response().get("condition") == "policy-violation"


def test_each_held_request_waits_its_own_wait(server):
    client = BoshClient(server)
    client.login()  # the session's wait timer is set now, for 30 s
    server.clock.advance(10)
    held = client.body()
    server.clock.advance(20)
    assert not held.answered  # the timer fired for it, 20 s early: set again
    server.clock.advance(9)
    assert not held.answered
    server.clock.advance(1)
    assert len(held.response()) == 0 and server.sessions.count(JID.parse("alice@example.com"))


def test_inactivity_counts_from_the_last_answered_request(server):
    client = BoshClient(server)
    client.login()
    session = next(s for s in server.streams if hasattr(s, "sid"))
    server.clock.advance(50)
    held = client.body()
    server.clock.advance(30)  # answered empty after wait: inactive from now
    assert held.answered
    server.clock.advance(59)
    assert server.sessions.count(JID.parse("alice@example.com")) == 1
    server.clock.advance(1)
    assert server.sessions.count(JID.parse("alice@example.com")) == 0
    assert not [call for call in server.clock.getDelayedCalls()
                if getattr(call.func, "__self__", None) is session]  # no timer left
