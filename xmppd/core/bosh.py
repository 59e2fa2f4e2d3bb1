"""The BOSH carrier of client streams (XEP-0124 v1.11, XEP-0206), at
``/http-bind`` of the HTTP listener (:mod:`xmppd.http.listener`).

A BOSH session carries one client stream over a series of HTTP POSTs, each
a ``<body/>`` in ``http://jabber.org/protocol/httpbind``:

- Session creation (XEP-0124 §7.1, §7.2; XEP-0206 §3): the request has no
  ``sid``; ``to`` must be a hosted domain (else ``host-unknown``), and
  ``xmpp:version`` is the stream's version.  The response carries ``sid``
  (from :mod:`secrets`), ``wait`` (the client's, at most
  ``http.bosh_max_wait``), ``hold`` (at least 1, at most
  ``http.bosh_max_hold``), ``requests`` (hold + 1), ``inactivity``
  (``http.bosh_max_inactivity``), ``polling``, ``ver``, ``from``,
  ``authid`` (the stream id), ``xmpp:version`` and
  ``xmpp:restartlogic``, and the stream features.  ``pause`` is not
  offered (no ``maxpause``) and is ignored.
- Request ids (§14): requests are processed in ``rid`` order; one that
  comes ahead of a gap waits until the gap fills, within a window of
  ``requests``; a rid beyond it ends the session with ``item-not-found``
  (§17.2), and so does an old rid whose response is no longer kept.  The
  last ``requests`` responses are kept, and a repeated rid gets the same
  response again (§14.3).  A response to a request older than the last
  one processed carries ``ack`` (§9.2); the creation response does when
  the client asked (§9).
- Holding (§8): at most ``hold`` requests wait for something to send, the
  oldest answered (empty, if nothing waits) when another comes, each
  answered empty after ``wait`` seconds.  What the server sends while no
  request waits is queued for the next one; more than
  ``c2s.max_output_buffer`` bytes ends the session with
  ``policy-violation``.
- A client that makes ``requests`` requests the server has answered none
  of, the last one empty and within ``polling`` seconds of the one before,
  is ``policy-violation`` (§11).
- Keys (§15) are supported: ``newkey`` at creation (or with a ``key``, to
  switch to a new sequence); each later request's ``key`` must hash
  (SHA-1, hex) to the previous key, else ``item-not-found``.
- ``type='terminate'`` from the client ends the stream once what it sent
  before is processed, answered by ``type='terminate'`` (§13); a session
  without requests for ``inactivity`` seconds is lost (§10), as a closed
  TCP connection is (stream management may keep its session).  A stream
  error is ``condition='remote-stream-error'`` with the
  ``<stream:error/>`` inside (XEP-0206 §5).
- XEP-0206 §3.3: after SASL the client restarts the stream with an empty
  body with ``xmpp:restart='true'``, answered with the new features.

Above it the stream is the same :class:`~xmppd.core.c2s.ClientConnection`
as over TCP and WebSocket: SASL, bind, stream management, CSI.  BOSH is
``secure`` on an ``ssl:`` listener or when a trusted proxy says it
terminated TLS; otherwise no features are offered and nothing but the
stream header is taken (xmppd has no plaintext client streams).  Bodies
are parsed with the restricted parser of :mod:`xmppd.core.xmlstream` (no
DTD, entities, comments or PIs; one expat parser for all the bodies a
listener receives, as for a WebSocket's frames) and at most
``c2s.max_stanza_size`` bytes (else ``policy-violation``); a body that is
not XML gets HTTP 400 with ``bad-request``.  A session counts against
``[limits]`` by the client's address as one connection, as a WebSocket
does.  Channel binding is not offered: a session's requests may come over
several TLS connections.
"""

import hashlib
import re
import secrets

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.words.xish import domish
from xml.sax.saxutils import quoteattr
from zope.interface import implementer

from xmppd.core.c2s import ClientConnection
from xmppd.core.carrier import ICarrier, UnauthenticatedCount
from xmppd.core.limits import address_of
from xmppd.core.stream import MAX_HOLD, cancelled, new_stream_id, peer_text
from xmppd.core.xmlstream import (NS_CLIENT, NS_STREAMS, NS_XML, FrameParser, StreamError,
                                  serialize, stream_error_element)
from xmppd.jid import JID, InvalidJID

log = Logger()

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
VERSION = (1, 11)
POLLING = 5  # seconds: the shortest interval between empty requests (§11)
CONTENT_TYPE = b"text/xml; charset=utf-8"
_DECLARATION = re.compile(rb"\A\s*<\?xml[^>]*\?>")


def parse_body(data, parser):
    """The ``<body/>`` of a request, its payload in ``jabber:client``
    (XEP-0206 §2: clients may leave stanzas in the body's namespace);
    StreamError if it is not one well-formed ``<body/>`` in the restricted
    XML of streams, within ``parser``'s size limit (a
    :class:`~xmppd.core.xmlstream.FrameParser`: one expat parser serves
    every body, as it serves a WebSocket's frames)."""
    body = parser.parse(_DECLARATION.sub(b"", data, count=1))
    if (body.uri, body.name) != (NS_HTTPBIND, "body"):
        raise StreamError("not-well-formed", "expected <body/> of " + NS_HTTPBIND)
    for child in body.elements():
        _client_namespace(child)
    return body


def _client_namespace(element):
    if element.uri == NS_HTTPBIND:
        element.uri = element.defaultUri = NS_CLIENT
    for child in element.elements():
        _client_namespace(child)


def body_bytes(attributes, payload=b""):
    """A response ``<body/>`` with ``attributes`` around serialised ``payload``."""
    text = "".join(f" {name}={quoteattr(str(value))}" for name, value in attributes.items()
                   if value is not None)
    return (f"<body xmlns='{NS_HTTPBIND}' xmlns:stream='{NS_STREAMS}' "
            f"xmlns:xmpp='{NS_XBOSH}'{text}>").encode() + payload + b"</body>"


def terminate_bytes(condition=None, payload=b""):
    return body_bytes({"type": "terminate", "condition": condition}, payload)


def _serialise(element):
    return serialize(element, default="")  # in a <body/> declaring the stream prefix


def _integer(text):
    return int(text) if text is not None and text.isdigit() and len(text) < 20 else None


def _hosted(hosts, to):
    try:
        jid = JID.parse(to or "")
    except InvalidJID:
        return None
    return jid.domain if jid.domain in hosts and jid.local is None else None


class BoshResource(Resource):
    """``/http-bind``: every request of every BOSH session of one listener
    (``tls``: an ``ssl:`` one)."""

    isLeaf = True

    def __init__(self, server, tls):
        super().__init__()
        self._server = server
        self.tls = tls
        self.sessions = {}  # by sid
        self._parser = self._parser_size = None  # one FrameParser for every body

    def render_POST(self, request):
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-store")
        max_size = self._server.config.c2s.max_stanza_size
        if self._parser_size != max_size:  # the first body, or a reload changed the limit
            self._parser, self._parser_size = FrameParser(max_size), max_size
        try:
            body = parse_body(request.content.read(), self._parser)
        except StreamError as e:
            if e.condition == "policy-violation":
                return terminate_bytes("policy-violation")
            request.setResponseCode(400)  # §17.1
            return terminate_bytes("bad-request")
        rid = _integer(body.getAttribute("rid"))
        if rid is None:
            request.setResponseCode(400)
            return terminate_bytes("bad-request")
        sid = body.getAttribute("sid")
        if sid is None:
            return self._create(request, body, rid)
        session = self.sessions.get(sid)
        if session is None:
            return terminate_bytes("item-not-found")
        session.received(request, body, rid)
        return NOT_DONE_YET

    def _create(self, request, body, rid):
        """A new session (XEP-0124 §7.1, XEP-0206 §3)."""
        server, http = self._server, self._server.config.http
        domain = _hosted(server.hosts, body.getAttribute("to"))
        if domain is None:
            return terminate_bytes("host-unknown")
        wait, hold = _integer(body.getAttribute("wait")), _integer(body.getAttribute("hold") or "1")
        if wait is None or hold is None:
            request.setResponseCode(400)
            return terminate_bytes("bad-request")
        client = request.getClientAddress()
        address = address_of(client)
        peer = peer_text(client) if getattr(client, "port", 0) else address
        if self._refused(address, peer):
            return terminate_bytes("policy-violation")
        sid = secrets.token_urlsafe(24)
        session = BoshSession(server, self.sessions, sid, address, peer,
                              secure=self.tls or request.isSecure(),
                              wait=min(wait, http.bosh_max_wait),
                              hold=max(1, min(hold, http.bosh_max_hold)))
        self.sessions[sid] = session
        session.start(request, body, rid, domain)
        return NOT_DONE_YET

    def _refused(self, address, peer):
        """Count the session as a connection of ``address``, as TCP and
        WebSocket connections are (RFC 6120 §13.12); whether it is refused."""
        server = self._server
        limits = server.config.limits
        refusal = "policy-violation" if server.auth_throttle.banned(address) \
            else server.connections.admit(address, limits)
        if refusal is None:
            refusal = server.connections.admit_unauthenticated(
                address, limits, limits.max_unauthenticated_per_ip)
            if refusal is not None:
                server.connections.release(address)
        if refusal is not None:
            log.info("c2s BOSH session from {peer} refused: {condition}", peer=peer,
                     condition=refusal)
        return refusal is not None


class _Request:
    """An HTTP request of a session, from its arrival to its response."""

    __slots__ = ("rid", "http", "body", "deadline", "gone")

    def __init__(self, rid, http, body):
        self.rid, self.http, self.body = rid, http, body
        self.deadline = None  # when it is answered empty, once held
        self.gone = False


@implementer(ICarrier)
class BoshSession(UnauthenticatedCount):
    """One BOSH session: the carrier of one client stream (XEP-0206)."""

    def __init__(self, server, sessions, sid, address, peer, secure, wait, hold):
        self.server = server
        self.clock = server.clock
        self._sessions = sessions
        self.sid = sid
        self.address = address
        self.peer = peer
        self.secure = secure
        self.wait = wait
        self.max_held = hold
        self.requests = hold + 1
        self.inactivity = server.config.http.bosh_max_inactivity
        self.closed = False
        self.stream_id = new_stream_id()
        self.connection = None
        self._first = self._rid = None  # the creation's rid, the last rid processed
        self._ack = False  # the client asked for acknowledgements (§9)
        self._version = "1.11"
        self._stream_version = None  # xmpp:version of the creation request
        self._pending = {}  # rid -> _Request, not processed yet
        self._held = []  # processed requests waiting for something to send, by rid
        self._lost = set()  # rids processed whose request went before it was answered
        self._replies = {}  # rid -> the response, the last `requests` of them
        self._output, self._output_size = [], 0
        self._final = None  # the terminating response, until a request takes it
        self._counted = self._unauthenticated = address
        self._key = None
        self._restart = False  # a restart is expected (after SASL)
        self._delivering = False
        self._pauses = 0
        self._writers, self._hold_timer = set(), None
        self._last_request = self.clock.seconds()
        # One timer each for `wait` and `inactivity`, moved on when it fires
        # early rather than cancelled and made again for every request.
        self._wait_timer = self._inactivity_timer = None
        self._idle_since = None  # since when no request waits (§10)

    # Requests

    def start(self, request, body, rid, domain):
        """The session creation request (§7.1): the stream is opened."""
        log.info("c2s BOSH session from {peer}{tls}", peer=self.peer,
                 tls="" if self.secure else " (not encrypted)")
        self.server.streams.add(self)
        self.connection = ClientConnection(self.server, self)
        self._first, self._rid = rid, rid
        self._ack = body.getAttribute("ack") is not None
        self._key = body.getAttribute("newkey")
        self._version = self._ver(body.getAttribute("ver"))
        self._hold(_Request(rid, request, body))
        self._delivering = True
        try:
            self.connection.stream_opened(self._header(body, domain))
        except StreamError as e:
            self.close(e.condition, e.text)
        finally:
            self._delivering = False
        self._flush()

    @staticmethod
    def _ver(text):
        """The version of the protocol both speak (§7.2 ``ver``)."""
        try:
            major, minor = (int(part) for part in (text or "").split("."))
        except ValueError:
            return "%d.%d" % VERSION
        return "%d.%d" % min((major, minor), VERSION)

    def _header(self, body, domain):
        header = domish.Element((NS_STREAMS, "stream"))
        header["to"] = domain
        self._stream_version = body.getAttribute((NS_XBOSH, "version"), self._stream_version)
        if self._stream_version is not None:
            header["version"] = self._stream_version
        lang = body.getAttribute((NS_XML, "lang"))
        if lang is not None:
            header[(NS_XML, "lang")] = lang
        return header

    def received(self, http, body, rid):
        """A request of the session (§8, §14)."""
        now = self.clock.seconds()
        self._idle_since = None
        if rid in self._replies:  # §14.3: the response again
            self._write(http, self._replies[rid])
            self._idle()
            return
        if self._final is not None:
            self._write(http, self._final)
            self._gone()
            return
        request = _Request(rid, http, body)
        waiting = self._pending.get(rid) or next((r for r in self._held if r.rid == rid), None)
        if rid in self._lost:  # its response never went: wait for it again
            self._lost.discard(rid)
            self._hold(request)
        elif waiting is not None:  # sent again while it waits (§14.3): this one waits
            self._write(waiting.http, body_bytes({}))
            waiting.http, waiting.gone = http, False
            request = waiting
        elif rid <= self._rid or rid > self._rid + self.requests:
            self._pending[rid] = request  # to be answered by the termination
            self._terminate("item-not-found", f"rid {rid} is outside the window")
            return
        elif self._overactive(body, now):
            self._pending[rid] = request
            self._terminate("policy-violation", "requests more frequent than polling allows")
            return
        else:
            self._pending[rid] = request
        self._last_request = now
        http.notifyFinish().addErrback(lambda _: self._request_gone(request))
        self._advance()

    def _overactive(self, body, now):
        """§11: ``requests`` requests unanswered, the last one empty and
        within ``polling`` seconds of the one before."""
        empty = not list(body.elements()) and body.getAttribute("type") is None \
            and body.getAttribute((NS_XBOSH, "restart")) is None
        return (empty and len(self._held) + len(self._pending) + 1 >= self.requests
                and now - self._last_request < POLLING)

    def _advance(self):
        """Process the requests whose turn it is, in rid order (§14.2)."""
        while not self.closed and not self._pauses and self._rid + 1 in self._pending:
            request = self._pending.pop(self._rid + 1)
            if not self._key_matches(request.body):
                self._pending[request.rid] = request
                self._terminate("item-not-found", "the key does not match (XEP-0124 §15)")
                return
            self._rid = request.rid
            if request.gone:
                self._lost.add(request.rid)
            else:
                self._hold(request)
            self._take(request.body)
        self._flush()

    def _key_matches(self, body):
        """§15.4, §15.5: the key hashes to the last one; a new sequence may start."""
        if self._key is None:
            return True
        key = body.getAttribute("key") or ""
        if hashlib.sha1(key.encode()).hexdigest() != self._key.lower():
            return False
        self._key = body.getAttribute("newkey") or key
        return True

    def _take(self, body):
        """The payload of one request, to the stream."""
        self._delivering = True
        try:
            self.connection.traffic(self.clock.seconds())
            if body.getAttribute((NS_XBOSH, "restart")) == "true":
                self._restarted(body)
            else:
                for element in body.elements():
                    if not self.secure:
                        raise StreamError("policy-violation", "this BOSH session is not encrypted")
                    self.connection.element_received(element)
            if body.getAttribute("type") == "terminate":
                self.connection.stream_ended()  # §13, once what came before is processed
        except StreamError as e:
            self.close(e.condition, e.text)
        finally:
            self._delivering = False

    def _restarted(self, body):
        """XEP-0206 §3.3: the stream restart after SASL."""
        if not self._restart:
            raise StreamError("policy-violation", "a restart is only expected after SASL")
        self._restart = False
        self.stream_id = new_stream_id()
        self.connection.stream_opened(self._header(body, self.connection.domain))

    def _hold(self, request):
        request.deadline = self.clock.seconds() + self.wait
        self._held.append(request)
        self._held.sort(key=lambda held: held.rid)
        if self._wait_timer is None:
            self._wait_timer = self.clock.callLater(self.wait, self._waited)

    def _waited(self):
        """The held requests of ``wait`` seconds ago are answered empty (§8);
        the timer is set again for the oldest one left."""
        self._wait_timer = None
        now = self.clock.seconds()
        expired = [request for request in self._held if request.deadline <= now]
        for request in expired:
            self._held.remove(request)
            self._answer(request)
        if self._held:
            self._wait_timer = self.clock.callLater(
                min(r.deadline for r in self._held) - now, self._waited)
        self._idle()

    def _request_gone(self, request):
        """The client closed the request before its response."""
        request.gone = True
        if request in self._held:
            self._held.remove(request)
            self._lost.add(request.rid)
            self._idle()

    def _flush(self):
        """Answer the oldest held request with what waits, and each held
        request beyond ``hold`` (§8)."""
        if self._delivering or self.closed:
            return
        while self._held and (self._output or len(self._held) > self.max_held):
            self._answer(self._held.pop(0))
        self._idle()

    def _answer(self, request):
        payload = b"".join(self._output)
        self._output, self._output_size = [], 0
        attributes = {}
        if request.rid == self._first:
            attributes = self._creation_attributes()
        elif request.rid < self._rid:
            attributes["ack"] = self._rid  # §9.2: later requests came
        self._respond(request, body_bytes(attributes, payload))
        self._release_writers()

    def _creation_attributes(self):
        """§7.2 and XEP-0206 §3."""
        return {"sid": self.sid, "wait": self.wait, "requests": self.requests,
                "hold": self.max_held, "inactivity": self.inactivity, "polling": POLLING,
                "ver": self._version, "from": self.connection.domain,
                "authid": self.stream_id,
                "ack": self._first if self._ack else None,
                "xmpp:version": "1.0", "xmpp:restartlogic": "true"}

    def _respond(self, request, data):
        self._replies[request.rid] = data
        for rid in sorted(self._replies)[:-self.requests]:
            del self._replies[rid]
        if not request.gone:
            self._write(request.http, data)

    @staticmethod
    def _write(http, data):
        if not http.finished and not getattr(http, "_disconnected", False):
            http.setHeader(b"Content-Length", b"%d" % len(data))
            http.write(data)
            http.finish()

    def _idle(self):
        """With no request left, the session is inactive (§10) from now."""
        if self._held or self._pending or self._idle_since is not None:
            return
        self._idle_since = self.clock.seconds()
        if self._inactivity_timer is None:
            self._inactivity_timer = self.clock.callLater(self.inactivity, self._inactive)

    def _inactive(self):
        """``inactivity`` seconds after the session was last left without a
        request, unless requests came since (then the timer moves on)."""
        self._inactivity_timer = None
        if self._idle_since is None:
            return  # a request waits: _idle sets the timer again
        left = self._idle_since + self.inactivity - self.clock.seconds()
        if left > 0:
            self._inactivity_timer = self.clock.callLater(left, self._inactive)
        elif self.closed:
            self._gone()
        else:
            log.info("c2s BOSH session from {peer} inactive for {seconds} s", peer=self.peer,
                     seconds=self.inactivity)
            self._end(None)

    # ICarrier

    def send_element(self, element):
        if self.closed:
            return False
        data = _serialise(element)
        self._output.append(data)
        self._output_size += len(data)
        if self._output_size > self.server.config.c2s.max_output_buffer:
            log.info("c2s BOSH {peer} does not fetch: more than {limit} bytes wait, closing",
                     peer=self.peer, limit=self.server.config.c2s.max_output_buffer)
            self._output, self._output_size = [], 0
            self._terminate("policy-violation", "too much waits for the client")
            return False
        self._flush()
        return self.backlogged()

    def close(self, condition=None, text=None):
        """End the stream: ``type='terminate'``, with the stream error of
        ``condition`` as ``remote-stream-error`` (XEP-0206 §5)."""
        if self.closed:
            return
        if condition is None:
            self._end(lambda payload: terminate_bytes(None, payload))
            return
        log.info("c2s stream error to {peer}: {condition} {text}", peer=self.peer,
                 condition=condition, text=text or "")
        self._output.append(_serialise(stream_error_element(condition, text)))
        self._end(lambda payload: terminate_bytes("remote-stream-error", payload))

    def stream_error(self, condition, text=None):
        """As :meth:`close` (a shutdown closes ``server.streams`` with it)."""
        self.close(condition, text)

    def _terminate(self, condition, text):
        """A terminal binding error (XEP-0124 §17.2)."""
        log.info("c2s BOSH session from {peer} terminated: {condition} ({text})",
                 peer=self.peer, condition=condition, text=text)
        self._end(lambda payload: terminate_bytes(condition, payload))

    def _end(self, final):
        """Closed: the newest waiting request takes ``final(payload)``
        (or the next request does), the others an empty body; the stream's
        session ends or hibernates."""
        self.closed = True
        waiting = sorted(self._held + [r for r in self._pending.values() if not r.gone],
                         key=lambda request: request.rid)
        self._held, self._pending = [], {}
        self._wait_timer = cancelled(self._wait_timer)
        payload = b"".join(self._output)
        self._output, self._output_size = [], 0
        for request in waiting[:-1]:
            self._write(request.http, body_bytes({}))
        if final is not None:
            data = final(payload)
            if waiting:
                self._write(waiting[-1].http, data)
            else:
                self._final = data
        self._release()
        if self._final is None:
            self._gone()
        else:  # kept for the client's next request, for `inactivity` seconds from now
            self._inactivity_timer, self._idle_since = cancelled(self._inactivity_timer), None
            self._idle()

    def _release(self):
        self.server.streams.discard(self)
        self.authenticated()
        if self._counted is not None:
            self.server.connections.release(self._counted)
            self._counted = None
        self._release_writers()
        if self.connection is not None:
            user = self.connection.user
            log.info("c2s BOSH session from {peer} closed{user}", peer=self.peer,
                     user=f" ({user})" if user else "")
            self.connection.carrier_lost()

    def _gone(self):
        self._final = None
        self._inactivity_timer = cancelled(self._inactivity_timer)
        self._sessions.pop(self.sid, None)

    def restart(self):
        """The client restarts the stream with ``xmpp:restart`` (XEP-0206 §3.3)."""
        self._restart = True

    def channel_binding(self, kind):
        return None

    def tls_version(self):
        """Not known: the session's requests may come over several connections."""
        return None

    def features(self):
        return []

    def backlogged(self):
        """Whether more than a quarter of ``c2s.max_output_buffer`` waits
        for the client's next request."""
        return self._output_size > self.server.config.c2s.max_output_buffer / 4

    def hold(self, writer):
        """Stop ``writer`` reading until this session's output is fetched,
        it ends, or :data:`~xmppd.core.stream.MAX_HOLD` seconds pass."""
        if writer is self or writer in self._writers:
            return
        self._writers.add(writer)
        writer.pause()
        if self._hold_timer is None:
            self._hold_timer = self.clock.callLater(MAX_HOLD, self._release_writers, True)

    def _release_writers(self, timeout=False):
        if self.backlogged() and not timeout and not self.closed:
            return
        self._hold_timer = None if timeout else cancelled(self._hold_timer)
        writers, self._writers = self._writers, set()
        for writer in writers:
            writer.resume()

    def pause(self):
        """Requests wait unprocessed (they are held in rid order)."""
        self._pauses += 1

    def resume(self):
        self._pauses -= 1
        if not self._pauses:
            self._advance()
