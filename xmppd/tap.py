"""``twistd xmppd``: options and the service tree.

This is the one place that wires xmppd together: config, storage (checked to
be reachable and at the current schema), TLS certificates (one for every
hosted domain), the server core with its feature modules, external components
(XEP-0114, :mod:`xmppd.core.component`), the cluster node when
``[cluster]`` names a Redis (:mod:`xmppd.cluster`), and the listeners (c2s ones read
the PROXY protocol from the balancers configured, :mod:`xmppd.core.proxy`;
TCP connections send TLS records at once, :mod:`xmppd.core.direct_write`).

Anything wrong at start-up ends the process with one line per problem,
``xmppd: FILE: KEY: PROBLEM``, and exit status 1, never a traceback or a
hang: what the configuration alone shows and what :mod:`xmppd.preflight`
finds are refused before anything starts; a part that still fails to start
(a :class:`StartupError` from its ``startService``, a listener that cannot
listen) stops what had started (:class:`XmppdService`).
"""

import errno
import sys

from prometheus_client.twisted import MetricsResource
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.server import Site

from xmppd import __version__, logs, preflight
from xmppd import config as configuration
from xmppd.admin import AdminSocketService
from xmppd.cluster.node import ClusterNode
from xmppd.control import Controller
from xmppd.core.server import Server
from xmppd.core.c2s import ClientStreamFactory
from xmppd.core.component import Components
from xmppd.core.direct_write import direct_writes
from xmppd.core.proxy import ProxyProtocolFactory
from xmppd.core.stream import ParserSweep
from xmppd.core.tls import ServerTLS
from xmppd.core.websocket import WebSocketFactory
from xmppd.errors import StartupError
from xmppd.http.listener import WebSite
from xmppd.s2s.service import Federation
from xmppd.storage import SchemaOutdated, StorageError
from xmppd.storage.deferred import AsyncStore, StoragePool
from xmppd.storage.sql import SQLStore
from xmppd.systemd import ReadinessService

log = Logger(namespace="xmppd")

# The standard feature modules, enabled for every host unless the config's
# modules_enabled lists others (see docs/features.md); each loads what it
# depends on.
MODULES = ("sasl", "sasl2", "bind", "bind2", "legacy_session", "roster", "presence",
           "subscription", "ping", "disco", "caps", "client_caps", "version", "time", "last",
           "message", "offline", "closed_domain", "carbons", "vcard", "private", "blocking",
           "stream_management", "push", "csi", "pep", "bookmarks", "avatar_conversion", "muc",
           "external_services", "contact_addresses", "outage_status", "fast", "anonymous",
           "spam_reporting", "domain_blocklist", "stranger_limits", "register", "invites",
           "adhoc", "admin_commands", "admin_api")
# Listeners whose connections start with a TLS handshake (XEP-0368).
DIRECT_TLS = ("c2s.direct_tls", "s2s.direct_tls")


class Options(usage.Options):
    synopsis = "--config FILE"
    optParameters = [["config", "c", None, "the TOML configuration file (required)"]]

    def postOptions(self):
        """Log through :func:`xmppd.logs.observer` (level filter, ``log_json``),
        into ``twistd --logfile`` when given; ``--logger`` overrides it."""
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        parent = getattr(self, "parent", None)
        if parent is not None and not parent.get("logger"):
            logs.text_path = parent.get("logfile")
            parent["logger"] = "xmppd.logs.observer"


def makeService(options, reactor=None):
    """The xmppd service tree for parsed :class:`Options`."""
    try:
        config = configuration.load(options["config"])
        problems = preflight.problems(config)
        if problems:
            sys.exit("\n".join(f"xmppd: {problem}" for problem in problems))
        logs.configure(config)
        return build(config, reactor)
    except (configuration.ConfigError, StartupError) as e:
        sys.exit(f"xmppd: {e}")


class XmppdService(service.MultiService):
    """The root of the service tree: logs the start-up banner, and turns a
    part that cannot start into one line and exit status 1.

    twistd starts the tree outside the reactor (``privilegedStartService``,
    where listeners bind, then ``startService``) and shows what either
    raises as a traceback; with the storage threads already running the
    process would then never exit.  Here a :class:`StartupError` stops
    the parts that had started, writes ``xmppd: MESSAGE`` to standard error
    and exits with status 1.
    """

    def __init__(self, config, stderr=None, exit=sys.exit):
        super().__init__()
        self.config = config
        self._stderr = stderr
        self._exit = exit

    def privilegedStartService(self):
        log.info("xmppd {version} starting ({path})", version=__version__,
                 path=self.config.path)
        log.info("hosts: {hosts}", hosts=", ".join(self.config.hosts))
        try:
            super().privilegedStartService()
        except StartupError as e:
            self._abort(e)

    def startService(self):
        try:
            super().startService()
        except StartupError as e:
            self._abort(e)
            return
        listening = [f"{key} {description}"
                     for key, description in preflight.listen_settings(self.config)]
        if self.config.admin.socket:
            listening.append(f"admin.socket {self.config.admin.socket}")
        log.info("listening: {listening}", listening=", ".join(listening) or "nothing")
        log.info("ready")

    @defer.inlineCallbacks
    def stopService(self):
        """Stop the parts one after another, the last started first, each
        once the one before has stopped (twisted's MultiService stops them
        all at once): the listeners, the sessions, the cluster node, and
        last the storage threads, which then finish every write the others
        made while stopping."""
        service.Service.stopService(self)
        for part in reversed(list(self)):
            try:
                yield part.stopService()
            except Exception:
                log.failure("cannot stop {part}", part=part)

    def _abort(self, error):
        for part in reversed(list(self)):
            if part.running or isinstance(part, Listener):
                part.stopService()  # nothing will wait: the process ends
        self.running = 0
        # The real standard error: twistd has redirected sys.stderr into the log.
        stderr = self._stderr or sys.__stderr__
        stderr.write(f"xmppd: {error}\n")
        stderr.flush()
        self._exit(1)


def build(config, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    top = XmppdService(config)
    store = open_storage(config)
    certificates = preflight.load_certificates(config)
    pool = StoragePool(reactor, closing=store.close)
    pool.setServiceParent(top)
    server = Server(config, None, certificates, reactor)
    server.storage = AsyncStore(store, server.metrics.timed_runner(pool.run))
    server.offload = pool.run
    if config.cluster.redis:
        # Stopped after the listeners, before the thread pool: what is left
        # in its stream once its sessions have ended goes to storage.
        cluster = server.cluster = ClusterNode(server, config, reactor)
        server.sessions = server.router.sessions = cluster.directory
        cluster.setServiceParent(top)
    server.load_modules(config.modules_enabled or MODULES)
    ParserSweep(server, reactor).setServiceParent(top)
    # Stopped after the listeners: streams get system-shutdown, then the
    # thread pool finishes pending storage writes.
    controller = Controller(server, reactor)
    controller.setServiceParent(top)
    # The admin socket's commands, for the admin ad-hoc commands too.
    server.services["control"] = controller
    default_host = next(iter(config.hosts))
    federation = Federation(server, reactor)
    federation.setServiceParent(top)
    components = Components(server)  # after the modules: it lists itself in disco

    def c2s(direct):
        factory = ClientStreamFactory(server, direct_tls=direct)
        if direct:
            factory = TLSMemoryBIOFactory(ServerTLS(certificates, default_host), False, factory)
        # Below TLS: a balancer's PROXY header comes before the ClientHello.
        return ProxyProtocolFactory(server, factory)

    factories = {"c2s.listen": lambda: c2s(False), "c2s.direct_tls": lambda: c2s(True),
                 "s2s.listen": lambda: federation.listener_factory(False),
                 "s2s.direct_tls": lambda: federation.listener_factory(True),
                 "components.listen": components.factory,
                 "metrics.listen": lambda: MetricsSite(server.metrics),
                 "http.listen": lambda: WebSite(server, WebSocketFactory(server, tls))}
    for key, description in preflight.listen_settings(config):
        tls = preflight.tls_listener(key, description)[1]
        factory = factories[key]()
        if tls:
            factory = TLSMemoryBIOFactory(ServerTLS(certificates, default_host), False, factory)
        Listener(config, key, description, factory, reactor,
                 tls=tls or key in DIRECT_TLS).setServiceParent(top)
    if config.admin.socket:
        AdminSocketService(config.admin.socket, controller, reactor).setServiceParent(top)
    # Last, so it starts after every listener and stops first.
    ReadinessService().setServiceParent(top)
    top.server = server
    return top


class MetricsSite(Site):
    """An HTTP site serving ``/metrics`` in the OpenMetrics text format;
    scrapes are not logged (one line every few seconds says nothing)."""

    noisy = False

    def __init__(self, metrics):
        root = Resource()
        root.putChild(b"metrics", MetricsResource(registry=metrics.registry))
        super().__init__(root)

    def log(self, request):
        """No access log."""


def open_storage(config):
    """The configured database, which must exist and be at the current schema."""
    try:
        store = SQLStore(config.storage.url, create=False)
        store.check_schema()
    except SchemaOutdated as e:
        raise StartupError(f"{config.path}: storage.url: {e}") from None
    except StorageError as e:
        raise StartupError(f"{config.path}: storage.url: cannot use the database: {e}") from None
    return store


class Listener(StreamServerEndpointService):
    """The listener of one ``description`` of setting ``key`` (such as
    ``c2s.listen``); failing to listen is a :class:`StartupError` naming both.
    Its TCP connections send TLS records at once (:func:`direct_writes`;
    ``tls``: all they carry is TLS)."""

    _raiseSynchronously = True

    def __init__(self, config, key, description, factory, reactor, tls=False):
        super().__init__(preflight.server_endpoint(config, key, description, reactor), factory)
        self.where = f"{config.path}: {key}: cannot listen on {description}"
        self.tls = tls

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise StartupError(f"{self.where}: {_reason(e.socketError)}") from None
        except Exception as e:  # an endpoint raises what its socket calls do
            raise StartupError(f"{self.where}: {_reason(e)}") from None
        # A TCP endpoint's port is there already: no connection came before.
        self._waitingForPort.addCallback(direct_writes, self.tls)

    def stopService(self):
        if self._waitingForPort is None:  # never listened
            return service.Service.stopService(self)
        return super().stopService()


def _reason(error):
    """A socket error as a short lowercase phrase."""
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return "address already in use"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error)
