"""Presence subscriptions (RFC 6121 §3 and Appendix A), with pre-approval (§3.4).

The subscription between a user and a contact is in one of the nine states
of Appendix A.1.  It is kept in the user's roster item (``subscription``,
``ask``, ``pending_in``, ``approved``) and, for an inbound request, in the
per-user store ``subscription-requests`` (contact's bare JID -> the request
as received): a request from someone not in the roster adds no roster item
(§3.1.3).  Every change of an item is pushed (§2.1.6).

- Outbound, the user's server (§3.1.2, §3.1.5, §3.2.2, §3.3.2, table A.2):
  a subscription stanza from a local client is stamped with the bare JIDs
  of both ends (§3), changes the user's roster as the table says (adding
  the item if needed) and is routed to the contact or dropped.  A routed
  ``subscribed`` is followed by the user's current presence (§3.1.5); a
  routed ``unsubscribed`` is preceded by unavailable presence from the
  user's available resources (§3.2.2).  ``subscribed`` with no request
  pending pre-approves the contact and ``unsubscribed`` withdraws that
  (§3.4.1).
- Inbound, the contact's server (§3.1.3, §3.1.6, §3.2.3, §3.3.3, table A.3):
  a subscription stanza for a local account changes its roster the same
  way and is delivered to its available resources, or dropped.  A request
  is kept until answered and delivered again each time a resource of the
  account becomes available (``session/available``).  The server answers
  ``subscribed`` itself to a request from a contact already subscribed
  (§3.1.3) or pre-approved (§3.4.2).  ``unsubscribe`` from a subscriber
  sends it unavailable presence from the account's resources (§3.3.3).
  Stanzas for an account that does not exist are ignored (§8.5.1).

Offers the pre-approval stream feature (§3.4) and publishes the
``subscription`` service (:class:`SubscriptionService`).  Needs the
``presence`` service (load ``presence`` first) and the ``roster`` service.
"""

import dataclasses

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.events import (
    BARE, FULL, SESSION_AVAILABLE, pre_events, presence_event, then)
from xmppd.core.stanzas import Stanza, make_stanza
from xmppd.core.xmlstream import parse_stanza, serialize
from xmppd.jid import JID
from xmppd.storage import SUBSCRIBED_TO, SUBSCRIBERS, RosterFull, RosterItem

NS_PRE_APPROVAL = "urn:xmpp:features:pre-approval"
REQUESTS = "subscription-requests"  # per-user store: contact -> pending inbound request
SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")
PRIORITY = -100  # on the pre-events: after the policies (closed domains, blocking...)

NONE, NONE_OUT, NONE_IN, NONE_OUT_IN = (
    "None", "None + Pending Out", "None + Pending In", "None + Pending Out+In")
TO, TO_IN, FROM, FROM_OUT, BOTH = (
    "To", "To + Pending In", "From", "From + Pending Out", "Both")

# Appendix A.1: each state as (subscription, pending out, pending in).
STATES = {
    NONE: ("none", False, False),
    NONE_OUT: ("none", True, False),
    NONE_IN: ("none", False, True),
    NONE_OUT_IN: ("none", True, True),
    TO: ("to", False, False),
    TO_IN: ("to", False, True),
    FROM: ("from", False, False),
    FROM_OUT: ("from", True, False),
    BOTH: ("both", False, False),
}
_NAMES = {value: name for name, value in STATES.items()}
PRE_APPROVABLE = (NONE, NONE_OUT, TO)  # no request pending and no "from" (§3.4)

# Appendix A.2: a stanza the user sends -> (route it?, new state).
OUTBOUND = {
    "subscribe": {
        NONE: (True, NONE_OUT), NONE_OUT: (True, NONE_OUT),
        NONE_IN: (True, NONE_OUT_IN), NONE_OUT_IN: (True, NONE_OUT_IN),
        TO: (True, TO), TO_IN: (True, TO_IN),
        FROM: (True, FROM_OUT), FROM_OUT: (True, FROM_OUT), BOTH: (True, BOTH)},
    "unsubscribe": {
        NONE: (True, NONE), NONE_OUT: (True, NONE),
        NONE_IN: (True, NONE_IN), NONE_OUT_IN: (True, NONE_IN),
        TO: (True, NONE), TO_IN: (True, NONE_IN),
        FROM: (True, FROM), FROM_OUT: (True, FROM), BOTH: (True, FROM)},
    "subscribed": {
        NONE: (False, NONE), NONE_OUT: (False, NONE_OUT),
        NONE_IN: (True, FROM), NONE_OUT_IN: (True, FROM_OUT),
        TO: (False, TO), TO_IN: (True, BOTH),
        FROM: (False, FROM), FROM_OUT: (False, FROM_OUT), BOTH: (False, BOTH)},
    "unsubscribed": {
        NONE: (False, NONE), NONE_OUT: (False, NONE_OUT),
        NONE_IN: (True, NONE), NONE_OUT_IN: (True, NONE_OUT),
        TO: (False, TO), TO_IN: (True, TO),
        FROM: (True, NONE), FROM_OUT: (True, NONE_OUT), BOTH: (True, TO)},
}

# Appendix A.3: a stanza the user receives -> (deliver it?, new state).
INBOUND = {
    "subscribe": {
        NONE: (True, NONE_IN), NONE_OUT: (True, NONE_OUT_IN),
        NONE_IN: (False, NONE_IN), NONE_OUT_IN: (False, NONE_OUT_IN),
        TO: (True, TO_IN), TO_IN: (False, TO_IN),
        FROM: (False, FROM), FROM_OUT: (False, FROM_OUT), BOTH: (False, BOTH)},
    "unsubscribe": {
        NONE: (False, NONE), NONE_OUT: (False, NONE_OUT),
        NONE_IN: (True, NONE), NONE_OUT_IN: (True, NONE_OUT),
        TO: (False, TO), TO_IN: (True, TO),
        FROM: (True, NONE), FROM_OUT: (True, NONE_OUT), BOTH: (True, TO)},
    "subscribed": {
        NONE: (False, NONE), NONE_OUT: (True, TO),
        NONE_IN: (False, NONE_IN), NONE_OUT_IN: (True, TO_IN),
        TO: (False, TO), TO_IN: (False, TO_IN),
        FROM: (False, FROM), FROM_OUT: (True, BOTH), BOTH: (False, BOTH)},
    "unsubscribed": {
        NONE: (False, NONE), NONE_OUT: (True, NONE),
        NONE_IN: (False, NONE_IN), NONE_OUT_IN: (True, NONE_IN),
        TO: (True, NONE), TO_IN: (True, NONE_IN),
        FROM: (False, FROM), FROM_OUT: (True, FROM), BOTH: (True, FROM)},
}



def state_of(item, requested):
    """The Appendix A.1 state of a roster item (None: no item) with or
    without a stored inbound request."""
    subscription = item.subscription if item else "none"
    pending_out = bool(item and item.ask) and subscription in ("none", "from")
    pending_in = bool(requested or item and item.pending_in) and subscription in ("none", "to")
    return _NAMES[subscription, pending_out, pending_in]


class SubscriptionService:
    """Subscription handling other modules ask for."""

    def __init__(self, api, presence):
        self._api = api
        self._presence = presence
        self.requests = api.open_store("keyval", REQUESTS)

    @defer.inlineCallbacks
    def cancel(self, user, item):
        """Cancel both directions of the subscription of a roster item that
        ``user`` removed (RFC 6121 §2.5.2): ``unsubscribe`` if the user is
        subscribed or asked to be, unavailable presence and ``unsubscribed``
        if the contact is subscribed or asked to be.  Call it within a
        roster change of ``user``."""
        contact = JID.parse(item.jid)
        requested = yield self.requests.get(user.local, user.domain, item.jid)
        if requested is not None:
            yield self.requests.delete(user.local, user.domain, item.jid)
        subscription, pending_out, pending_in = STATES[state_of(item, requested)]
        if subscription in SUBSCRIBED_TO or pending_out:
            self.send(user, contact, "unsubscribe")
        if subscription in SUBSCRIBERS:
            self._presence.send_unavailable(user, contact)
        if subscription in SUBSCRIBERS or pending_in:
            self.send(user, contact, "unsubscribed")

    def send(self, user, contact, type_):
        """Route a subscription stanza from ``user`` to ``contact`` that the
        server generates for the user."""
        self._api.route(make_stanza("presence", to=contact.full, from_=user.full, type_=type_))


def setup(api):
    api.depends("roster")
    api.depends("presence")
    roster, presence = api.service("roster"), api.service("presence")
    service = SubscriptionService(api, presence)
    api.provide("subscription", service)
    requests, accounts = service.requests, api.open_store("accounts")

    def offer(stream):
        return domish.Element((NS_PRE_APPROVAL, "sub"))

    @defer.inlineCallbacks
    def load(user, contact):
        item = yield roster.items.get_item(user.local, user.domain, contact.full)
        requested = yield requests.get(user.local, user.domain, contact.full)
        return item, requested

    @defer.inlineCallbacks
    def commit(user, contact, item, requested, state, approved=None, request=None):
        """Bring the subscription to ``state``: the roster item changed and
        pushed (added only for more than a request pending in), ``request``
        (serialised) kept as the pending inbound request, a request no
        longer pending forgotten.  ``approved``: the new pre-approval, which
        a subscription from the contact consumes."""
        subscription, pending_out, pending_in = STATES[state]
        if approved is None:
            approved = bool(item and item.approved)
        approved = approved and subscription not in SUBSCRIBERS
        new = dataclasses.replace(item or RosterItem(jid=contact.full), subscription=subscription,
                                  ask=pending_out, pending_in=pending_in, approved=approved)
        if new != item and (item or subscription != "none" or pending_out or approved):
            yield roster.store(user, new)
        if pending_in and request is not None:
            yield requests.set(user.local, user.domain, contact.full, request)
        elif not pending_in and requested is not None:
            yield requests.delete(user.local, user.domain, contact.full)

    # Outbound: the user's server

    def outbound(stanza):
        """A client's subscription stanza: the roster changes first, then
        the stanza goes out as from the bare JID, as the server's own (so
        this handler does not see it again); the sender's next stanzas wait
        for all of it."""
        if (stanza.origin is None or stanza.type not in SUBSCRIPTION_TYPES
                or not stanza.element.hasAttribute("to")):
            return False
        user, contact = stanza.sender.bare, stanza.recipient.bare
        if contact == user:
            return True  # an account is always subscribed to itself (RFC 6121 §4.2.2)
        element = stanza.element
        element["from"], element["to"] = user.full, contact.full
        d = roster.change(user, change_outbound, stanza.type, user, contact)
        d.addCallback(forward, stanza.type, Stanza(element, user, contact))
        return d.addCallbacks(lambda _: True, outbound_failed, errbackArgs=(stanza,))

    @defer.inlineCallbacks
    def change_outbound(type_, user, contact):
        item, requested = yield load(user, contact)
        state = state_of(item, requested)
        route, new = OUTBOUND[type_][state]
        approved = None
        if state in PRE_APPROVABLE and type_ in ("subscribed", "unsubscribed"):
            approved = type_ == "subscribed"  # pre-approval given or withdrawn (§3.4.1)
        yield commit(user, contact, item, requested, new, approved)
        return route, state

    def forward(result, type_, stanza):
        route, state = result
        if not route:
            return None
        if type_ == "unsubscribed" and STATES[state][0] in SUBSCRIBERS:
            presence.send_unavailable(stanza.sender, stanza.recipient)
        if type_ != "subscribed":
            return api.dispatch(stanza)
        return then(api.dispatch(stanza),
                    lambda _: presence.send_current(stanza.sender, stanza.recipient))

    def outbound_failed(failure, stanza):
        if failure.check(RosterFull):
            return api.bounce(stanza, "not-allowed", "the roster is full")
        api.log.failure("cannot process {stanza!r}", failure, stanza=stanza)
        return api.bounce(stanza, "internal-server-error")

    # Inbound: the contact's server

    def inbound(stanza):
        if stanza.type not in SUBSCRIPTION_TYPES:
            return False
        if stanza.sender is None or stanza.sender.bare == stanza.recipient.bare:
            return True
        user, contact = stanza.recipient.bare, stanza.sender.bare
        stanza.element["from"], stanza.element["to"] = contact.full, user.full
        d = roster.change(user, change_inbound, stanza.type, user, contact, stanza.element)
        return d.addCallbacks(lambda _: True, inbound_failed, errbackArgs=(stanza,))

    def inbound_failed(failure, stanza):
        api.log.failure("cannot process {stanza!r}", failure, stanza=stanza)
        if failure.check(defer.TimeoutError):  # the roster lock not taken: nothing changed
            api.bounce(stanza, "internal-server-error")
        return True

    @defer.inlineCallbacks
    def change_inbound(type_, user, contact, element):
        item, requested = yield load(user, contact)
        if item is None and not (yield accounts.exists(user.local, user.domain)):
            return
        state = state_of(item, requested)
        deliver, new = INBOUND[type_][state]
        if type_ == "subscribe" and state in PRE_APPROVABLE and item and item.approved:
            deliver, new = False, OUTBOUND["subscribed"][new][1]
        request = serialize(element).decode("utf-8") if type_ == "subscribe" and deliver else None
        yield commit(user, contact, item, requested, new, request=request)
        if deliver:
            for session in presence.available(user):
                session.send(element)
        if type_ == "subscribe" and STATES[new][0] in SUBSCRIBERS:
            service.send(user, contact, "subscribed")
            presence.send_current(user, contact)
        elif type_ == "unsubscribe" and STATES[state][0] in SUBSCRIBERS:
            presence.send_unavailable(user, contact)

    def deliver_requests(session):
        """The requests stored for the account, but from whom it blocks
        now (XEP-0191 §3.3)."""
        user = session.jid.bare

        @defer.inlineCallbacks
        def deliver():
            stored = yield requests.get_all(user.local, user.domain)
            blocking = api.service("blocking")
            admitted = None if blocking is None else (yield blocking.admits(user))
            for element in map(parse_stanza, stored.values()):
                if admitted is None or admitted(element):
                    session.send(element)

        deliver().addErrback(lambda failure: api.log.failure(
            "cannot deliver the subscription requests of {user}", failure, user=user))

    api.stream_feature(offer)
    for event in pre_events("presence"):
        api.hook(event, outbound, priority=PRIORITY)
    api.hook(presence_event(BARE), inbound)
    api.hook(presence_event(FULL), inbound)
    api.hook(SESSION_AVAILABLE, deliver_requests)
