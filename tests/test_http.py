"""The HTTP listener in memory: host-meta (XEP-0156), CORS, trusted
proxies, body limits and the modules' resources, over a string transport."""

import json

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from tests.harness import TLSStringTransport, make_server
from xmppd.core.api import ModuleAPI
from xmppd.core.websocket import WebSocketFactory
from xmppd.http.listener import WebSite

LISTEN = '[http]\nlisten = ["ssl:5281"]\n'


def request(server, raw, address="192.0.2.7"):
    """Send raw HTTP/1.1 bytes; the response's status, headers and body."""
    transport = TLSStringTransport(peerAddress=IPv4Address("TCP", address, 40000))
    channel = WebSite(server, WebSocketFactory(server, tls=True)).buildProtocol(None)
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status.split()[1]), headers, body


def get(server, path, host="example.com", headers=(), address="192.0.2.7", method="GET"):
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    raw = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    return request(server, raw.encode(), address)


@pytest.fixture
def server(tmp_path):
    return make_server(tmp_path, hosts=("example.com", "example.net"), modules=(), extra=LISTEN)


@pytest.mark.parametrize("host", ["example.com", "example.net", "EXAMPLE.net:5281"])
def test_host_meta_lists_the_websocket_of_the_requested_host(server, host):
    domain = host.split(":")[0].lower()
    status, headers, body = get(server, "/.well-known/host-meta", host=host)
    assert status == 200 and headers["content-type"].startswith("application/xrd+xml")
    assert headers["access-control-allow-origin"] == "*"
    assert (f"<Link rel=\"urn:xmpp:alt-connections:websocket\" "
            f"href=\"wss://{domain}:5281/xmpp-websocket\"/>").encode() in body
    assert b"<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>" in body
    status, headers, body = get(server, "/.well-known/host-meta.json", host=host)
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"links": [{"rel": "urn:xmpp:alt-connections:websocket",
                                           "href": f"wss://{domain}:5281/xmpp-websocket"},
                                          {"rel": "urn:xmpp:alt-connections:xbosh",
                                           "href": f"https://{domain}:5281/http-bind"}]}


def test_host_meta_of_a_domain_not_served_here_is_404(server):
    assert get(server, "/.well-known/host-meta", host="example.org")[0] == 404
    assert get(server, "/.well-known/host-meta.json", host="bad_host!")[0] == 404


def test_host_meta_follows_the_external_url(tmp_path):
    server = make_server(tmp_path, modules=(), extra=LISTEN + 'external_url = "https://{host}/"')
    body = get(server, "/.well-known/host-meta.json")[2]
    assert json.loads(body)["links"][0]["href"] == "wss://example.com/xmpp-websocket"


def test_unknown_paths_are_404(server):
    assert get(server, "/")[0] == 404
    assert get(server, "/nothing/here")[0] == 404


def test_cors_only_for_configured_origins(tmp_path):
    server = make_server(tmp_path, modules=(),
                         extra=LISTEN + 'cors_origins = ["https://chat.example.com"]')
    ModuleAPI(server, "upload").http_resource("upload", Echo())
    status, headers, _ = get(server, "/upload/x", headers=[("Origin", "https://chat.example.com")])
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://chat.example.com"
    assert headers["vary"] == "Origin"
    status, headers, _ = get(server, "/upload/x", headers=[("Origin", "https://evil.example")])
    assert status == 200 and "access-control-allow-origin" not in headers
    assert headers["vary"] == "Origin"  # a cache keeps the answers of origins apart
    status, headers, _ = get(server, "/upload/x", method="OPTIONS",
                             headers=[("Origin", "https://chat.example.com"),
                                      ("Access-Control-Request-Method", "PUT")])
    assert status == 204 and "PUT" in headers["access-control-allow-methods"]
    assert "Content-Type" in headers["access-control-allow-headers"]


def test_a_resource_for_every_origin_allows_any_whatever_the_configuration(server):
    ModuleAPI(server, "upload").http_resource("files", Echo(), cors="*")
    for origin in ("https://chat.example.com", "https://other.example"):
        status, headers, _ = get(server, "/files/x", headers=[("Origin", origin)])
        assert status == 200 and headers["access-control-allow-origin"] == "*"
    status, headers, _ = get(server, "/files/x", method="OPTIONS",
                             headers=[("Origin", "https://other.example"),
                                      ("Access-Control-Request-Method", "PUT")])
    assert status == 204 and "PUT" in headers["access-control-allow-methods"]


def connection(server, address="192.0.2.7"):
    """A new connection to the listener: (channel, transport)."""
    transport = TLSStringTransport(peerAddress=IPv4Address("TCP", address, 40000))
    channel = WebSite(server, WebSocketFactory(server, tls=True)).buildProtocol(None)
    channel.makeConnection(transport)
    return channel, transport


def test_the_connections_of_an_address_are_limited(tmp_path):
    server = make_server(tmp_path, modules=(), extra=(
        '[limits]\nmax_connections_per_ip = 2\n' + LISTEN + 'trusted_proxies = ["127.0.0.1"]'))
    first, second, third = (connection(server) for _ in range(3))
    assert not first[1].disconnecting and not second[1].disconnecting
    assert third[1].disconnecting  # closed at once
    first[0].connectionLost(Failure(ConnectionDone()))
    assert not connection(server)[1].disconnecting
    assert not connection(server, "192.0.2.8")[1].disconnecting  # another address
    proxied = [connection(server, "127.0.0.1") for _ in range(3)]  # its clients count apart
    assert not any(transport.disconnecting for _, transport in proxied)


def test_a_request_whose_headers_trickle_in_is_cut_off(server):
    channel, transport = connection(server)
    for _ in range(5):
        channel.dataReceived(b"G")
        server.clock.advance(server.config.http.timeout / 5 - 1)
    assert not transport.disconnecting
    server.clock.advance(5)  # the headers' time is up, though bytes kept coming
    assert transport.disconnecting
    channel, transport = connection(server)
    channel.dataReceived(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200")
    server.clock.advance(server.config.http.timeout - 1)  # waiting for the next request
    assert not transport.disconnecting
    server.clock.advance(1)
    assert transport.disconnecting


class Echo(Resource):
    """Says who asked, how, and what it got."""

    isLeaf = True

    def render(self, request):
        return json.dumps({"client": request.getClientAddress().host,
                           "secure": request.isSecure(), "path": request.path.decode(),
                           "postpath": [p.decode() for p in request.postpath],
                           "body": len(request.content.read())}).encode()


def test_a_module_resource_is_served_under_its_prefix(server):
    api = ModuleAPI(server, "upload")
    api.http_resource("upload", Echo())
    api.http_resource("files/v1", Echo())
    answer = json.loads(get(server, "/upload/abc/file.txt")[2])
    assert answer["postpath"] == ["abc", "file.txt"]
    answer = json.loads(get(server, "/files/v1/x")[2])
    assert answer["postpath"] == ["x"]
    assert get(server, "/files/v2/x")[0] == 404


@pytest.mark.parametrize("peer,header,client", [
    ("127.0.0.1", "198.51.100.9", "198.51.100.9"),  # from the trusted proxy
    ("127.0.0.1", "203.0.113.5, 198.51.100.9", "198.51.100.9"),  # the rightmost hop
    ("127.0.0.1", "203.0.113.5, 127.0.0.1", "203.0.113.5"),  # past trusted proxies
    ("127.0.0.1", "not an address", "127.0.0.1"),  # malformed: ignored
    ("192.0.2.7", "198.51.100.9", "192.0.2.7"),  # not a trusted proxy: ignored
])
def test_x_forwarded_for_only_from_trusted_proxies(tmp_path, peer, header, client):
    server = make_server(tmp_path, modules=(), extra=LISTEN + 'trusted_proxies = ["127.0.0.1"]')
    ModuleAPI(server, "upload").http_resource("upload", Echo())
    answer = json.loads(get(server, "/upload/", address=peer,
                            headers=[("X-Forwarded-For", header)])[2])
    assert answer["client"] == client


def body_request(server, path, size, declared=True):
    if declared:
        head = f"PUT {path} HTTP/1.1\r\nHost: example.com\r\nContent-Length: {size}\r\n\r\n"
        return request(server, head.encode() + b"x" * size)
    head = (f"PUT {path} HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            f"{size:x}\r\n")
    return request(server, head.encode() + b"x" * size + b"\r\n0\r\n\r\n")


@pytest.mark.parametrize("declared", [True, False])
def test_bodies_over_the_limit_are_refused_with_413(tmp_path, declared):
    server = make_server(tmp_path, modules=(), extra=LISTEN + "max_request_size = 2048")
    api = ModuleAPI(server, "upload")
    api.http_resource("small", Echo())
    api.http_resource("upload", Echo(), max_request_size=lambda: 10000)
    assert json.loads(body_request(server, "/small/a", 2048, declared)[2])["body"] == 2048
    assert body_request(server, "/small/a", 2049, declared)[0] == 413
    assert json.loads(body_request(server, "/upload/a", 9000, declared)[2])["body"] == 9000
    assert body_request(server, "/upload/a", 10001, declared)[0] == 413


def test_too_many_headers_are_refused(server):
    headers = [(f"X-H{i}", "v") for i in range(200)]
    assert get(server, "/.well-known/host-meta", headers=headers)[0] == 400


def test_a_malformed_request_gets_400_and_nothing_breaks(server):
    assert request(server, b"NOT HTTP AT ALL\r\n\r\n")[0] == 400
    assert get(server, "/.well-known/host-meta")[0] == 200


def test_host_meta_lists_bosh(server):
    status, headers, body = get(server, "/.well-known/host-meta", host="example.net")
    assert (b'<Link rel="urn:xmpp:alt-connections:xbosh" '
            b'href="https://example.net:5281/http-bind"/>') in body


def test_http_bind_takes_bosh_bodies_only(server):
    assert get(server, "/http-bind")[0] == 405
    data = (b"<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' "
            b"rid='1' to='example.com' wait='5' xmpp:version='1.0'/>")
    raw = (b"POST /http-bind/ HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/xml\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(data), data))
    status, headers, body = request(server, raw)
    assert status == 200 and headers["content-type"] == "text/xml; charset=utf-8"
    assert b"sid=" in body and b'xmpp:restartlogic="true"' in body
