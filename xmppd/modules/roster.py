"""Roster management (RFC 6121 §2).

- get (§2.1.3, §2.2): the whole roster; with roster versioning (§2.6) an
  empty result when the client's ``ver`` is current.  A resource that asked
  for its roster receives roster pushes (§2.1.6).
- set (§2.1.5, §2.3): add or update one item (name and groups; the
  subscription state is the server's and any ``subscription`` other than
  ``remove``, and any ``ask``, are ignored), then push it to every
  interested resource of the account.  A roster holds at most
  ``roster.max_items`` items: adding one more is ``not-allowed`` (§2.3.3
  lets the server refuse a set that would exceed its roster size limit).
- remove (§2.5): ``subscription='remove'`` deletes the item, pushes the
  removal and cancels the subscriptions in both directions (§2.5.2) through
  the ``subscription`` service when that module is loaded.

Publishes the ``roster`` service (:class:`RosterService`): pushes, and
changes to an account's roster run one at a time so that subscription
handling (RFC 6121 §3) never loses a concurrent change.  Those changes come
from several streams (the account's sessions, its contacts' servers), so
they go through one :class:`~xmppd.core.serial.SerialQueue` per roster,
and, in a cluster, under the roster's cluster-wide lock (docs/cluster.md).
"""

import dataclasses

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd.core.events import BARE, SESSION_UNBOUND
from xmppd.core.serial import SerialQueue
from xmppd.core.stanzas import StanzaError, make_stanza
from xmppd.jid import JID, InvalidJID
from xmppd.options import Option, Options, integer
from xmppd.storage import SUBSCRIBERS, RosterFull, RosterItem, UserNotFound

NS_ROSTER = "jabber:iq:roster"
FLAG = "roster"  # a session's flag: it asked for the roster, so it gets pushes (§2.1.6)
NS_ROSTERVER = "urn:xmpp:features:rosterver"
MAX_TEXT = 1023  # longest item name or group name, in characters
# Told to the other nodes of a cluster (api.tell_cluster), whose copies of
# the roster are stale; argument: the account's bare JID.
CHANGED = "roster/changed"

OPTIONS = Options(  # [roster]
    max_items=Option(1000, integer(1)),
)


def _no_account(failure):
    failure.trap(UserNotFound)
    return False


def item_element(item, remove=False):
    """The ``<item/>`` of an item (RFC 6121 §2.1.2)."""
    element = domish.Element((NS_ROSTER, "item"))
    element["jid"] = item.jid
    if remove:
        element["subscription"] = "remove"
        return element
    if item.name:
        element["name"] = item.name
    element["subscription"] = item.subscription
    if item.ask:
        element["ask"] = "subscribe"
    if item.approved:
        element["approved"] = "true"
    for group in item.groups:
        element.addElement("group", content=group)
    return element


class RosterService:
    """Rosters read, changed and pushed (RFC 6121 §2.1.6), for this and other
    modules.

    The rosters of accounts with a bound session are kept in memory: presence
    broadcasts and probes read them all the time.  Every change goes through
    :meth:`store` or :meth:`remove`, which drop the copy; a read that was
    under way during a change is not kept (``_generation``).  Another node
    of a cluster may change a roster too: it tells this one (:data:`CHANGED`).
    """

    def __init__(self, api):
        self._api = api
        self.items = api.open_store("roster")
        self._changes = {}  # bare JID -> SerialQueue, while changes are under way
        self._cache = {}  # bare JID -> (version, items), for accounts online
        self._generation = {}  # bare JID -> changes made, while online
        api.hook(SESSION_UNBOUND, self._unbound)
        api.hook(CHANGED, self._changed_elsewhere)

    def roster(self, user):
        """Deferred ``(version, items)`` of the roster of ``user`` (a bare JID)."""
        cached = self._cache.get(user)
        if cached is not None:
            return defer.succeed(cached)
        # Kept only if read while the account is online here: only then
        # does a change another node tells of count in its generation.
        here = self._api.sessions.here(user)
        generation = self._generation.get(user, 0)
        d = self.items.get(user.local, user.domain)

        def keep(result):
            if (here and self._api.sessions.here(user)
                    and self._generation.get(user, 0) == generation):
                self._cache[user] = result
            return result

        return d.addCallback(keep)

    def sees_presence(self, user, requester):
        """Deferred: whether ``requester`` (a JID) is ``user`` (a bare JID)
        or a contact subscribed to its presence (RFC 6121 §3)."""
        if requester is None:
            return defer.succeed(False)
        if requester.bare == user:
            return defer.succeed(True)
        contact = requester.bare.full
        d = self.roster(user).addCallback(lambda result: any(
            item.jid == contact and item.subscription in SUBSCRIBERS for item in result[1]))
        return d.addErrback(_no_account)

    def _changed(self, user):
        self._cache.pop(user, None)
        self._generation[user] = self._generation.get(user, 0) + 1

    def _changed_elsewhere(self, user):
        """Another node of the cluster changed the roster of ``user`` (text)."""
        user = JID.normalised(user)
        if self._api.sessions.here(user):
            self._changed(user)

    def _unbound(self, session):
        user = session.jid.bare
        if not self._api.sessions.here(user):
            self._cache.pop(user, None)
            self._generation.pop(user, None)

    def change(self, user, fn, *args):
        """Run ``fn(*args)`` (which may return a Deferred) once the earlier
        changes to the roster of ``user`` (a bare JID) are done; a Deferred
        of its result."""
        result = defer.Deferred()
        queue = self._changes.get(user)
        if queue is None:
            queue = self._changes[user] = SerialQueue(self._run_change)
        queue.push((user, fn, args, result))
        return result

    def _run_change(self, change):
        user, fn, args, result = change
        # Other nodes of a cluster change this roster too (the contacts'
        # subscriptions): one change at a time in the whole cluster.
        d = self._api.cluster_lock(f"roster:{user.full}")
        d.addCallback(self._locked_change, fn, args)
        return d.addBoth(self._change_done, user, result)

    @staticmethod
    def _locked_change(release, fn, args):
        d = defer.maybeDeferred(fn, *args)

        def done(outcome):
            release()
            return outcome

        return d.addBoth(done)

    def _change_done(self, outcome, user, result):
        queue = self._changes.get(user)
        if queue is not None and not len(queue):
            del self._changes[user]
        if isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)

    def store(self, user, item):
        """Add or replace ``item`` in the roster of ``user`` and push it; a
        Deferred of the new version.  Adding an item to a full roster
        (``roster.max_items``) fails with :class:`~xmppd.storage.RosterFull`."""
        self._changed(user)
        d = self.items.set_item(
            user.local, user.domain, item, max_items=self._api.options.max_items)

        def stored(version):
            self._changed(user)
            self._api.tell_cluster(CHANGED, user.full)
            self.push(user, item, version)
            return version

        return d.addCallback(stored)

    def remove(self, user, item):
        """Remove ``item`` from the roster of ``user`` and push the removal."""
        self._changed(user)
        d = self.items.remove_item(user.local, user.domain, item.jid)

        def removed(version):
            self._changed(user)
            if version is not None:
                self._api.tell_cluster(CHANGED, user.full)
                self.push(user, item, version, remove=True)

        return d.addCallback(removed)

    def push(self, user, item, version, remove=False):
        """Send ``item`` of ``user`` (a bare JID) to each interested resource."""
        for session in self._api.sessions.resources(user):
            if FLAG in session.flags:
                push = make_stanza("iq", to=session.jid.full, type_="set",
                                   id_=self._api.next_id())
                query = push.addElement((NS_ROSTER, "query"))
                query["ver"] = str(version)
                query.addChild(item_element(item, remove))
                session.send(push)


def setup(api):
    roster = RosterService(api)
    api.provide("roster", roster)

    def offer(stream):
        return domish.Element((NS_ROSTERVER, "ver"))

    def own_roster(stanza):
        if stanza.recipient != stanza.sender.bare or stanza.origin is None:
            raise StanzaError("forbidden", "a roster belongs to its account")
        return stanza.sender.bare

    def get(stanza):
        user = own_roster(stanza)
        api.sessions.set_flag(stanza.origin, FLAG)
        client_ver = stanza.payload.getAttribute("ver")
        d = roster.roster(user)

        def answer(result):
            version, items = result
            if client_ver is not None and client_ver == str(version):
                return None
            query = domish.Element((NS_ROSTER, "query"))
            query["ver"] = str(version)
            for item in items:
                query.addChild(item_element(item))
            return query

        return d.addCallback(answer)

    def set_(stanza):
        user = own_roster(stanza)
        request = _parse_set(stanza.payload)
        if request.getAttribute("subscription") == "remove":
            return roster.change(user, remove, user, request["jid"])
        return roster.change(user, update, user, request)

    @defer.inlineCallbacks
    def update(user, request):
        existing = yield roster.items.get_item(user.local, user.domain, request["jid"])
        changes = dict(name=request.getAttribute("name") or None,
                       groups=tuple(str(g) for g in request.elements(NS_ROSTER, "group")))
        item = (dataclasses.replace(existing, **changes) if existing
                else RosterItem(jid=request["jid"], **changes))
        try:
            yield roster.store(user, item)
        except RosterFull:
            raise StanzaError("not-allowed", f"the roster is full (at most "
                              f"{api.options.max_items} items)") from None

    @defer.inlineCallbacks
    def remove(user, jid):
        existing = yield roster.items.get_item(user.local, user.domain, jid)
        if existing is None:
            raise StanzaError("item-not-found")
        yield roster.remove(user, existing)
        subscriptions = api.service("subscription")
        if subscriptions is not None:
            yield subscriptions.cancel(user, existing)

    api.stream_feature(offer)
    api.handle_iq("get", BARE, NS_ROSTER, get)
    api.handle_iq("set", BARE, NS_ROSTER, set_)


def _parse_set(query):
    """The one ``<item/>`` of a roster set, validated (RFC 6121 §2.3.3),
    with its ``jid`` normalised."""
    items = list(query.elements(NS_ROSTER, "item"))
    if len(items) != 1:
        raise StanzaError("bad-request", "a roster set carries exactly one item")
    item = items[0]
    try:
        item["jid"] = JID.parse(item.getAttribute("jid", "")).full
    except InvalidJID as e:
        raise StanzaError("jid-malformed", str(e))
    if len(item.getAttribute("name", "")) > MAX_TEXT:
        raise StanzaError("not-acceptable", "the item name is too long")
    groups = [str(g) for g in item.elements(NS_ROSTER, "group")]
    if len(set(groups)) != len(groups):
        raise StanzaError("bad-request", "a group is listed twice")
    if any(not g or len(g) > MAX_TEXT for g in groups):
        raise StanzaError("not-acceptable", "a group name is empty or too long")
    return item
