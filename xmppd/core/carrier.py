"""Carriers: what moves the elements of one XMPP stream.

A client's stream is negotiated and its session served the same way
whatever carries its elements: a TCP connection (RFC 6120 §4, with STARTTLS
§5 or direct TLS, XEP-0368), a WebSocket (RFC 7395) or BOSH (XEP-0206).
Everything that depends on the transport (bytes, framing, stream headers,
TLS) is the carrier's; everything above it (negotiation, sessions, routing)
sees elements only, through :class:`ICarrier`, and receives them through
:class:`IStreamReceiver`.
"""

from zope.interface import Attribute, Interface


class ReadPauses:
    """:meth:`ICarrier.pause` and :meth:`ICarrier.resume` for a carrier
    reading from ``transport``: pauses are counted (flow control and the
    read throttle may both pause it), reading resumes when none is left."""

    _pauses = 0

    def pause(self):
        self._pauses += 1
        if self._pauses == 1:
            self.transport.pauseProducing()

    def resume(self):
        self._pauses -= 1
        if self._pauses == 0 and not self.closed:
            self.transport.resumeProducing()


class UnauthenticatedCount:
    """:meth:`ICarrier.authenticated`: the client's address, counted among
    the unauthenticated connections (``_unauthenticated``) while the stream
    negotiates, leaves that count."""

    _unauthenticated = None

    def authenticated(self):
        if self._unauthenticated is not None:
            self.server.connections.release_unauthenticated(self._unauthenticated)
            self._unauthenticated = None


class ICarrier(Interface):
    """What carries one stream's elements."""

    secure = Attribute("Whether the carrier is encrypted (TLS).")
    closed = Attribute("Whether the carrier is closed (or closing).")
    peer = Attribute("The peer's address as log lines write it: "
                     "``127.0.0.1:57712``, ``[::1]:5``, ``local``.")
    address = Attribute("The peer's IP address, which connection limits "
                        "and authentication bans count by.")

    def send_element(element):
        """Send one element (a stanza or a negotiation element); return
        whether the output is now backlogged (:meth:`backlogged`)."""

    def close(condition=None, text=None):
        """End the stream: with a stream error of ``condition`` (RFC 6120
        §4.9) if given, then close the carrier."""

    def restart():
        """Expect a new stream from the peer (RFC 6120 §4.3.3): what the
        peer sent after the current element is discarded."""

    def channel_binding(kind):
        """The channel binding data of ``kind`` (``tls-exporter``,
        ``tls-server-end-point``, ``tls-unique``) as bytes, or None."""

    def tls_version():
        """The negotiated TLS protocol (``TLSv1.3``), or None."""

    def features():
        """The stream features the carrier itself offers (STARTTLS), as
        elements."""

    def authenticated():
        """The peer authenticated: the carrier no longer counts against
        the budget of unauthenticated connections."""

    def backlogged():
        """Whether output waits for the peer (more than a quarter of its
        limit): who writes to it should be held."""

    def hold(writer):
        """Stop ``writer`` (another carrier) reading until this carrier's
        output drains or it is gone (a bounded time at most)."""

    def pause():
        """Stop reading from the peer (calls nest)."""

    def resume():
        """Read again (once every :meth:`pause` is resumed)."""


class IStreamReceiver(Interface):
    """What a carrier delivers a client stream to
    (:class:`~xmppd.core.c2s.ClientConnection`)."""

    domain = Attribute("The hosted domain the stream is for, once known: the "
                       "``from`` of the carrier's response header.")
    lang = Attribute("The stream's default language (``xml:lang``).")

    def stream_opened(header):
        """The peer opened a stream (again, after a restart); ``header``
        is an element with the header's attributes.  Raises
        :class:`~xmppd.core.xmlstream.StreamError` to refuse it."""

    def element_received(element):
        """One top-level element; raises
        :class:`~xmppd.core.xmlstream.StreamError` to end the stream."""

    def traffic(now):
        """The peer sent something (whitespace keepalives included) at
        ``now`` (seconds of the server clock)."""

    def stream_ended():
        """The peer closed its stream (RFC 6120 §4.4): the receiver closes
        the carrier once it has processed what came before."""

    def carrier_lost():
        """The carrier is gone."""
