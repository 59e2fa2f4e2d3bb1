"""The API feature modules use.

A feature module is a Python module with ``setup(api)``; ``tap.py`` chooses
which ones to load.  Through :class:`ModuleAPI` a module hooks events, answers
iqs (with central error mapping), adds stream features and disco features,
routes stanzas, and reaches storage, the clock, the config and its own
options (the section it declares, see :mod:`xmppd.options`).  The core
never imports a feature module, and modules never import each other: what one
offers another goes through :meth:`ModuleAPI.provide` / :meth:`ModuleAPI.service`.
"""

from twisted.internet import defer
from twisted.logger import Logger

from xmppd import http
from xmppd.core.events import iq_event
from xmppd.core.stanzas import StanzaError, error_reply, iq_result
from xmppd.storage import StorageError

log = Logger()

# Stream feature stages: offered after TLS next to SASL, and after SASL.
ENCRYPTED = "encrypted"
AUTHENTICATED = "authenticated"


def _nothing():
    """Lets go of a lock that outside a cluster is not taken."""


class ModuleAPI:
    """What a feature module may use of the server."""

    def __init__(self, server, name):
        self._server = server
        self.name = name
        self.log = Logger(namespace=f"xmppd.modules.{name}")

    @property
    def config(self):
        return self._server.config

    @property
    def options(self):
        """This module's options (the ``OPTIONS`` it declares) in the
        server's current config: read when used, so a reload applies them."""
        return self._server.config.options(self.name)

    def options_for(self, domain):
        """This module's options for hosted ``domain``: with what its
        ``[hosts."DOMAIN".MODULE]`` section sets instead."""
        return self._server.config.options(self.name, domain)

    @property
    def hosts(self):
        return self._server.hosts

    @property
    def storage(self):
        return self._server.storage

    def open_store(self, kind, name=None):
        """This module's store of ``kind`` (see :mod:`xmppd.storage`),
        scoped to ``name`` (the module's name by default); its methods
        return Deferreds."""
        return self._server.storage.open(kind, name or self.name)

    @property
    def node(self):
        """The name of this process as a node of a cluster, or None."""
        cluster = self._server.cluster
        return None if cluster is None else cluster.node

    @property
    def streams(self):
        """Stream negotiation and the session lifecycle, for the modules
        that take part in them (SASL, bind, stream management...): the
        server's :class:`~xmppd.core.negotiation.Negotiation`."""
        return self._server.negotiation

    @property
    def clock(self):
        return self._server.clock

    @property
    def metrics(self):
        """The server's :class:`~xmppd.core.metrics.Metrics`; modules add
        their own metrics to its ``registry``."""
        return self._server.metrics

    @property
    def sessions(self):
        return self._server.sessions

    def enabled(self, domain):
        """Whether this module serves hosted ``domain``."""
        return self._server.enabled(self.name, domain)

    def hook(self, event, handler, priority=0, host=None):
        """Call ``handler(argument)`` on ``event`` (on ``host``'s bus only,
        if given: a hosted or service domain); a true return claims it, a
        Deferred makes the sender's later stanzas wait for it (see
        :meth:`~xmppd.core.events.Hooks.fire`)."""
        self._server.hooks.add(event, handler, priority, host)

    def fire(self, event, argument):
        """Fire ``event``: True/False (claimed), or a Deferred of that."""
        return self._server.hooks.fire(event, argument)

    def notify(self, event, argument):
        """Fire notification ``event``: every handler runs."""
        self._server.hooks.notify(event, argument)

    def depends(self, name):
        """Load feature module ``name`` first if it is not loaded yet (this
        module needs its service or events).  It is then enabled wherever
        this module is, and a host that disables it disables this one."""
        self._server.require(name, by=self.name)

    def add_service(self, domain, host):
        """Serve ``domain`` (such as ``conference.example.com``) for hosted
        domain ``host``: stanzas to it fire events on its own bus, which this
        module hooks with ``host=domain``; nothing else sees them."""
        self._server.router.add_service(domain, host)

    def add_services(self, label, name, placed=None):
        """Serve ``LABEL.HOST`` (``label(host)``: the label for that host)
        for every host this module is enabled on, as :meth:`add_service`
        does, listed in the host's disco#items (XEP-0030 §4.1) as ``name``
        when the disco service is there; the ``(host, domain)`` pairs.

        ``placed(domain)``: the service keeps state in memory, so one node
        of a cluster serves it at a time and the others forward to it
        (docs/cluster.md); called when this process starts serving it:
        at once, or when its cluster node takes it over."""
        disco = self.service("disco")
        served = []
        for host in self.hosts:
            if not self.enabled(host):
                continue
            domain = f"{label(host)}.{host}"
            self.add_service(domain, host)
            if placed is not None:
                self._server.router.place(domain, placed)
            if disco is not None:
                disco.add_item(host, domain, name)
            served.append((host, domain))
        return served

    def owner(self, domain):
        """The hosted domain ``domain`` is or belongs to (for a service
        domain, the host it serves), or None if it is remote."""
        return self._server.router.owner(domain)

    def handle_iq(self, type_, targets, namespace, handler, priority=0, host=None):
        """Answer iq requests of ``type_`` with payload ``namespace`` sent to
        ``targets`` (one or a tuple of HOST/BARE/FULL), on the hosts where
        this module is enabled (on service domain ``host`` only, if given).
        The sender's later stanzas wait until the answer is sent.

        ``handler(stanza)`` returns the result payload element, or None for
        an empty result, or a Deferred of either; it raises (or fails with)
        :class:`StanzaError` to answer with that error.  Any other failure is
        logged and answered with ``internal-server-error``.
        """
        def claim(stanza):
            if not self.enabled(stanza.recipient.domain if host is None else self.owner(host)):
                return False
            d = defer.maybeDeferred(handler, stanza)
            d.addCallbacks(
                lambda payload: self._server.router.reply(
                    stanza, iq_result(stanza.element, payload)),
                lambda failure: self._iq_failed(stanza, failure))
            return True if d.called else d.addCallback(lambda _: True)

        for target in (targets if isinstance(targets, tuple) else (targets,)):
            self.hook(iq_event(type_, target, namespace), claim, priority, host)

    def _iq_failed(self, stanza, failure):
        if failure.check(StanzaError):
            error = failure.value
        elif failure.check(StorageError):
            self.log.error("storage unavailable for {stanza!r}: {error}",
                           stanza=stanza, error=failure.value)
            error = StanzaError("internal-server-error", "storage is unavailable")
        else:
            self.log.failure("iq handler failed on {stanza!r}", failure, stanza=stanza)
            error = StanzaError("internal-server-error")
        self._server.router.reply(stanza, error_reply(stanza.element, error))

    def stream_feature(self, builder, stage=AUTHENTICATED):
        """Offer ``builder(stream)`` (an element, or None to skip) in the
        stream features of ``stage``."""
        self._server.negotiation.add_feature(builder, stage)

    def disco_feature(self, namespace):
        """Advertise ``namespace`` in disco#info (XEP-0030) of the hosts
        where this module is enabled."""
        self._server.disco_features.setdefault(self.name, set()).add(namespace)

    def account_feature(self, namespace):
        """Advertise ``namespace`` in disco#info of the accounts (XEP-0030
        §3.1: what the server does on an account's behalf) of the hosts
        where this module is enabled."""
        self._server.account_features.setdefault(self.name, set()).add(namespace)

    def account_features(self, domain):
        """The account features of every module enabled for ``domain``, sorted."""
        return self._server.features_for(domain, self._server.account_features)

    def drop_disco_feature(self, namespace):
        """Stop advertising ``namespace`` (see :meth:`disco_feature`)."""
        self._server.disco_features.get(self.name, set()).discard(namespace)

    def features(self, domain):
        """The disco features of every module enabled for ``domain``, sorted."""
        return self._server.features_for(domain)

    def route(self, element):
        """Route a stanza the server generates (``to``/``from`` set)."""
        return self._server.router.route(element)

    def dispatch(self, stanza):
        """Route an already parsed :class:`~xmppd.core.stanzas.Stanza`."""
        return self._server.router.dispatch(stanza)

    def reply(self, stanza, element):
        self._server.router.reply(stanza, element)

    def bounce(self, stanza, condition, text=None):
        """Answer ``stanza`` with a stanza error (unless it is an error or
        an iq result); True, so a handler can ``return api.bounce(...)``."""
        return self._server.router.bounce(stanza, condition, text)

    def undeliverable(self, recipient, element):
        """Handle ``element``, sent to session ``recipient`` (a full JID)
        that may not have got it (:meth:`~xmppd.core.router.Router.undeliverable`)."""
        self._server.router.undeliverable(recipient, element)

    def tell_cluster(self, event, argument):
        """Fire notification ``event`` with ``argument`` (a string) on the
        other nodes of the cluster, if this process is one (to drop what
        they keep of changed data, docs/cluster.md); nothing otherwise."""
        if self._server.cluster is not None:
            self._server.cluster.tell(event, argument)

    def cluster_lock(self, name):
        """A Deferred that fires, once lock ``name`` is held on every node of
        the cluster, with the function that lets it go (at once, outside a
        cluster): for a change that reads then writes shared data."""
        if self._server.cluster is None:
            return defer.succeed(_nothing)
        return self._server.cluster.lock(name)

    def next_id(self):
        return self._server.next_id()

    def http_resource(self, path, resource, max_request_size=None, cors=True):
        """Serve twisted.web ``resource`` under path prefix ``path``
        (``"upload"``: ``https://HOST:PORT/upload/...``) on every HTTP
        listener (``[http] listen``, docs/web.md), for every hosted domain
        (the resource reads the request's ``Host`` itself).  The listener
        answers CORS preflights and adds the CORS headers, and gives
        ``request.getClientAddress()`` as the trusted proxies say.

        Request bodies larger than ``max_request_size`` bytes (an int, or
        a callable returning one, asked per request: a reload applies it;
        default ``[http] max_request_size``) are refused with 413 before
        they are read.  With ``cors=False`` the listener adds no CORS
        headers and answers no preflight under ``path``: what no page of
        another origin may call; with ``cors="*"`` it allows every origin
        whatever ``[http] cors_origins`` says: what holds no credentials a
        page could borrow (signed URLs).  ValueError if ``path`` is taken
        or reserved (``xmpp-websocket``, ``http-bind``, ``.well-known``)."""
        segments = http.path_segments(path)
        if segments in self._server.http_resources:
            raise ValueError(f"/{path} is already served")
        self._server.http_resources[segments] = (resource, max_request_size)
        if not cors:
            self._server.http_without_cors.add(segments)
        elif cors == "*":
            self._server.http_any_origin.add(segments)

    def http_base_url(self, host):
        """The external base URL of the web for hosted domain ``host``,
        ending with ``/`` (``https://example.com:5281/``): a module's
        public URLs are ``base + "upload/..."``.  From ``[http]
        external_url`` (``"https://{host}:5281/"``), else the first
        listener; None when there is no HTTP listener."""
        return http.base_url(self._server.config, host)

    def provide(self, name, service):
        """Publish ``service`` for other modules under ``name``."""
        if name in self._server.services:
            raise ValueError(f"service {name!r} is already provided")
        self._server.services[name] = service

    def service(self, name, default=None):
        return self._server.services.get(name, default)
