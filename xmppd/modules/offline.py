"""Offline messages (XEP-0160) stamped with delayed delivery (XEP-0203).

Claims ``MESSAGE_OFFLINE`` (RFC 6121 §8.5.2.2.1: no resource takes the
message) for the messages worth keeping (XEP-0160 §3): type ``normal`` or
``chat`` with a body or another payload, but not chat states alone (XEP-0085)
and not with a ``<no-store/>`` hint (XEP-0334 §4).  A kept message gets
``<delay xmlns='urn:xmpp:delay' from='DOMAIN' stamp='...'/>`` (XEP-0203 §3,
the stamp in the XEP-0082 DateTime profile, UTC) and is stored in the
database, so it survives a restart: the write is one storage call, issued at
once, which a graceful shutdown lets finish.  Beyond ``offline.max_messages``
per user the sender gets ``service-unavailable`` (XEP-0160 §2).

When a resource becomes available with a non-negative priority (XEP-0160 §2,
step 5) it receives the stored messages and they are deleted.  They come in
the order the server received them, by their delay stamps (to the
microsecond): storage writes run concurrently, so the database's own order
may differ.
Advertises ``msgoffline`` (XEP-0160 §5).
"""

from datetime import datetime, timezone

from prometheus_client import Gauge
from twisted.internet import defer

from xmppd.core.events import MESSAGE_OFFLINE, SESSION_REACHABLE
from xmppd.core.xmlstream import NS_CLIENT, parse_stanza
from xmppd.storage import UserNotFound

NS_DELAY = "urn:xmpp:delay"
NS_HINTS = "urn:xmpp:hints"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
FEATURE = "msgoffline"


def setup(api):
    queued = Gauge("xmppd_offline_messages", "Messages stored for offline users",
                   registry=api.metrics.registry)
    api.storage.total_offline().addCallbacks(
        queued.set, lambda failure: api.log.error("cannot count offline messages: {error}",
                                                  error=failure.value))

    def limit():
        return api.config.offline.max_messages  # re-read: the config can be reloaded

    def store(stanza):
        user = stanza.recipient.bare
        if not (api.enabled(user.domain) and worth_keeping(stanza)):
            return False
        xml = with_delay(stanza.element, user.domain, api.clock.seconds())
        d = api.storage.store_offline(user.local, user.domain, xml, limit())
        d.addCallbacks(stored, refused, callbackArgs=(stanza,), errbackArgs=(stanza,))
        return True

    def stored(kept, stanza):
        if kept:
            queued.inc()
        else:
            api.bounce(stanza, "service-unavailable", "the recipient's offline storage is full")

    def refused(failure, stanza):
        if not failure.check(UserNotFound):
            api.log.failure("storing {stanza!r} offline failed", failure, stanza=stanza)
        api.bounce(stanza, "service-unavailable")

    def deliver(session):
        user = session.jid.bare
        if not api.enabled(user.domain):
            return
        d = api.storage.take_offline(user.local, user.domain)
        d.addCallback(hand_over, session)
        d.addErrback(lambda failure: api.log.failure(
            "delivering offline messages to {jid} failed", failure, jid=session.jid))

    def hand_over(taken, session):
        """Send the taken messages to ``session``, or, should it have gone
        in the meantime, store them back as they were."""
        user = session.jid.bare
        if api.sessions.get(session.jid) is session:
            queued.dec(len(taken))
            for element in sorted(map(parse_stanza, taken), key=lambda e: arrival(e, user.domain)):
                session.send(element)
            return None
        d = defer.succeed(None)
        for xml in taken:
            d.addCallback(lambda _, xml=xml: api.storage.store_offline(
                user.local, user.domain, xml, max(limit(), len(taken))))
        return d

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


def xep0082_stamp(seconds):
    """A XEP-0082 DateTime in UTC to the microsecond, such as
    ``2002-09-10T23:08:25.000000Z``: the stamps of one server sort as text."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def arrival(element, domain):
    """When the server got a stored message: the stamp of its own delay."""
    stamps = [delay["stamp"] for delay in element.elements(NS_DELAY, "delay")
              if delay.getAttribute("from") == domain]
    return stamps[-1] if stamps else ""
