"""The state one running xmppd shares (see :class:`Server`).

``tap.py`` builds one :class:`Server` and loads the feature modules into it;
each module sees it only through its :class:`~xmppd.core.api.ModuleAPI`.
"""

import importlib
import itertools

from twisted.internet import defer

from xmppd.core.api import ModuleAPI
from xmppd.core.events import CONFIG_RELOADED, Hooks
from xmppd.core.limits import AddressCounter, AuthThrottle, ConnectionCounter
from xmppd.core.metrics import Metrics
from xmppd.core.negotiation import Negotiation
from xmppd.core.router import Router
from xmppd.core.sessions import LocalSessionDirectory
from xmppd.storage.memory import MemoryRouted


class Server:
    """Everything one running xmppd shares: config, hosts, hooks, sessions,
    router, storage, TLS certificates and the clock."""

    def __init__(self, config, storage, certificates, clock):
        self.config = config
        self.hosts = config.hosts
        self.storage = storage
        self.certificates = certificates
        self.clock = clock
        self.hooks = Hooks()
        self.sessions = LocalSessionDirectory()
        self.cluster = None  # the ClusterNode when this process is one (xmppd.cluster)
        self.connections = ConnectionCounter()
        self.http_connections = AddressCounter()  # HTTP connections, apart (xmppd.http.listener)
        self.streams = set()  # open client and server streams (their carriers)
        self.metrics = Metrics(self)
        # Runs CPU-heavy work, ``offload(fn, *args) -> Deferred``: at once in
        # tests, in the worker thread pool in the real server (tap.py).
        self.offload = defer.maybeDeferred
        self.auth_throttle = AuthThrottle(clock)
        self.router = Router(self.hosts, self.hooks, self.sessions)
        self.negotiation = Negotiation(self)
        self.disco_features = {}  # module name -> set of namespaces
        self.account_features = {}  # module name -> namespaces of accounts' disco#info
        self.services = {}
        self.http_resources = {}  # path segments -> (resource, body limit): api.http_resource
        self.http_without_cors = set()  # path segments of those no browser may use
        self.http_any_origin = set()  # path segments of those every origin may use
        self.loaded = set()  # names of the feature modules set up
        self.everywhere = set()  # modules enabled for every host (modules_enabled)
        self.needed_by = {}  # module name -> the modules that depend on it
        self.depends_on = {}  # module name -> the modules it depends on
        self._enabled = {}  # hosted domain -> module -> enabled(): asked on every stanza
        self._ids = itertools.count(1)

    @property
    def storage(self):
        """Where modules open their stores (``open(kind, name)``)."""
        return self._storage

    @storage.setter
    def storage(self, storage):
        # The accounts of the anonymous hosts at start (XEP-0175) keep their
        # data in memory, never in the database.
        anonymous = [name for name, host in self.hosts.items()
                     if host.authentication == "anonymous"]
        if storage is not None and anonymous:
            storage = MemoryRouted(storage, anonymous, lambda domain: self.router.owner(domain))
        self._storage = storage

    def reconfigure(self, config, certificates):
        """Apply a reloaded config (see :mod:`xmppd.control`)."""
        self.config = config
        self.hosts.clear()
        self.hosts.update(config.hosts)
        self._enabled.clear()
        self.certificates.replace(certificates)
        self.load_host_modules()
        self.hooks.notify(CONFIG_RELOADED, config)

    def load(self, module, everywhere=True):
        """Set up one feature module (anything with ``setup(api)``) unless
        it is loaded already; ``everywhere``: enable it for every host."""
        name = module.__name__.rpartition(".")[2]
        self._enabled.clear()
        if everywhere:
            self.everywhere.add(name)
        if name not in self.loaded:
            self.loaded.add(name)
            module.setup(ModuleAPI(self, name))

    def require(self, name, by=None):
        """Load the feature module ``xmppd.modules.NAME`` if it is not
        loaded; ``by``: the module that depends on it, so it is enabled
        wherever that one is."""
        if by is not None:
            self.needed_by.setdefault(name, set()).add(by)
            self.depends_on.setdefault(by, set()).add(name)
            self._enabled.clear()
        if name not in self.loaded:
            self.load(importlib.import_module(f"xmppd.modules.{name}"), everywhere=False)

    def load_modules(self, names):
        """Load and enable ``names`` for every host (the ``modules_enabled``
        of the config, or the standard modules), then the modules single
        hosts enable."""
        for name in names:
            self.load(importlib.import_module(f"xmppd.modules.{name}"))
        self.load_host_modules()

    def load_host_modules(self):
        """Load the modules in hosts' ``modules_enabled`` (enabled there only)."""
        for host in self.hosts.values():
            for name in host.modules_enabled:
                self.require(name)

    def next_id(self):
        return f"xmppd-{next(self._ids)}"

    def enabled(self, module, domain):
        """Whether feature ``module`` serves hosted ``domain``: enabled for
        every host or in the host's ``modules_enabled``, or needed by a
        module that serves it, and neither it nor a module it depends on in
        the host's ``disabled_modules``."""
        answers = self._enabled.get(domain)
        if answers is None:
            if domain not in self.hosts:
                return False  # (not remembered: any domain may be asked)
            answers = self._enabled[domain] = {}
        enabled = answers.get(module)
        if enabled is None:
            enabled = answers[module] = self._serves(module, domain)
        return enabled

    def _serves(self, module, domain, _seen=()):
        host = self.hosts.get(domain)
        if host is None or self._switched_off(module, host):
            return False
        if module in self.everywhere or module in host.modules_enabled:
            return True
        seen = (*_seen, module)
        return any(self._serves(dependent, domain, seen)
                   for dependent in self.needed_by.get(module, ()) if dependent not in seen)

    def _switched_off(self, module, host, _seen=()):
        """Whether ``host`` disables ``module`` or a module it depends on."""
        if module in host.disabled_modules:
            return True
        seen = (*_seen, module)
        return any(self._switched_off(dependency, host, seen)
                   for dependency in self.depends_on.get(module, ()) if dependency not in seen)

    def features_for(self, domain, table=None):
        """The disco features (of ``table``: the server's, by default) of
        the modules enabled for ``domain``."""
        table = self.disco_features if table is None else table
        return sorted({ns for module, namespaces in table.items()
                       if self.enabled(module, domain) for ns in namespaces})
