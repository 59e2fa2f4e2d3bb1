"""The WebSocket carrier of client streams (RFC 7395), on autobahn.

A WebSocket at ``/xmpp-websocket`` of the HTTP listener
(:mod:`xmppd.http.listener`) carries one client stream:

- the handshake must offer the subprotocol ``xmpp`` (§3.1): a handshake
  without it is refused with HTTP 400; ``permessage-deflate`` is never
  accepted (compression under TLS leaks secrets, and inflation bombs);
- every message is one text frame holding one complete element (§3.3.1):
  the client's ``<open/>`` and ``<close/>`` in the framing namespace
  ``urn:ietf:params:xml:ns:xmpp-framing`` (§3.3.2, §3.6) instead of a stream
  header and closing tag, anything else a stanza or negotiation element.
  Each frame is parsed with the restricted parser of
  :mod:`xmppd.core.xmlstream` (no DTD, entities, comments or PIs);
  a message over ``c2s.max_stanza_size`` is ``policy-violation`` before it
  is read, a binary message closes the WebSocket with status 1003;
- the server answers ``<open/>`` with its own (``from``, ``id``,
  ``version``) and the stream features; after SASL the client restarts the
  stream with a new ``<open/>`` (§3.5); a stream error is followed by
  ``<close/>`` and the WebSocket's closing handshake (§3.6);
- the stream above it is the same :class:`~xmppd.core.c2s.ClientConnection`
  as over TCP: SASL, bind, stream management, CSI;
- TLS is the listener's (§3.7: there is no STARTTLS): the carrier is
  ``secure`` on an ``ssl:`` listener, or when a trusted proxy
  (``[http] trusted_proxies``) forwarded it with ``X-Forwarded-Proto:
  https``.  Otherwise it offers no features at all, since xmppd has no
  plaintext client streams;
- the server pings every ``http.websocket_ping_interval`` seconds
  (RFC 6455 §5.5.2); a client from which nothing, pongs included, came for
  ``http.websocket_idle_timeout`` seconds is closed with
  ``connection-timeout``;
- output is bounded as on TCP: once open, what autobahn writes goes
  through an :class:`~xmppd.core.stream.OutputBuffer`; past
  ``c2s.max_output_buffer`` bytes the client is not reading and the
  connection is dropped (its session ends, or hibernates for stream
  management), and streams writing to a backlogged one are held;
- connections count against ``[limits]`` by the client's address (the one
  a trusted proxy names), as TCP connections do;
- the WebSocket is closed for the stream as soon as nothing more can be sent
  on it (the client's close frame, a WebSocket protocol error, the
  connection lost): then, as over TCP, the session hibernates if stream
  management (XEP-0198) made it resumable, on any carrier, and ends
  otherwise.  The client's ``<close/>`` ends the stream and the session
  (no hibernation), as ``</stream:stream>`` does over TCP.
"""

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger
from twisted.words.xish import domish
from zope.interface import implementer

from xmppd.core import tls
from xmppd.core.c2s import ClientConnection, default_host
from xmppd.core.carrier import ICarrier, ReadPauses, UnauthenticatedCount
from xmppd.core.limits import address_of
from xmppd.core.stream import HeldWriters, OutputBuffer, cancelled, new_stream_id, peer_text
from xmppd.core.xmlstream import (NS_STREAMS, NS_XML, FrameParser, StreamError, serialize,
                                  stream_error_element)
from xmppd.http.forwarding import client_address, forwarded_secure

log = Logger()

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SUBPROTOCOL = "xmpp"
# What each frame is parsed in: the element inherits jabber:client and
# may use the stream: prefix (RFC 7395 §3.3.3).
UNSUPPORTED_DATA = 1003  # RFC 6455 §7.4.1


def framing(name, **attributes):
    element = domish.Element((NS_FRAMING, name))
    for key, value in attributes.items():
        if value is not None:
            element[key] = value
    return element


@implementer(ICarrier)
class WebSocketCarrier(HeldWriters, ReadPauses, UnauthenticatedCount, WebSocketServerProtocol):
    """One client stream over one WebSocket (RFC 7395)."""

    def __init__(self, server):
        super().__init__()
        self.server = server
        self.clock = server.clock
        self.connection = None
        self.secure = False
        self.closed = False
        self.address = None
        self.stream_id = None
        self._opened = False  # the client's <open/> of the current stream came
        self._oversized = False
        self._counted = self._unauthenticated = None
        self._pauses = 0
        self._output = None  # OutputBuffer, once the WebSocket is open
        self._held, self._hold_timer = None, None
        self._last_traffic = 0.0
        self._frames = FrameParser(server.config.c2s.max_stanza_size)
        self._idle_timer = self._ping_timer = None

    # The WebSocket handshake (RFC 6455 §4.2, RFC 7395 §3.1)

    def onConnect(self, request):
        if SUBPROTOCOL not in request.protocols:
            raise ConnectionDeny(400, "the WebSocket subprotocol 'xmpp' is required (RFC 7395)")
        proxies = self.server.config.http.trusted_proxies
        peer = self.transport.getPeer()
        self.address = client_address(peer, request.headers.get("x-forwarded-for"), proxies)
        self.peer = peer_text(peer) if self.address == address_of(peer) else self.address
        self.secure = self.factory.tls or forwarded_secure(
            peer, request.headers.get("x-forwarded-proto"), proxies)
        refusal = self._admit()
        if refusal is not None:
            log.info("c2s WebSocket from {peer} refused: {condition}", peer=self.peer,
                     condition=refusal)
            raise ConnectionDeny(503, "too many connections or failed authentications")
        return SUBPROTOCOL

    def _admit(self):
        """Count the connection as ClientStream does (RFC 6120 §13.12)."""
        server, address = self.server, self.address
        limits = server.config.limits
        if server.auth_throttle.banned(address):
            return "policy-violation"
        refusal = server.connections.admit(address, limits)
        if refusal is None:
            refusal = server.connections.admit_unauthenticated(
                address, limits, limits.max_unauthenticated_per_ip)
            if refusal is not None:
                server.connections.release(address)
        if refusal is None:
            self._counted = self._unauthenticated = address
        return refusal

    def onOpen(self):
        log.info("c2s WebSocket connection from {peer}{tls}", peer=self.peer,
                 tls="" if self.secure else " (not encrypted)")
        self.server.streams.add(self)
        self._bound_output()
        self.connection = ClientConnection(self.server, self)
        self._traffic()
        http = self.server.config.http
        self._idle_timer = self.clock.callLater(http.websocket_idle_timeout, self._check_idle)
        self._ping_timer = self.clock.callLater(http.websocket_ping_interval, self._ping)

    # Frames (RFC 7395 §3.3)

    def onMessageBegin(self, isBinary):
        super().onMessageBegin(isBinary)
        self._oversized = False
        self._traffic()

    def onMessageFrameBegin(self, length):
        super().onMessageFrameBegin(length)
        if self.message_data_total_length > self.server.config.c2s.max_stanza_size \
                and not self._oversized:
            self._oversized = True
            self.close("policy-violation", "the element is larger than the server accepts")

    def onMessageFrameData(self, payload):
        if not self._oversized:  # what is over the limit is never kept
            super().onMessageFrameData(payload)

    def onMessageFrameEnd(self):
        if not self._oversized:
            super().onMessageFrameEnd()

    def onMessageEnd(self):
        if not self._oversized:
            super().onMessageEnd()

    def onMessage(self, payload, isBinary):
        if self.closed or self.connection is None:
            return
        if isBinary:
            self._close_websocket(UNSUPPORTED_DATA, "XMPP is carried in text frames (RFC 7395)")
            return
        self.connection.traffic(self._last_traffic)
        try:
            self._element(self._frames.parse(payload))
        except StreamError as e:
            self.close(e.condition, e.text)

    def release_parser(self, idle_since):
        """Drop the frame parser if no frame came since ``idle_since`` (see
        :class:`~xmppd.core.stream.ParserSweep`)."""
        return self._last_traffic < idle_since and self._frames.release()

    def _element(self, element):
        if element.uri == NS_FRAMING and element.name == "open":
            self._open(element)
        elif element.uri == NS_FRAMING and element.name == "close":
            self._opened = False
            self.connection.stream_ended()
        elif not self._opened:
            raise StreamError("invalid-namespace" if element.uri == NS_STREAMS
                              else "not-authorized", "open the stream first (RFC 7395 §3.4)")
        elif not self.secure:
            raise StreamError("policy-violation", "this WebSocket is not encrypted")
        else:
            self.connection.element_received(element)

    def _open(self, element):
        """The client opens (or restarts) its stream: our ``<open/>``, then
        the features (RFC 7395 §3.4, §3.5)."""
        self._opened = True
        self.stream_id = new_stream_id()
        header = domish.Element((NS_STREAMS, "stream"))
        for name in ("to", "version"):
            if element.getAttribute(name) is not None:
                header[name] = element[name]
        if element.getAttribute((NS_XML, "lang")) is not None:
            header[(NS_XML, "lang")] = element[(NS_XML, "lang")]
        held, self._held_output = self._held_output, []  # features wait for our <open/>
        try:
            self.connection.stream_opened(header)
        except StreamError as e:
            self._held_output = held
            self._send_open()
            self.close(e.condition, e.text)
            return
        output, self._held_output = self._held_output, held
        self._send_open()
        for item in output:
            self._send(item)

    _held_output = None

    def _send_open(self):
        connection = self.connection
        opened = framing("open", version="1.0", id=self.stream_id)
        opened["from"] = connection.domain or default_host(self.server.hosts)
        opened[(NS_XML, "lang")] = connection.lang
        self._send(opened)

    # ICarrier

    def send_element(self, element):
        """Send ``element``; return whether the output is now backlogged."""
        if self.closed:
            return False
        if self._held_output is not None:
            self._held_output.append(element)
            return False
        self._send(element)
        return self.backlogged()

    def _send(self, element):
        self.sendMessage(serialize(element, default="", declared=False))

    def close(self, condition=None, text=None):
        """A stream error (if ``condition``), ``<close/>`` and the
        WebSocket's closing handshake (RFC 7395 §3.6)."""
        if self.closed:
            return
        if condition is not None:
            log.info("c2s stream error to {peer}: {condition} {text}", peer=self.peer,
                     condition=condition, text=text or "")
            if self.stream_id is None and self.connection is not None:
                self.stream_id = new_stream_id()  # an error needs our <open/> first
                self._send_open()
            self._send(stream_error_element(condition, text))
        self._send(framing("close"))
        self._close_websocket(1000)

    def stream_error(self, condition, text=None):
        """As :meth:`close` (a shutdown closes ``server.streams`` with it)."""
        self.close(condition, text)

    def _close_websocket(self, code, reason=None):
        self.closed = True
        self.sendCloseFrame(code, reason and reason.encode())
        self._stopped()

    def restart(self):
        """The client opens a new stream with ``<open/>`` (RFC 7395 §3.5)."""
        self._opened = False

    def channel_binding(self, kind):
        return tls.channel_binding(self._tls_connection(), kind)

    def tls_version(self):
        connection = self._tls_connection()
        return None if connection is None else connection.get_protocol_version_name()

    def _tls_connection(self):
        handle = getattr(self.transport, "getHandle", lambda: None)()
        return handle if hasattr(handle, "get_protocol_version_name") else None

    def features(self):
        return []

    # Output bounds (as for TCP, xmppd.core.stream)

    def _bound_output(self):
        """From now on what autobahn writes goes through an
        :class:`OutputBuffer` of ``c2s.max_output_buffer`` bytes: past it
        the client is not reading and the connection is dropped."""
        limit = self.server.config.c2s.max_output_buffer
        if not limit:
            return
        transport = self.transport
        transport.unregisterProducer()  # the HTTP channel's: it handed the connection over
        self._output = OutputBuffer(transport, self._output_drained, limit)
        self.transport = _BoundedTransport(transport, self._output, self._output_overflow)

    def _output_overflow(self):
        if self.closed:
            return
        log.info("c2s stream error to {peer}: policy-violation not reading what the server "
                 "sends", peer=self.peer)
        self._output.discard()
        self.dropConnection(abort=True)

    # Liveness (RFC 6455 §5.5.2, §5.5.3)

    def _traffic(self):
        self._last_traffic = self.clock.seconds()

    def onPong(self, payload):
        self._traffic()

    def onPing(self, payload):
        self._traffic()
        super().onPing(payload)

    def _ping(self):
        self._ping_timer = None
        if not self.closed:
            self.sendPing()
            self._ping_timer = self.clock.callLater(
                self.server.config.http.websocket_ping_interval, self._ping)

    def _check_idle(self):
        self._idle_timer = None
        left = (self._last_traffic + self.server.config.http.websocket_idle_timeout
                - self.clock.seconds())
        if left > 0:
            self._idle_timer = self.clock.callLater(left, self._check_idle)
        elif not self.closed:
            self.close("connection-timeout", "nothing came from the client")

    def _stopped(self):
        self._idle_timer = cancelled(self._idle_timer)
        self._ping_timer = cancelled(self._ping_timer)
        self._release_held()  # the writers it held read again
        if self.connection is not None:
            self.connection.carrier_lost()

    def dropConnection(self, abort=False):
        """autobahn drops the connection: after the client's close frame, a
        failed WebSocket (a protocol error) or a closing handshake that did
        not finish.  From now on nothing can be sent (autobahn raises
        ``Disconnected``), though the connection may take a while to go:
        the carrier is closed and its session ends or hibernates now, as
        when the connection is lost (so what is sent to it meanwhile waits
        for a resumption instead of failing the sender)."""
        super().dropConnection(abort)
        self.closed = True
        self._stopped()

    def onClose(self, wasClean, code, reason):
        self.closed = True
        self.server.streams.discard(self)
        self._stopped()
        self.authenticated()
        if self._counted is not None:
            self.server.connections.release(self._counted)
            self._counted = None
        if self.connection is not None:
            user = self.connection.user
            log.info("c2s WebSocket from {peer} closed{user}", peer=self.peer,
                     user=f" ({user})" if user else "")


class _BoundedTransport:
    """The transport under autobahn, its writes through an OutputBuffer;
    anything else is the transport's."""

    def __init__(self, transport, output, overflow):
        self._transport = transport
        self._output = output
        self._overflow = overflow

    def write(self, data):
        output = self._output
        output.write(data)
        if output.size > output.limit:
            self._overflow()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class WebSocketFactory(WebSocketServerFactory):
    """Builds :class:`WebSocketCarrier` for one HTTP listener (``tls``:
    an ``ssl:`` one)."""

    noisy = False

    def __init__(self, server, tls=False):
        super().__init__(reactor=server.clock)
        self.server = server
        self.tls = tls
        self.setProtocolOptions(
            # The client's frames are masked; ours are not (RFC 6455 §5.1).
            requireMaskedClientFrames=True, maskServerFrames=False,
            openHandshakeTimeout=server.config.c2s.handshake_timeout,
            closeHandshakeTimeout=5.0, failByDrop=True,
            # A backstop: the carrier refuses a larger element itself.
            maxMessagePayloadSize=4 * server.config.c2s.max_stanza_size,
            webStatus=False, autoPingInterval=0, perMessageCompressionAccept=None)

    def buildProtocol(self, addr):
        protocol = WebSocketCarrier(self.server)
        protocol.factory = self
        return protocol
