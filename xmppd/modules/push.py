"""Push notifications (XEP-0357 v0.4.1, ``urn:xmpp:push:0``): the user's
server publishes to the push services of the account's apps.

- Registrations (§5, §6): ``<enable jid node/>``, in an iq-set to the
  account's own bare JID (or with no ``to``), registers push service
  ``jid`` and ``node``, with the optional form of FORM_TYPE
  ``http://jabber.org/protocol/pubsub#publish-options`` to go with every
  publish; enabling a pair again replaces its form (§5).  ``<disable
  jid/>`` removes the service's registrations, ``<disable jid node/>`` one
  (§6); removing none is no error.  Only the account itself may do either
  (``forbidden``); no ``jid``, no ``node`` on enable (the §12 schema
  requires it) or a form of another type is ``bad-request``.  An account
  has ``push.max_registrations`` at most (one per app and device):
  enabling one more drops the oldest.  Kept in the ``keyval`` store
  ``push``, a JSON value per pair.
- Triggers: a message with a body, an encrypted payload or a call
  proposal (XEP-0353 ``<propose/>``), but not a headline or an error (so
  not chat states alone or carbon copies), and a subscription request
  (RFC 6121 §3.1.3), for an account none of whose sessions has a
  connection.  With no session, they are seen on ``message/offline``
  ahead of offline storage and on presence ahead of the subscription
  module; with every session hibernating (XEP-0198), by an outbound filter
  as they are delivered, and those a session had sent without their
  acknowledgement when it began hibernating (``session/hibernating``: an
  app that was suspended before it acknowledged them is woken for them).
  Nothing is held or changed, and a stanza delivered to several sessions,
  or then stored offline, counts once.
- Throttle: one notification per ``push.min_interval`` seconds and
  account at most: the first at once, what comes in the rest of the
  interval summed up in one at its end (if the account still has no
  connection).  The interval ends early when a session of the account
  binds or resumes, so the first event after a client came and went is
  notified at once.
- The notification (§7): ``<pubsub><publish node><item><notification>``
  with the summary form (§11.3.1): ``message-count`` and
  ``pending-subscription-count``, the messages and requests it stands
  for, and ``last-message-sender`` / ``last-message-body`` only with
  ``push.include_sender`` / ``push.include_body``, off by default: they go
  to a third party (§9); then the registration's ``<publish-options/>``.
  It comes from the account's domain, the server's JID as §7 has it since
  version 0.3 (so do Prosody's mod_cloud_notify and ejabberd's mod_push).
- Answers (§7.1): a result keeps the registration; an error from the push
  service removes it, unless of type ``wait`` (transient, RFC 6120
  §8.3.2) and not yet the ``MAX_WAIT_ERRORS``-th in a row.  A publish
  unanswered for ``PUBLISH_TIMEOUT`` seconds is forgotten.
- ``urn:xmpp:push:0`` is advertised in the accounts' disco#info (§4.1).
"""

import hashlib
import json
from weakref import WeakSet

from xmppd.core.events import (BARE, FULL, HOST, MESSAGE_OFFLINE, SESSION_BOUND,
                               SESSION_HIBERNATING, SESSION_RESUMED, iq_event, presence_event)
from xmppd.core.stanzas import ENCRYPTED_PAYLOADS, StanzaError, make_stanza
from xmppd.core.xmlstream import NS_CLIENT, parse_stanza
from xmppd.jid import JID, InvalidJID
from xmppd.options import Option, Options, boolean, integer, non_negative_number
from xmppd.wokkel_compat import data_form

NS_PUSH = "urn:xmpp:push:0"
NS_SUMMARY = "urn:xmpp:push:summary"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NOTIFYING = ENCRYPTED_PAYLOADS | {("urn:xmpp:jingle-message:0", "propose")}  # XEP-0353: a call
PRIORITY = 10  # on message/offline and presence: before offline storage and subscriptions
FILTER_PRIORITY = 5  # outbound: ahead of stream management's queue
MAX_WAIT_ERRORS = 3
PUBLISH_TIMEOUT = 60.0  # seconds

OPTIONS = Options(  # [push]
    include_body=Option(False, boolean),
    include_sender=Option(False, boolean),
    max_registrations=Option(5, integer(1)),
    min_interval=Option(30.0, non_negative_number),  # seconds; 0: no throttle
)


class _Window:
    """What came for an account since its last notification, until the end
    of its interval (``timer``)."""

    __slots__ = ("messages", "subscriptions", "last", "timer")

    def __init__(self):
        self.messages = self.subscriptions = 0
        self.last = None  # the last message
        self.timer = None

    def count(self, element):
        if element.name == "presence":
            self.subscriptions += 1
        else:
            self.messages += 1
            self.last = element


class Push:
    """Registrations, triggers, throttle and answers."""

    def __init__(self, api):
        self._api = api
        self._store = api.open_store("keyval")
        self._windows = {}  # account (bare JID) -> _Window
        self._pending = {}  # publish id -> (account, key, push service, timer)
        self._waits = {}  # (account, key) -> wait errors in a row
        self._seen = WeakSet()  # the stanzas notified

    # Registrations (§5, §6)

    def command(self, stanza):
        account, element = stanza.recipient, stanza.payload
        if stanza.origin is None or account != stanza.sender.bare:
            raise StanzaError("forbidden", "push notifications are the account's own")
        if element.name == "enable":
            return self._enable(account, _service(element), element)
        if element.name == "disable":
            return self._disable(account, _service(element), element.getAttribute("node"))
        raise StanzaError("bad-request", "expected <enable/> or <disable/>")

    def _enable(self, account, service, element):
        node = element.getAttribute("node")
        if not node:
            raise StanzaError("bad-request", "<enable/> needs a node")
        key = _key(service, node)
        value = json.dumps({"jid": service, "node": node, "options": _publish_options(element),
                            "since": self._api.clock.seconds()})

        def add(stored):
            newest = sorted(((json.loads(text)["since"], other) for other, text in stored.items()
                             if other != key), reverse=True)
            changes = {other: None for _, other in newest[self._api.options.max_registrations - 1:]}
            changes[key] = value
            return self._store.set_many(account.local, account.domain, changes)

        return self._store.get_all(account.local, account.domain).addCallback(add)

    def _disable(self, account, service, node):
        def remove(stored):
            gone = {key: None for key, text in stored.items()
                    if _matches(json.loads(text), service, node)}
            return self._store.set_many(account.local, account.domain, gone) if gone else None

        return self._store.get_all(account.local, account.domain).addCallback(remove)

    # Triggers

    def delivered(self, session, element):
        """Outbound filter: a stanza for a hibernating session may be
        notified."""
        if session.carrier is None and session.hibernating:
            self.note(session.jid.bare, element)
        return element

    def offline(self, stanza):
        self.note(stanza.recipient.bare, stanza.element)
        return False

    def hibernating(self, hibernation):
        """A session began hibernating: what its client did not acknowledge
        may be notified."""
        session, unacknowledged = hibernation
        for element in unacknowledged:
            self.note(session.jid.bare, element)

    def presence(self, stanza):
        """A subscription request (cheapest test first: every presence
        broadcast passes here)."""
        if (stanza.type == "subscribe" and stanza.sender is not None
                and stanza.sender.bare != stanza.recipient.bare):
            self.note(stanza.recipient.bare, stanza.element)
        return False

    def bound(self, session):
        self.reachable(session.jid.bare)

    def note(self, account, element):
        """Notify ``element`` if it is worth it, new, and ``account`` has no
        connection: now, or at the end of the account's interval."""
        if (not notifies(element) or element in self._seen
                or not self._api.enabled(account.domain) or not self.unreachable(account)):
            return
        self._seen.add(element)
        window = self._windows.get(account)
        if window is None:
            window = _Window()
            window.count(element)
            self._publish(account, window)
            self._open(account)
        else:
            window.count(element)

    def unreachable(self, account):
        """Whether no session of ``account`` has a connection."""
        return all(session.hibernating for session in self._api.sessions.resources(account))

    def reachable(self, account):
        """``account`` has a connection: its interval ends."""
        window = self._windows.pop(account, None)
        if window is not None:
            window.timer.cancel()

    def _open(self, account):
        interval = self._api.options.min_interval
        if interval:
            window = self._windows[account] = _Window()
            window.timer = self._api.clock.callLater(interval, self._close, account)

    def _close(self, account):
        window = self._windows.pop(account)
        if window.messages + window.subscriptions and self.unreachable(account):
            self._publish(account, window)
            self._open(account)

    # Notifications (§7) and answers (§7.1)

    def _publish(self, account, window):
        options = self._api.options
        summary = _summary(window, options.include_sender, options.include_body)
        d = self._store.get_all(account.local, account.domain)
        d.addCallback(self._send, account, summary)
        d.addErrback(lambda failure: self._api.log.failure(
            "cannot notify the push services of {account}", failure, account=account))

    def _send(self, stored, account, summary):
        for key, text in stored.items():
            registration = json.loads(text)
            id_ = self._api.next_id()
            timer = self._api.clock.callLater(PUBLISH_TIMEOUT, self._pending.pop, id_, None)
            self._pending[id_] = (account, key, registration["jid"], timer)
            self._api.route(publish(account.domain, id_, registration, summary))

    def answered(self, stanza):
        """Claim a push service's answer to a publish."""
        id_ = stanza.element.getAttribute("id")
        pending = self._pending.get(id_)
        if pending is None or stanza.sender is None or stanza.sender.full != pending[2]:
            return False
        del self._pending[id_]
        account, key, service, timer = pending
        timer.cancel()
        waits = self._waits.pop((account, key), 0) + 1  # a result ends a run of wait errors
        if stanza.type != "error":
            return True
        error = next(stanza.element.elements(NS_CLIENT, "error"), None)
        if error is not None and error.getAttribute("type") == "wait" and waits < MAX_WAIT_ERRORS:
            self._waits[account, key] = waits
            return True
        self._api.log.info("{service} refused a notification for {account}: push to it "
                           "disabled", service=service, account=account)
        self._store.delete(account.local, account.domain, key).addErrback(
            lambda failure: self._api.log.failure(
                "cannot disable push to {service} for {account}", failure,
                service=service, account=account))
        return True


def setup(api):
    push = Push(api)
    api.account_feature(NS_PUSH)
    api.handle_iq("set", BARE, NS_PUSH, push.command)
    api.streams.add_outbound_filter(push.delivered, priority=FILTER_PRIORITY)
    api.hook(MESSAGE_OFFLINE, push.offline, priority=PRIORITY)
    for target in (BARE, FULL):
        api.hook(presence_event(target), push.presence, priority=PRIORITY)
    api.hook(SESSION_BOUND, push.bound)
    api.hook(SESSION_RESUMED, push.bound)
    api.hook(SESSION_HIBERNATING, push.hibernating)
    for type_ in ("result", "error"):
        api.hook(iq_event(type_, HOST), push.answered)


def notifies(element):
    """Whether a stanza for an account with no connection is worth a
    notification: a subscription request, or a message with a body or a
    payload of ``NOTIFYING``."""
    if element.name == "presence":
        return element.getAttribute("type") == "subscribe"
    if element.name != "message" or element.getAttribute("type") in ("error", "headline"):
        return False
    return any((child.uri, child.name) in NOTIFYING
               or ((child.uri, child.name) == (NS_CLIENT, "body") and str(child))
               for child in element.elements())


def publish(domain, id_, registration, summary):
    """The publish of a notification with ``summary`` (a Form) to
    ``registration``, from ``domain`` (§7)."""
    iq = make_stanza("iq", to=registration["jid"], from_=domain, type_="set", id_=id_)
    pubsub = iq.addElement((NS_PUBSUB, "pubsub"))
    item = pubsub.addElement("publish")
    item["node"] = registration["node"]
    item.addElement("item").addElement((NS_PUSH, "notification")).addChild(summary.toElement())
    if registration["options"] is not None:
        pubsub.addElement("publish-options").addChild(parse_stanza(registration["options"]))
    return iq


def _summary(window, sender, body):
    """The ``urn:xmpp:push:summary`` form of ``window`` (§11.3.1)."""
    fields = [data_form.Field(var="message-count", value=str(window.messages)),
              data_form.Field(var="pending-subscription-count", value=str(window.subscriptions))]
    last = window.last
    if last is not None:
        if sender and last.hasAttribute("from"):
            fields.append(data_form.Field("jid-single", var="last-message-sender",
                                          value=last["from"]))
        text = next((str(child) for child in last.elements(NS_CLIENT, "body")), "")
        if body and text:
            fields.append(data_form.Field(var="last-message-body", value=text))
    return data_form.Form("submit", formNamespace=NS_SUMMARY, fields=fields)


def _service(element):
    """The push service an ``<enable/>`` or ``<disable/>`` names."""
    text = element.getAttribute("jid")
    if not text:
        raise StanzaError("bad-request", f"<{element.name}/> needs a jid")
    try:
        return JID.parse(text).full
    except InvalidJID:
        raise StanzaError("jid-malformed", "not a push service's JID") from None


def _publish_options(enable):
    """The publish-options form of an ``<enable/>``, serialised, or None."""
    x = next(enable.elements(data_form.NS_X_DATA, "x"), None)
    if x is None:
        return None
    try:
        form = data_form.Form.fromElement(x)
    except data_form.Error:
        raise StanzaError("bad-request", "a malformed data form") from None
    if (form.formNamespace or form.getValues().get("FORM_TYPE")) != NS_PUBLISH_OPTIONS:
        raise StanzaError("bad-request", f"the form's FORM_TYPE must be {NS_PUBLISH_OPTIONS}")
    return x.toXml()


def _key(service, node):
    """The store key of a registration: of fixed length, whatever its node."""
    return hashlib.sha256(json.dumps([service, node]).encode()).hexdigest()


def _matches(registration, service, node):
    return registration["jid"] == service and node in (None, registration["node"])
