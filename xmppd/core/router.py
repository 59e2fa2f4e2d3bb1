"""Stanza routing: the delivery table, events, and the RFC's defaults.

RFC 6120 §10 (server rules for processing XML stanzas) and RFC 6121 §8.5
(delivery to local accounts).  A stanza reaches :meth:`Router.dispatch`
validated and with its ``from`` stamped by the stream it came on.

The delivery table says what a domain is:

- a *hosted* domain (``[hosts."example.com"]``): accounts, served by the
  feature modules hooked on the global bus and on the domain's own bus;
- a *service* domain (such as ``conference.example.com``), added by the
  module that serves it (:meth:`Router.add_service`): its stanzas fire on
  its own bus only, so account modules (messages, offline storage,
  presence, rosters) never treat it as accounts; it belongs to the hosted
  domain it was added for.  In a cluster, a service that keeps its state
  in memory (:meth:`Router.place`: group chat) is served by one node at a
  time, and the other nodes route its stanzas to that node, after the
  pre-events (:meth:`Router.routed`);
- a *component* domain (such as ``gateway.example.com``, an external
  component, XEP-0114: :mod:`xmppd.core.component`), added with
  :meth:`Router.add_component`: no events fire on it; its stanzas go down
  the component's stream while it is connected (:meth:`Router.attach`),
  else iq requests and answerable messages get ``service-unavailable``
  (§10.4, XEP-0114) and the rest is dropped; it belongs to its hosted
  domain too;
- anything else is remote: the ``route/remote`` event (federation), else
  ``remote-server-not-found`` (§10.4.3).

The router first fires ``pre-<kind>/<target>`` on the sender's hosted
domain (policies: closed domains, blocking, carbons, outgoing presence),
then ``<kind>/<target>`` (``iq-get/bare/NS`` for iq requests) on the
recipient domain's bus; modules claim what they handle.  A handler may
return a Deferred; :meth:`dispatch` then returns a Deferred that fires once
the stanza is handled, which the sender's serial queue waits for.  What
nobody claims gets the RFC's default:

- to a bound full JID of a hosted domain: delivered to that session
  (§10.5.3.2);
- a message to a full JID that is not bound: handled as if to the bare JID
  (RFC 6121 §8.5.3.2.1); an iq request: ``service-unavailable``;
- a message to a bare JID: delivered to its bound resources, else
  ``service-unavailable`` for normal/chat (RFC 6121 §8.5.2.2.1);
- an iq request that no module handles, or a message to a service that no
  module takes: ``service-unavailable`` (§8.4); iq responses are never
  answered;
- presence and error stanzas nobody claims are dropped.
"""

from twisted.logger import Logger

from xmppd.core.events import (BARE, FULL, HOST, MESSAGE_BOUNCED, MESSAGE_OFFLINE, ROUTE_REMOTE,
                               then)
from xmppd.core.stanzas import NS_CARBONS, Stanza, error_reply
from xmppd.jid import JID, InvalidJID

log = Logger()

_ANSWERABLE_MESSAGES = (None, "normal", "chat")
# Messages that are copies of what is kept elsewhere: carbons (XEP-0280) and
# archive query results (XEP-0313), which the client asks for again.
_COPIES = (NS_CARBONS, "urn:xmpp:mam:2")


class Router:
    def __init__(self, hosts, hooks, sessions):
        self.hosts = hosts
        self.hooks = hooks
        self.sessions = sessions
        self.services = {}  # service domain -> the hosted domain it belongs to
        self.components = {}  # component domain -> the hosted domain it belongs to
        self._attached = {}  # component domain -> its connected stream (``send``)
        # Service domains one cluster node serves at a time -> what to call
        # when this process starts serving one (:meth:`place`).
        self.placed = {}
        # The ClusterNode when this process is one: ``owner(domain)``, the
        # node serving a placed domain (None: this one), and ``route_to``.
        self.cluster = None

    def add_service(self, domain, host):
        """Serve ``domain`` as a service of hosted domain ``host``: its
        stanzas fire events on its own bus only."""
        self._check_free(domain)
        self.services[domain] = host
        self.hooks.isolate(domain)

    def place(self, domain, started):
        """Service ``domain`` keeps state in memory: in a cluster, one node
        serves it and the others route its stanzas there; ``started(domain)``
        is called when this process starts serving it (at once outside a
        cluster)."""
        self.placed[domain] = started
        if self.cluster is None:
            started(domain)

    def remove_service(self, domain):
        self.services.pop(domain, None)
        self.hooks.forget(domain)

    def add_component(self, domain, host):
        """Route ``domain`` to an external component of hosted domain
        ``host`` (connected later, with :meth:`attach`)."""
        self._check_free(domain)
        self.components[domain] = host

    def _check_free(self, domain):
        if domain in self.hosts or domain in self.services or domain in self.components:
            raise ValueError(f"{domain} is already served here")

    def attach(self, domain, stream):
        """Deliver what is routed to component ``domain`` to ``stream``
        (anything with ``send(element)``); False if another stream has it
        (here, or on another node of the cluster)."""
        if self.cluster is not None and self.cluster.component_node(domain) is not None:
            return False
        attached = self._attached.setdefault(domain, stream) is stream
        if attached and self.cluster is not None:
            self.cluster.publish_component(domain, True)
        return attached

    def detach(self, domain, stream):
        """``stream`` no longer serves component ``domain``."""
        if self._attached.get(domain) is stream:
            del self._attached[domain]
            if self.cluster is not None:
                self.cluster.publish_component(domain, False)

    def attached(self, domain):
        """The stream of component ``domain``, or None when it is not connected."""
        return self._attached.get(domain)

    def owner(self, domain):
        """The hosted domain ``domain`` is or belongs to (a service's or a
        component's host), or None for a remote domain."""
        if domain in self.hosts:
            return domain
        return self.services.get(domain) or self.components.get(domain)

    def dispatch(self, stanza):
        """Route ``stanza``: its pre-event on the sender's domain, then its
        own event on the recipient's, then the default.  True once handled,
        or a Deferred that fires when it is."""
        recipient, sender = stanza.recipient, stanza.sender
        target = HOST if recipient.local is None else BARE if recipient.resource is None else FULL
        host = sender.domain if sender is not None and sender.domain in self.hosts else None
        claimed = self.hooks.fire(f"pre-{stanza.kind}/{target}", stanza, host)
        if claimed is False:
            return self._post(stanza, target)
        if claimed is True:
            return True
        return claimed.addCallback(lambda claimed: claimed or self._post(stanza, target))

    def routed(self, element):
        """A stanza another cluster node routed here for a service this node
        serves: its pre-events ran there."""
        try:
            recipient = JID.parse(element["to"])
            sender = JID.parse(element["from"])
        except (KeyError, InvalidJID) as e:
            log.warn("dropping a routed stanza with a bad address: {e}", e=e)
            return True
        stanza = Stanza(element, sender, recipient)
        target = HOST if recipient.local is None else BARE if recipient.resource is None else FULL
        return self._post(stanza, target, here=True)

    def _post(self, stanza, target, here=False):
        domain = stanza.recipient.domain
        if domain in self.hosts:
            service = False
        elif domain in self.services:
            if not here and self.cluster is not None and domain in self.placed:
                node = self.cluster.owner(domain)
                if node is not None:
                    self.cluster.route_to(node, stanza)
                    return True
            service = True
        elif domain in self.components:
            if not here and self.cluster is not None and domain not in self._attached:
                node = self.cluster.component_node(domain)
                if node is not None:  # connected to another node of the cluster
                    self.cluster.route_to(node, stanza)
                    return True
            return self._to_component(stanza)
        else:
            return then(self.hooks.fire(ROUTE_REMOTE, stanza),
                        lambda claimed: claimed or self.bounce(stanza, "remote-server-not-found"))
        kind, type_ = stanza.kind, stanza.type
        if kind == "iq":
            if type_ == "get" or type_ == "set":
                name = f"iq-{type_}/{target}/{stanza.payload.uri}"
            else:
                name = f"iq-{type_}/{target}"
        else:
            name = f"{kind}/{target}"
        claimed = self.hooks.fire(name, stanza, domain)
        if claimed is False:
            return self._default(stanza, target, service)
        if claimed is True:
            return True
        return claimed.addCallback(
            lambda claimed: claimed or self._default(stanza, target, service))

    def route(self, element):
        """Route an element the server generated (``to`` and ``from`` set)."""
        try:
            recipient = JID.parse(element["to"])
            sender = JID.parse(element["from"]) if element.hasAttribute("from") else None
        except (KeyError, InvalidJID) as e:
            log.warn("dropping server-generated stanza with a bad address: {e}", e=e)
            return True
        return self.dispatch(Stanza(element, sender, recipient))

    def reply(self, stanza, element):
        """Send ``element`` back to whoever sent ``stanza``."""
        if stanza.origin is not None:
            stanza.origin.send(element)
        else:
            self.route(element)

    def bounce(self, stanza, condition, text=None):
        """Answer ``stanza`` with a stanza error, unless it must not be
        answered (an error, or an iq result: RFC 6120 §8.3.1).  True: the
        stanza is handled."""
        if not (stanza.type == "error" or (stanza.kind == "iq" and stanza.type == "result")):
            if stanza.kind == "message":
                self.hooks.notify(MESSAGE_BOUNCED, stanza)
            self.reply(stanza, error_reply(stanza.element, condition, text))
        return True

    def undeliverable(self, recipient, element):
        """``element`` went to the session of ``recipient`` (a full JID),
        which may not have got it: its session ended with stanzas not
        acknowledged (XEP-0198 §4), or was gone when the stanza reached its
        cluster node.  Handled as RFC 6121 §8.5.3.2 has it for an
        unavailable resource: iq requests get ``service-unavailable``;
        normal and chat messages go to offline storage
        (``message/offline``), else, with a body, back to their sender as
        ``service-unavailable``; presence, errors, headlines, groupchat
        messages and carbon copies are dropped (state, or copies of what
        another resource got), and so are archive query results (the
        client asks again).  A Deferred while the message is being
        stored, fired once it is (or bounced)."""
        kind, type_ = element.name, element.getAttribute("type")
        try:
            sender = JID.parse(element.getAttribute("from") or recipient.domain)
        except InvalidJID:
            return
        stanza = Stanza(element, sender, recipient, None)
        if kind == "iq":
            if type_ in ("get", "set"):
                self.bounce(stanza, "service-unavailable")
        elif kind == "message" and type_ in _ANSWERABLE_MESSAGES and not any(
                child.uri in _COPIES for child in element.elements()):
            return then(self.hooks.fire(MESSAGE_OFFLINE, stanza),
                        lambda claimed: claimed or element.body is None
                        or self.bounce(stanza, "service-unavailable"))
        return None

    def _to_component(self, stanza):
        stream = self._attached.get(stanza.recipient.domain)
        if stream is not None:
            stream.send(stanza.element)
        elif stanza.kind == "iq" or (stanza.kind == "message"
                                     and stanza.type in _ANSWERABLE_MESSAGES):
            self.bounce(stanza, "service-unavailable", "the component is not connected")
        return True

    def _default(self, stanza, target, service):
        kind, type_ = stanza.kind, stanza.type
        if service:
            if kind == "iq" or (kind == "message" and type_ != "error"):
                self.bounce(stanza, "service-unavailable")
        elif target == FULL:
            session = self.sessions.get(stanza.recipient)
            if session is not None:
                session.send(stanza.element)
            elif kind == "message" and type_ in (*_ANSWERABLE_MESSAGES, "headline"):
                return self._post(Stanza(stanza.element, stanza.sender,
                                         stanza.recipient.bare, stanza.origin), BARE)
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
        return True
