"""The HTTP(S) listener: one twisted.web site for every web path.

- ``/xmpp-websocket``: client streams over WebSocket (RFC 7395,
  :mod:`xmppd.core.websocket`);
- ``/http-bind``: client streams over BOSH (XEP-0124, XEP-0206,
  :mod:`xmppd.core.bosh`);
- ``/.well-known/host-meta`` and ``/.well-known/host-meta.json``:
  connection discovery (XEP-0156 §3), for the host the request's ``Host``
  names;
- the resources of feature modules (:meth:`ModuleAPI.http_resource
  <xmppd.core.api.ModuleAPI.http_resource>`) under their path prefixes.

Limits: a request body larger than ``[http] max_request_size`` (or the
limit the path's module gives) is refused with 413 before it is read
(RFC 9110 §15.5.14), at most :data:`MAX_HEADERS` header lines and
twisted.web's 16 KiB of request line and headers (431/400), an idle
connection is closed after ``[http] timeout`` seconds, and so is one
whose request line and headers have not all come within that time (a
client sending them a byte at a time).  The connections of an address
count against ``[limits] max_connections_per_ip`` (``max_connections`` in
all), apart from the client streams, except those of trusted proxies
(whose clients count as their streams begin): one past either is closed
at once.  A connection a WebSocket takes over leaves the count, and
counts as its stream.  CORS (the Fetch
standard's protocol): a request whose ``Origin`` is in ``[http]
cors_origins`` (or any, with ``"*"``) gets ``Access-Control-Allow-Origin``,
and preflight ``OPTIONS`` requests are answered here.  ``X-Forwarded-For``
and ``X-Forwarded-Proto`` are believed from trusted proxies only
(:mod:`xmppd.http.forwarding`).  With ``[http] access_log``, one line per
request (without the query string, which may hold a signature).

Every setting but ``listen`` is read per request: a reload applies it.
"""

import json
from urllib.parse import unquote_to_bytes
from xml.sax.saxutils import quoteattr

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from xmppd import domains
from xmppd.core.bosh import BoshResource
from xmppd.core.stream import cancelled
from xmppd.http import base_url
from xmppd.core.limits import address_of
from xmppd.http.forwarding import client_address, forwarded_secure, trusted

log = Logger(namespace="xmppd.http")

MAX_HEADERS = 100
CORS_METHODS = b"GET, HEAD, POST, PUT, OPTIONS"
CORS_HEADERS = b"Content-Type, Authorization"
CORS_MAX_AGE = b"86400"
NS_XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
WEBSOCKET_REL = "urn:xmpp:alt-connections:websocket"
BOSH_REL = "urn:xmpp:alt-connections:xbosh"


class WebRequest(Request):
    """A request with the listener's limits, CORS and proxy rules."""

    _refused = False
    _received = 0
    _limit = None
    headers_at = None  # when its headers were read: an upload URL is checked as it began


    @property
    def _http(self):
        return self.channel.site.server.config.http

    # The body limit, before the body is read

    def gotLength(self, length):
        self.headers_at = self.channel.site.server.clock.seconds()
        self._limit = self.channel.site.body_limit(getattr(self.channel, "_path", b"/"))
        if length is not None and length > self._limit:
            self._refuse()
        super().gotLength(None if self._refused else length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self):
        self._refused = True
        transport = self.channel.transport
        transport.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n")
        transport.loseConnection()

    def requestReceived(self, command, path, version):
        if not self._refused:
            # twisted.web reads every POST's Content-Type with the email
            # package to find form submissions (a third of the CPU of a BOSH
            # request); a type that does not name a form is not one.
            content_type = self.requestHeaders.getRawHeaders(b"content-type", (b"",))[0]
            self._parsePOSTFormSubmission = b"form" in content_type.lower()
            super().requestReceived(command, path, version)

    # CORS

    def process(self):
        origin = self._header(b"origin")
        site = self.channel.site
        allowed = ("*",) if site.any_origin(self.path) else self._http.cors_origins
        cors = site.cors(self.path)
        if cors and allowed and "*" not in allowed:
            self.setHeader(b"Vary", b"Origin")  # the answer depends on it, allowed or not
        if origin is not None and ("*" in allowed or origin in allowed) and cors:
            self.setHeader(b"Access-Control-Allow-Origin", "*" if "*" in allowed else origin)
            if self.method == b"OPTIONS" and self.getHeader(b"access-control-request-method"):
                self.setHeader(b"Access-Control-Allow-Methods", CORS_METHODS)
                self.setHeader(b"Access-Control-Allow-Headers", CORS_HEADERS)
                self.setHeader(b"Access-Control-Max-Age", CORS_MAX_AGE)
                self.setResponseCode(204)
                self.finish()
                return
        super().process()

    # Behind a reverse proxy

    def _header(self, name):
        value = self.getHeader(name)
        return value and value.decode("latin-1")

    def getClientAddress(self):
        peer = self.client
        forwarded = self._header(b"x-forwarded-for")
        address = client_address(peer, forwarded, self._http.trusted_proxies)
        if address == getattr(peer, "host", None) or not forwarded:
            return super().getClientAddress()
        kind = IPv6Address if ":" in address else IPv4Address
        return kind("TCP", address, 0)

    def isSecure(self):
        return super().isSecure() or forwarded_secure(
            self.client, self._header(b"x-forwarded-proto"), self._http.trusted_proxies)


class WebChannel(HTTPChannel):
    """HTTP/1.1 with fewer header lines allowed, a deadline for each
    request's headers, and the count of its address's connections."""

    maxHeaders = MAX_HEADERS
    _host = None
    _counted = None  # the address this connection counts against
    _deadline = None  # the call closing a connection whose request headers are late
    _left = False  # lost, or taken over by a WebSocket

    def connectionMade(self):
        super().connectionMade()
        server = self.site.server
        peer = self.transport.getPeer()
        if not trusted(peer, server.config.http.trusted_proxies):  # so is a UNIX socket's peer
            address = address_of(peer)
            limits = server.config.limits
            if server.http_connections.admit(address, limits.max_connections,
                                             limits.max_connections_per_ip):
                self.transport.abortConnection()
                return
            self._counted = address
        self._expect_headers()

    def _expect_headers(self):
        server = self.site.server
        self._deadline = server.clock.callLater(server.config.http.timeout, self._headers_late)

    def _headers_late(self):
        self._deadline = None
        self.transport.abortConnection()

    def allHeadersReceived(self):
        self._deadline = cancelled(self._deadline)
        super().allHeadersReceived()

    def requestDone(self, request):
        super().requestDone(request)
        if not self._left and self._deadline is None:
            self._expect_headers()  # the next request's

    def leave(self):
        """The connection is no longer this channel's (a WebSocket takes it
        over, or it is lost): out of the count, no deadline."""
        self._left = True
        self._deadline = cancelled(self._deadline)
        if self._counted is not None:
            self.site.server.http_connections.release(self._counted)
            self._counted = None

    def connectionLost(self, reason):
        self.leave()
        super().connectionLost(reason)

    def getHost(self):
        """The connection's local address, read once: twisted.web asks for
        it with every request (a ``getsockname`` call each time)."""
        if self._host is None:
            self._host = super().getHost()
        return self._host


class WebSite(Site):
    """The site of one HTTP listener."""

    protocol = WebChannel
    requestFactory = WebRequest
    noisy = False

    def __init__(self, server, websocket_factory):
        super().__init__(Root(server, websocket_factory), timeout=server.config.http.timeout)
        self.server = server

    def body_limit(self, raw_path):
        """The largest body accepted for a request to ``raw_path``."""
        segments = _segments(raw_path)
        for prefix, (_, limit) in self.server.http_resources.items():
            if limit is not None and _matches(prefix, segments):
                return limit() if callable(limit) else limit
        return self.server.config.http.max_request_size

    def cors(self, raw_path):
        """Whether requests to ``raw_path`` get CORS headers (see
        ``api.http_resource``)."""
        segments = _segments(raw_path)
        return not any(_matches(prefix, segments) for prefix in self.server.http_without_cors)

    def any_origin(self, raw_path):
        """Whether every origin may use ``raw_path`` (``cors="*"``)."""
        segments = _segments(raw_path)
        return any(_matches(prefix, segments) for prefix in self.server.http_any_origin)

    def log(self, request):
        if not self.server.config.http.access_log:
            return
        address = request.getClientAddress()
        log.info('http {client} "{method} {path}" {code} {size}',
                 client=getattr(address, "host", "local"),
                 method=request.method.decode("ascii", "replace"),
                 path=request.path.decode("utf-8", "replace"), code=request.code,
                 size=request.sentLength)


def _segments(raw_path):
    """The path segments of ``raw_path`` as twisted.web routes them
    (percent-decoded): ``/%61dmin/`` is ``/admin/`` to the limits too."""
    return [unquote_to_bytes(s) for s in raw_path.split(b"?", 1)[0].strip(b"/").split(b"/")]


def _matches(prefix, segments):
    return tuple(s.decode("utf-8", "replace") for s in segments[:len(prefix)]) == prefix


class WebSocketUpgrade(WebSocketResource):
    """autobahn's resource, which takes the connection over from its HTTP
    channel (whose ``connectionLost`` is then never called)."""

    def render(self, request):
        request.channel.leave()
        return super().render(request)


class Root(Resource):
    """``/``: the listener's own paths, then the modules' resources."""

    def __init__(self, server, websocket_factory):
        super().__init__()
        self._server = server
        self.putChild(b"xmpp-websocket", WebSocketUpgrade(websocket_factory))
        self.putChild(b"http-bind", BoshResource(server, websocket_factory.tls))
        well_known = Resource()
        well_known.putChild(b"host-meta", HostMeta(server, json_format=False))
        well_known.putChild(b"host-meta.json", HostMeta(server, json_format=True))
        self.putChild(b".well-known", well_known)

    def getChild(self, name, request):
        segments = [name, *request.postpath]
        for prefix, (resource, _) in self._server.http_resources.items():
            if _matches(prefix, segments):
                for _ in prefix[1:]:
                    request.prepath.append(request.postpath.pop(0))
                return resource
        return notFound()


class HostMeta(Resource):
    """XEP-0156 §3: the host-meta (RFC 6415) of the host the request's
    ``Host`` names, as XRD or JSON, listing its WebSocket URL.  It is
    public, so any origin may read it (``Access-Control-Allow-Origin: *``)."""

    isLeaf = True

    def __init__(self, server, json_format):
        super().__init__()
        self._server = server  # (not "server": putChild overwrites that)
        self.json_format = json_format

    def render_GET(self, request):
        host = _host(request.getRequestHostname())
        if host not in self._server.hosts:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"not a domain served here\n"
        links = connection_links(self._server.config, host)
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        if self.json_format:
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps({"links": [{"rel": rel, "href": href}
                                         for rel, href in links]}).encode()
        request.setHeader(b"Content-Type", b"application/xrd+xml; charset=utf-8")
        body = "".join(f"\n  <Link rel={quoteattr(rel)} href={quoteattr(href)}/>"
                       for rel, href in links)
        return f"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='{NS_XRD}'>{body}\n</XRD>\n" \
            .encode()


def connection_links(config, host):
    """``(rel, href)`` of the alternative connection methods of ``host``
    (XEP-0156 §3): the WebSocket URL (RFC 7395 §4) and the BOSH URL."""
    base = base_url(config, host)
    websocket = "wss://" + base.removeprefix("https://") if base.startswith("https://") \
        else "ws://" + base.removeprefix("http://")
    return [(WEBSOCKET_REL, websocket + "xmpp-websocket"), (BOSH_REL, base + "http-bind")]


def _host(hostname):
    """The domain a ``Host`` header names (its port already removed), or None."""
    try:
        return domains.normalize(hostname.decode("ascii").rstrip("."))
    except (UnicodeDecodeError, domains.InvalidDomain):
        return None

