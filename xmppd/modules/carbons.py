"""Message Carbons (XEP-0280), with copies wrapped per XEP-0297.

- A resource enables or disables carbons for itself with an iq-set of
  ``<enable/>`` / ``<disable/>`` (§4, §5); repeating either is not an error
  (business rules, "Handling Multiple Enable/Disable Requests").  Only a
  local client may do so, for itself: anything else is ``not-allowed``.
  The state is the session's ``carbons`` flag in the session directory.
- Eligible messages (§6): ``chat``, and ``normal`` with a ``<body/>``; never
  ``error``, ``groupchat`` or ``headline``, nor a message that is already a
  carbon, nor a received message from a MUC (it carries ``muc#user``).
- Received (§7): when an eligible message is delivered to a local account,
  each of its carbons-enabled, available resources that did not receive the
  original (the ``message`` service says which did) gets a
  ``<received/>`` copy; a message no resource receives (kept offline, or
  refused) is copied to none.
- Sent (§8): when a local client sends an eligible message, to whomever,
  remote domains included, each other carbons-enabled, available resource
  of the sender gets a ``<sent/>`` copy.  A message to the sender's own
  account is left to the received copies.
- ``<private xmlns='urn:xmpp:carbons:2'/>`` (§9) and the XEP-0334
  ``<no-copy/>`` hint suppress both; the receiving side removes
  ``<private/>`` before delivery (§9).

Copies come from the user's bare JID, to the full JID of the resource, with
the type of the original (§7, §8).  Sent copies are made on ``route/pre``
below the policies (closed domains...), so a refused message is not copied;
received copies on ``message/bare`` and ``message/full`` before delivery.
Advertises ``urn:xmpp:carbons:2`` (§3).
"""

from twisted.words.xish import domish

from xmppd.core.events import BARE, FULL, HOST, message_event, pre_events
from xmppd.core.stanzas import NS_CARBONS, StanzaError, copy_element, make_stanza
from xmppd.core.xmlstream import NS_CLIENT

FLAG = "carbons"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
SENT_PRIORITY = -100  # after every pre-event policy
RECEIVED_PRIORITY = 10  # before delivery


def setup(api):
    def toggle(stanza):
        sender, recipient = stanza.sender, stanza.recipient
        if stanza.origin is None or recipient.domain != sender.domain or (
                recipient.local is not None and recipient != sender.bare):
            raise StanzaError("not-allowed", "carbons are set by a local client for itself")
        name = stanza.payload.name
        if name not in ("enable", "disable"):
            raise StanzaError("bad-request", "expected <enable/> or <disable/>")
        api.sessions.set_flag(stanza.origin, FLAG, name == "enable")

    def wants_copies(user):
        """Cheap first test: has any resource of ``user`` enabled carbons?"""
        return any(FLAG in session.flags for session in api.sessions.resources(user))

    def copy_sent(stanza):
        sender = stanza.sender
        if (stanza.origin is not None
                and wants_copies(sender.bare) and stanza.recipient.bare != sender.bare
                and api.enabled(sender.domain) and eligible(stanza.element)):
            send_copies(sender.bare, "sent", stanza.element, {stanza.origin})
        return False

    def copy_received(stanza):
        user = stanza.recipient.bare
        if not api.enabled(user.domain):
            return False
        if wants_copies(user) and eligible(stanza.element, received=True):
            delivered = set(api.service("message").recipients(stanza))
            if delivered:  # one kept offline or refused has reached no one yet
                send_copies(user, "received", stanza.element, delivered | {stanza.origin})
        remove_private(stanza.element)
        return False

    def send_copies(user, direction, element, skip):
        for session in api.sessions.resources(user):
            if FLAG in session.flags and session.available and session not in skip:
                session.send(carbon(direction, element, user, session.jid))

    def bind2_enable(stream, session, element, bound):
        """XEP-0386 §3.2: carbons enabled with the binding."""
        if element.name == "enable":
            api.sessions.set_flag(session, FLAG, True)

    api.depends("bind2")
    api.service("bind2").add_inline(NS_CARBONS, bind2_enable, api.enabled)
    api.disco_feature(NS_CARBONS)
    api.handle_iq("set", (BARE, HOST), NS_CARBONS, toggle)
    for event in pre_events("message"):
        api.hook(event, copy_sent, priority=SENT_PRIORITY)
    for target in (BARE, FULL):
        api.hook(message_event(target), copy_received, priority=RECEIVED_PRIORITY)


def eligible(element, received=False):
    """XEP-0280 §6 and §9, XEP-0334 ``<no-copy/>``; a ``received`` message
    from a MUC is not eligible either (§6)."""
    type_ = element.getAttribute("type", "normal")
    if type_ not in ("chat", "normal"):
        return False
    body = False
    for child in element.elements():
        if (child.uri == NS_CARBONS or (child.uri, child.name) == (NS_HINTS, "no-copy")
                or (received and child.uri == NS_MUC_USER)):
            return False
        body = body or (child.uri, child.name) == (NS_CLIENT, "body")
    return type_ == "chat" or body


def carbon(direction, element, user, to):
    """``<message from=USER to=TO><DIRECTION><forwarded>ORIGINAL`` (§7, §8,
    XEP-0297 §3)."""
    wrapper = make_stanza("message", to=to, from_=user, type_=element.getAttribute("type"))
    forwarded = wrapper.addElement((NS_CARBONS, direction)).addElement((NS_FORWARD, "forwarded"))
    forwarded.addChild(copy_element(element))
    return wrapper


def remove_private(element):
    """§9: the receiving server removes ``<private/>`` before delivery."""
    element.children = [child for child in element.children
                        if not (isinstance(child, domish.Element)
                                and (child.uri, child.name) == (NS_CARBONS, "private"))]
