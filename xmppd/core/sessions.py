"""Sessions and the directory of bound resources (RFC 6120 §7).

A :class:`Session` is what the router delivers to: a bound full JID with a
``send`` method.  It is not the connection: its ``carrier``
(:class:`~xmppd.core.carrier.ICarrier`: TCP, WebSocket, BOSH) only carries
it, and a session may outlive its carrier (hibernating, ``carrier`` None,
until a module resumes or ends it: XEP-0198).  What it sends passes the
outbound filters of :class:`~xmppd.core.negotiation.Negotiation` first.

The directory of bound sessions is an interface, :class:`SessionDirectory`,
whose records (:class:`SessionRecord`) carry what routing and the feature
modules need of any session: its full JID, the presence state of RFC 6121 §4
(``available``, ``priority``, the last ``presence``), ``flags`` that modules
set (the roster requested, RFC 6121 §2.1.6; carbons enabled, XEP-0280...),
``hibernating`` (no connection, kept for resumption: XEP-0198) and
``send``.  Nothing else of a record may be used: a record may stand for
a session on another node of a cluster, so its state changes go through the
directory (:meth:`SessionDirectory.set_presence`,
:meth:`SessionDirectory.set_flag`), which can publish them, and its ``send``
routes there.  Data a module keeps only for the session's own stream (its
``state``) is reached through the local session a stanza came from
(``stanza.origin``).  :class:`LocalSessionDirectory` keeps the records of
one process in memory.

A new bind of a resource already bound replaces the old session, which is
closed with a ``conflict`` stream error (RFC 6120 §7.7.2.2).
"""

from typing import Protocol

NO_FLAGS = frozenset()


class SessionRecord(Protocol):
    """What a directory record offers, wherever its session lives."""

    jid: object  # the full JID
    available: bool
    priority: int
    presence: object  # the last presence the client sent, or None
    flags: frozenset  # names set with SessionDirectory.set_flag
    hibernating: bool  # bound without a connection, for its client to resume (XEP-0198)

    def send(self, element):
        """Deliver a stanza to the client."""

    def close(self, condition, text=None):
        """End the session with a stream error."""


class SessionDirectory(Protocol):
    """Bound sessions by bare JID and resource (an in-memory one now; one
    shared by the nodes of a cluster later)."""

    def get(self, full_jid):
        """The record bound to ``full_jid``, or None."""

    def resources(self, bare_jid):
        """The records bound for ``bare_jid`` (a list, possibly empty)."""

    def all(self):
        """Every record (a list)."""

    def count(self, bare_jid=None):
        """How many sessions are bound (for ``bare_jid``, or in all)."""

    def here(self, bare_jid):
        """How many of ``bare_jid``'s sessions this process holds (what
        it keeps of an account while the account is connected here, it
        drops when this reaches 0)."""

    def add(self, session):
        """Register ``session``; return the record it replaces, if any."""

    def remove(self, session):
        """Forget ``session`` if it is still the one bound to its JID; say
        whether it was."""

    def set_presence(self, session, available, priority, presence):
        """Record the presence state of ``session`` (RFC 6121 §4)."""

    def set_flag(self, session, name, on=True):
        """Set (or clear) flag ``name`` of ``session``."""


class Session:
    """A bound resource of this process (a :class:`SessionRecord`).

    ``last_active`` is when the client last sent anything and ``since`` when
    the resource was bound (seconds of the server clock), which ``xmppctl
    sessions`` shows, with ``client`` (what a SASL2 client said of
    itself).  ``state`` holds per-session data of feature modules, keyed by
    module name, for this process only.  ``ending``: the session
    has left the directory (nothing is routed to it) while the stanzas it
    sent are still processed; ``unbound``: ``session/unbound`` has fired
    (see :class:`~xmppd.core.negotiation.Negotiation`).
    """

    __slots__ = ("jid", "carrier", "negotiation", "available", "priority", "presence",
                 "flags", "last_active", "since", "state", "ending", "unbound", "client",
                 "__weakref__")

    def __init__(self, jid, carrier, negotiation, now=0.0):
        self.jid = jid
        self.carrier = carrier
        self.negotiation = negotiation
        self.since = self.last_active = now
        self.available = False
        self.priority = 0
        self.presence = None
        self.flags = NO_FLAGS
        self.state = {}
        self.ending = self.unbound = False
        self.client = None  # the SASL2 user agent's software and device, if given

    @property
    def hibernating(self):
        """Bound and routed to, but without a carrier: kept for its client
        to resume (XEP-0198 §5)."""
        return self.carrier is None and not self.ending and not self.unbound

    def send(self, element):
        """Deliver a stanza to the client (through the outbound filters)."""
        self.negotiation.deliver(self, element)

    def close(self, condition, text=None):
        """End the session: nothing more is routed to it, its carrier closes
        with a stream error, and it is unbound once the stanzas it sent are
        processed; a hibernating session is unbound at once."""
        if self.ending:
            return
        carrier = self.carrier
        if carrier is None:
            self.negotiation.unbind(self)
            return
        self.negotiation.end(self)
        carrier.close(condition, text)

    def __repr__(self):
        return f"<Session {self.jid}>"


class LocalSessionDirectory:
    """The :class:`SessionDirectory` of one process, in memory."""

    def __init__(self):
        self._by_bare = {}

    def get(self, full_jid):
        return self._by_bare.get(full_jid.bare, {}).get(full_jid.resource)

    def resources(self, bare_jid):
        """The sessions bound for ``bare_jid`` (a list, possibly empty)."""
        return list(self._by_bare.get(bare_jid, {}).values())

    def all(self):
        """Every bound session (a list: safe to close sessions while looping)."""
        return [s for resources in self._by_bare.values() for s in resources.values()]

    def count(self, bare_jid=None):
        if bare_jid is not None:
            return len(self._by_bare.get(bare_jid, ()))
        return sum(len(r) for r in self._by_bare.values())

    def here(self, bare_jid):
        return len(self._by_bare.get(bare_jid, ()))

    def add(self, session):
        """Register ``session``; return the session it replaces, if any."""
        resources = self._by_bare.setdefault(session.jid.bare, {})
        old = resources.get(session.jid.resource)
        resources[session.jid.resource] = session
        return old

    def remove(self, session):
        """Forget ``session`` if it is still the one bound to its JID."""
        resources = self._by_bare.get(session.jid.bare)
        if resources and resources.get(session.jid.resource) is session:
            del resources[session.jid.resource]
            if not resources:
                del self._by_bare[session.jid.bare]
            return True
        return False

    def set_presence(self, session, available, priority, presence):
        session.available, session.priority, session.presence = available, priority, presence

    def set_flag(self, session, name, on=True):
        session.flags = session.flags | {name} if on else session.flags - {name}
