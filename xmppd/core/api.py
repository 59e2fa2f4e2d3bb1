"""The API feature modules use.

A feature module is a Python module with ``setup(api)``; ``tap.py`` chooses
which ones to load.  Through :class:`ModuleAPI` a module hooks events, answers
iqs (with central error mapping), adds stream features and disco features,
routes stanzas, and reaches storage, the clock and the config.  The core
never imports a feature module, and modules never import each other: what one
offers another goes through :meth:`ModuleAPI.provide` / :meth:`ModuleAPI.service`.
"""

from twisted.internet import defer
from twisted.logger import Logger

from xmppd.core.events import iq_event
from xmppd.core.stanzas import StanzaError, error_reply, iq_result
from xmppd.storage import StorageError

log = Logger()

# Stream feature stages: offered after TLS next to SASL, and after SASL.
ENCRYPTED = "encrypted"
AUTHENTICATED = "authenticated"


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

    def hook(self, event, handler, priority=0):
        """Call ``handler(argument)`` on ``event``; a true return claims it."""
        self._server.hooks.add(event, handler, priority)

    def fire(self, event, argument):
        return self._server.hooks.fire(event, argument)

    def handle_iq(self, type_, targets, namespace, handler, priority=0):
        """Answer iq requests of ``type_`` with payload ``namespace`` sent to
        ``targets`` (one or a tuple of HOST/BARE/FULL), on the hosts where
        this module is enabled.

        ``handler(stanza)`` returns the result payload element, or None for
        an empty result, or a Deferred of either; it raises (or fails with)
        :class:`StanzaError` to answer with that error.  Any other failure is
        logged and answered with ``internal-server-error``.
        """
        def claim(stanza):
            if not self.enabled(stanza.recipient.domain):
                return False
            d = defer.maybeDeferred(handler, stanza)
            d.addCallbacks(
                lambda payload: self._server.router.reply(
                    stanza, iq_result(stanza.element, payload)),
                lambda failure: self._iq_failed(stanza, failure))
            return True

        for target in (targets if isinstance(targets, tuple) else (targets,)):
            self.hook(iq_event(type_, target, namespace), claim, priority)

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
        self._server.stream_features[stage].append(builder)

    def disco_feature(self, namespace):
        """Advertise ``namespace`` in disco#info (XEP-0030) of the hosts
        where this module is enabled."""
        self._server.disco_features.setdefault(self.name, set()).add(namespace)

    def features(self, domain):
        """The disco features of every module enabled for ``domain``, sorted."""
        return self._server.features_for(domain)

    def route(self, element):
        """Route a stanza the server generates (``to``/``from`` set)."""
        self._server.router.route(element)

    def dispatch(self, stanza):
        """Route an already parsed :class:`~xmppd.core.stanzas.Stanza`."""
        self._server.router.dispatch(stanza)

    def resume(self, stanza, handler):
        """Continue routing ``stanza``, which ``handler`` claimed on
        ``route/pre`` to check it asynchronously, with the handlers after it."""
        self._server.router.dispatch(stanza, after=handler)

    def post(self, stanza):
        """Route ``stanza`` by its own event only, skipping ``route/pre``."""
        self._server.router.post(stanza)

    def reply(self, stanza, element):
        self._server.router.reply(stanza, element)

    def bounce(self, stanza, condition, text=None):
        self._server.router.bounce(stanza, condition, text)

    def next_id(self):
        return self._server.next_id()

    def provide(self, name, service):
        """Publish ``service`` for other modules under ``name``."""
        if name in self._server.services:
            raise ValueError(f"service {name!r} is already provided")
        self._server.services[name] = service

    def service(self, name, default=None):
        return self._server.services.get(name, default)
