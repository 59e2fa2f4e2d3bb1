"""Message archive management (XEP-0313 v1.1, ``urn:xmpp:mam:2``), with
unique and stable stanza ids (XEP-0359) and result set management
(XEP-0059).

- What is archived (§7.1, XEP-0334 §4): one-to-one messages of type
  ``chat`` or ``normal`` with a body, an encrypted payload or a
  ``<store/>`` hint, but never with ``<no-store/>`` or
  ``<no-permanent-store/>``; in both directions, for the local account on
  each side: a message a local client sends (on its pre-event, after the
  policies, as carbons' sent copies) in its archive, a message to a local
  account (before delivery, carbons and offline storage) in the
  recipient's; a message to the sender's own account once, as received
  (§5.1.1).  A message the server refuses after archiving it (offline
  storage full) goes out of the archive again (§5.1), its id out of the
  error.  Groupchat messages belong to the rooms' archives.
- Stanza ids (XEP-0359 §3, §5): a message archived for its recipient gets
  ``<stanza-id by='RECIPIENT' id='ARCHIVE ID'/>`` once its row is
  committed, before it is delivered, stored offline or copied, so each
  copy has the id a later query gives (the archived copy itself goes
  without it: a result carries the id).  The sender's carbons (XEP-0280
  sent copies) carry the id of the sender's copy (§3.5: by the sender's
  account), which is taken off again before the message goes on; not
  those of a message sent while the sender's preferences are being read
  (the first of its sessions), whose id comes after its copies.  A
  ``stanza-id`` claiming to be by the recipient's account (or server) is
  removed from every message to a local account first: only the archive
  may say that.  The client's ``<origin-id/>`` is kept.
- Archive ids are made by the server from its clock (microseconds shifted
  by 12 bits plus random bits, always above the last one given, or found
  in the store at start), so a message is not held up waiting for the
  database; an id is also the message's time, which the ``start`` and
  ``end`` filters bound.
- Writes are batched (:class:`~xmppd.storage.batches.BatchedWrites`): the
  messages that come while one write runs go together into the next.  A
  message to a local account is delivered once its row is committed, so
  what a client received (and acknowledged, XEP-0198) is in the archive
  even if the server is then killed; the sender's own copy is written
  without holding its stanza up.  A message is serialised once for both
  archives, and for an account with sessions (on any node of a cluster) the
  preferences kept in memory decide without a Deferred.
- Queries (§4) and metadata (§6.2), as :mod:`xmppd.archive` answers
  them: an iq-set ``<query queryid/>`` to the account's own bare JID (or
  with no ``to``), results to the querying resource; a page is at most
  ``mam.max_page`` (default ``mam.page``).  An iq-get ``<query/>`` gives
  the form (§4.1); ``<metadata/>`` the first and last messages.
- Preferences (§6.1): ``<prefs default='always|never|roster'>`` with
  ``<always/>`` and ``<never/>`` JID lists, per account (``keyval``),
  ``mam.default`` until the account sets them; a JID in ``never`` is
  never archived, one in ``always`` always, the others by the default.
  The other nodes of a cluster are told of a change (``mam/prefs``) and
  read the preferences again.  They are kept only while the account has
  sessions, as rosters and block lists are: a deletion ends them on every
  node, so an account made again with its name never finds the old ones.
- Retention: every ``mam.purge_interval`` seconds (the first time a
  minute after start), account by account, messages older than
  ``mam.max_age`` days go, and beyond ``mam.max_messages`` an account's
  oldest; ``xmppctl mam purge`` does it at once.  An account's archive
  goes with the account.
- Advertised on the accounts: ``urn:xmpp:mam:2``, ``urn:xmpp:mam:2#extended``
  and ``urn:xmpp:sid:0``.
"""

from collections import OrderedDict
from datetime import datetime, timezone
from weakref import WeakKeyDictionary

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import archive as queries
from xmppd.archive import NS_EXTENDED, NS_MAM, NS_SID, ArchiveIds, by_payload
from xmppd.core.events import (ACCOUNT_OFFLINE, BARE, FULL, MESSAGE_BOUNCED, message_event,
                               pre_events)
from xmppd.core.stanzas import ENCRYPTED_PAYLOADS, StanzaError
from xmppd.core.xmlstream import NS_CLIENT, parse_stanza, serialize
from xmppd.jid import JID, InvalidJID
from xmppd.options import (Option, Options, choice, integer, non_negative_number,
                           positive_number)
from xmppd.storage import StorageError
from xmppd.storage.batches import BatchedWrites
from xmppd.storage.kinds import ArchiveRecord

NS_HINTS = "urn:xmpp:hints"
KEPT = ENCRYPTED_PAYLOADS | {(NS_HINTS, "store")}  # archived without a body (XEP-0334 §4)
DEFAULTS = ("always", "never", "roster")
INCOMING_PRIORITY = 20  # before carbons' received copies (10) and delivery
OUTGOING_PRIORITY = -50  # after the policies (closed domains, blocking)
SENT_COPIES_PRIORITY = -150  # after carbons' sent copies (-100), which carry the sender's id
PREFS_CACHED = 10000  # accounts with sessions whose preferences are kept in memory
# Told to the other nodes of a cluster (api.tell_cluster), whose copies of
# the preferences are stale; argument: the account's bare JID.
PREFS_CHANGED = "mam/prefs"

OPTIONS = Options(  # [mam]
    default=Option("always", choice(DEFAULTS)),
    page=Option(50, integer(1)),
    max_page=Option(250, integer(1)),
    max_age=Option(365.0, non_negative_number),  # days; 0: kept for ever
    max_messages=Option(0, integer(0)),  # per account; 0: no quota
    purge_interval=Option(3600.0, positive_number),  # seconds
)
FIRST_PURGE = 60.0  # seconds after start


class Prefs:
    """An account's preferences (§6.1)."""

    __slots__ = ("default", "always", "never")

    def __init__(self, default, always=(), never=()):
        self.default = default
        self.always = frozenset(always)
        self.never = frozenset(never)

    def decides(self, contact):
        """True or False for a bare JID (text) in a list, else None (the default)."""
        if contact in self.never:
            return False
        if contact in self.always:
            return True
        return None


class Archive:
    """The archiving path, the queries and the preferences."""

    def __init__(self, api, store):
        self._api = api
        self._store = store
        self._values = api.open_store("keyval")
        self._ids = ArchiveIds(api.clock)
        # bare JID -> Prefs (default None: the operator's), while the account has sessions
        self._prefs = OrderedDict()
        self._told = 0  # changes of preferences other nodes told of
        self._writes = BatchedWrites(self._store.append_many, api.log, "archived message(s)")
        # The last message serialised for its sender's archive, reused for
        # its recipient's when it did not change: (element, children, xml,
        # stanza id); it was archivable.
        self._serialised = (None, 0, None, None)
        # message -> its <stanza-id/> by its sender, there for the sent copies only
        self._sent_marks = WeakKeyDictionary()
        self._store.last_id().addCallbacks(
            self._ids.seen, lambda failure: api.log.failure("cannot read the last archive id",
                                                            failure))

    # Archiving

    def incoming(self, stanza):
        """A message to a local account: strip forged ids, archive it for
        the recipient, deliver it once committed."""
        element, user = stanza.element, stanza.recipient.bare
        if not self._api.enabled(user.domain):
            return False
        known = None if strip_stanza_ids(element, user.full) else self._known(element)
        if ((known is None and not archivable(element)) or stanza.sender is None
                or refused(stanza, self._api.sessions)):
            return False
        archive = self._decide(user, stanza.sender.bare)
        if archive is True:
            return self._archive_incoming(stanza, user, known)
        if archive is False:
            return False
        archive.addCallback(lambda archive: archive and self._archive_incoming(
            stanza, user, known))
        return archive.addErrback(self._not_archived, stanza)

    def _known(self, element):
        """``(xml, stanza id)`` of the message its sender's archive took,
        if ``element`` is that message, unchanged; else None."""
        serialised, children, xml, sent_id = self._serialised
        if serialised is element and children == len(element.children):
            return xml, sent_id
        return None

    def _not_archived(self, failure, stanza):
        """The message is delivered all the same (a failed write is logged
        by the batch)."""
        if not failure.check(StorageError):
            self._api.log.failure("archiving {stanza!r} failed", failure, stanza=stanza)
        return False

    def _archive_incoming(self, stanza, user, known):
        element = stanza.element
        xml, sent_id = known or (serialised(element), stanza_id(element))
        archive_id = self._ids.next()
        d = defer.Deferred()
        self._writes.then(ArchiveRecord(user.local, user.domain, archive_id, stanza.sender.full,
                                        sent_id, "in", xml),
                          self._written, d, stanza, user.full, archive_id)
        return d

    def _written(self, outcome, d, stanza, by, archive_id):
        """Deliver the message (``d`` fires) once its write is over: with
        its id if the recipient's archive holds it (none if there is no
        such account: the message will be refused)."""
        if isinstance(outcome, Failure):
            self._not_archived(outcome, stanza)
        elif outcome:
            mark = stanza.element.addElement((NS_SID, "stanza-id"))
            mark["by"], mark["id"] = by, archive_id
        d.callback(False)

    def bounced(self, stanza):
        """The server refuses a message it archived for its recipient
        (offline storage full...): the row goes (§5.1: the archive holds
        what was accepted), and its id leaves the error."""
        user = stanza.recipient.bare
        if user.local is None or not self._api.enabled(user.domain):
            return
        element = stanza.element
        for mark in [child for child in element.elements(NS_SID, "stanza-id")
                     if child.getAttribute("by") == user.full]:
            element.children.remove(mark)
            d = self._store.remove(user.local, user.domain, mark["id"])
            d.addErrback(lambda failure: self._api.log.failure(
                "cannot take a refused message out of the archive of {user}", failure,
                user=user))

    def outgoing(self, stanza):
        """A message a local client sends: archived for the sender, not
        held up."""
        sender, element = stanza.sender, stanza.element
        if element.getAttribute("type") == "error" and sender is not None:
            # A refused message: the recipient's archive id stays with it.
            strip_stanza_ids(element, sender.bare.full)
            return False
        if (stanza.origin is None or not archivable(element)
                or not self._api.enabled(sender.domain)):
            return False
        user = sender.bare
        if stanza.recipient.bare == user:  # stored once, as it arrives (§5.1.1)
            return False
        # Serialised now: the recipient's stanza-id is added to it later.
        xml, sent_id = serialised(element), stanza_id(element)
        self._serialised = (element, len(element.children), xml, sent_id)
        archive = self._decide(user, stanza.recipient.bare)
        record = (user, str(stanza.recipient), xml, sent_id)
        if archive is True:
            archive_id = self._archive_outgoing(True, *record)
            mark = element.addElement((NS_SID, "stanza-id"))
            mark["by"], mark["id"] = user.full, archive_id
            self._sent_marks[element] = mark
        elif archive is not False:
            archive.addCallback(self._archive_outgoing, *record)
            archive.addErrback(self._not_archived, stanza)
        return False

    def _archive_outgoing(self, archive, user, with_jid, xml, sent_id):
        """The archive id of the sender's copy, if archived."""
        if archive:
            archive_id = self._ids.next()
            self._writes.add(ArchiveRecord(user.local, user.domain, archive_id, with_jid,
                                           sent_id, "out", xml), wait=False)
            return archive_id
        return None

    def sent_copied(self, stanza):
        """The sent copies are made: the sender's id leaves the message."""
        mark = self._sent_marks.pop(stanza.element, None)
        if mark is not None:
            stanza.element.children.remove(mark)
        return False

    def _decide(self, user, contact):
        """Whether a message between ``user`` and ``contact`` (bare JIDs) is
        archived, by the user's preferences: True or False when the
        preferences are at hand, else a Deferred of it."""
        prefs = self._prefs.get(user)
        if prefs is None:
            return self.prefs(user).addCallback(self._by_prefs, user, contact)
        self._prefs.move_to_end(user)
        return self._by_prefs(prefs, user, contact)

    def _by_prefs(self, prefs, user, contact):
        decided = prefs.decides(contact.full)
        if decided is not None:
            return decided
        default = prefs.default or self._api.options.default
        if default != "roster":
            return default == "always"
        d = self._api.service("roster").roster(user)
        return d.addCallback(lambda roster: any(item.jid == contact.full for item in roster[1]))

    # Preferences (§6.1)

    def prefs(self, user):
        """Deferred: the account's preferences, the operator's default
        (``mam.default``, read now) where it set none."""
        cached = self._prefs.get(user)
        if cached is not None:
            self._prefs.move_to_end(user)
            return defer.succeed(self._effective(cached))
        told = self._told

        def parse(text):
            # A write meanwhile (prefs_command) is newer: it wins.
            prefs = self._prefs.get(user) or (Prefs(None) if text is None else prefs_of(text))
            if told == self._told:  # else another node's write may be newer
                self._remember(user, prefs)
            return self._effective(prefs)

        return self._values.get(user.local, user.domain, "prefs").addCallback(parse)

    def _remember(self, user, prefs):
        if self._api.sessions.count(user):
            self._prefs[user] = prefs
            while len(self._prefs) > PREFS_CACHED:
                self._prefs.popitem(last=False)
        return prefs

    def offline(self, user):
        """Forget the preferences of ``user``: it has no session on any node."""
        self._prefs.pop(user, None)

    def _effective(self, prefs):
        if prefs.default is not None:
            return prefs
        return Prefs(self._api.options.default, prefs.always, prefs.never)

    def prefs_command(self, stanza):
        user = own_account(stanza)
        if stanza.element.getAttribute("type") == "get":
            return self.prefs(user).addCallback(prefs_element)
        prefs = parse_prefs(stanza.payload)
        d = self._values.set(user.local, user.domain, "prefs", prefs_element(prefs).toXml())
        d.addCallback(lambda _: self._api.tell_cluster(PREFS_CHANGED, user.full))
        return d.addCallback(lambda _: prefs_element(self._remember(user, prefs)))

    def prefs_changed_elsewhere(self, user):
        """Another node of the cluster changed the preferences of ``user`` (text)."""
        self._told += 1
        self._prefs.pop(JID.normalised(user), None)

    # Queries (§4)

    def form(self, stanza):
        own_account(stanza)
        return queries.form_answer()

    def query(self, stanza):
        options = self._api.options
        return queries.query(self._store, own_account(stanza), stanza, options.page,
                             options.max_page, self._api.route)

    def metadata(self, stanza):
        return queries.metadata(self._store, own_account(stanza))


class Retention:
    """The background purge of archives (the operator's policy)."""

    def __init__(self, api, store):
        self._api = api
        self._store = store
        self._accounts = api.open_store("accounts")
        self._timer = api.clock.callLater(FIRST_PURGE, self.purge)

    @defer.inlineCallbacks
    def purge(self):
        """One pass over the accounts of the hosts this module serves."""
        clock = self._api.clock
        deleted = 0
        try:
            for username, domain in (yield self._accounts.list()):
                if not self._api.enabled(domain):
                    continue
                host = self._api.options_for(domain)
                if host.max_age:
                    cut = datetime.fromtimestamp(
                        clock.seconds() - host.max_age * 86400, timezone.utc)
                    deleted += yield self._store.delete_until(
                        before=cut, username=username, domain=domain)
                if host.max_messages:
                    deleted += yield self._store.trim(username, domain, host.max_messages)
            if deleted:
                self._api.log.info("archive retention: {count} message(s) purged",
                                   count=deleted)
        except Exception:
            self._api.log.failure("archive retention failed")
        finally:
            self._timer = clock.callLater(self._api.options.purge_interval, self.purge)


def refused(stanza, sessions):
    """Whether a message to a full JID will be refused: a ``normal`` one to
    a resource that is not bound (RFC 6121 §8.5.3.2.1; a ``chat`` one goes
    to the bare JID instead)."""
    recipient = stanza.recipient
    return (recipient.resource is not None and stanza.type != "chat"
            and sessions.get(recipient) is None)


def archivable(element):
    """§7.1 and XEP-0334: a chat or normal message with a body, an
    encrypted payload or a store hint, and no no-store hints."""
    if element.getAttribute("type", "normal") not in ("chat", "normal"):
        return False
    kept = False
    for child in element.elements():
        if child.uri == NS_HINTS and child.name in ("no-store", "no-permanent-store"):
            return False
        kept = kept or (child.uri, child.name) in KEPT or (
            child.uri == NS_CLIENT and child.name == "body")
    return kept


def strip_stanza_ids(element, by):
    """XEP-0359 §5: drop ``stanza-id`` elements claiming to be by ``by``
    (the recipient's account) or by its server, however the claim writes
    the JID; whether there were any."""
    claims = (by, by.partition("@")[2])
    forged = [child for child in element.elements(NS_SID, "stanza-id")
              if _claimed(child.getAttribute("by")) in claims]
    for child in forged:
        element.children.remove(child)
    return bool(forged)


def _claimed(by):
    """The JID a ``by`` attribute names, normalised (RFC 7622); as written
    if it is not one."""
    try:
        return str(JID.parse(by or ""))
    except InvalidJID:
        return by


def serialised(element):
    """The XML of a message as archived: on its own, declaring its
    namespace (``toXml``'s, written faster)."""
    return serialize(element, default="", declared=False).decode()


def stanza_id(element):
    """The id the sender gave a message: its ``origin-id`` (XEP-0359 §4),
    else its ``id``."""
    origin = next(element.elements(NS_SID, "origin-id"), None)
    return element.getAttribute("id") if origin is None else origin.getAttribute("id")


def own_account(stanza):
    """The account a request is about: only its own clients may ask."""
    sender, recipient = stanza.sender, stanza.recipient
    if stanza.origin is None or recipient.local is None or sender.bare != recipient.bare:
        raise StanzaError("forbidden", "an archive is its account's own")
    return recipient.bare


def prefs_element(prefs):
    element = domish.Element((NS_MAM, "prefs"))
    element["default"] = prefs.default
    for name in ("always", "never"):
        jids = element.addElement(name)
        for jid in sorted(getattr(prefs, name)):
            jids.addElement("jid", content=jid)
    return element


def parse_prefs(element):
    default = element.getAttribute("default")
    if default not in DEFAULTS:
        raise StanzaError("bad-request", f"default is one of {', '.join(DEFAULTS)}")
    lists = {}
    for name in ("always", "never"):
        jids = set()
        for child in element.elements(NS_MAM, name):
            for jid in child.elements(NS_MAM, "jid"):
                try:
                    jids.add(str(JID.parse(str(jid).strip()).bare))
                except InvalidJID:
                    raise StanzaError("jid-malformed", f"not a JID in {name}") from None
        lists[name] = jids
    return Prefs(default, lists["always"], lists["never"])


def prefs_of(text):
    return parse_prefs(parse_stanza(text))


def setup(api):
    store = api.open_store("archive")
    archive = Archive(api, store)
    Retention(api, store)

    def bound(stream, session, element):
        """XEP-0386 §3.2: the state of the archive when Bind 2 binds."""
        if api.enabled(stream.domain):
            return queries.metadata(store, session.jid).addCallback(element.addChild)
        return None

    api.depends("bind2")
    api.service("bind2").on_bound(bound)
    for feature in (NS_MAM, NS_EXTENDED, NS_SID):
        api.account_feature(feature)
    for type_, requests in (("get", {"query": archive.form, "prefs": archive.prefs_command,
                                     "metadata": archive.metadata}),
                            ("set", {"query": archive.query, "prefs": archive.prefs_command})):
        api.handle_iq(type_, BARE, NS_MAM, by_payload(requests))
    for event in pre_events("message"):
        api.hook(event, archive.outgoing, priority=OUTGOING_PRIORITY)
        api.hook(event, archive.sent_copied, priority=SENT_COPIES_PRIORITY)
    for target in (BARE, FULL):
        api.hook(message_event(target), archive.incoming, priority=INCOMING_PRIORITY)
    api.hook(PREFS_CHANGED, archive.prefs_changed_elsewhere)
    api.hook(MESSAGE_BOUNCED, archive.bounced)
    api.hook(ACCOUNT_OFFLINE, archive.offline)
