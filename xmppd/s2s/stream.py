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
- A TLS handshake (after STARTTLS, §5.4.3.3, or at once on direct TLS,
  XEP-0368) not finished within ``s2s.handshake_timeout`` seconds aborts
  the connection: nothing can be said on it any more.
- A stream we close (§4.4) whose connection is not gone
  ``s2s.handshake_timeout`` seconds later (a peer that does not read what
  we write, so the closing tag and TLS alert never leave) is aborted.
- Output is bounded (§13.12): once TLS runs, more than
  ``s2s.max_output_buffer`` bytes waiting for a peer that does not read
  close the stream with ``policy-violation``.  What waited is lost with the
  connection, as when any connection drops; an outgoing link then fails as
  for any closed stream (:mod:`xmppd.s2s.outgoing`: what it still queues
  bounces, the next stanza opens a new stream).
- Open streams are in ``server.streams``, so a shutdown closes them with
  ``system-shutdown``.
- The stanzas one stream carries are routed in order, each after the
  previous one is handled (RFC 6120 §10.1), through a
  :class:`~xmppd.core.serial.SerialQueue`; reading pauses while too many wait.

The connection itself (parser, restarts, throttle, idle timer, TLS
handshake and close timers, headers, stream errors) is
:class:`~xmppd.core.stream.XmlStream`'s.
"""

from twisted.logger import Logger

from xmppd.core.serial import SerialQueue
from xmppd.core.stream import XmlStream, tls_failure
from xmppd.core.xmlstream import (NS_CLIENT, NS_SERVER, NS_STREAMS, StreamError,
                                   stream_error_condition)
from xmppd.s2s.dialback import S2S_PREFIXES

log = Logger(namespace="xmppd.s2s")


class ServerStream(XmlStream):
    """One server-to-server TCP connection of a :class:`~xmppd.s2s.service.Federation`."""

    direction = None  # "incoming" or "outgoing", for the log
    log = log
    stream_error_log = "s2s {stream}: stream error {condition} {text}"
    tls_failure_log = "s2s {stream}: TLS failure: {problem}"
    handshake_timeout_log = ("s2s {stream}: TLS handshake not finished within {timeout:g} s, "
                             "aborting")
    stream_namespace = NS_SERVER
    content_namespaces = (NS_SERVER,)
    prefixes = S2S_PREFIXES

    def __init__(self, federation, direct_tls=False):
        super().__init__(federation.server, federation.reactor, secure=direct_tls)
        self.federation = federation
        self._queue = None
        self.tls_problem = None  # why TLS failed, once it has

    @property
    def config(self):
        return self.federation.config

    def __repr__(self):
        return f"<{self.direction} s2s stream {self.describe()}>"

    def max_stanza_size(self):
        return self.config.max_stanza_size

    def read_rate(self):
        limits = self.server.config.limits
        return limits.s2s_read_rate, limits.s2s_read_burst

    def idle_timeout(self):
        return self.config.idle_timeout

    def handshake_timeout(self):
        return self.config.handshake_timeout

    def close_grace(self):
        return self.config.handshake_timeout

    def max_output_buffer(self):
        return self.config.max_output_buffer

    def output_overflow(self):
        log.info("s2s {stream}: the peer does not read: more than {limit} bytes wait, closing",
                 stream=self.describe(), limit=self.max_output_buffer())
        super().output_overflow()

    def connectionMade(self):
        super().connectionMade()
        self.throttle()

    def handshake_stalled(self):
        self.tls_problem = "handshake not finished in time"
        super().handshake_stalled()

    def idle(self):
        log.info("s2s {stream}: idle for {timeout:.0f} s, closing", stream=self.describe(),
                 timeout=self.idle_timeout())
        self.close()

    send = XmlStream.send_element

    def dispatch(self, stanza):
        """Route a received stanza after those before it (RFC 6120 §10.1)."""
        if self._queue is None:
            self._queue = SerialQueue(self.federation.api.dispatch, on_full=self.pause,
                                      on_drained=self.resume)
        self._queue.push(stanza)

    def connectionLost(self, reason):
        if self._queue is not None:
            self._queue.clear()
        self.tls_problem = self.tls_problem or tls_failure(reason)
        super().connectionLost(reason)

    # Input

    def element_received(self, element):
        if element.uri == NS_STREAMS and element.name == "error":
            self.peer_stream_error(stream_error_condition(element))
            return
        self.negotiate(element)

    def peer_stream_error(self, condition):
        log.info("s2s {stream}: the peer sent stream error {condition}",
                 stream=self.describe(), condition=condition)
        self.close()

    # For subclasses

    def negotiate(self, element):
        """A top-level element other than a stream error."""
        raise NotImplementedError


def check_header(header):
    """RFC 6120 §4.8: a stream in the ``jabber:server`` namespace.  (The
    parser reads ``jabber:server`` as ``jabber:client``.)"""
    if header.uri != NS_STREAMS or header.name != "stream":
        raise StreamError("invalid-namespace")
    if header.defaultUri != NS_CLIENT:
        raise StreamError("invalid-namespace", "expected jabber:server")
