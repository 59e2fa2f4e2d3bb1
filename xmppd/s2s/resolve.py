"""Where the server of a remote domain listens (RFC 6120 §3.2, XEP-0368).

1. A route pinned in ``[s2s.routes]`` is the only candidate: DNS is not
   queried for that domain.
2. Otherwise the SRV records ``_xmpps-server._tcp.DOMAIN`` (direct TLS,
   XEP-0368) and ``_xmpp-server._tcp.DOMAIN`` (STARTTLS) are looked up
   together and ordered as one set, by priority and then weight (RFC 2782
   §"Usage rules"; XEP-0368 §3 mixes both services).
3. A lookup answered by the single target ``.`` says that service is
   decidedly not offered (RFC 2782).  When that leaves no record at all, the
   domain has no server: there is no address fallback (XEP-0368 §5).
4. No SRV record at all: the domain itself, port 5269 (RFC 6120 §3.2.2).

The addresses of each target are resolved when connecting, by the system
resolver (so ``/etc/hosts`` applies), trying each in turn
(``HostnameEndpoint``).  SRV records come from ``twisted.names`` (by default
a resolver reading ``/etc/resolv.conf`` and ``/etc/hosts``, created on first
use).
"""

import random
from dataclasses import dataclass

import idna
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError

log = Logger()

DEFAULT_PORT = 5269
SERVICES = (("_xmpps-server._tcp.", True), ("_xmpp-server._tcp.", False))
UNAVAILABLE = "unavailable"  # a lookup answered with the single target "."


@dataclass(frozen=True)
class Target:
    """A host and port to connect to, with STARTTLS or direct TLS."""

    host: str
    port: int
    direct_tls: bool = False

    def endpoint(self, reactor, timeout):
        return HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)

    def __str__(self):
        return f"{self.host}:{self.port}{' (direct TLS)' if self.direct_tls else ''}"


@dataclass(frozen=True)
class PinnedRoute:
    """A Twisted client endpoint string from ``[s2s.routes]`` (STARTTLS)."""

    description: str
    direct_tls = False

    def endpoint(self, reactor, timeout):
        return clientFromString(reactor, self.description)

    def __str__(self):
        return self.description


def srv_order(records, rng):
    """``(priority, weight, item)`` records in the order RFC 2782 says to
    try them: lowest priority first; within one priority, a weighted random
    choice, repeated until none is left (zero weights placed first)."""
    ordered = []
    for priority in sorted({r[0] for r in records}):
        group = sorted((r for r in records if r[0] == priority), key=lambda r: r[1] != 0)
        while group:
            threshold = rng.randint(0, sum(r[1] for r in group))
            running = 0
            for i, record in enumerate(group):
                running += record[1]
                if running >= threshold:
                    ordered.append(group.pop(i)[2])
                    break
    return ordered


class ServerLocator:
    """Finds the candidates to connect to for a remote domain."""

    def __init__(self, routes, resolver=None, rng=None):
        self.routes = dict(routes)
        self._resolver = resolver
        self._rng = rng or random.SystemRandom()

    @property
    def resolver(self):
        if self._resolver is None:
            from twisted.names import client
            self._resolver = client.createResolver()
        return self._resolver

    def locate(self, domain):
        """A Deferred list of :class:`Target`/:class:`PinnedRoute` to try in
        order; empty when the domain has no XMPP server."""
        if domain in self.routes:
            return defer.succeed([PinnedRoute(self.routes[domain])])
        name = idna.encode(domain, uts46=True).decode("ascii")
        lookups = [self._lookup(prefix + name, direct) for prefix, direct in SERVICES]
        d = defer.gatherResults(lookups, consumeErrors=True)
        d.addCallback(self._candidates, name)
        return d

    def _lookup(self, name, direct_tls):
        d = self.resolver.lookupService(name)
        d.addCallbacks(self._records, self._failed, callbackArgs=(direct_tls,),
                       errbackArgs=(name,))
        return d

    @staticmethod
    def _records(result, direct_tls):
        answers = [rr.payload for rr in result[0] if rr.type == dns.SRV]
        if len(answers) == 1 and answers[0].target.name in (b"", b"."):
            return UNAVAILABLE
        return [(srv.priority, srv.weight,
                 Target(srv.target.name.decode("ascii"), srv.port, direct_tls))
                for srv in answers]

    @staticmethod
    def _failed(failure, name):
        if not failure.check(DNSNameError):
            log.warn("SRV lookup of {name} failed: {error}", name=name,
                     error=failure.getErrorMessage())
        return []

    def _candidates(self, results, name):
        records = [r for result in results if result != UNAVAILABLE for r in result]
        if records:
            return srv_order(records, self._rng)
        if UNAVAILABLE in results:
            return []
        return [Target(name, DEFAULT_PORT)]
