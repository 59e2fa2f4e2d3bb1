"""Message delivery to local accounts (RFC 6121 §8.5).

To a bare JID (§8.5.2):

- ``normal`` and ``chat`` go to the available resources with the highest
  non-negative priority, all of them when several share it: the "most
  available" choice (a) of §8.5.2.1.1.  A resource with a negative priority
  never receives a message addressed to the bare JID, and a connected
  resource that sent no initial presence is not available (§4.2).
- ``headline`` goes to every available resource with a non-negative
  priority (§8.5.2.1.1).
- ``groupchat`` is refused with ``service-unavailable``; ``error`` is
  dropped (§8.5.2.1.1, §8.5.2.2.1).
- With no resource to take it (§8.5.2.2.1), ``MESSAGE_OFFLINE`` is fired
  (offline storage claims what it keeps); unclaimed ``normal``/``chat`` get
  ``service-unavailable`` and a ``headline`` is dropped.

To a full JID (§8.5.3): a bound resource receives the message whether or not
it is available (§8.5.3.1).  If that resource is not bound (§8.5.3.2.1), a
``chat`` message is handled as if sent to the bare JID; ``normal``,
``headline`` and ``groupchat`` get ``service-unavailable`` (choice (b));
``error`` is dropped.

To an account that does not exist (§8.5.1): ``service-unavailable``.  A
message for an address with no bound resource goes to ``MESSAGE_OFFLINE``
without an account lookup: offline storage refuses an unknown account as it
stores, in one storage call, which a graceful shutdown lets finish.  Only a
headline nobody claimed is looked up (dropped for an account, refused for
none).

A message a session may not have got (its session ended with it not
acknowledged, XEP-0198; or its cluster node died: ``Router.undeliverable``)
comes to ``MESSAGE_OFFLINE`` too: the account's other resources that would
take it sent to the bare JID take it first (§8.5.3.2.1), else it is stored.
A copy of a message sent to the bare JID may so reach a resource that had
its own copy: clients tell them apart by their ids (XEP-0359).

Publishes the ``message`` service (:class:`MessageDelivery`): which sessions
receive a message, for modules such as carbons that act on the others.
"""

from xmppd.core.events import BARE, FULL, MESSAGE_OFFLINE, message_event, then

TYPES = ("normal", "chat", "groupchat", "headline", "error")
OTHER_RESOURCES_PRIORITY = 30  # on message/offline: before anonymous accounts, push, storage


def message_type(stanza):
    """The type of a message; a missing or unknown one is ``normal``
    (RFC 6121 §5.2.2)."""
    return stanza.type if stanza.type in TYPES else "normal"


class MessageDelivery:
    """The recipients RFC 6121 §8.5 gives a message to a local account."""

    def __init__(self, sessions):
        self._sessions = sessions

    def recipients(self, stanza):
        """The sessions that receive ``stanza``, a message to a local
        account (a list; empty if it is refused, dropped or kept offline)."""
        recipient, type_ = stanza.recipient, message_type(stanza)
        if type_ == "error":
            return []
        if recipient.resource is not None:
            session = self._sessions.get(recipient)
            if session is not None:
                return [session]
            if type_ != "chat":
                return []
        return self.for_bare(recipient.bare, type_)

    def for_bare(self, bare, type_):
        """The sessions of account ``bare`` that receive a message of
        ``type_`` addressed to the bare JID (§8.5.2.1.1)."""
        if type_ not in ("normal", "chat", "headline"):
            return []
        candidates = [s for s in self._sessions.resources(bare)
                      if s.available and s.priority >= 0]
        if type_ == "headline" or not candidates:
            return candidates
        top = max(s.priority for s in candidates)
        return [s for s in candidates if s.priority == top]


def setup(api):
    delivery = MessageDelivery(api.sessions)
    accounts = api.open_store("accounts")
    api.provide("message", delivery)

    def to_bare(stanza):
        type_ = message_type(stanza)
        if type_ == "groupchat":
            return api.bounce(stanza, "service-unavailable")
        if type_ != "error":
            return deliver(stanza, delivery.for_bare(stanza.recipient.bare, type_))
        return True

    def to_full(stanza):
        session = api.sessions.get(stanza.recipient)
        type_ = message_type(stanza)
        if session is not None:
            session.send(stanza.element)
        elif type_ == "chat":
            return deliver(stanza, delivery.for_bare(stanza.recipient.bare, type_))
        elif type_ != "error":
            api.bounce(stanza, "service-unavailable")
        return True

    def deliver(stanza, sessions):
        """Deliver to ``sessions``, else offline (True, or a Deferred that
        fires once the message is stored: it is handled only then)."""
        for session in sessions:
            session.send(stanza.element)
        if sessions:
            return True
        return then(api.fire(MESSAGE_OFFLINE, stanza),
                    lambda stored: stored or not_stored(stanza))

    def to_other_resources(stanza):
        """A message for a resource that is gone: to the others that would
        take it sent to the bare JID (none when fired by ``deliver``)."""
        sessions = [session for session in delivery.for_bare(stanza.recipient.bare,
                                                              message_type(stanza))
                    if session.jid != stanza.recipient]
        for session in sessions:
            session.send(stanza.element)
        return bool(sessions)

    def not_stored(stanza):
        if message_type(stanza) in ("normal", "chat"):
            return api.bounce(stanza, "service-unavailable")
        if not api.sessions.count(stanza.recipient.bare):
            return refuse_if_no_account(stanza)
        return True

    def refuse_if_no_account(stanza):
        """§8.5.1 for a headline nobody took."""
        def refuse(exists):
            if not exists:
                api.bounce(stanza, "service-unavailable")

        user = stanza.recipient
        d = accounts.exists(user.local, user.domain)
        return d.addCallbacks(refuse, lambda failure: api.log.failure(
            "looking up {user} failed", failure, user=user.bare)).addCallback(lambda _: True)

    api.hook(message_event(BARE), to_bare)
    api.hook(message_event(FULL), to_full)
    api.hook(MESSAGE_OFFLINE, to_other_resources, priority=OTHER_RESOURCES_PRIORITY)
