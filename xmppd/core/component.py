"""External components: the Jabber Component Protocol (XEP-0114).

A component (a gateway, a bot) connects to ``components.listen`` and
serves one domain of the ``[components]`` table, which belongs to a hosted
domain (``host``).  One :class:`ComponentStream` per connection, on the
stream base of c2s and s2s (:class:`~xmppd.core.stream.XmlStream`: parser
limits, read throttle, headers, stream errors, bounded output):

- the header (§3, step 1) is in ``jabber:component:accept`` with ``to``
  the component's domain; a domain not configured is ``host-unknown``.  Our
  header (step 2) has ``from`` that domain and a fresh stream id;
- the component then sends ``<handshake/>`` (step 3): the lower-case hex
  SHA-1 of the stream id followed by the secret, compared in constant
  time; a wrong one is ``not-authorized``.  A right one is answered with an
  empty ``<handshake/>`` (step 4), unless the domain is connected already:
  then the new stream gets ``conflict`` and the first one stays (as
  Prosody's ``kick_new``).  Anything before the handshake is
  ``not-authorized``, and a stream without one after
  ``components.auth_timeout`` seconds gets ``connection-timeout``;
- then stanzas (§3, step 5).  Their ``from`` must be in the component's
  domain (the domain itself, ``user@domain``, with or without a resource;
  not its subdomains); one without ``from`` is from the domain (as in
  Prosody); anything else is the stream error ``invalid-from``.  A missing
  ``to`` gets the stanza error ``bad-request``, an invalid one
  ``jid-malformed``, and an iq breaking RFC 6120 §8.2.3 ``bad-request``.
  Valid stanzas are routed in order (RFC 6120 §10.1), as if from a peer
  server: no origin session, so answers are routed back to the domain.

Routing (:class:`~xmppd.core.router.Router`): a component's domain is a
kind of the delivery table; what is addressed to it (its JIDs included)
goes down its stream, or, while it is not connected, iq requests and
answerable messages get ``service-unavailable``.  It belongs to its host
(``Router.owner``), so the host's closed domain includes it, and federation
serves it as it serves a host's service domains: its stanzas to allowed
peers go over s2s from the component's domain, with its own certificate
in ``tls.certificates`` or the host's when that covers it (``*.HOST``).
The host's disco#items (XEP-0030 §4.1) lists every component.

Security (§4): the stream is not encrypted, so the listener is on the
loopback interface unless configured otherwise.  Secrets are only in the
config file: never logged, and read again on reload, so a changed secret
applies to the next connections; adding or removing a component takes a
restart.  Not-yet-authenticated streams count against
``limits.max_unauthenticated`` and ``limits.s2s_max_unauthenticated_per_ip``.

Metrics: ``xmppd_component_connected{component}``,
``xmppd_component_stanzas_received_total{component}`` and
``xmppd_component_stanzas_sent_total{component}``, and the open streams as
``xmppd_connections{kind="component"}``.
"""

import hashlib
import hmac

from prometheus_client import Counter, Gauge
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd.core.c2s import CLOSE_GRACE, default_host
from xmppd.core.events import CONFIG_RELOADED, STANZA_KINDS
from xmppd.core.limits import ConnectionCounter
from xmppd.core.serial import SerialQueue
from xmppd.core.stanzas import Stanza, error_reply, iq_problem
from xmppd.core.stream import XmlStream, cancelled, new_stream_id
from xmppd.core.xmlstream import NS_CLIENT, NS_STREAMS, StreamError, stream_error_condition
from xmppd.errors import StartupError
from xmppd.jid import JID, InvalidJID, domain_of

log = Logger(namespace="xmppd.component")

NS_COMPONENT = "jabber:component:accept"


class Components:
    """The external components of one server: their domains in the
    router, their secrets, their metrics, and the listener's factory."""

    def __init__(self, server):
        self.server = server
        self.connections = ConnectionCounter()  # streams not authenticated yet
        self.streams = set()  # open ComponentStreams
        self._secrets = {}  # domain -> secret, as of the last (re)load
        config = server.config
        disco = server.services.get("disco")
        registry = server.metrics.registry
        connected = Gauge("xmppd_component_connected",
                          "Whether each external component is connected (XEP-0114)",
                          ["component"], registry=registry)
        received = Counter("xmppd_component_stanzas_received",
                           "Stanzas received from each external component", ["component"],
                           registry=registry)
        sent = Counter("xmppd_component_stanzas_sent",
                       "Stanzas sent to each external component", ["component"],
                       registry=registry)
        self.received, self.sent = {}, {}
        for domain, component in config.components.domains.items():
            try:
                server.router.add_component(domain, component.host)
            except ValueError:
                raise StartupError(f'{config.path}: components."{domain}": {domain} is '
                                   "already served here (a feature module's service)") from None
            self._secrets[domain] = component.secret
            if disco is not None:
                disco.add_item(component.host, domain)
            connected.labels(domain).set_function(
                lambda domain=domain: int(server.router.attached(domain) is not None))
            self.received[domain] = received.labels(domain)
            self.sent[domain] = sent.labels(domain)
        server.metrics.connections.labels("component").set_function(lambda: len(self.streams))
        server.hooks.add(CONFIG_RELOADED, self._reloaded)

    def serves(self, domain):
        return domain in self._secrets

    def secret(self, domain):
        return self._secrets[domain]

    def _reloaded(self, config):
        """New secrets apply to the next handshakes; the set of components
        and their hosts are those of the start."""
        new = config.components.domains
        for domain in self._secrets:
            if domain in new:
                self._secrets[domain] = new[domain].secret
        changed = sorted(set(new) ^ set(self._secrets)) + sorted(
            domain for domain in set(new) & set(self._secrets)
            if new[domain].host != self.server.router.components[domain])
        if changed:
            log.warn("components: {domains} added, removed or moved to another host; "
                     "that takes effect after a restart", domains=", ".join(changed))

    def factory(self):
        """The protocol factory of a ``components.listen`` listener."""
        return ComponentStreamFactory(self)


class ComponentStream(XmlStream):
    """One component's connection (XEP-0114 ``jabber:component:accept``)."""

    log = log
    stream_error_log = "component {stream}: stream error {condition} {text}"
    stream_namespace = NS_COMPONENT
    content_namespaces = (NS_COMPONENT,)

    def __init__(self, components):
        super().__init__(components.server, components.server.clock)
        self.components = components
        self.domain = None  # the component's domain, from the header
        self.authenticated = False  # handshake done: what is routed to the domain comes here
        self._queue = None
        self._auth_timer = None
        self._unauthenticated = None  # the address counted as unauthenticated

    @property
    def config(self):
        return self.server.config.components

    def describe(self):
        return f"from {self.peer} ({self.domain or '?'})"

    def max_stanza_size(self):
        return self.config.max_stanza_size

    def read_rate(self):
        limits = self.server.config.limits
        return limits.s2s_read_rate, limits.s2s_read_burst

    def close_grace(self):
        return CLOSE_GRACE

    def max_output_buffer(self):
        return self.config.max_output_buffer

    def output_overflow(self):
        log.info("component {stream} does not read: more than {limit} bytes wait, closing",
                 stream=self.describe(), limit=self.max_output_buffer())
        super().output_overflow()

    # Connection lifecycle

    def connectionMade(self):
        super().connectionMade()
        self.components.streams.add(self)
        log.info("component connection from {peer}", peer=self.peer)
        self.handshakeCompleted()  # no TLS handshake to wait for: output is bounded now
        limits = self.server.config.limits
        refusal = self.components.connections.admit_unauthenticated(
            self.address, limits, limits.s2s_max_unauthenticated_per_ip)
        if refusal is not None:
            self.stream_error(refusal, "too many connections waiting for their handshake")
            return
        self._unauthenticated = self.address
        self.throttle()
        self._auth_timer = self.clock.callLater(self.config.auth_timeout, self._auth_expired)

    def _auth_expired(self):
        self._auth_timer = None
        self.stream_error("connection-timeout", "no handshake in time")

    def _authenticated(self):
        self._auth_timer = cancelled(self._auth_timer)
        if self._unauthenticated is not None:
            self.components.connections.release_unauthenticated(self._unauthenticated)
            self._unauthenticated = None

    def close(self, condition=None, text=None):
        super().close(condition, text)
        self._detach()

    def abort(self):
        super().abort()
        self._detach()

    def _detach(self):
        """Once closed, what is routed to the domain no longer comes here
        (it bounces), even before the connection is gone."""
        if self.closed and self.authenticated:
            self.authenticated = False
            self.server.router.detach(self.domain, self)
            log.info("component {domain} disconnected ({peer})", domain=self.domain,
                     peer=self.peer)

    def lost(self, reason):
        self._authenticated()  # no longer counted as unauthenticated either way
        self.components.streams.discard(self)
        self._detach()
        log.info("component connection from {peer} closed", peer=self.peer)

    # Stream header and handshake

    def open_stream(self):
        self.stream_id = new_stream_id()
        self.send_header(from_=self.domain or default_host(self.server.hosts),
                         stream_id=self.stream_id)

    def header_received(self, header):
        if header.uri != NS_STREAMS or header.name != "stream":
            raise StreamError("invalid-namespace")
        if header.defaultUri != NS_CLIENT:  # the parser reads ours as jabber:client
            raise StreamError("invalid-namespace", f"expected {NS_COMPONENT}")
        domain = domain_of(header.getAttribute("to"))
        if not self.components.serves(domain):
            raise StreamError("host-unknown", "no such component here")
        self.domain = domain
        self.open_stream()

    def element_received(self, element):
        if element.uri == NS_STREAMS and element.name == "error":
            log.info("component {stream}: the component sent stream error {condition}",
                     stream=self.describe(), condition=stream_error_condition(element))
            self.close()
        elif self.authenticated:
            if element.uri != NS_CLIENT or element.name not in STANZA_KINDS:
                raise StreamError("unsupported-stanza-type")
            self._stanza(element)
        elif element.uri == NS_CLIENT and element.name == "handshake":
            self._handshake(str(element).strip())
        else:
            raise StreamError("not-authorized", "send the handshake first")

    def _handshake(self, digest):
        data = (self.stream_id + self.components.secret(self.domain)).encode("utf-8")
        expected = hashlib.sha1(data).hexdigest().encode("ascii")
        if not hmac.compare_digest(digest.lower().encode("utf-8"), expected):
            log.warn("component {stream}: wrong handshake", stream=self.describe())
            raise StreamError("not-authorized", "wrong handshake")
        if not self.server.router.attach(self.domain, self):
            log.warn("component {stream}: refused, {domain} is connected already",
                     stream=self.describe(), domain=self.domain)
            raise StreamError("conflict", f"{self.domain} is connected already")
        self.authenticated = True
        self._authenticated()
        self.send_element(domish.Element((NS_CLIENT, "handshake")))
        log.info("component {domain} connected from {peer}", domain=self.domain,
                 peer=self.peer)

    # Stanzas

    def send(self, element):
        """Deliver a stanza routed to the component; a backlogged stream
        holds the stream that sent it (as a client's does)."""
        self.components.sent[self.domain].inc()
        negotiation = self.server.negotiation
        if self.send_element(element) and negotiation.sender is not None:
            self.hold(negotiation.sender)

    def _stanza(self, element):
        self.components.received[self.domain].inc()
        sender = element.getAttribute("from")
        if sender is None:
            element["from"] = sender = self.domain
        try:
            sender = JID.parse(sender)
        except InvalidJID:
            raise StreamError("invalid-from", "not a valid JID") from None
        if sender.domain != self.domain:
            raise StreamError("invalid-from", f"{sender.domain} is not {self.domain}")
        to = element.getAttribute("to")
        if not to:
            return self._refuse(element, "bad-request", "a component's stanza needs a 'to'")
        try:
            recipient = JID.parse(to)
        except InvalidJID as e:
            return self._refuse(element, "jid-malformed", str(e))
        problem = iq_problem(element)
        if problem is not None:
            return self._refuse(element, "bad-request", problem)
        if self._queue is None:
            self._queue = SerialQueue(self._route, on_full=self.pause, on_drained=self.resume)
        self._queue.push(Stanza(element, sender, recipient))

    def _route(self, stanza):
        negotiation = self.server.negotiation
        previous, negotiation.sender = negotiation.sender, self
        try:
            return self.server.router.dispatch(stanza)
        finally:
            negotiation.sender = previous

    def _refuse(self, element, condition, text):
        """Answer a stanza that cannot be routed (never an error)."""
        if element.getAttribute("type") != "error":
            self.send(error_reply(element, condition, text))


class ComponentStreamFactory(Factory):
    """Builds :class:`ComponentStream` for a ``components.listen`` listener."""

    noisy = False

    def __init__(self, components):
        self.components = components

    def buildProtocol(self, addr):
        stream = ComponentStream(self.components)
        stream.factory = self
        return stream
