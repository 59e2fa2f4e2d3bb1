"""Stream negotiation by modules, and the lifecycle of sessions.

RFC 6120 §4.3 has a stream negotiated feature by feature: the receiving
entity offers features, the initiating entity sends the elements that
negotiate them.  :class:`Negotiation` (``server.negotiation``, which
modules reach as ``api.streams``) lets modules do both, so the core knows
no feature by name: SASL (§6), resource binding (§7), and later stream
management (XEP-0198), SASL2 (XEP-0388), Bind2 (XEP-0386) or client state
indication (XEP-0352).

- Features: a provider ``builder(stream)`` returns a feature element or
  None, for the streams of its stage (``encrypted``: before
  authentication, ``authenticated``: after it).
- Elements: each top-level element that is not a stanza of a bound
  session fires the event :func:`stream_element_event` of its namespace
  and name (as Prosody's ``stanza/<ns>:<name>``); handlers run by priority
  with ``(stream, element)`` until one returns a true value (or a Deferred:
  the stream's later elements wait for it).  An element nobody claims ends
  the stream with ``not-authorized`` before binding (§6.4.1, §7.1), or
  ``unsupported-stanza-type`` after it (§4.9.3.23).
- Sessions: :meth:`bind` makes one (§7), replacing a session bound to the
  same full JID (§7.7.2.2).  When its carrier is lost, the event
  :data:`SESSION_CARRIER_LOST` lets a module keep the session hibernating
  (XEP-0198 §5) until it :meth:`resume`\\ s or :meth:`unbind`\\ s it.
  Inbound filters see each stanza a session sends before it is processed,
  outbound filters each stanza delivered to it (both as
  ``filter(session, element)``, returning the element to go on with or
  None to stop it), higher priority first: client state indication
  (XEP-0352) holds stanzas back before stream management (XEP-0198)
  counts what goes out.  :meth:`remember` / :meth:`find` look sessions up by
  a module's key (a resumption token) rather than by JID.
- Back-pressure: a stanza delivered, while another carrier's stanza is
  being routed (:attr:`Negotiation.sender`), to a carrier whose output is
  backlogged holds the sender's carrier: it stops reading until that
  output drains.

The ``stream`` modules get is a :class:`~xmppd.core.c2s.ClientConnection`:
``domain``, ``user`` (once authenticated), ``session`` (once bound),
``state`` (per-module data), ``secure``, ``peer``, ``address``,
``send(element)``, ``close(condition, text)``, ``restart()``,
``channel_binding(kind)``.
"""

import json
from bisect import insort
from weakref import WeakValueDictionary

from twisted.logger import Logger

from xmppd import logs
from xmppd.core.api import AUTHENTICATED, ENCRYPTED
from xmppd.core.events import ACCOUNT_OFFLINE, SESSION_BOUND, SESSION_RESUMED, SESSION_UNBOUND
from xmppd.core.sessions import Session
from xmppd.jid import JID

log = Logger(namespace="xmppd.core.c2s")

# A bound session's carrier is gone (not closed by the server); argument:
# the Session.  A module that claims it keeps the session bound, without a
# carrier, until it calls resume or unbind.
SESSION_CARRIER_LOST = "session/carrier-lost"
# Another node of the cluster ended an account's streams (end_account): its
# streams here end too.  Argument: JSON [JID, condition, text].
ACCOUNT_END = "account/end"


def stream_element_event(namespace, name):
    """The event of a stream-level element: ``stream/NS:NAME``."""
    if not namespace or not name:
        raise ValueError(f"a stream element needs a namespace and a name, not "
                         f"{namespace!r} {name!r}")
    return f"stream/{namespace}:{name}"


class Negotiation:
    """The features, element handlers, filters and session lifecycle of
    one server's client streams."""

    def __init__(self, server):
        self._server = server
        self.features = {ENCRYPTED: [], AUTHENTICATED: []}  # stage -> builders
        self._elements = {}  # event -> [(-priority, order, handler)]
        self._order = 0
        self.inbound_filters = []  # functions, by priority
        self._outbound = []
        self._filters = {"in": [], "out": []}  # [(-priority, order, function)]
        self._keys = WeakValueDictionary()
        # The carrier whose stanza is being routed (set by its receiver
        # around the routing): what is delivered to a backlogged carrier
        # meanwhile holds it.
        self.sender = None
        server.hooks.add(ACCOUNT_END, self._end_told)

    # Features and elements

    def add_feature(self, builder, stage=AUTHENTICATED):
        """Offer ``builder(stream)`` (an element, or None) at ``stage``."""
        self.features[stage].append(builder)

    def features_for(self, stream):
        stage = ENCRYPTED if stream.user is None else AUTHENTICATED
        return [feature for builder in self.features[stage]
                if (feature := builder(stream)) is not None]

    def on_element(self, namespace, name, handler, priority=0):
        """Call ``handler(stream, element)`` for each stream-level element
        ``name`` of ``namespace``; a true value (or a Deferred) claims it."""
        self._order += 1
        insort(self._elements.setdefault(stream_element_event(namespace, name), []),
               (-priority, self._order, handler))

    def element(self, stream, element):
        """Run the handlers of ``element``; the claiming handler's result,
        or False."""
        # Looked up, not built: a peer may send any name, even with no namespace.
        for _, _, handler in self._elements.get(f"stream/{element.uri}:{element.name}", ()):
            result = handler(stream, element)
            if result:
                return result
        return False

    # Authentication (what SASL mechanisms need of the server)

    def offload(self, function, *args):
        """Run CPU-heavy ``function`` off the reactor thread: a Deferred."""
        return self._server.offload(function, *args)

    def banned(self, stream):
        """Whether the stream's address may not authenticate now."""
        return self._server.auth_throttle.banned(stream.address)

    def locked(self, account):
        """Whether ``account`` (a bare JID) refuses password logins now."""
        return self._server.auth_throttle.locked(str(account))

    def failed(self, stream, account=None):
        """Count a failed authentication from the stream's address and for
        ``account`` (the bare JID the client named, if any); the seconds to
        delay its answer."""
        self._server.metrics.auth_failures.inc()
        return self._server.auth_throttle.failed(
            stream.address, self._server.config.limits,
            None if account is None else str(account))

    def authenticated(self, stream, username):
        """``stream`` authenticated as account ``username`` of its domain."""
        self._server.metrics.logins.inc()
        stream.authenticated(JID(username, stream.domain, None))

    # Sessions

    def bind(self, stream, resource):
        """Bind ``resource`` (valid and chosen) for authenticated ``stream``
        and return the new session; a session bound to the same full JID is
        closed with ``conflict`` (RFC 6120 §7.7.2.2)."""
        server = self._server
        session = Session(stream.user.with_resource(resource), stream.carrier, self,
                          server.clock.seconds())
        session.client = stream.client
        stream.bound(session)
        old = server.sessions.add(session)
        if old is not None:
            old.close("conflict", "replaced by a new session")
            if isinstance(old, Session):  # not another cluster node's, which unbinds it
                self.unbind(old)  # before the new one is bound
        server.hooks.notify(SESSION_BOUND, session)
        return session

    def resume(self, stream, session):
        """Let authenticated ``stream`` carry ``session`` (a hibernating
        one, or one whose old carrier is then closed with ``conflict``)."""
        old, session.carrier = session.carrier, stream.carrier
        stream.bound(session)
        if old is not None:
            old.close("conflict", "the session was resumed on another connection")
        self._server.hooks.notify(SESSION_RESUMED, session)

    def carrier_lost(self, session, carrier):
        """``carrier`` of ``session`` is closed or gone: the session ends
        (:meth:`end`), unless a module keeps it hibernating
        (:data:`SESSION_CARRIER_LOST`)."""
        if session.carrier is carrier:
            session.carrier = None
            if not self._server.hooks.fire(SESSION_CARRIER_LOST, session):
                self.end(session)

    def end(self, session):
        """``session`` ends (the server closes it, or its carrier is lost):
        it leaves the directory now, so what is routed to it from now on goes
        to the account's other resources or offline; the stanzas it sent
        before are still processed, then its receiver calls :meth:`unbind`."""
        session.carrier = None
        session.ending = True
        self._server.sessions.remove(session)

    def unbind(self, session):
        """Unbind ``session`` (an ended one once its stanzas are processed,
        or a hibernating one): ``session/unbound`` fires once, then
        ``account/offline`` if the account has no session left (on any
        node of a cluster)."""
        session.carrier = None
        if session.unbound:
            return
        session.unbound = True
        sessions = self._server.sessions
        sessions.remove(session)
        self._server.hooks.notify(SESSION_UNBOUND, session)
        user = session.jid.bare
        if not sessions.count(user):
            self._server.hooks.notify(ACCOUNT_OFFLINE, user)

    def end_account(self, jid, condition, text, keep=None):
        """Close with stream error ``condition`` the client streams of
        ``jid``'s account (for a full JID, the one bound to it), bound or
        not, and unbind its hibernating sessions, all but the stream
        ``keep``; the JIDs (full when bound) of what was ended here.  The
        other nodes of a cluster end theirs (:data:`ACCOUNT_END`): a
        password change, a deletion or a disabling holds everywhere."""
        ended = self._end_here(jid, condition, text, keep)
        cluster = self._server.cluster
        if cluster is not None:
            cluster.tell(ACCOUNT_END, json.dumps([jid.full, condition, text]))
        return ended

    def _end_told(self, argument):
        """Another node of the cluster ended an account: its streams here end."""
        full, condition, text = json.loads(argument)
        self._end_here(JID.normalised(full), condition, text)

    def _end_here(self, jid, condition, text, keep=None):
        ended = []
        for carrier in list(self._server.streams):
            stream = getattr(carrier, "connection", None)
            if (stream is None or stream is keep or stream.user != jid.bare
                    or jid.resource is not None
                    and (stream.session is None or stream.session.jid != jid)):
                continue
            ended.append(stream.user.full if stream.session is None else stream.session.jid.full)
            stream.close(condition, text)
        for session in self._server.sessions.resources(jid.bare):
            if (isinstance(session, Session)  # another node's ends there
                    and session.hibernating and jid.resource in (None, session.jid.resource)):
                ended.append(session.jid.full)
                session.close(condition, text)
        return ended

    def remember(self, key, session):
        """Find ``session`` by ``key`` (as long as it exists)."""
        self._keys[key] = session

    def find(self, key):
        return self._keys.get(key)

    def forget(self, key):
        self._keys.pop(key, None)

    # Stanza filters

    def add_inbound_filter(self, function, priority=0):
        """Run ``function(session, element)`` on every stanza a session
        sends, before it is processed; it returns the element or None."""
        self.inbound_filters[:] = self._add_filter("in", function, priority)

    def add_outbound_filter(self, function, priority=0):
        """Run ``function(session, element)`` on every stanza delivered to a
        session, before its carrier; it returns the element or None."""
        self._outbound[:] = self._add_filter("out", function, priority)

    def _add_filter(self, direction, function, priority):
        self._order += 1
        filters = self._filters[direction]
        insort(filters, (-priority, self._order, function))
        return [function for _, _, function in filters]

    def inbound(self, session, element):
        """The element after the inbound filters, or None if one stopped it."""
        for function in self.inbound_filters:
            element = function(session, element)
            if element is None:
                return None
        return element

    def deliver(self, session, element):
        """Send ``element`` to ``session``: the outbound filters, then its
        carrier (nothing without one, unless a filter kept it)."""
        for function in self._outbound:
            element = function(session, element)
            if element is None:
                return
        carrier = session.carrier
        if carrier is None:
            return
        self._server.metrics.sent(element.name)
        if logs.tracing:
            log.debug("c2s out {jid}: {xml}", jid=session.jid, xml=element.toXml())
        if carrier.send_element(element) and self.sender is not None:
            carrier.hold(self.sender)
