"""The XML stream over TCP that client and server streams share (RFC 6120 §4).

:class:`XmlStream` is one TCP connection carrying one XML stream at a time:

- a :class:`~xmppd.core.xmlstream.StreamParser` per stream, made when the
  first bytes of it arrive; a restart (§4.3.3) stops it, so what follows
  the element that caused it in the same read is discarded (§5.4.3.3,
  §6.4.6), and the next bytes start a new one;
- reading is throttled (a token bucket, :class:`~xmppd.core.limits.ReadThrottle`)
  and can be paused by whoever cannot keep up (:meth:`pause`, :meth:`resume`);
- an optional idle timer closes a stream with no traffic (§4.6.1; any bytes
  count, whitespace keepalives included);
- a TLS handshake is timed: from the connection's start on direct TLS
  (XEP-0368), from ``<proceed/>`` on STARTTLS (§5.4.3.3), it must finish
  within :meth:`XmlStream.handshake_timeout` seconds or the connection is
  aborted (a peer that never sends its ClientHello cannot be told anything,
  and TLS's orderly close would wait for the handshake for ever);
- a close (§4.4) that has not ended the connection :meth:`XmlStream.close_grace`
  seconds later (a peer that does not read, a handshake that never ends)
  aborts it (``abortConnection``): closing never waits on the peer;
- our stream header goes out once per stream, before the first element or
  stream error; a stream error (§4.9) ends the stream and the connection;
- output is bounded (:class:`OutputBuffer`): past
  :meth:`XmlStream.max_output_buffer` bytes the peer is not reading and
  :meth:`XmlStream.output_overflow` ends the stream; while more than a
  quarter of it waits, the streams writing to it are held
  (:meth:`XmlStream.hold`: they stop reading) until it drains, it closes,
  or :data:`MAX_HOLD` seconds pass;
- the OpenSSL reason of a failed TLS handshake is logged with the peer's
  address (``127.0.0.1:57712``, ``[::1]:57712``);
- open streams are in ``server.streams``, so a shutdown closes them with
  ``system-shutdown``.

It implements the TCP side of :class:`~xmppd.core.carrier.ICarrier`;
subclasses (:class:`~xmppd.core.c2s.ClientStream`, the server streams of
:mod:`xmppd.s2s`) say what a header and an element mean.
"""

import secrets
from collections import deque

from OpenSSL import SSL
from twisted.application import service
from twisted.internet import task
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from xmppd.core import tls
from xmppd.core.carrier import ReadPauses
from xmppd.core.limits import ReadThrottle, address_of
from xmppd.core.xmlstream import (
    NS_CLIENT, STREAM_PREFIXES, StreamError, StreamParser, serialize, stream_error_element,
    stream_header)


def peer_text(peer):
    """A transport's peer as log lines write it, for operators' greps and
    fail2ban: ``127.0.0.1:57712``, ``[::1]:57712``, or ``local`` for a
    UNIX socket."""
    host = getattr(peer, "host", None)
    if not host:
        return "local"
    if ":" in host:
        host = f"[{host}]"
    port = getattr(peer, "port", None)
    return host if port is None else f"{host}:{port}"


def new_stream_id():
    """A stream id (RFC 6120 §4.7.3): unpredictable, as dialback keys
    (XEP-0185) depend on it."""
    return secrets.token_urlsafe(12)


def tls_failure(reason):
    """The OpenSSL reason a connection ended with (``reason`` is the Failure
    given to ``connectionLost``), or None if TLS did not fail."""
    if reason is None or not reason.check(SSL.Error):
        return None
    errors = reason.value.args[0] if reason.value.args else None
    if isinstance(errors, list) and errors:
        return "; ".join(str(error[-1]) for error in errors)
    return str(reason.value) or type(reason.value).__name__


def cancelled(call):
    """Cancel ``call`` (an ``IDelayedCall`` or None) if still pending; None."""
    if call is not None and call.active():
        call.cancel()
    return None


# Seconds a stream holds the streams writing to it before letting them
# read again, although it has not drained: a reader that stops reading
# altogether is then cut off by its output limit, not waited for.
MAX_HOLD = 10.0


@implementer(IPushProducer)
class OutputBuffer:
    """The bytes a connection could not hand to its transport yet.

    Twisted keeps a transport's write buffer private; what it tells is
    through the producer API: a streaming producer registered on a TCP
    transport (``registerProducer(producer, True)``) is paused
    (``pauseProducing``) when the transport's buffer passes its
    ``bufferSize`` (64 KiB) and resumed (``resumeProducing``) once the
    buffer is written out; the TLS layer (``TLSMemoryBIOProtocol``) passes
    the same calls on from the TCP transport under it.  So while the
    transport is paused, writes wait here instead, counted in bytes
    (:attr:`size`): what a connection holds is at most the transport's
    64 KiB (plus one write) and :attr:`size`.
    """

    __slots__ = ("_transport", "_drained", "limit", "_waiting", "size", "blocked")

    def __init__(self, transport, drained, limit):
        self._transport = transport
        self._drained = drained  # called after writing out what waited
        self.limit = limit  # bytes that may wait (read once per connection)
        self._waiting = None  # a deque, made when a write has to wait
        self.size = 0
        self.blocked = False
        transport.registerProducer(self, True)

    def write(self, data):
        if self.blocked:
            if self._waiting is None:
                self._waiting = deque()
            self._waiting.append(data)
            self.size += len(data)
        else:
            self._transport.write(data)

    def flush(self):
        """Hand everything waiting to the transport (the stream closes)."""
        while self._waiting:
            self._transport.write(self._waiting.popleft())
        self.size = 0

    def discard(self):
        self._waiting = None
        self.size = 0

    def pauseProducing(self):
        self.blocked = True

    def resumeProducing(self):
        self.blocked = False
        while self._waiting and not self.blocked:
            data = self._waiting.popleft()
            self.size -= len(data)
            self._transport.write(data)  # may pause us again
        self._drained()

    def stopProducing(self):
        self.discard()


class HeldWriters:
    """Streams that write to this one faster than its peer reads are held
    (:meth:`hold`): they stop reading until this one's output
    (``_output``, an :class:`OutputBuffer`) drains, they or it are gone, or
    :data:`MAX_HOLD` seconds pass.  Uses ``clock``, ``_held`` (a set, None
    until a writer is held: most streams never hold one) and
    ``_hold_timer``."""

    def backlogged(self):
        """Whether more than a quarter of the output limit waits."""
        output = self._output
        return output is not None and output.size > output.limit / 4

    def hold(self, writer):
        """Stop ``writer`` (a stream writing to this one) reading until this
        stream's output drains, it is gone, or :data:`MAX_HOLD` seconds pass."""
        held = self._held
        if writer is self or (held is not None and writer in held):
            return
        if held is None:
            held = self._held = set()
        held.add(writer)
        writer.pause()
        if self._hold_timer is None:
            self._hold_timer = self.clock.callLater(MAX_HOLD, self._release_held)

    def _output_drained(self):
        if not self.backlogged():
            self._release_held()

    def _release_held(self):
        self._hold_timer = cancelled(self._hold_timer)
        held, self._held = self._held or (), None
        for writer in held:
            writer.resume()


@implementer(IHandshakeListener)
class XmlStream(HeldWriters, ReadPauses, Protocol):
    """One TCP connection carrying XML streams.

    Subclasses set ``log`` and the log line formats (which get ``peer`` and
    ``stream``, :meth:`describe`), ``stream_namespace`` (of the header),
    ``content_namespaces`` (read as ``jabber:client``) and ``prefixes``, and
    define :meth:`open_stream`, :meth:`header_received`,
    :meth:`element_received` and :meth:`lost`; they may set
    :meth:`handshake_timeout` and :meth:`close_grace`.

    Timers every stream has, for c2s and s2s alike:

    - the TLS handshake timer: :meth:`connectionMade` starts it on a
      stream that is secure from the start (direct TLS), :meth:`start_tls`
      after STARTTLS; :meth:`handshakeCompleted` (Twisted's
      ``IHandshakeListener``, called by its TLS layer) stops it; when it
      fires, :meth:`handshake_stalled` aborts the connection;
    - the close timer: :meth:`close` starts it once it has asked the
      transport to close; when the connection is not gone
      :meth:`close_grace` seconds later, :meth:`abort` ends it;
    - with no timeout set (the defaults), neither runs.
    - both stop in :meth:`connectionLost`.
    """

    log = None
    stream_error_log = "{stream}: stream error {condition} {text}"
    tls_failure_log = "{stream}: TLS failure: {problem}"
    handshake_timeout_log = "{stream}: TLS handshake not finished within {timeout:g} s, aborting"
    stream_namespace = NS_CLIENT
    content_namespaces = (NS_CLIENT,)
    prefixes = STREAM_PREFIXES

    def __init__(self, server, clock, secure=False):
        self.server = server
        self.clock = clock
        self.secure = secure
        self.peer = None  # text, see peer_text
        self.address = None
        self.closed = False
        self.stream_id = None
        self._parser = None
        self._header_sent = False
        self._throttle = None
        self._idle_timer = None
        self._last_traffic = 0.0
        self._pauses = 0
        self._tls_timer = None
        self._closing_timer = None
        self._output = None
        self._held = None  # streams that stopped reading because of our output
        self._hold_timer = None

    # Settings of the subclass

    def max_stanza_size(self):
        raise NotImplementedError

    def read_rate(self):
        """(bytes per second, burst) allowed to the peer."""
        raise NotImplementedError

    def idle_timeout(self):
        """Seconds without traffic after which the stream closes, or None."""
        return None

    def handshake_timeout(self):
        """Seconds a TLS handshake may take, or None for no limit."""
        return None

    def close_grace(self):
        """Seconds a close may take before the connection is aborted, or
        None for no limit."""
        return None

    def max_output_buffer(self):
        """Bytes of output that may wait for the peer to read, or None."""
        return None

    # Connection lifecycle

    def connectionMade(self):
        # Stanzas are small and one write per reactor turn already carries
        # all that turn queued: Nagle's algorithm would only hold a reply
        # back until the peer's delayed ACK (up to 40 ms on Linux).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        peer = self.transport.getPeer()
        self.peer = peer_text(peer)
        self.address = address_of(peer)
        self.server.streams.add(self)
        self._traffic()
        timeout = self.idle_timeout()
        if timeout:
            self._idle_timer = self.clock.callLater(timeout, self._check_idle)
        if self.secure:
            self._time_handshake()

    def throttle(self):
        """Start counting the peer's reads against its rate."""
        rate, burst = self.read_rate()
        self._throttle = ReadThrottle(self, self.clock, rate, burst)

    def dataReceived(self, data):
        if self.closed:
            return
        now = self._last_traffic = self.clock.seconds()
        if self._throttle is not None:
            self._throttle.consumed(len(data), now)
        if self._parser is None:
            self._parser = StreamParser(self.header_received, self.element_received,
                                        self.stream_ended, self.max_stanza_size(),
                                        self.content_namespaces)
        try:
            self._parser.feed(data)
        except StreamError as e:
            self.stream_error(e.condition, e.text)

    def connectionLost(self, reason):
        self.closed = True
        self._parser = None
        problem = tls_failure(reason)
        if problem is not None:
            self.log.info(self.tls_failure_log, peer=self.peer, stream=self.describe(),
                          problem=problem)
        self.server.streams.discard(self)
        if self._throttle is not None:
            self._throttle.stop()
            self._throttle = None
        self._idle_timer = cancelled(self._idle_timer)
        self._tls_timer = cancelled(self._tls_timer)
        self._closing_timer = cancelled(self._closing_timer)
        if self._output is not None:
            self._output.discard()
        self._release_held()
        self.lost(reason)

    def restart(self):
        """Expect a new stream header (RFC 6120 §4.3.3); bytes after the
        element that caused the restart are dropped (§5.4.3.3, §6.4.6)."""
        if self._parser is not None:
            self._parser.stop()
            self._parser = None
        self._header_sent = False

    def start_tls(self, context):
        """STARTTLS (RFC 6120 §5.4.3.3): a restart, then TLS."""
        self.restart()
        self.transport.startTLS(context)
        self.secure = True
        self._time_handshake()

    # TLS handshake

    def _time_handshake(self):
        timeout = self.handshake_timeout()
        if timeout:
            self._tls_timer = self.clock.callLater(timeout, self.handshake_stalled)

    def handshakeCompleted(self):
        """The TLS handshake is done (``IHandshakeListener``); from now on
        output is bounded."""
        self._tls_timer = cancelled(self._tls_timer)
        limit = self.max_output_buffer()
        if self._output is None and limit:
            self._output = OutputBuffer(self.transport, self._output_drained, limit)

    # Output bounds

    def _write(self, data):
        output = self._output
        if output is None:
            self.transport.write(data)
            return
        output.write(data)
        if output.size > output.limit and not self.closed:
            output.discard()
            self.output_overflow()

    def output_overflow(self):
        """More than :meth:`max_output_buffer` bytes wait for the peer."""
        self.close("policy-violation", "not reading what the server sends")

    def handshake_stalled(self):
        """The TLS handshake did not finish in time: abort the connection."""
        self._tls_timer = None
        self.log.info(self.handshake_timeout_log, peer=self.peer, stream=self.describe(),
                      timeout=self.handshake_timeout())
        self.abort()

    # Reading

    def _traffic(self):
        self._last_traffic = self.clock.seconds()

    def release_parser(self, idle_since):
        """Drop the expat parser if no bytes came since ``idle_since`` (a
        time of the clock) and it waits between stanzas: an idle stream
        then keeps ~10 KB less (:meth:`StreamParser.release`)."""
        if self._parser is not None and self._last_traffic < idle_since:
            return self._parser.release()
        return False

    def _check_idle(self):
        timeout = self.idle_timeout()
        left = self._last_traffic + timeout - self.clock.seconds()
        if left > 0:
            self._idle_timer = self.clock.callLater(left, self._check_idle)
            return
        self._idle_timer = None
        self.idle()

    def idle(self):
        """No traffic for the idle timeout."""
        self.close()

    # Output

    def send_element(self, element):
        """Send ``element``; return whether the output is now backlogged."""
        if self.closed:
            return False
        if not self._header_sent:
            self.open_stream()
        if self._idle_timer is not None:
            self._traffic()  # what we send keeps an idle timer from firing too
        data = serialize(element, self.prefixes)
        output = self._output
        if output is None or not output.blocked:
            self.transport.write(data)  # nothing waits: not backlogged
            return False
        self._write(data)
        return self.backlogged()

    def send_header(self, from_=None, to=None, stream_id=None, lang="en"):
        """Our stream header (once per stream)."""
        self._header_sent = True
        self._write(stream_header(self.stream_namespace, stream_id, from_, to, lang,
                                           self.prefixes))

    def stream_error(self, condition, text=None):
        """Send a stream error and close (RFC 6120 §4.9.1.1)."""
        if self.closed:
            return
        self.log.info(self.stream_error_log, peer=self.peer, stream=self.describe(),
                      condition=condition, text=text or "")
        if not self._header_sent:
            self.open_stream()
        self._write(serialize(stream_error_element(condition, text), self.prefixes))
        self.close()

    def close(self, condition=None, text=None):
        """End the stream (with a stream error of ``condition``, if given)
        and the connection (RFC 6120 §4.4)."""
        if condition is not None:
            self.stream_error(condition, text)
            return
        if self.closed:
            return
        # Closed first: our closing tag passing the output limit must not
        # close the stream a second time.
        self.closed = True
        if self._header_sent:
            self._write(b"</stream:stream>")
        self._release_held()  # the writers it held read again
        if self._output is not None:
            self._output.flush()  # a transport closes once its producer is gone
            self.transport.unregisterProducer()
            self._output = None
        if self._parser is not None:
            self._parser.stop()
        self.transport.loseConnection()
        grace = self.close_grace()
        if grace:
            self._closing_timer = self.clock.callLater(grace, self._close_stalled)

    def _close_stalled(self):
        self._closing_timer = None
        self.abort()

    def abort(self):
        """End the connection at once, without waiting to write anything
        (``abortConnection``: for a peer that does not read or has not
        finished its TLS handshake)."""
        self.closed = True
        if self._parser is not None:
            self._parser.stop()
        self.transport.abortConnection()

    def stream_ended(self):
        """The peer ended its stream."""
        self.close()

    def _tls_connection(self):
        """The OpenSSL connection once TLS runs (a Twisted transport's
        handle is then that, not a socket), else None."""
        if not self.secure:
            return None
        handle = getattr(self.transport, "getHandle", lambda: None)()
        return handle if hasattr(handle, "get_protocol_version_name") else None

    def channel_binding(self, kind):
        return tls.channel_binding(self._tls_connection(), kind)

    def tls_version(self):
        """The negotiated protocol, such as ``TLSv1.3``, or None."""
        connection = self._tls_connection()
        return None if connection is None else connection.get_protocol_version_name()

    def features(self):
        return []

    # For subclasses

    def describe(self):
        """Which stream this is, for log lines."""
        return self.peer

    def open_stream(self):
        """Send this side's stream header."""
        raise NotImplementedError

    def header_received(self, header):
        raise NotImplementedError

    def element_received(self, element):
        raise NotImplementedError

    def lost(self, reason):
        """The connection is gone (subclasses clean up)."""


class ParserSweep(service.Service):
    """Every ``interval`` seconds, releases the parsers of the streams that
    have been quiet for ``quiet`` seconds (:meth:`XmlStream.release_parser`,
    and WebSocket connections' own): one pass over ``server.streams``
    instead of a timer per stream."""

    def __init__(self, server, clock, interval=5.0, quiet=10.0):
        self._server = server
        self._clock = clock
        self._quiet = quiet
        self._loop = task.LoopingCall(self.sweep)
        self._loop.clock = clock
        self._interval = interval

    def startService(self):
        super().startService()
        self._loop.start(self._interval, now=False)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def sweep(self):
        idle_since = self._clock.seconds() - self._quiet
        return sum(1 for stream in list(self._server.streams)
                   if hasattr(stream, "release_parser") and stream.release_parser(idle_since))
