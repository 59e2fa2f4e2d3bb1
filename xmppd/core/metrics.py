"""Server metrics in the Prometheus / OpenMetrics text format.

Each server has its own registry (no process-global state), served over
HTTP by ``tap.py`` when ``[metrics] listen`` is set.  Counters the hot path
updates are resolved to their label children once, so counting a stanza is
one increment.  Other parts add their own metrics to :attr:`Metrics.registry`.

Besides xmppd's own metrics, the registry has the standard process metrics
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``, open file
descriptors...), ``python_info`` and ``xmppd_build_info{version}``, so a
dashboard can tell restarts, leaks and upgrades apart.
"""

import time

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, Histogram, Info, PlatformCollector, ProcessCollector)

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
        received = Counter("xmppd_stanzas_received", "Stanzas received from clients and peers",
                           ["kind"], registry=registry)
        sent = Counter("xmppd_stanzas_sent", "Stanzas delivered to local sessions",
                       ["kind"], registry=registry)
        self._received = {kind: received.labels(kind) for kind in STANZA_KINDS}
        self._sent = {kind: sent.labels(kind) for kind in STANZA_KINDS}
        self.auth_failures = Counter("xmppd_auth_failures", "Failed client authentications",
                                     registry=registry)
        self.logins = Counter("xmppd_logins", "Successful client authentications",
                              registry=registry)
        self.storage_seconds = Histogram(
            "xmppd_storage_call_seconds", "Duration of storage calls", ["method"],
            buckets=LATENCY_BUCKETS, registry=registry)
        self.routing_seconds = Histogram(
            "xmppd_routing_seconds", "Time to route one stanza from a client",
            buckets=LATENCY_BUCKETS, registry=registry)

    def received(self, kind):
        self._received[kind].inc()

    def sent(self, kind):
        counter = self._sent.get(kind)
        if counter is not None:
            counter.inc()

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
