"""Stanza routing: post an event, then deliver what nobody claimed.

RFC 6120 §10 (server rules for processing XML stanzas) and RFC 6121 §8.5
(delivery to local accounts).  A stanza reaches :meth:`Router.dispatch`
validated and with its ``from`` stamped by the stream it came on.  The router
posts it as ``route/pre`` (policies that apply to every stanza: blocking,
closed domains), then as its named event (see :mod:`xmppd.core.events`);
feature modules claim what they handle.  What nobody claims gets the RFC's default:

- to a domain not hosted here: the ``route/remote`` event (federation), else
  ``remote-server-not-found`` (§10.4.3);
- to a bound full JID: delivered to that session (§10.5.3.2);
- a message to a full JID that is not bound: handled as if to the bare JID
  (RFC 6121 §8.5.3.2.1); an iq request: ``service-unavailable``;
- a message to a bare JID: delivered to its bound resources, else
  ``service-unavailable`` for normal/chat (RFC 6121 §8.5.2.2.1);
- an iq request to the server or to an account that no module handles:
  ``service-unavailable`` (§8.4); iq responses are never answered;
- presence and error stanzas nobody claims are dropped.
"""

from twisted.logger import Logger

from xmppd.core.events import BARE, FULL, HOST, PRE_ROUTE, ROUTE_REMOTE
from xmppd.core.stanzas import Stanza, error_reply
from xmppd.jid import JID, InvalidJID

log = Logger()

_ANSWERABLE_MESSAGES = (None, "normal", "chat")


class Router:
    def __init__(self, hosts, hooks, sessions):
        self.hosts = hosts
        self.hooks = hooks
        self.sessions = sessions

    def dispatch(self, stanza, after=None):
        """Post ``stanza`` (first as ``route/pre``, then as its own event);
        deliver it by default if unclaimed.  ``after``: resume ``route/pre``
        after that handler."""
        if not self.hooks.fire(PRE_ROUTE, stanza, after):
            self.post(stanza)

    def post(self, stanza):
        """Post ``stanza`` as its own event, skipping ``route/pre`` (for a
        stanza that already passed it)."""
        recipient = stanza.recipient
        if recipient.domain not in self.hosts:
            if not self.hooks.fire(ROUTE_REMOTE, stanza):
                self.bounce(stanza, "remote-server-not-found")
            return
        if recipient.local is None:
            target = HOST
        elif recipient.resource is None:
            target = BARE
        else:
            target = FULL
        kind, type_ = stanza.kind, stanza.type
        if kind == "iq":
            if type_ == "get" or type_ == "set":
                name = f"iq-{type_}/{target}/{stanza.payload.uri}"
            else:
                name = f"iq-{type_}/{target}"
        else:
            name = f"{kind}/{target}"
        if not self.hooks.fire(name, stanza):
            self._deliver_default(stanza, target)

    def route(self, element):
        """Route an element the server generated (``to`` and ``from`` set)."""
        try:
            recipient = JID.parse(element["to"])
            sender = JID.parse(element["from"]) if element.hasAttribute("from") else None
        except (KeyError, InvalidJID) as e:
            log.warn("dropping server-generated stanza with a bad address: {e}", e=e)
            return
        self.dispatch(Stanza(element, sender, recipient))

    def reply(self, stanza, element):
        """Send ``element`` back to whoever sent ``stanza``."""
        if stanza.origin is not None:
            stanza.origin.send(element)
        else:
            self.route(element)

    def bounce(self, stanza, condition, text=None):
        """Answer ``stanza`` with a stanza error, unless it must not be
        answered (an error, or an iq result: RFC 6120 §8.3.1)."""
        if stanza.type == "error" or (stanza.kind == "iq" and stanza.type == "result"):
            return
        self.reply(stanza, error_reply(stanza.element, condition, text))

    def _deliver_default(self, stanza, target):
        kind, type_ = stanza.kind, stanza.type
        if target == FULL:
            session = self.sessions.get(stanza.recipient)
            if session is not None:
                session.send(stanza.element)
            elif kind == "message" and type_ in (*_ANSWERABLE_MESSAGES, "headline"):
                self.post(Stanza(stanza.element, stanza.sender,
                                     stanza.recipient.bare, stanza.origin))
            elif kind == "iq" or (kind == "message" and type_ == "groupchat"):
                self.bounce(stanza, "service-unavailable")
        elif target == BARE and kind == "message" and type_ != "error":
            sessions = self.sessions.resources(stanza.recipient)
            for session in sessions:
                session.send(stanza.element)
            if not sessions and type_ in _ANSWERABLE_MESSAGES:
                self.bounce(stanza, "service-unavailable")
        elif kind == "iq" or (kind == "message" and type_ in _ANSWERABLE_MESSAGES):
            self.bounce(stanza, "service-unavailable")
