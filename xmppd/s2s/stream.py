"""What incoming and outgoing server streams share (RFC 6120 §4).

- The stream header declares ``jabber:server`` and the dialback namespace
  (XEP-0220 §2.4.1) and says ``version='1.0'``.
- The parser reads the ``jabber:server`` content namespace as
  ``jabber:client`` (see :mod:`xmppd.core.xmlstream`), so the router sees
  stanzas as from any stream; they are written back without a namespace,
  inheriting ``jabber:server``.  Stanzas are limited to
  ``s2s.max_stanza_size`` bytes.
- A stream error closes the stream (§4.9); the peer's stream errors are
  logged with its address (``127.0.0.1:57712``, ``[::1]:57712``), and so is
  the OpenSSL reason of a failed TLS handshake.
- A stream with no traffic for ``s2s.idle_timeout`` seconds is closed
  (§4.6.1); any bytes count as traffic, whitespace keepalives (§4.6.1)
  included.
- Open streams are in ``server.streams``, so a shutdown closes them with
  ``system-shutdown``.
"""

import secrets

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from xmppd.core.c2s import tls_failure
from xmppd.core.limits import ReadThrottle
from xmppd.core.xmlstream import (
    NS_CLIENT, NS_SERVER, NS_STREAM_ERRORS, NS_STREAMS, StreamError, StreamParser,
    serialize, stream_error_element, stream_header)
from xmppd.s2s.dialback import S2S_PREFIXES

log = Logger(namespace="xmppd.s2s")


def stream_error_condition(element):
    """The defined condition of a received ``<stream:error/>``."""
    for child in element.elements(NS_STREAM_ERRORS):
        if child.name != "text":
            return child.name
    return "undefined-condition"


def new_stream_id():
    return secrets.token_urlsafe(12)


class ServerStream(Protocol):
    """One server-to-server TCP connection of a :class:`~xmppd.s2s.service.Federation`."""

    direction = None  # "incoming" or "outgoing", for the log

    def __init__(self, federation, direct_tls=False):
        self.federation = federation
        self.encrypted = direct_tls
        self.peer = None
        self.closed = False
        self._parser = None
        self._header_sent = False
        self._last_traffic = 0.0
        self._idle_timer = None
        self._throttle = None

    @property
    def config(self):
        return self.federation.config

    def __repr__(self):
        return f"<{self.direction} s2s stream {self.describe()}>"

    # Connection lifecycle

    def connectionMade(self):
        self.peer = self.transport.getPeer()
        self.federation.server.streams.add(self)
        self._new_parser()
        self._traffic()
        self._idle_timer = self.federation.reactor.callLater(
            self.config.idle_timeout, self._check_idle)
        limits = self.federation.server.config.limits
        self._throttle = ReadThrottle(self.transport, self.federation.reactor,
                                      limits.s2s_read_rate, limits.s2s_read_burst)

    def dataReceived(self, data):
        if self.closed:
            return
        self._throttle.consumed(len(data))
        self._traffic()
        try:
            self._parser.feed(data)
        except StreamError as e:
            self.stream_error(e.condition, e.text)

    def connectionLost(self, reason):
        self.closed = True
        problem = tls_failure(reason)
        if problem is not None:
            log.info("s2s {stream}: TLS failure: {problem}", stream=self.describe(),
                     problem=problem)
        self.federation.server.streams.discard(self)
        if self._throttle is not None:
            self._throttle.stop()
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None
        self.lost(reason)

    def lost(self, reason):
        """The connection is gone (subclasses clean up)."""

    def _new_parser(self):
        self._parser = StreamParser(self.header_received, self._element_received,
                                    self.close, self.config.max_stanza_size,
                                    content_namespaces=(NS_SERVER,))

    def restart(self):
        """Expect a new stream header (RFC 6120 §4.3.3); bytes after the
        element that caused the restart are dropped (§5.4.3.3, §6.4.6)."""
        self._parser.stop()
        self._header_sent = False
        self._new_parser()

    # Idle timeout

    def _traffic(self):
        self._last_traffic = self.federation.reactor.seconds()

    def _check_idle(self):
        timeout = self.config.idle_timeout
        left = self._last_traffic + timeout - self.federation.reactor.seconds()
        if left > 0:
            self._idle_timer = self.federation.reactor.callLater(left, self._check_idle)
            return
        self._idle_timer = None
        log.info("s2s {stream}: idle for {timeout:.0f} s, closing", stream=self.describe(),
                 timeout=timeout)
        self.close()

    # Output

    def send(self, element):
        if not self.closed:
            self._traffic()
            self.transport.write(serialize(element, S2S_PREFIXES))

    def send_header(self, from_=None, to=None, stream_id=None):
        self._header_sent = True
        self.transport.write(stream_header(NS_SERVER, stream_id, from_, to,
                                           prefixes=S2S_PREFIXES))

    def stream_error(self, condition, text=None):
        """Send a stream error and close (RFC 6120 §4.9.1.1)."""
        if self.closed:
            return
        log.info("s2s {stream}: stream error {condition} {text}", stream=self.describe(),
                 condition=condition, text=text or "")
        if not self._header_sent:
            self.open_stream()
        self.transport.write(serialize(stream_error_element(condition, text), S2S_PREFIXES))
        self.close()

    def close(self):
        """Close the stream and the connection (RFC 6120 §4.4)."""
        if self.closed:
            return
        if self._header_sent:
            self.transport.write(b"</stream:stream>")
        self.closed = True
        self._parser.stop()
        self.transport.loseConnection()

    # Input

    def _element_received(self, element):
        if element.uri == NS_STREAMS and element.name == "error":
            self.peer_stream_error(stream_error_condition(element))
            return
        self.element_received(element)

    def peer_stream_error(self, condition):
        log.info("s2s {stream}: the peer sent stream error {condition}",
                 stream=self.describe(), condition=condition)
        self.close()

    # For subclasses

    def describe(self):
        """Which stream this is, for log lines: peer address and domains."""
        raise NotImplementedError

    def open_stream(self):
        """Send this side's stream header."""
        raise NotImplementedError

    def header_received(self, header):
        raise NotImplementedError

    def element_received(self, element):
        raise NotImplementedError


def check_header(header):
    """RFC 6120 §4.8: a stream in the ``jabber:server`` namespace.  (The
    parser reads ``jabber:server`` as ``jabber:client``.)"""
    if header.uri != NS_STREAMS or header.name != "stream":
        raise StreamError("invalid-namespace")
    if header.defaultUri != NS_CLIENT:
        raise StreamError("invalid-namespace", "expected jabber:server")
