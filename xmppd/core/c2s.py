"""Client-to-server streams (RFC 6120 §4-§7, §10).

Two layers, so that other carriers (WebSocket, BOSH) can carry the same
client streams:

- :class:`ClientStream` is the TCP carrier of one client connection (an
  :class:`~xmppd.core.stream.XmlStream`).  Before TLS the only feature it
  offers is ``<starttls><required/></starttls>`` (§5.3.1) and anything but
  ``<starttls/>`` closes the stream with ``policy-violation`` (§5.4.2.1):
  there is no plaintext mode.  Direct TLS listeners (XEP-0368) start
  encrypted.  It counts the connection against the limits of its address,
and as unauthenticated against their own smaller budget until it
authenticates; a refused direct-TLS connection is aborted at once (nothing
can be said to it before the TLS handshake).
- :class:`ClientConnection` is the stream above any carrier: it checks
  the header (``to`` a hosted domain, version 1.x), offers the features of
  :class:`~xmppd.core.negotiation.Negotiation` (SASL, bind... are
  modules), hands each negotiation element to the modules, and once a
  resource is bound takes the session's stanzas: inbound filters, then
  ``from`` stamped with the session's full JID (§8.1.2.1: no spoofing),
  validated, and routed.

Every element of one connection is processed in order through one
:class:`~xmppd.core.serial.SerialQueue` (§10.1): a negotiation step or a
stanza whose handler waits (a credential lookup, a storage write) makes
the later ones wait.  While a negotiation step waits, at most
:data:`MAX_BACKLOG` elements may; more is ``policy-violation`` (§13.12).
A restart (§4.3.3) drops the elements waiting from the old stream
(§6.4.6).  Elements are counted against a token bucket
(``limits.c2s_stanza_rate`` per second, ``limits.c2s_stanza_burst``):
past it the carrier stops reading until the bucket refills (§13.12), as
for bytes.  Nothing received is dropped when the stream ends: after the
client's closing tag (§4.4) the stanzas before it are routed (delivered,
stored offline or bounced) before our closing tag goes; when the server
closes the stream or the connection is lost, they are still routed, and
only then is the session unbound.  An unauthenticated stream is closed after ``c2s.auth_timeout``;
a TLS handshake that has not finished ``c2s.handshake_timeout`` seconds
after the connection (direct TLS) or ``<proceed/>`` (STARTTLS) aborts the
connection, and so does a close that cannot finish
(:class:`~xmppd.core.stream.XmlStream`).

A stream error sent before the requested domain is known has a response
header from the first configured host (:func:`default_host`).
"""

from time import perf_counter

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.words.xish import domish
from zope.interface import implementer

from xmppd import logs
from xmppd.core.carrier import ICarrier, IStreamReceiver, UnauthenticatedCount
from xmppd.core.events import STANZA_KINDS
from xmppd.core.limits import ReadThrottle
from xmppd.core.serial import SerialQueue
from xmppd.core.stanzas import Stanza, StanzaError, error_reply, iq_problem
from xmppd.core.stream import XmlStream, cancelled, new_stream_id
from xmppd.core.xmlstream import NS_CLIENT, NS_STREAMS, NS_XML, StreamError
from xmppd.jid import JID, InvalidJID

log = Logger()

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"

MAX_BACKLOG = 10  # elements received while a negotiation step is pending
# Seconds a close (our closing tag or stream error, TLS close_notify) may
# take to end the connection before it is aborted.
CLOSE_GRACE = 5.0
AVAILABILITY = (None, "unavailable")  # presence types that are not subscriptions


def default_host(hosts):
    """The ``from`` of a response stream header sent before the requested
    domain is known (a stream error for ``host-unknown``, a bad header, or
    bytes that are not XML at all): the first configured host.  RFC 6120
    §4.7.1 has the receiving entity's header name a domain it serves, and
    §4.9.1.2 has it send a header even when the error comes first; clients
    such as aioxmpp report a header without ``from`` instead of the error."""
    return next(iter(hosts))


class AfterQueued:
    """A call waiting in a connection's queue behind the elements received
    before it."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function


@implementer(IStreamReceiver)
class ClientConnection:
    """One client's stream over a carrier: negotiation, then its session."""

    __slots__ = ("server", "carrier", "domain", "lang", "user", "session", "state", "client",
                 "_queue", "_auth_timer", "_stanza_rate", "_lost")

    def __init__(self, server, carrier):
        self.server = server
        self.carrier = carrier
        self.domain = None
        self.lang = "en"
        self.user = None  # bare JID once authenticated
        self.session = None
        self.state = {}  # per-module negotiation state, by module name
        self.client = None  # "software (device)" a SASL2 client gave (XEP-0388 §2.3)
        self._queue = None
        self._lost = False
        limits = server.config.limits
        self._stanza_rate = ReadThrottle(carrier, server.clock, limits.c2s_stanza_rate,
                                         limits.c2s_stanza_burst)
        self._auth_timer = server.clock.callLater(
            server.config.c2s.auth_timeout, self.close, "connection-timeout",
            "not authenticated in time")

    # What modules use (see xmppd.core.negotiation)

    @property
    def secure(self):
        return self.carrier.secure

    @property
    def peer(self):
        return self.carrier.peer

    @property
    def address(self):
        return self.carrier.address

    def channel_binding(self, kind):
        return self.carrier.channel_binding(kind)

    def send(self, element):
        self.carrier.send_element(element)

    def close(self, condition=None, text=None):
        """End the stream (with a stream error of ``condition``) and the
        session (no hibernation).  The stanzas already received are still
        routed (see :meth:`carrier_lost`)."""
        session = self.session
        if session is not None and session.carrier is self.carrier:
            self.server.negotiation.end(session)
        self.carrier.close(condition, text)

    def restart(self):
        """Expect a new stream (RFC 6120 §4.3.3), after SASL success: the
        elements waiting from the old stream are dropped (§6.4.6)."""
        if self._queue is not None:
            for item in self._queue.clear():
                if isinstance(item, AfterQueued):
                    self._queue.push(item)
        self.carrier.restart()

    def authenticated(self, user):
        self.user = user
        self._cancel_auth_timer()
        self.carrier.authenticated()
        log.info("c2s {peer} authenticated as {user}", peer=self.peer, user=user)

    def bound(self, session):
        self.session = session
        self._cancel_auth_timer()
        self.state.clear()

    # From the carrier

    def stream_opened(self, header):
        self.lang = header.getAttribute((NS_XML, "lang")) or self.lang
        domain = self._requested_domain(header.getAttribute("to"))
        if self.domain is not None and domain != self.domain:
            raise StreamError("host-unknown", "the domain changed on restart")
        self.domain = domain
        if domain is None:
            raise StreamError("host-unknown")
        if not header.getAttribute("version", "").startswith("1."):
            raise StreamError("unsupported-version")
        self.send_features()

    def send_features(self):
        """Send the stream features of the stream's state: after a header,
        or after a SASL2 success (XEP-0388 §2.6.1: no restart)."""
        features = domish.Element((NS_STREAMS, "features"))
        for feature in self.carrier.features():
            features.addChild(feature)
        if self.carrier.secure:
            for feature in self.server.negotiation.features_for(self):
                features.addChild(feature)
        self.send(features)

    def _requested_domain(self, to):
        hosts = self.server.hosts
        if to is None:
            return next(iter(hosts)) if len(hosts) == 1 else None
        try:
            jid = JID.parse(to)
        except InvalidJID:
            return None
        return jid.domain if jid.domain in hosts and jid.local is None else None

    def traffic(self, now):
        if self.session is not None:
            self.session.last_active = now

    def element_received(self, element):
        self._stanza_rate.consumed(1)
        queue = self._queue
        if queue is None:
            queue = self._queue = SerialQueue(self._process, on_full=self.carrier.pause,
                                              on_drained=self.carrier.resume)
        elif self.session is None and queue.busy and len(queue) >= MAX_BACKLOG:
            raise StreamError("policy-violation", "too much sent during authentication")
        queue.push(element)

    def stream_ended(self):
        """The client closed its stream: what it sent before is processed
        first, then our closing tag goes (RFC 6120 §4.4) and the session
        ends."""
        self._after_queued(self.close)

    def carrier_lost(self):
        """The carrier is closed or gone: at once, the session ends or
        hibernates (:meth:`Negotiation.carrier_lost`), so nothing routed to
        it meanwhile is lost; the stanzas received on the carrier are still
        routed, then an ended session is unbound."""
        if self._lost:
            return
        self._lost = True
        self._cancel_auth_timer()
        self._stanza_rate.stop()
        if self.session is not None:
            self.server.negotiation.carrier_lost(self.session, self.carrier)
        self._after_queued(self._unbind)

    def _after_queued(self, function):
        """Call ``function()`` once every element received so far is processed."""
        if self._queue is None:
            function()
        else:
            self._queue.push(AfterQueued(function))

    def _unbind(self):
        session, self.session = self.session, None
        if session is not None and session.ending:
            self.server.negotiation.unbind(session)

    def _cancel_auth_timer(self):
        self._auth_timer = cancelled(self._auth_timer)

    # Processing, one element at a time

    def _process(self, element):
        if isinstance(element, AfterQueued):
            element.function()
            return None
        stanza = (self.session is not None and element.uri == NS_CLIENT
                  and element.name in STANZA_KINDS)
        if self.carrier.closed and not stanza:
            return None  # negotiation is over with the carrier
        try:
            if stanza:
                return self._stanza(element)
            return self._negotiate(element)
        except StreamError as e:
            self.close(e.condition, e.text)
            return None

    def _negotiate(self, element):
        claimed = self.server.negotiation.element(self, element)
        if not claimed:
            if self.session is None:
                raise StreamError("not-authorized", "authenticate and bind a resource first")
            raise StreamError("unsupported-stanza-type")
        if isinstance(claimed, defer.Deferred):
            return claimed.addErrback(self._negotiation_failed)
        return None

    def _negotiation_failed(self, failure):
        log.failure("c2s negotiation step failed", failure)
        self.close("internal-server-error")

    def _stanza(self, element):
        session, server = self.session, self.server
        negotiation = server.negotiation
        if negotiation.inbound_filters:
            element = negotiation.inbound(session, element)
            if element is None:
                return None
        if (session.ending and element.name == "presence"
                and element.getAttribute("type") in AVAILABILITY):
            return None  # after its unavailable presence, never a later one
        server.metrics.received(element.name)
        if logs.tracing:
            log.debug("c2s in {jid}: {xml}", jid=session.jid, xml=element.toXml())
        element["from"] = session.jid.full
        try:
            stanza = self._validate(element, session)
        except StanzaError as e:
            if element.getAttribute("type") != "error":
                session.send(error_reply(element, e))
            return None
        previous, negotiation.sender = negotiation.sender, self.carrier
        start = perf_counter()
        try:
            return server.router.dispatch(stanza)
        finally:
            server.metrics.routed(perf_counter() - start)
            negotiation.sender = previous

    def _validate(self, element, session):
        """Parse the addresses and check the iq rules of RFC 6120 §8.2.3."""
        to = element.getAttribute("to")
        try:
            recipient = self.user if to is None else JID.parse(to)
        except InvalidJID as e:
            raise StanzaError("jid-malformed", str(e))
        problem = iq_problem(element)
        if problem is not None:
            raise StanzaError("bad-request", problem)
        return Stanza(element, session.jid, recipient, session)


@implementer(ICarrier)
class ClientStream(UnauthenticatedCount, XmlStream):
    """The TCP carrier of one client connection (STARTTLS or direct TLS)."""

    log = log
    stream_error_log = "c2s stream error to {peer}: {condition} {text}"
    tls_failure_log = "c2s TLS failure with {peer}: {problem}"
    handshake_timeout_log = "c2s TLS handshake with {peer} not finished within {timeout:g} s"

    def __init__(self, server, direct_tls=False):
        super().__init__(server, server.clock, secure=direct_tls)
        self.connection = None
        self._counted = None  # the address counted in server.connections
        self._unauthenticated = None  # ... and as unauthenticated

    @property
    def user(self):
        """The account this connection authenticated as, or None."""
        return None if self.connection is None else self.connection.user

    @property
    def session(self):
        """The session this connection carries, or None."""
        return None if self.connection is None else self.connection.session

    def max_stanza_size(self):
        return self.server.config.c2s.max_stanza_size

    def read_rate(self):
        limits = self.server.config.limits
        return limits.c2s_read_rate, limits.c2s_read_burst

    def handshake_timeout(self):
        return self.server.config.c2s.handshake_timeout

    def close_grace(self):
        return CLOSE_GRACE

    def max_output_buffer(self):
        return self.server.config.c2s.max_output_buffer

    def output_overflow(self):
        """A client that does not read what is sent to it is cut off: its
        session ends as for any lost connection, and what could not be
        written to it is lost with the TCP stream (RFC 6120 without stream
        management, XEP-0198, has no acknowledgements to redeliver it)."""
        log.info("c2s {peer} ({user}) does not read: more than {limit} bytes wait, closing",
                 peer=self.peer, user=self.user, limit=self.max_output_buffer())
        super().output_overflow()

    def close(self, condition=None, text=None):
        super().close(condition, text)
        self._carrier_lost()

    def abort(self):
        super().abort()
        self._carrier_lost()

    def _carrier_lost(self):
        """Once closed, nothing reaches the client: its session ends or
        hibernates now, not when the connection is gone (which a close
        may take :data:`CLOSE_GRACE` seconds to see)."""
        if self.closed and self.connection is not None:
            self.connection.carrier_lost()

    def connectionMade(self):
        super().connectionMade()
        log.info("c2s connection from {peer}", peer=self.peer)
        refusal = self._admit()
        if refusal is not None:
            log.info("c2s connection from {peer} refused: {condition}", peer=self.peer,
                     condition=refusal)
            if self.secure:
                self.abort()  # nothing can be said before the TLS handshake
            else:
                self.stream_error(refusal, "too many connections or failed authentications")
            return
        self.throttle()
        self.connection = ClientConnection(self.server, self)

    def _admit(self):
        """Count the connection against the limits of its address (all
        connections, and unauthenticated ones, RFC 6120 §13.12), or return
        the stream error condition refusing it."""
        connections, limits, address = self.server.connections, self.server.config.limits, \
            self.address
        if self.server.auth_throttle.banned(address):
            return "policy-violation"
        refusal = connections.admit(address, limits)
        if refusal is not None:
            return refusal
        refusal = connections.admit_unauthenticated(address, limits,
                                                    limits.max_unauthenticated_per_ip)
        if refusal is not None:
            connections.release(address)
            return refusal
        self._counted = self._unauthenticated = address
        return None

    def dataReceived(self, data):
        super().dataReceived(data)
        if self.connection is not None:
            self.connection.traffic(self._last_traffic)

    def stream_ended(self):
        if self.connection is None:
            self.close()
        else:
            self.connection.stream_ended()

    def lost(self, reason):
        self.authenticated()  # no longer counted as unauthenticated either way
        if self._counted is not None:
            self.server.connections.release(self._counted)
            self._counted = None
        user = self.user
        self._carrier_lost()
        if user is None:
            log.info("c2s connection from {peer} closed", peer=self.peer)
        else:
            log.info("c2s connection from {peer} closed ({user})", peer=self.peer, user=user)

    def open_stream(self):
        connection = self.connection
        self.stream_id = new_stream_id()
        self.send_header(from_=(connection and connection.domain)
                         or default_host(self.server.hosts),
                         stream_id=self.stream_id,
                         lang=connection.lang if connection is not None else "en")

    def header_received(self, header):
        if header.uri != NS_STREAMS or header.name != "stream":
            raise StreamError("invalid-namespace")
        if header.defaultUri != NS_CLIENT:
            raise StreamError("invalid-namespace", "expected jabber:client")
        self.connection.stream_opened(header)

    def features(self):
        if self.secure:
            return []
        starttls = domish.Element((NS_TLS, "starttls"))
        starttls.addElement("required")
        return [starttls]

    def element_received(self, element):
        if self.secure:
            self.connection.element_received(element)
        elif element.uri == NS_TLS and element.name == "starttls":
            self._starttls()
        else:
            raise StreamError("policy-violation", "STARTTLS is required")

    def _starttls(self):
        context = self.server.certificates.context_factory(self.connection.domain)
        if context is None:
            self.send_element(domish.Element((NS_TLS, "failure")))
            self.close()
            return
        self.send_element(domish.Element((NS_TLS, "proceed")))
        self.start_tls(context)


class ClientStreamFactory(Factory):
    """Builds :class:`ClientStream` for a STARTTLS or direct-TLS listener."""

    noisy = False

    def __init__(self, server, direct_tls=False):
        self.server = server
        self.direct_tls = direct_tls

    def buildProtocol(self, addr):
        stream = ClientStream(self.server, self.direct_tls)
        stream.factory = self
        return stream
