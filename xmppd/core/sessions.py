"""Sessions and the directory of bound resources (RFC 6120 §7).

A :class:`Session` is what the router delivers to: a bound full JID with a
``send`` method.  It is not the TCP stream: the stream is only its current
carrier, so later transports (BOSH, WebSocket) and stream resumption can
carry a session too.

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

    __slots__ = ("jid", "carrier", "available", "priority", "presence",
                 "roster_requested", "last_active", "since", "state", "__weakref__")

    def __init__(self, jid, carrier, now=0.0):
        self.jid = jid
        self.carrier = carrier
        self.since = self.last_active = now
        self.available = False
        self.priority = 0
        self.presence = None
        self.roster_requested = False
        self.state = {}

    def send(self, element):
        self.carrier.send_stanza(element)

    def close(self, condition, text=None):
        """End the session with a stream error."""
        self.carrier.stream_error(condition, text)

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
