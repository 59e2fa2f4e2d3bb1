"""``twistd xmppd``: options and the service tree.

This is the one place that wires xmppd together: config, storage (checked to
be reachable and at the current schema), TLS certificates (one for every
hosted domain), the server core with its feature modules, and the listeners.
Anything wrong at start-up ends the process with one line saying what and
where, and a non-zero exit status.
"""

import importlib
import sys

from prometheus_client.twisted import MetricsResource
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.server import Site

from xmppd import config as configuration
from xmppd.admin import AdminSocketService
from xmppd.control import Controller
from xmppd.errors import StartupError
from xmppd.core.api import Server
from xmppd.core.c2s import ClientStreamFactory
from xmppd.core.tls import CertificateError, CertificateStore, ServerTLS
from xmppd.s2s.service import Federation
from xmppd import logs
from xmppd.storage import SchemaOutdated, StorageError
from xmppd.storage.deferred import AsyncStore, StoragePool
from xmppd.storage.sql import SQLStore
from xmppd.systemd import ReadinessService

# Feature modules, loaded in this order (see docs/features.md).
MODULES = ("bind", "legacy_session", "roster", "presence", "subscription", "ping", "disco",
           "caps", "version", "time", "last", "message", "offline", "closed_domain", "carbons",
           "vcard", "private", "blocking")


class Options(usage.Options):
    synopsis = "--config FILE"
    optParameters = [["config", "c", None, "the TOML configuration file (required)"]]

    def postOptions(self):
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        parent = getattr(self, "parent", None)
        if parent is not None and not parent.get("logger") and not parent.get("logfile"):
            parent["logger"] = "xmppd.logs.observer"


def makeService(options, reactor=None):
    """The xmppd service tree for parsed :class:`Options`."""
    try:
        config = configuration.load(options["config"])
        logs.configure(config)
        return build(config, reactor)
    except (configuration.ConfigError, StartupError) as e:
        sys.exit(f"xmppd: {e}")


def build(config, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    top = service.MultiService()
    store = open_storage(config)
    certificates = load_certificates(config)
    pool = StoragePool(reactor)
    pool.setServiceParent(top)
    server = Server(config, None, certificates, reactor)
    server.storage = AsyncStore(store, server.metrics.timed_runner(pool.run))
    server.offload = pool.run
    for name in MODULES:
        server.load(importlib.import_module(f"xmppd.modules.{name}"))
    # Stopped after the listeners: streams get system-shutdown, then the
    # thread pool finishes pending storage writes.
    controller = Controller(server, reactor)
    controller.setServiceParent(top)
    default_host = next(iter(config.hosts))
    for key, descriptions, direct in (("c2s.listen", config.c2s.listen, False),
                                      ("c2s.direct_tls", config.c2s.direct_tls, True)):
        for description in descriptions:
            factory = ClientStreamFactory(server, direct_tls=direct)
            if direct:
                factory = TLSMemoryBIOFactory(ServerTLS(certificates, default_host), False, factory)
            listener(config, key, description, factory, reactor).setServiceParent(top)
    federation = Federation(server, reactor)
    federation.setServiceParent(top)
    for key, descriptions, direct in (("s2s.listen", config.s2s.listen, False),
                                      ("s2s.direct_tls", config.s2s.direct_tls, True)):
        for description in descriptions:
            listener(config, key, description, federation.listener_factory(direct),
                     reactor).setServiceParent(top)
    for description in config.metrics.listen:
        listener(config, "metrics.listen", description, metrics_site(server.metrics),
                 reactor).setServiceParent(top)
    if config.admin.socket:
        AdminSocketService(config.admin.socket, controller, reactor).setServiceParent(top)
    # Last, so it starts after every listener and stops first.
    ReadinessService().setServiceParent(top)
    top.server = server
    return top


def metrics_site(metrics):
    """An HTTP site serving ``/metrics`` in the OpenMetrics text format."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=metrics.registry))
    site = Site(root)
    site.noisy = False
    return site


def open_storage(config):
    try:
        store = SQLStore(config.storage.url)
        store.check_schema()
    except SchemaOutdated as e:
        raise StartupError(f"{config.path}: storage.url: {e}") from None
    except StorageError as e:
        raise StartupError(f"{config.path}: storage.url: cannot use the database: {e}") from None
    return store


def load_certificates(config):
    directory = config.tls.certificates
    try:
        store = CertificateStore(directory, config.hosts, config.tls.min_version)
    except CertificateError as e:
        raise StartupError(f"{config.path}: tls.certificates: {e}") from None
    missing = store.missing(config.hosts)
    if missing:
        raise StartupError(
            f"{config.path}: tls.certificates: no certificate for {', '.join(missing)} "
            f"in {directory} (expected DOMAIN.crt and DOMAIN.key; "
            f"'xmppctl cert DOMAIN' makes a self-signed one)")
    return store


def listener(config, key, description, factory, reactor):
    try:
        endpoint = serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        reason = "no such socket was passed by systemd" if isinstance(e, IndexError) else e
        raise StartupError(f"{config.path}: {key}: bad endpoint {description!r}: {reason}") from None
    listening = StreamServerEndpointService(endpoint, factory)
    listening._raiseSynchronously = True
    return listening
