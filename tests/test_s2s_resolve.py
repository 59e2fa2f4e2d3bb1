"""Finding a remote domain's server: pinned routes, SRV (RFC 6120 §3.2,
RFC 2782, XEP-0368) and the fallback to port 5269."""

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.names.error import DNSServerError

from tests.s2s_support import FakeResolver
from xmppd.s2s.resolve import PinnedRoute, ServerLocator, Target, srv_order


class FixedRandom:
    """randint returns the given values in turn (clamped to the range)."""

    def __init__(self, *values):
        self.values = list(values)
        self.calls = []

    def randint(self, low, high):
        self.calls.append((low, high))
        return min(max(self.values.pop(0), low), high)


def locate(zone, domain="example.net", rng=None, routes=()):
    resolver = FakeResolver(zone)
    result = []
    ServerLocator(routes, resolver, rng or FixedRandom(*[0] * 20)).locate(domain) \
        .addCallback(result.append)
    return result[0], resolver.queries


def test_pinned_route_is_used_without_dns():
    targets, queries = locate({}, routes=[("example.net", "tcp:host=192.0.2.1:port=5999")])
    assert targets == [PinnedRoute("tcp:host=192.0.2.1:port=5999")]
    assert queries == []
    endpoint = targets[0].endpoint(MemoryReactorClock(), 5)
    assert isinstance(endpoint, TCP4ClientEndpoint)


def test_srv_records_of_both_services_are_mixed_by_priority():
    zone = {
        "_xmpp-server._tcp.example.net": [(20, 0, 5269, "backup.example.net"),
                                          (10, 0, 5269, "xmpp.example.net")],
        "_xmpps-server._tcp.example.net": [(5, 0, 5270, "tls.example.net")],
    }
    targets, queries = locate(zone)
    assert sorted(queries) == ["_xmpp-server._tcp.example.net",
                               "_xmpps-server._tcp.example.net"]
    assert targets == [Target("tls.example.net", 5270, True),
                       Target("xmpp.example.net", 5269, False),
                       Target("backup.example.net", 5269, False)]


def test_weights_order_records_of_one_priority():
    records = [(10, 0, "zero"), (10, 60, "sixty"), (10, 40, "forty"), (5, 0, "first")]
    # RFC 2782: zero weights first, running sums 0, 60, 100; the first
    # record whose running sum reaches the random number is next.
    assert srv_order(records, FixedRandom(0, 0, 0, 0)) == ["first", "zero", "sixty", "forty"]
    assert srv_order(records, FixedRandom(0, 1, 0, 0)) == ["first", "sixty", "zero", "forty"]
    rng = FixedRandom(0, 61, 0, 0)
    assert srv_order(records, rng) == ["first", "forty", "zero", "sixty"]
    assert rng.calls == [(0, 0), (0, 100), (0, 60), (0, 60)]


def test_no_srv_records_fall_back_to_the_domain_on_5269():
    targets, _ = locate({})
    assert targets == [Target("example.net", 5269, False)]
    assert isinstance(targets[0].endpoint(MemoryReactorClock(), 5), HostnameEndpoint)


def test_idn_domains_are_looked_up_in_ascii():
    targets, queries = locate({}, domain="bücher.example")
    assert "_xmpp-server._tcp.xn--bcher-kva.example" in queries
    assert targets == [Target("xn--bcher-kva.example", 5269, False)]


def test_a_dot_target_means_no_service():
    zone = {"_xmpp-server._tcp.example.net": [(0, 0, 0, b"")]}
    targets, _ = locate(zone)
    assert targets == []


def test_a_dot_for_direct_tls_only_leaves_starttls():
    zone = {"_xmpps-server._tcp.example.net": [(0, 0, 0, b"")],
            "_xmpp-server._tcp.example.net": [(0, 0, 5269, "xmpp.example.net")]}
    targets, _ = locate(zone)
    assert targets == [Target("xmpp.example.net", 5269, False)]


def test_a_failing_lookup_counts_as_no_records():
    zone = {"_xmpps-server._tcp.example.net": DNSServerError("SERVFAIL"),
            "_xmpp-server._tcp.example.net": [(0, 0, 5269, "xmpp.example.net")]}
    targets, _ = locate(zone)
    assert targets == [Target("xmpp.example.net", 5269, False)]
