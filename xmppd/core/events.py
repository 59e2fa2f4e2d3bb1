"""Named events and their handlers: the hook API modules plug into.

A stanza is *posted* as an event whose name says what it is and where it goes
(DESIGN.md, "Data flow of one stanza"): ``message/bare``, ``presence/full``,
``iq-get/host/urn:xmpp:ping``, ``iq-result/full``, on the bus of the
recipient's domain.  Before that, ``pre-message/bare`` (``pre-<kind>/<target>``)
fires on the bus of the sender's domain: the policies (closed domains,
blocking, carbons, outgoing presence) hook only the kinds they act on.
Handlers run by priority (highest first); the first one that returns a true
value claims the event and the rest are skipped.  Notification events
(``session/bound`` ...) simply have handlers that return nothing, so all of
them run.  A handler that must wait returns a Deferred (see
:meth:`Hooks.fire`): this, with the sender's
:class:`~xmppd.core.serial.SerialQueue`, keeps RFC 6120 §10.1's order.

Names are built by the helpers below, never typed by hand: a wrong kind, type
or target raises at registration instead of silently never matching.
Dispatch is one dictionary lookup.
"""

from bisect import insort

from twisted.internet.defer import Deferred
from twisted.logger import Logger

HOST = "host"  # to the server's domain (RFC 6120 §10.3)
BARE = "bare"  # to localpart@domain, handled on the account's behalf (§10.3.3)
FULL = "full"  # to localpart@domain/resource (§10.4)
TARGETS = (HOST, BARE, FULL)
STANZA_KINDS = ("message", "presence", "iq")
IQ_REQUESTS = ("get", "set")
IQ_RESPONSES = ("result", "error")

SESSION_BOUND = "session/bound"  # a resource was bound; argument: the Session
SESSION_UNBOUND = "session/unbound"  # a session ended; argument: the Session
# A hibernating session has a connection again (XEP-0198); argument: the Session
SESSION_RESUMED = "session/resumed"
# A session lost its connection and is kept for its client to resume
# (XEP-0198); argument: (the Session, the stanzas it sent that its client
# did not acknowledge).  Fired by stream management; push notifies them.
SESSION_HIBERNATING = "session/hibernating"
# A session of another node of the cluster ended with its node (it died);
# argument: its record (xmppd.cluster.directory.RemoteRecord): its contacts
# are told it is unavailable.
SESSION_LOST = "session/lost"
# The last session of an account ended: here (after its session/unbound),
# or in a cluster on another node while none is bound here; argument: its
# bare JID (what was kept of the account while it was connected can go).
ACCOUNT_OFFLINE = "account/offline"
# A session became available / unavailable (RFC 6121 §4.2, §4.5); argument:
# the Session.  Fired by the presence module after it updated the session.
SESSION_AVAILABLE = "session/available"
SESSION_UNAVAILABLE = "session/unavailable"
# A session can now receive messages for its bare JID (RFC 6121 §8.5.2.1.1):
# it became available with a non-negative priority, or its priority rose from
# negative to non-negative.  Fired by the presence module; offline delivery
# (XEP-0160) listens.
SESSION_REACHABLE = "session/reachable"
CONFIG_RELOADED = "config/reloaded"  # argument: the new Config; modules re-read settings
# The server is stopping, its sessions still connected: the last stanzas
# modules send before they end go out.  Argument: None.
SERVER_STOPPING = "server/stopping"
# A message for a local account with no resource to take it (RFC 6121
# §8.5.2.2); argument: the Stanza.  Claimed by offline storage, if enabled.
MESSAGE_OFFLINE = "message/offline"
# The server refuses a message with an error to its sender (offline storage
# full, no such resource...); argument: the Stanza, before the error is
# made of it.  A notification: the archive takes back what it kept of it.
MESSAGE_BOUNCED = "message/bounced"
ROUTE_REMOTE = "route/remote"  # a stanza for a domain not hosted here

log = Logger()


def iq_event(type_, target, namespace=None):
    """``iq-get/host/NS`` for requests (namespace of the payload element),
    ``iq-result/full`` for responses."""
    _check_target(target)
    if type_ in IQ_REQUESTS:
        if not namespace:
            raise ValueError(f"an iq-{type_} event needs a payload namespace")
        return f"iq-{type_}/{target}/{namespace}"
    if type_ in IQ_RESPONSES and namespace is None:
        return f"iq-{type_}/{target}"
    raise ValueError(f"no iq event for type {type_!r} and namespace {namespace!r}")


def message_event(target):
    _check_target(target)
    return f"message/{target}"


def presence_event(target):
    _check_target(target)
    return f"presence/{target}"


def pre_event(kind, target):
    """``pre-message/bare``: a stanza of ``kind`` to a ``target`` address,
    on the sender's domain, before it is routed; claim it to stop it."""
    _check_target(target)
    if kind not in STANZA_KINDS:
        raise ValueError(f"unknown stanza kind {kind!r}; expected one of {STANZA_KINDS}")
    return f"pre-{kind}/{target}"


def pre_events(*kinds):
    """The pre-events of ``kinds`` (default: every kind) to every target."""
    return [pre_event(kind, target) for kind in kinds or STANZA_KINDS for target in TARGETS]


def then(result, fn):
    """``fn(result)`` now, or when ``result``, a Deferred, fires: for code
    that continues after a :meth:`Hooks.fire` that may have to wait."""
    if result is True or result is False or not isinstance(result, Deferred):
        return fn(result)
    return result.addCallback(fn)


def _check_target(target):
    if target not in TARGETS:
        raise ValueError(f"unknown stanza target {target!r}; expected one of {TARGETS}")


class Hooks:
    """Handlers by event name, kept sorted by descending priority, on one
    global bus and on per-domain buses.

    A handler added with ``host`` runs only for events fired on that
    domain's bus; a global handler runs for events fired globally and on the
    bus of every hosted domain.  A service domain (:meth:`isolate`, such as
    ``conference.example.com``) has a bus of its own only: the global
    handlers, which serve accounts, never see its stanzas.
    """

    def __init__(self):
        self._global = {}  # name -> [(-priority, order, handler)]
        self._scoped = {}  # domain -> name -> [...]: global handlers merged in
        self._isolated = set()
        self._order = 0

    def add(self, name, handler, priority=0, host=None):
        """Call ``handler(argument)`` when ``name`` fires (on ``host``'s bus
        only, if given)."""
        self._order += 1
        entry = (-priority, self._order, handler)
        if host is not None:
            insort(self._scope(host).setdefault(name, []), entry)
            return
        insort(self._global.setdefault(name, []), entry)
        for domain, table in self._scoped.items():
            if domain not in self._isolated:
                insort(table.setdefault(name, []), entry)

    def isolate(self, domain):
        """Give ``domain`` a bus without the global handlers (keeping those
        added for it already)."""
        self._isolated.add(domain)
        self._scoped[domain] = {
            name: [entry for entry in entries if entry not in self._global.get(name, ())]
            for name, entries in self._scoped.get(domain, {}).items()}

    def forget(self, domain):
        """Drop the bus of ``domain`` (a service that stopped)."""
        self._isolated.discard(domain)
        self._scoped.pop(domain, None)

    def _scope(self, domain):
        table = self._scoped.get(domain)
        if table is None:
            table = self._scoped[domain] = {name: list(handlers)
                                            for name, handlers in self._global.items()}
        return table

    def fire(self, name, argument, host=None):
        """Run the handlers of ``name`` (on ``host``'s bus, if given) until
        one claims the event; return whether one did.

        A handler claims by returning a true value.  It may also return a
        Deferred: the handlers after it wait, and run only if it fires with
        a false value; ``fire`` then returns a Deferred of the outcome, so
        the caller (the sender's :class:`~xmppd.core.serial.SerialQueue`)
        waits too.  A handler that raises or fails is logged and counts as
        having claimed the event, so the sender never gets a second, wrong
        answer."""
        table = self._global if host is None else self._scoped.get(host, self._global)
        handlers = table.get(name)
        if not handlers:
            return False
        return _run(handlers, 0, name, argument)

    def notify(self, name, argument):
        """Run every global handler of notification event ``name``
        (``session/bound``...): nothing claims it, and a handler that raises
        or fails is logged without keeping the others from running."""
        for _, _, handler in tuple(self._global.get(name, ())):
            try:
                result = handler(argument)
            except Exception:
                log.failure("handler {handler!r} failed on {event}", handler=handler, event=name)
                continue
            if isinstance(result, Deferred):
                result.addErrback(_failed, handler, name)


def _run(handlers, start, name, argument):
    for index in range(start, len(handlers)):
        handler = handlers[index][2]
        try:
            result = handler(argument)
        except Exception:
            log.failure("handler {handler!r} failed on {event}", handler=handler, event=name)
            return True
        if not result:
            continue
        if result is not True and isinstance(result, Deferred):
            return result.addCallbacks(
                _claimed_or_next, _failed,
                callbackArgs=(tuple(handlers), index + 1, name, argument),
                errbackArgs=(handler, name))
        return True
    return False


def _claimed_or_next(claimed, handlers, start, name, argument):
    return True if claimed else _run(handlers, start, name, argument)


def _failed(failure, handler, name):
    log.failure("handler {handler!r} failed on {event}", failure, handler=handler, event=name)
    return True
