"""Offline messages (XEP-0160) stamped with delayed delivery (XEP-0203).

Claims ``MESSAGE_OFFLINE`` (RFC 6121 §8.5.2.2.1: no resource takes the
message) for the messages worth keeping (XEP-0160 §3): type ``normal`` or
``chat`` with a body or another payload, but not chat states alone (XEP-0085)
and not with a ``<no-store/>`` hint (XEP-0334 §4).  A kept message gets
``<delay xmlns='urn:xmpp:delay' from='DOMAIN' stamp='...'/>`` (XEP-0203 §3,
the stamp in the XEP-0082 DateTime profile, UTC) and is stored in the
database, so it survives a restart.  Writes are batched (``BatchedWrites``):
the messages that arrive while one write is under way are stored together in
the next transaction.  The message is handled, and the sender's next stanzas
are processed, only once its row is committed (or it is bounced); a graceful
shutdown lets the writes under way finish.  Beyond ``offline.max_messages``
per user the sender gets ``service-unavailable`` (XEP-0160 §2, RFC 6121
§8.5.2.2.1), as for an account that does not exist; when the write fails
(database unreachable, disk full) one line is logged for the batch and each
sender gets ``service-unavailable``.

When a resource becomes available with a non-negative priority (XEP-0160 §2,
step 5) it receives the stored messages and they are deleted; they are
sent as fast as the client reads them, so a long backlog never overflows
its bounded output (``c2s.max_output_buffer``).  They come in
the order the server received them, by their delay stamps (to the
microsecond): messages stored back, when the session went away before they
reached it, may follow newer ones in the database.  Those from a sender
the account blocked since they were stored are dropped (XEP-0191 §3.3).
Advertises ``msgoffline`` (XEP-0160 §5).
"""

from prometheus_client import Gauge

from xmppd.core.events import MESSAGE_OFFLINE, SESSION_REACHABLE
from xmppd.core.stanzas import xep0082_stamp
from xmppd.core.xmlstream import NS_CLIENT, parse_stanza
from xmppd.options import Option, Options, integer
from xmppd.storage.batches import BatchedWrites
from xmppd.storage.kinds import Appended

NS_DELAY = "urn:xmpp:delay"
NS_HINTS = "urn:xmpp:hints"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
FEATURE = "msgoffline"
DRAIN_WAIT = 0.05  # seconds between looks at a backlogged client's output

OPTIONS = Options(  # [offline]
    max_messages=Option(1000, integer(0)),
)


def setup(api):
    offline = api.open_store("offline")
    queued = Gauge("xmppd_offline_messages", "Messages stored for offline users",
                   registry=api.metrics.registry)
    offline.total().addCallbacks(
        queued.set, lambda failure: api.log.error("cannot count offline messages: {error}",
                                                  error=failure.value))

    writes = BatchedWrites(lambda batch: offline.append_many(batch, api.options.max_messages),
                           api.log, "offline message(s)")

    def store(stanza):
        """Claim the message; a Deferred that fires (True) once it is
        committed or bounced, so the sender's next stanzas wait for it."""
        user = stanza.recipient.bare
        if not (api.enabled(user.domain) and worth_keeping(stanza)):
            return False
        xml = with_delay(stanza.element, user.domain, api.clock.seconds())
        d = writes.add((user.local, user.domain, xml))
        return d.addCallbacks(stored, refused, callbackArgs=(stanza,), errbackArgs=(stanza,))

    def stored(outcome, stanza):
        if outcome is Appended.STORED:
            queued.inc()
        elif outcome is Appended.FULL:
            api.bounce(stanza, "service-unavailable", "the recipient's offline storage is full")
        else:
            api.bounce(stanza, "service-unavailable")
        return True

    def refused(failure, stanza):
        api.bounce(stanza, "service-unavailable")  # BatchedWrites logged why
        return True

    def deliver(session):
        user = session.jid.bare
        if not api.enabled(user.domain):
            return
        d = offline.take_all(user.local, user.domain)
        d.addCallback(hand_over, session)
        d.addErrback(lambda failure: api.log.failure(
            "delivering offline messages to {jid} failed", failure, jid=session.jid))

    def hand_over(taken, session):
        """Send the taken messages to ``session`` in the order they came,
        but those from whom the account blocks now (XEP-0191 §3.3)."""
        domain = session.jid.domain
        messages = sorted(((parse_stanza(xml), xml) for xml in taken),
                          key=lambda message: arrival(message[0], domain))
        blocking = api.service("blocking")
        if blocking is None:
            return send_as_read(session, messages, 0)

        def admitted_only(admitted):
            kept = [message for message in messages if admitted(message[0])]
            queued.dec(len(messages) - len(kept))  # dropped: taken, not delivered
            return send_as_read(session, kept, 0)

        return blocking.admits(session.jid.bare).addCallback(admitted_only)

    def send_as_read(session, messages, start):
        """Send ``messages[start:]`` (element, stored XML) no faster than
        the client reads them:
        while its output is backlogged the rest waits (a long backlog
        never passes ``c2s.max_output_buffer``, which would cut the client
        off with the messages in it).  Should the session go in the
        meantime, the rest is stored back (whatever the limit: they were
        accepted)."""
        for index in range(start, len(messages)):
            if api.sessions.get(session.jid) is not session:
                user = session.jid.bare
                return offline.append_many(
                    [(user.local, user.domain, xml) for _, xml in messages[index:]], None)
            carrier = session.carrier
            if carrier is not None and carrier.backlogged():
                api.clock.callLater(DRAIN_WAIT, send_as_read, session, messages, index)
                return None
            queued.dec()
            session.send(messages[index][0])
        return None

    api.disco_feature(FEATURE)
    api.hook(MESSAGE_OFFLINE, store)
    api.hook(SESSION_REACHABLE, deliver)


def worth_keeping(stanza):
    """XEP-0160 §3 and the XEP-0334 hints: normal and chat messages with
    something more than chat states, unless marked ``<no-store/>``."""
    if stanza.type in ("groupchat", "headline", "error"):
        return False
    payload = False
    for child in stanza.element.elements():
        if child.uri == NS_HINTS:
            if child.name == "no-store":
                return False
            payload = payload or child.name == "store"
        elif child.uri != NS_CHATSTATES and not (child.uri == NS_CLIENT and child.name == "thread"):
            payload = True
    return payload


def with_delay(element, domain, seconds):
    """``element`` serialised with a XEP-0203 delay added (the element
    itself is left as it was)."""
    delay = element.addElement((NS_DELAY, "delay"), content="Offline Storage")
    delay["from"] = domain
    delay["stamp"] = xep0082_stamp(seconds)
    try:
        return element.toXml()
    finally:
        element.children.remove(delay)


def arrival(element, domain):
    """When the server got a stored message: the stamp of its own delay."""
    stamps = [delay["stamp"] for delay in element.elements(NS_DELAY, "delay")
              if delay.getAttribute("from") == domain]
    return stamps[-1] if stamps else ""
