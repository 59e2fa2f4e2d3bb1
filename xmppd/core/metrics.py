"""Server metrics in the Prometheus / OpenMetrics text format.

Each server has its own registry (no process-global state), served over
HTTP by ``tap.py`` when ``[metrics] listen`` is set.  What every stanza
updates (the stanzas received and sent by kind, the routing time) is kept
in plain numbers that the reactor thread alone changes and a collector
reads at each scrape (:class:`StanzaMetrics`): prometheus_client's own
metrics take a lock at every update, a tenth of the cost of routing a
message.  Other parts add their own metrics to :attr:`Metrics.registry`.

Besides xmppd's own metrics, the registry has the standard process metrics
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``, open file
descriptors...), ``python_info`` and ``xmppd_build_info{version}``, so a
dashboard can tell restarts, leaks and upgrades apart.
"""

import time
from bisect import bisect_left

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector, ProcessCollector)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from xmppd import __version__
from xmppd.core.events import STANZA_KINDS

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                   0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, server):
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        Info("xmppd_build", "The running xmppd", registry=registry).info(
            {"version": __version__})
        self.connections = Gauge("xmppd_connections", "Open connections by kind", ["kind"],
                                 registry=registry)
        self.connections.labels("c2s").set_function(lambda: server.connections.total)
        Gauge("xmppd_sessions", "Bound client sessions",
              registry=registry).set_function(server.sessions.count)
        self.stanzas = StanzaMetrics()
        registry.register(self.stanzas)
        self.auth_failures = Counter("xmppd_auth_failures", "Failed client authentications",
                                     registry=registry)
        self.logins = Counter("xmppd_logins", "Successful client authentications",
                              registry=registry)
        self.storage_seconds = Histogram(
            "xmppd_storage_call_seconds", "Duration of storage calls", ["method"],
            buckets=LATENCY_BUCKETS, registry=registry)

    def received(self, kind):
        self.stanzas.received[kind] += 1

    def sent(self, kind):
        sent = self.stanzas.sent
        if kind in sent:
            sent[kind] += 1

    def routed(self, seconds):
        """One stanza from a client took ``seconds`` to route."""
        stanzas = self.stanzas
        stanzas.routing[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        stanzas.routing_sum += seconds

    def timed_runner(self, run):
        """Wrap a storage runner (``run(fn, *args)``) to time each call."""

        def timed(fn, *args, **kwargs):
            histogram = self.storage_seconds.labels(fn.__name__)

            def call():
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    histogram.observe(time.perf_counter() - start)

            return run(call)

        return timed


class StanzaMetrics:
    """A collector: ``xmppd_stanzas_received_total{kind}``,
    ``xmppd_stanzas_sent_total{kind}`` and the ``xmppd_routing_seconds``
    histogram, from numbers the reactor thread updates without a lock."""

    def __init__(self):
        self.received = dict.fromkeys(STANZA_KINDS, 0)
        self.sent = dict.fromkeys(STANZA_KINDS, 0)
        self.routing = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, the last +Inf
        self.routing_sum = 0.0

    def collect(self):
        for name, help_, counts in (
                ("xmppd_stanzas_received", "Stanzas received from clients and peers",
                 self.received),
                ("xmppd_stanzas_sent", "Stanzas delivered to local sessions", self.sent)):
            family = CounterMetricFamily(name, help_, labels=["kind"])
            for kind, count in counts.items():
                family.add_metric([kind], count)
            yield family
        cumulative, buckets = 0, []
        for bound, count in zip((*map(floatToGoString, LATENCY_BUCKETS), "+Inf"), self.routing):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("xmppd_routing_seconds",
                                    "Time to route one stanza from a client",
                                    buckets=buckets, sum_value=self.routing_sum)

    def describe(self):
        """Nothing: the registry then checks no names against these."""
        return []
