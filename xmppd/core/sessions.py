"""Sessions and the directory of bound resources (RFC 6120 §7).

A :class:`Session` is what the router delivers to: a bound full JID with a
``send`` method.  It is not the connection: its ``carrier``
(:class:`~xmppd.core.carrier.ICarrier`: TCP, WebSocket, BOSH) only carries
it, and a session may outlive its carrier (hibernating, ``carrier`` None,
until a module resumes or ends it: XEP-0198).  What it sends passes the
outbound filters of :class:`~xmppd.core.negotiation.Negotiation` first.

The :class:`SessionDirectory` maps bare JIDs to their bound resources; a new
bind of a resource already bound replaces the old session, which is closed
with a ``conflict`` stream error (RFC 6120 §7.7.2.2).
"""


class Session:
    """A bound resource.

    ``available`` and ``priority`` are the presence state (RFC 6121 §4),
    ``roster_requested`` says whether the client asked for its roster and so
    receives roster pushes (RFC 6121 §2.1.6).  ``last_active`` is when the
    client last sent anything and ``since`` when the resource was bound
    (seconds of the server clock), which ``xmppctl sessions`` shows.
    ``state`` holds per-session data of feature modules, keyed by module name.
    """

    __slots__ = ("jid", "carrier", "negotiation", "available", "priority", "presence",
                 "roster_requested", "last_active", "since", "state", "__weakref__")

    def __init__(self, jid, carrier, negotiation, now=0.0):
        self.jid = jid
        self.carrier = carrier
        self.negotiation = negotiation
        self.since = self.last_active = now
        self.available = False
        self.priority = 0
        self.presence = None
        self.roster_requested = False
        self.state = {}

    def send(self, element):
        """Deliver a stanza to the client (through the outbound filters)."""
        self.negotiation.deliver(self, element)

    def close(self, condition, text=None):
        """End the session: its carrier closes with a stream error and the
        session is unbound once the carrier is gone; a hibernating session
        is unbound at once."""
        carrier, self.carrier = self.carrier, None
        if carrier is not None:
            carrier.close(condition, text)
        else:
            self.negotiation.unbind(self)

    def __repr__(self):
        return f"<Session {self.jid}>"


class SessionDirectory:
    """Bound sessions by bare JID and resource."""

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
