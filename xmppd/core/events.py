"""Named events and their handlers: the hook API modules plug into.

A stanza is *posted* as an event whose name says what it is and where it goes
(DESIGN.md, "Data flow of one stanza"): ``message/bare``, ``presence/full``,
``iq-get/host/urn:xmpp:ping``, ``iq-result/full``.  Handlers run by priority
(highest first); the first one that returns a true value claims the event and
the rest are skipped.  Notification events (``session/bound`` ...) simply have
handlers that return nothing, so all of them run.

Names are built by the helpers below, never typed by hand: a wrong kind, type
or target raises at registration instead of silently never matching.
Dispatch is one dictionary lookup.
"""

from bisect import insort

from twisted.logger import Logger

HOST = "host"  # to the server's domain (RFC 6120 §10.3)
BARE = "bare"  # to localpart@domain, handled on the account's behalf (§10.3.3)
FULL = "full"  # to localpart@domain/resource (§10.4)
TARGETS = (HOST, BARE, FULL)
IQ_REQUESTS = ("get", "set")
IQ_RESPONSES = ("result", "error")

SESSION_BOUND = "session/bound"  # a resource was bound; argument: the Session
SESSION_UNBOUND = "session/unbound"  # a session ended; argument: the Session
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
PRE_ROUTE = "route/pre"  # every stanza, before its own event; claim to stop it
# A message for a local account with no resource to take it (RFC 6121
# §8.5.2.2); argument: the Stanza.  Claimed by offline storage, if enabled.
MESSAGE_OFFLINE = "message/offline"
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


def _check_target(target):
    if target not in TARGETS:
        raise ValueError(f"unknown stanza target {target!r}; expected one of {TARGETS}")


class Hooks:
    """Handlers by event name, kept sorted by descending priority."""

    def __init__(self):
        self._handlers = {}
        self._order = 0

    def add(self, name, handler, priority=0):
        """Call ``handler(argument)`` when ``name`` fires."""
        self._order += 1
        insort(self._handlers.setdefault(name, []), (-priority, self._order, handler))

    def remove(self, name, handler):
        self._handlers[name] = [h for h in self._handlers.get(name, ()) if h[2] != handler]

    def fire(self, name, argument, after=None):
        """Run the handlers of ``name`` until one returns a true value; say
        whether one did.  A handler that raises is logged and counts as having
        claimed the event, so the sender never gets a second, wrong answer.

        With ``after``, start with the handler that follows it: a handler that
        claimed an event to finish an asynchronous check resumes it so."""
        handlers = self._handlers.get(name, ())
        if after is not None:
            position = next(i for i, h in enumerate(handlers) if h[2] == after)
            handlers = handlers[position + 1:]
        for _, _, handler in handlers:
            try:
                if handler(argument):
                    return True
            except Exception:
                log.failure("handler {handler!r} failed on {event}", handler=handler, event=name)
                return True
        return False

    def has(self, name):
        return bool(self._handlers.get(name))
