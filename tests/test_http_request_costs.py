"""What twisted.web does per request that the listener spares: parsing a
POST body as a form (``request.args``) only when its Content-Type names a
form (twisted.web reads the header with the email package; BOSH's
``text/xml`` requests skip it), and the connection's local address read
once, not per request."""

import pytest
from twisted.internet.address import IPv4Address
from twisted.web import http
from twisted.web.resource import Resource

from tests.harness import TLSStringTransport, make_server
from xmppd.core.websocket import WebSocketFactory
from xmppd.http.listener import WebSite


class Echo(Resource):
    isLeaf = True

    def render_POST(self, request):
        return repr(sorted(request.args.items())).encode()


@pytest.fixture
def site(tmp_path):
    server = make_server(tmp_path, extra='[http]\nlisten = ["ssl:5281"]\n')
    server.http_resources[("echo",)] = (Echo(), None)
    return WebSite(server, WebSocketFactory(server, tls=True))


def post(site, content_type, data):
    transport = TLSStringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
    channel = site.buildProtocol(None)
    channel.makeConnection(transport)
    channel.dataReceived(b"POST /echo HTTP/1.1\r\nHost: example.com\r\nContent-Type: %s\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (content_type, len(data), data))
    return transport.value().partition(b"\r\n\r\n")[2]


@pytest.fixture
def parsed(monkeypatch):
    """The Content-Type lines twisted.web parsed."""
    lines = []
    real = http._parseContentType
    monkeypatch.setattr(http, "_parseContentType", lambda line: lines.append(line) or real(line))
    return lines


def test_a_form_is_still_read_into_args(site, parsed):
    assert post(site, b"Application/X-WWW-Form-Urlencoded", b"a=1&b=2") == \
        repr([(b"a", [b"1"]), (b"b", [b"2"])]).encode()
    assert parsed == [b"Application/X-WWW-Form-Urlencoded"]


def test_a_body_that_is_not_a_form_is_not_parsed_as_one(site, parsed):
    assert post(site, b"text/xml; charset=utf-8", b"a=1&b=2") == b"[]"
    assert parsed == []


def test_the_local_address_is_read_once_per_connection(site):
    transport = TLSStringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
    reads = []
    real = transport.getHost
    transport.getHost = lambda: reads.append(1) or real()
    channel = site.buildProtocol(None)
    channel.makeConnection(transport)
    for _ in range(2):
        channel.dataReceived(b"POST /echo HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/xml"
                             b"\r\nContent-Length: 3\r\n\r\nabc")
    assert transport.value().count(b"HTTP/1.1 200") == 2
    assert len(reads) == 1
