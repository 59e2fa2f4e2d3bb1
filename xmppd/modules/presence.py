"""Presence (RFC 6121 §4).

From a local client (on ``route/pre``, after the policies):

- presence with no ``to`` is a broadcast.  Available presence (§4.2, §4.4)
  makes the session available with its ``<priority/>`` (-128..127, default
  0; anything else is ``bad-request``, §4.7.2.3) and keeps the stanza as
  ``session.presence``; it goes to every contact whose subscription is
  ``from`` or ``both`` and to every available resource of the account,
  the sender included (§4.2.2, §4.4.2).  Initial presence also probes the
  contacts whose subscription is ``to`` or ``both`` (§4.3.1), fires
  ``session/available`` and gives the new resource the presence of the
  account's other available resources.
- unavailable presence (§4.5.2), also generated when an available session's
  connection ends (``session/unbound``), goes to the same contacts, to the
  entities that received directed presence from the session since, and to
  the account's resources; it fires ``session/unavailable`` (``session.presence``
  is then the unavailable stanza).
- directed presence (§4.6.2) is routed as sent and its recipients are
  remembered until they get unavailable presence.

To a local account (``presence/bare``, ``presence/full``; RFC 6121 §8.5):

- available, unavailable and error presence to a bare JID goes to the
  account's available resources (§8.5.2.1.1), to a full JID to that
  resource if bound, else nowhere (§8.5.3);
- a probe (§4.3.2) is answered for the account: with the last presence of
  each available resource if the prober is subscribed (``from`` or
  ``both``), unavailable presence if none is available, else ``unsubscribed``
  (also for an account that does not exist, §8.5.1).

Subscription stanzas are the ``subscription`` module's.  Publishes the
``presence`` service (:class:`PresenceService`).
"""

import re

from twisted.internet import defer

from xmppd.core.events import (
    BARE, FULL, SESSION_AVAILABLE, SESSION_LOST, SESSION_REACHABLE, SESSION_UNAVAILABLE,
    SESSION_UNBOUND,
    pre_events, presence_event)
from xmppd.core.stanzas import StanzaError, child, make_stanza
from xmppd.core.xmlstream import NS_CLIENT
from xmppd.jid import JID
from xmppd.storage import SUBSCRIBED_TO, SUBSCRIBERS, UserNotFound

SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")
PRESENCE_TYPES = (None, "unavailable", "probe", "error", *SUBSCRIPTION_TYPES)
PRIORITY = -100  # on the pre-events: after the policies (closed domains, blocking...)
_PRIORITY_VALUE = re.compile(r"[+-]?[0-9]{1,4}")


def readdressed(element, to, from_):
    """A presence stanza like ``element`` (type, id, language, children)
    from ``from_`` to ``to``."""
    copy = make_stanza("presence", to=to, from_=from_)
    for name, value in element.attributes.items():
        if name not in ("to", "from"):
            copy[name] = value
    for payload in element.elements():
        copy.addChild(payload)
    return copy


def priority_of(element):
    """The ``<priority/>`` of a presence stanza (RFC 6121 §4.7.2.3)."""
    priority = child(element, NS_CLIENT, "priority")
    if priority is None:
        return 0
    text = str(priority).strip()
    if not _PRIORITY_VALUE.fullmatch(text) or not -128 <= int(text) <= 127:
        raise StanzaError("bad-request", "the priority is an integer from -128 to 127")
    return int(text)


class _SessionPresence:
    """What this module keeps of one session: the recipients of its directed
    presence (§4.6.2)."""

    __slots__ = ("directed",)

    def __init__(self):
        self.directed = set()


class PresenceService:
    """Presence the server sends on an account's behalf (RFC 6121 §3, §4)."""

    def __init__(self, api):
        self._api = api

    def available(self, user):
        """The available sessions of ``user`` (a bare JID)."""
        return [s for s in self._api.sessions.resources(user) if s.available]

    def send_current(self, user, to):
        """Send ``to`` the last presence of each available resource of
        ``user`` (RFC 6121 §3.1.5, §4.3.2)."""
        for session in self.available(user):
            self._api.route(readdressed(session.presence, str(to), session.jid.full))

    def probe(self, user, contact):
        """Ask ``contact`` (a bare JID, text) for its presence on behalf of
        ``user``, which has a subscription to it (RFC 6121 §4.3)."""
        if self.available(user):
            self._api.route(make_stanza("presence", to=contact, from_=user.full,
                                        type_="probe"))

    def send_unavailable(self, user, to):
        """Send ``to`` unavailable presence from each available resource of
        ``user`` (RFC 6121 §3.2.2, §3.3.3)."""
        for session in self.available(user):
            self._api.route(make_stanza("presence", to=to, from_=session.jid.full,
                                        type_="unavailable"))


def setup(api):
    api.depends("roster")
    rosters = api.service("roster")
    service = PresenceService(api)
    api.provide("presence", service)

    def state(session):
        return session.state.setdefault(api.name, _SessionPresence())

    def outbound(stanza):
        """A client's presence: a broadcast (no ``to``) is handled here, and
        its sender's next stanzas wait until it has gone out (RFC 6120
        §10.1: the roster may have to be read first)."""
        if stanza.origin is None:
            return False
        if stanza.type not in PRESENCE_TYPES:
            return api.bounce(stanza, "bad-request", "unknown presence type")
        if stanza.element.hasAttribute("to"):
            track_directed(stanza)
            return False
        try:
            if stanza.type is None:
                return available(stanza.origin, stanza.element)
            if stanza.type == "unavailable":
                return unavailable(stanza.origin, stanza.element)
        except StanzaError as e:
            return api.bounce(stanza, e.condition, e.text)
        return True

    def track_directed(stanza):
        if stanza.recipient.bare == stanza.sender.bare:
            return
        directed = state(stanza.origin).directed
        if stanza.type is None:
            directed.add(stanza.recipient)
        elif stanza.type == "unavailable":
            directed.discard(stanza.recipient)

    def available(session, element):
        was_reachable = session.available and session.priority >= 0
        initial = not session.available
        api.sessions.set_presence(session, True, priority_of(element), element)
        if initial:
            api.notify(SESSION_AVAILABLE, session)
        if session.priority >= 0 and not was_reachable:
            api.notify(SESSION_REACHABLE, session)
        return run(session, broadcast_available, session, initial)

    def unavailable(session, element):
        was_available = session.available
        api.sessions.set_presence(session, False, session.priority, element)
        directed, state(session).directed = state(session).directed, set()
        if was_available:
            api.notify(SESSION_UNAVAILABLE, session)
            return run(session, broadcast_unavailable, session, element, directed)
        send_to(directed, element, session.jid.full)
        return True

    def run(session, fn, *args):
        """``fn(*args)``, a broadcast; True once it has gone out."""
        d = fn(*args)
        d.addErrback(lambda failure: failure.trap(UserNotFound))  # the account was deleted
        d.addErrback(lambda failure: api.log.failure(
            "presence broadcast of {session} failed", failure, session=session))
        return True if d.called else d.addCallback(lambda _: True)

    @defer.inlineCallbacks
    def broadcast_available(session, initial):
        user = session.jid.bare
        _, items = yield rosters.roster(user)
        if not session.available:
            return  # unavailable meanwhile: that broadcast is the current one
        presence = session.presence
        send_to([item.jid for item in items if item.subscription in SUBSCRIBERS],
                presence, session.jid.full)
        for own in service.available(user):
            own.send(readdressed(presence, own.jid.full, session.jid.full))
        if not initial:
            return
        for item in items:
            if item.subscription in SUBSCRIBED_TO:
                api.route(make_stanza("presence", to=item.jid, from_=user.full, type_="probe"))
        for other in service.available(user):
            if other is not session:
                session.send(readdressed(other.presence, session.jid.full, other.jid.full))

    @defer.inlineCallbacks
    def broadcast_unavailable(session, element, directed):
        user = session.jid.bare
        _, items = yield rosters.roster(user)
        subscribers = {JID.parse(item.jid) for item in items if item.subscription in SUBSCRIBERS}
        send_to(subscribers | {jid for jid in directed if jid.bare not in subscribers},
                element, session.jid.full)
        for own in api.sessions.resources(user):
            if own.available or own is session:
                own.send(readdressed(element, own.jid.full, session.jid.full))

    def send_to(recipients, element, sender):
        for recipient in recipients:
            api.route(readdressed(element, str(recipient), sender))

    def dropped(session):
        if session.available or state(session).directed:
            unavailable(session, make_stanza("presence", from_=session.jid.full,
                                             type_="unavailable"))

    def lost(record):
        """A session of a cluster node that died: unavailable to its
        contacts and the account's other resources (its directed presence
        went with its node)."""
        if record.available:
            run(record, broadcast_unavailable, record,
                make_stanza("presence", from_=record.jid.full, type_="unavailable"), set())

    def to_bare(stanza):
        if stanza.type == "probe":
            answer_probe(stanza)
            return True
        if stanza.type in (None, "unavailable", "error"):
            for session in service.available(stanza.recipient):
                session.send(stanza.element)
            return True
        return False

    def to_full(stanza):
        if stanza.type == "probe":
            answer_probe(stanza)
            return True
        if stanza.type in (None, "unavailable", "error"):
            session = api.sessions.get(stanza.recipient)
            if session is not None:
                session.send(stanza.element)
            return True
        return False

    def answer_probe(stanza):
        prober, user = stanza.sender, stanza.recipient.bare
        if prober is None:
            return
        d = defer.succeed(True) if prober.bare == user else subscribed(user, prober.bare)

        def answer(may_see):
            if not may_see:
                api.route(make_stanza("presence", to=prober.bare.full, from_=user.full,
                                      type_="unsubscribed"))
            elif service.available(user):
                service.send_current(user, prober)
            else:
                api.route(make_stanza("presence", to=prober.full, from_=user.full,
                                      type_="unavailable"))

        d.addCallback(answer)
        d.addErrback(lambda failure: api.log.failure(
            "cannot answer the probe {stanza!r}", failure, stanza=stanza))

    def subscribed(user, contact):
        return api.service("roster").sees_presence(user, contact)

    for event in pre_events("presence"):
        api.hook(event, outbound, priority=PRIORITY)
    api.hook(presence_event(BARE), to_bare)
    api.hook(presence_event(FULL), to_full)
    api.hook(SESSION_UNBOUND, dropped)
    api.hook(SESSION_LOST, lost)
