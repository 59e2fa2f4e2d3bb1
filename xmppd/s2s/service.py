"""Federation: routing stanzas to remote domains and accepting theirs.

The core fires ``route/remote`` (``ROUTE_REMOTE``) for a stanza to a domain
not hosted here; :class:`Federation` claims every one of them:

- a stanza whose sender is not served here (a hosted domain or a service
  domain of one) is dropped: xmppd never relays between two remote domains;
- a remote domain the allowlist does not allow gets ``service-unavailable``
  (RFC 6120 §8.3.3.19) without any connection attempt: federation with it is
  a service this server does not offer.  With an empty ``s2s.allow`` that
  is every remote domain;
- otherwise the stanza goes to the :class:`~xmppd.s2s.outgoing.OutgoingLink`
  of its (sender domain, recipient domain) pair, created on first use; a
  service domain (``conference.example.com``) has links of its own, whose
  streams name it in ``from`` (RFC 6120 §4.7.1).

Incoming streams (:mod:`xmppd.s2s.incoming`) dispatch what peers send
through the same router as client stanzas.  The federation publishes
itself as the ``s2s`` service (``peers()`` for status) and re-reads the
allowlist, routes and CA file when the configuration is reloaded.
"""

import secrets
from collections import Counter

from prometheus_client.core import GaugeMetricFamily
from twisted.application import service
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from xmppd.config import ConfigError
from xmppd.core.api import ModuleAPI
from xmppd.core.events import CONFIG_RELOADED, ROUTE_REMOTE
from xmppd.core.limits import ConnectionCounter
from xmppd.s2s.dialback import DialbackKeys
from xmppd.s2s.incoming import IncomingStreamFactory
from xmppd.s2s.outgoing import OutgoingLink
from xmppd.s2s.policy import FederationPolicy
from xmppd.s2s.resolve import ServerLocator
from xmppd.s2s.tls import FederationTLS, TrustStoreError

log = Logger(namespace="xmppd.s2s")


class _StreamsCollector:
    """``xmppd_s2s_streams{direction,peer}``: server streams open now."""

    def __init__(self, federation):
        self._federation = federation

    def collect(self):
        family = GaugeMetricFamily("xmppd_s2s_streams", "Open server-to-server streams",
                                   labels=["direction", "peer"])
        counts = Counter(("outgoing", link.remote) for link in self._federation.links.values()
                         if link.ready)
        counts.update(("incoming", domain) for stream in self._federation.incoming
                      for domain in stream.authenticated)
        for (direction, peer), count in sorted(counts.items()):
            family.add_metric([direction, peer], count)
        yield family


class Federation(service.Service):
    """Server-to-server federation of one server.

    ``reactor`` connects and schedules (``connectTCP``, endpoints,
    ``callLater``); ``resolver`` answers SRV lookups (twisted.names, created
    on first use by default); ``tls`` provides TLS contexts and checks peer
    certificates (:class:`~xmppd.s2s.tls.FederationTLS` by default);
    ``rng`` orders SRV records of equal priority.
    """

    def __init__(self, server, reactor, resolver=None, tls=None, rng=None):
        self.server = server
        self.reactor = reactor
        self.api = ModuleAPI(server, "s2s")
        self.links = {}  # (local domain, remote domain) -> OutgoingLink
        self.incoming = set()  # IncomingStream
        self.connections = ConnectionCounter()  # incoming, against [limits]
        self.locator = ServerLocator((), resolver, rng)
        self._secret = secrets.token_hex(32)
        self._given_tls = tls
        self._configure(server.config)
        self.api.hook(ROUTE_REMOTE, self.route_remote)
        self.api.hook(CONFIG_RELOADED, self._reloaded)
        self.api.provide("s2s", self)
        server.metrics.registry.register(_StreamsCollector(self))
        server.metrics.connections.labels("s2s_in").set_function(lambda: self.connections.total)

    @property
    def config(self):
        return self.server.config.s2s

    def _configure(self, config):
        """Take the settings of ``config``; raises :class:`ConfigError`."""
        s2s = config.s2s
        for domain, description in s2s.routes:
            try:
                clientFromString(self.reactor, description)
            except (ValueError, TypeError, KeyError) as e:
                raise ConfigError(f"{config.path}: s2s.routes.\"{domain}\": bad endpoint "
                                  f"{description!r}: {e}") from None
        try:
            self.tls = self._given_tls or FederationTLS(
                self.server.certificates, config.tls.min_version, s2s.ca_file, self.api.owner)
        except TrustStoreError as e:
            raise ConfigError(f"{config.path}: s2s.ca_file: {e}") from None
        self.policy = FederationPolicy(s2s.allow, s2s.deny)
        self.keys = DialbackKeys(s2s.dialback_secret or self._secret)
        self.locator.routes = dict(s2s.routes)

    def _reloaded(self, config):
        try:
            self._configure(config)
        except ConfigError as e:
            log.error("s2s settings not reloaded: {e}", e=e)

    # Outgoing

    def route_remote(self, stanza):
        """``route/remote``: send ``stanza`` to its remote domain, or bounce it."""
        sender, remote = stanza.sender, stanza.recipient.domain
        if sender is None or not self.serves(sender.domain):
            log.warn("s2s not relaying {stanza!r}: the sender is not hosted here",
                     stanza=stanza)
            return True
        if not self.policy.allows(remote):
            log.info("s2s stanza from {sender} to {remote} refused: not a federation peer",
                     sender=sender, remote=remote)
            self.api.bounce(stanza, "service-unavailable",
                            f"{remote} is not a federation peer")
            return True
        self.link(sender.domain, remote).send(stanza)
        return True

    def serves(self, domain):
        """Whether ``domain`` is served here: a hosted domain or a service
        domain of one."""
        return domain is not None and self.api.owner(domain) is not None

    def link(self, local, remote):
        """The outgoing link from ``local`` (served here) to ``remote``,
        started if new."""
        link = self.links.get((local, remote))
        if link is None:
            link = self.links[local, remote] = OutgoingLink(self, local, remote)
            link.start()
        return link

    def forget(self, link):
        if self.links.get((link.local, link.remote)) is link:
            del self.links[link.local, link.remote]

    def verify_key(self, local, remote, stream_id, key):
        """Ask the authoritative server of ``remote`` about the dialback
        ``key`` it sent to ``local`` on our stream ``stream_id``
        (XEP-0220 §2.1.2): a Deferred of ``"valid"`` or ``"invalid"``."""
        return self.link(local, remote).verify(stream_id, key)

    def peers(self):
        """The remote domains authenticated in either direction right now."""
        outgoing = {link.remote for link in self.links.values() if link.ready}
        incoming = {domain for stream in self.incoming for domain in stream.authenticated}
        return outgoing | incoming

    # Incoming

    def listener_factory(self, direct_tls=False):
        """The protocol factory of an ``s2s.listen`` (STARTTLS) or
        ``s2s.direct_tls`` (XEP-0368) listener."""
        factory = IncomingStreamFactory(self, direct_tls)
        if direct_tls:
            factory = TLSMemoryBIOFactory(_DirectTLS(self), False, factory, clock=self.reactor)
        return factory

    def stopService(self):
        """Give up connections being set up (their queues bounce); the
        streams themselves are closed by the server's shutdown."""
        for link in list(self.links.values()):
            if link.stream is None:
                link.fail("remote-server-timeout", "the server is shutting down")
        return super().stopService()


@implementer(IOpenSSLServerConnectionCreator)
class _DirectTLS:
    """Direct TLS for incoming streams: the first hosted domain's
    certificate, switched by SNI (XEP-0368)."""

    def __init__(self, federation):
        self._federation = federation

    def serverConnectionForTLS(self, protocol):
        default = next(iter(self._federation.server.hosts))
        creator = self._federation.tls.server_tls(default)
        return creator.serverConnectionForTLS(protocol)
