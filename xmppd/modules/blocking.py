"""Blocking command (XEP-0191): a user blocks communications with JIDs.

The commands, each only on the user's own account (else ``forbidden``):

- block list (§3.2): an iq get of ``<blocklist/>`` returns the blocked JIDs;
  the resource that asked receives the pushes from then on;
- block (§3.3): ``<block/>`` with one or more ``<item jid/>`` (none is
  ``bad-request``, a malformed JID ``jid-malformed``);
- unblock (§3.4): ``<unblock/>`` with items; unblock all (§3.5): an empty
  ``<unblock/>``.

Every change is stored, then pushed as an iq set to each of the user's
resources that requested the block list.  The user's contacts allowed to see
its presence (subscription ``from`` or ``both``, RFC 6121 §4) that a block
covers are sent unavailable presence from each available resource (§3.3);
those an unblock covers, each resource's current presence (§3.4), and
those whose presence the user receives a probe (RFC 6121 §4.3: the
presence they sent during the block was dropped); all through the
``presence`` service, when the presence module is loaded.  A
blocked full JID gets neither (the contact's other resources still see the
user), nor does a contact that only received directed presence.

Enforcement, on ``route/pre`` for every stanza (§3.3), with JIDs matched as
§6 says (an item ``user@domain/resource`` matches only that resource,
``user@domain`` every resource, ``domain`` the domain and everything at it):

- from a blocked JID to the user: presence is dropped without an answer,
  messages and iq requests are answered ``service-unavailable`` (so the
  user appears offline), iq responses and errors are dropped, and so are
  groupchat messages (an error would make a room remove the user: a
  blocked occupant is silenced, XEP-0045 §7.2.3);
- from the user's client to a blocked JID: ``not-acceptable`` with
  ``<blocked xmlns='urn:xmpp:blocking:errors'/>``; available presence the
  server sends on the user's behalf (broadcasts) is dropped;
- never between the resources of one account (§5) nor between an account
  and its own server.

The block lists of users with a bound resource are kept in memory (read at
bind, forgotten with the last session of this process, read again when
another node of a cluster changed one), so between online users the check
is a few dictionary lookups, and nothing more while their lists are empty.
For a user who is not online the list is read from storage, and the check
returns a Deferred: the stanza, and the sender's later ones, wait for it.

Stored in the per-user ``blocking`` store: one key per blocked JID, value "".
Publishes the ``blocking`` service (:class:`BlockLists`), whose
``blocks(user, jid)`` other modules ask before sending on a user's behalf
(and ``admits(user)`` before delivering what they stored for the user:
offline messages, subscription requests, so a sender blocked after they
were stored does not reach the user through them),
and whose ``on_block(handler)`` tells them of each stored block with its
``<item/>`` elements, for what other specifications put in an item (the
reports of XEP-0377, ``spam_reporting``).
Support is advertised as the ``urn:xmpp:blocking`` disco feature (§3.1).
"""

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.events import ACCOUNT_OFFLINE, BARE, SESSION_BOUND, pre_events
from xmppd.core.stanzas import StanzaError, error_reply, make_stanza
from xmppd.jid import JID, InvalidJID
from xmppd.storage import SUBSCRIBED_TO, SUBSCRIBERS

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
STORE = "blocking"
FLAG = "blocklist"  # a session's flag: it asked for the block list, so it gets pushes (§3.2)
# On the pre-events: after the closed-domain policy (100), ahead of what
# copies or stores stanzas.
PRIORITY = 50
# Told to the other nodes of a cluster (api.tell_cluster), whose copies of
# the block list are stale; argument: the account's bare JID.
CHANGED = "blocking/changed"


class _Cached:
    """The block list of a user with bound sessions: ``jids`` is None until
    read; ``generation`` counts stored changes, so a read that overlapped one
    is done again."""

    __slots__ = ("jids", "generation")

    def __init__(self):
        self.jids = None
        self.generation = 0


class BlockLists:
    """Users' blocked JIDs: in memory for users with bound sessions (on
    any node of a cluster), read from storage for the others."""

    def __init__(self, api):
        self._api = api
        self.store = api.open_store("keyval", STORE)
        self._online = {}  # bare JID -> _Cached
        self._block_handlers = []

    def bound(self, session):
        user = session.jid.bare
        if user not in self._online and self._api.enabled(user.domain):
            cached = self._online[user] = _Cached()
            self._load(user, cached)

    def offline(self, user):
        """Forget the list of ``user``: it has no session on any node."""
        self._online.pop(user, None)

    def changed_elsewhere(self, user):
        """Another node of the cluster changed the block list of ``user``
        (text): it is read again."""
        user = JID.normalised(user)
        cached = self._online.get(user)
        if cached is not None:
            cached.generation += 1  # a reading under way is done again
            if cached.jids is not None:
                cached.jids = None
                self._load(user, cached)

    def _load(self, user, cached):
        generation = cached.generation

        def install(jids):
            if self._online.get(user) is not cached:
                return
            if cached.generation == generation:
                cached.jids = jids
            else:
                self._load(user, cached)

        self.read(user).addCallbacks(install, lambda failure: self._api.log.failure(
            "cannot read the block list of {user}", failure, user=user))

    def read(self, user):
        """A Deferred of the set of JIDs ``user`` blocked, from storage."""
        return self.store.get_all(user.local, user.domain).addCallback(set)

    def get(self, user):
        """The set of JIDs ``user`` blocked, or a Deferred of it.  The list
        of a user bound on another node of a cluster is kept from its first
        read on, as for a user bound here."""
        cached = self._online.get(user)
        if cached is not None and cached.jids is not None:
            return cached.jids
        if cached is None and self._api.sessions.count(user) and self._api.enabled(user.domain):
            self._load(user, self._online.setdefault(user, _Cached()))
        return self.read(user)

    def blocks(self, user, jid):
        """Whether ``user`` (a bare JID) blocks ``jid`` (§6), or a Deferred
        of it: for stanzas the server sends on the user's behalf."""
        jids = self.get(user)
        if type(jids) is set:
            return _matches(jids, jid)
        return jids.addCallback(_matches, jid)

    def admits(self, user):
        """A Deferred of ``admitted(element)``: whether a stanza stored for
        ``user`` (an offline message, a subscription request) comes from
        someone ``user`` does not block now; what was stored before a block
        is not delivered after it (§3.3)."""
        def admitted(blocked):
            return lambda element: not blocked or not _matches(blocked, _sender(element))
        return defer.maybeDeferred(self.get, user).addCallback(admitted)

    def on_block(self, handler):
        """Call ``handler(user, items)`` after each stored block command of
        ``user`` (a bare JID): ``items`` maps each blocked JID (normalised
        text) to its ``<item/>`` element.  The answer to the command waits
        for a Deferred it returns; its failure is logged, and the block
        stands (XEP-0377 §6: a block is done as if no report were there)."""
        self._block_handlers.append(handler)

    def blocked(self, user, items):
        """Run the :meth:`on_block` handlers; a Deferred of their end."""
        def run(handler):
            d = defer.maybeDeferred(handler, user, items)
            return d.addErrback(lambda failure: self._api.log.failure(
                "a block handler failed for {user}", failure, user=user))

        return defer.gatherResults([run(handler) for handler in self._block_handlers])

    def changed(self, user, change):
        """After a stored change, apply ``change(jids)`` to the list in
        memory, and tell the other nodes of a cluster."""
        self._api.tell_cluster(CHANGED, user.full)
        cached = self._online.get(user)
        if cached is not None:
            cached.generation += 1
            if cached.jids is not None:
                change(cached.jids)


def setup(api):
    lists = BlockLists(api)
    api.provide("blocking", lists)

    def local_account(jid):
        """``jid``'s bare JID if it is an account of a host this module
        serves, else None."""
        return jid.bare if jid.local is not None and api.enabled(jid.domain) else None

    def check(stanza):
        sender, recipient = stanza.sender, stanza.recipient
        if sender is None or _same_account_or_own_server(sender, recipient):
            return False
        outbound = local_account(sender) if _outbound_checked(stanza) else None
        inbound = local_account(recipient)
        if outbound is None and inbound is None:
            return False
        found = (None if outbound is None else lists.get(outbound),
                 None if inbound is None else lists.get(inbound))
        if not found[0] and not found[1]:  # no lists, or empty ones in memory
            return False
        if not any(isinstance(jids, defer.Deferred) for jids in found):  # in memory
            return refuse(stanza, *found)
        d = defer.gatherResults([defer.maybeDeferred(lambda jids=jids: jids) for jids in found],
                                consumeErrors=True)
        return d.addCallbacks(lambda read: refuse(stanza, *read),
                              lambda failure: unreadable(stanza, failure))

    def unreadable(stanza, failure):
        api.log.failure("cannot read a block list for {stanza!r}", failure, stanza=stanza)
        return api.bounce(stanza, "internal-server-error")

    def refuse(stanza, sender_blocked, recipient_blocked):
        """Stop ``stanza`` if the sender blocked the recipient or the
        recipient blocked the sender (§3.3); say whether it was stopped."""
        if sender_blocked and _matches(sender_blocked, stanza.recipient):
            if stanza.origin is not None and not _is_response(stanza):
                api.reply(stanza, _blocked_error(stanza.element))
            return True
        if recipient_blocked and _matches(recipient_blocked, stanza.sender):
            if stanza.kind != "presence" and stanza.type != "groupchat":
                api.bounce(stanza, "service-unavailable")
            return True
        return False

    def own(stanza):
        if stanza.origin is None or stanza.recipient != stanza.sender.bare:
            raise StanzaError("forbidden", "a block list belongs to its own account")
        return stanza.recipient

    def blocklist(stanza):
        user = own(stanza)
        if stanza.payload.name != "blocklist":
            raise StanzaError("bad-request", "expected <blocklist/>")
        api.sessions.set_flag(stanza.origin, FLAG)
        d = defer.maybeDeferred(lists.get, user)
        return d.addCallback(lambda jids: _command("blocklist", sorted(jids)))

    def command(stanza):
        user = own(stanza)
        name = stanza.payload.name
        if name not in ("block", "unblock"):
            raise StanzaError("bad-request", "expected <block/> or <unblock/>")
        items = _items(stanza.payload)
        if name == "block":
            return block(user, items)
        return unblock(user, list(items)) if items else unblock_all(user)

    def store(user, jids, value):
        """Set every JID of ``jids`` to ``value`` (None: delete) in one write."""
        return lists.store.set_many(user.local, user.domain, dict.fromkeys(jids, value))

    def block(user, items):
        if not items:
            raise StanzaError("bad-request", "<block/> needs at least one item")
        jids = list(items)

        def done(_):
            lists.changed(user, lambda blocked: blocked.update(jids))
            push(user, "block", jids)
            announce(user, jids, "send_unavailable")
            return lists.blocked(user, items).addCallback(lambda _: None)

        return store(user, jids, "").addCallback(done)

    def unblock(user, jids):
        def done(_):
            lists.changed(user, lambda blocked: blocked.difference_update(jids))
            push(user, "unblock", jids)
            announce(user, jids, "send_current")

        return store(user, jids, None).addCallback(done)

    def unblock_all(user):
        def delete(previous):
            previous = set(previous)
            d = lists.store.delete_all(user.local, user.domain)
            return d.addCallback(lambda _: done(previous))

        def done(previous):
            lists.changed(user, set.clear)
            push(user, "unblock", ())
            announce(user, previous, "send_current")

        return defer.maybeDeferred(lists.get, user).addCallback(delete)

    def push(user, name, jids):
        """Send the change to each resource that requested the block list."""
        for session in api.sessions.resources(user):
            if FLAG in session.flags:
                iq = make_stanza("iq", to=session.jid.full, type_="set", id_=api.next_id())
                iq.addChild(_command(name, jids))
                session.send(iq)

    def announce(user, jids, action):
        """Have the ``presence`` service's ``action`` (``send_unavailable``
        or ``send_current``) send presence from each available resource of
        ``user`` to its contacts that match ``jids`` and may see it."""
        presence = api.service("presence")
        if presence is None or not jids or not presence.available(user):
            return
        send, changed = getattr(presence, action), set(jids)

        def send_to_contacts(roster):
            _, items = roster
            for item in items:
                if not _matches(changed, JID.parse(item.jid)):
                    continue
                if item.subscription in SUBSCRIBERS:
                    send(user, item.jid)
                if action == "send_current" and item.subscription in SUBSCRIBED_TO:
                    presence.probe(user, item.jid)  # what the block kept from the user

        d = api.service("roster").roster(user)
        d.addCallback(send_to_contacts).addErrback(lambda failure: api.log.failure(
            "cannot send presence after a block list change of {user}", failure, user=user))

    api.disco_feature(NS_BLOCKING)
    api.handle_iq("get", BARE, NS_BLOCKING, blocklist)
    api.handle_iq("set", BARE, NS_BLOCKING, command)
    for event in pre_events():
        api.hook(event, check, priority=PRIORITY)
    api.hook(SESSION_BOUND, lists.bound)
    api.hook(ACCOUNT_OFFLINE, lists.offline)
    api.hook(CHANGED, lists.changed_elsewhere)


def _same_account_or_own_server(sender, recipient):
    """Whether the stanza stays within one account, or goes between an
    account and its own server: never blocked."""
    return sender.domain == recipient.domain and (
        sender.local == recipient.local or sender.local is None or recipient.local is None)


def _outbound_checked(stanza):
    """Whether the sender's block list applies: to what its client sends,
    and to the available presence the server broadcasts on its behalf."""
    return stanza.origin is not None or (stanza.kind == "presence" and stanza.type is None)


def _matches(blocked, jid):
    """Whether ``jid`` is covered by an item of ``blocked`` (§6)."""
    return jid.full in blocked or jid.bare_str in blocked or jid.domain in blocked


def _sender(element):
    """The ``from`` of a stored stanza, as a JID (the server's own domain
    for none or a malformed one: never blocked)."""
    try:
        return JID.parse(element.getAttribute("from") or "")
    except InvalidJID:
        return JID(None, "", None)


def _is_response(stanza):
    return stanza.type == "error" or (stanza.kind == "iq" and stanza.type == "result")


def _blocked_error(element):
    """The error for a stanza to a blocked JID (§3.3)."""
    reply = error_reply(element, "not-acceptable", type_="cancel")
    reply.error.addElement((NS_BLOCKING_ERRORS, "blocked"))
    return reply


def _items(command):
    """A command's items by normalised JID, without repeats (the first
    item of a JID)."""
    items = {}
    for item in command.elements(NS_BLOCKING, "item"):
        try:
            items.setdefault(JID.parse(item.getAttribute("jid", "")).full, item)
        except InvalidJID as e:
            raise StanzaError("jid-malformed", str(e))
    return items


def _command(name, jids):
    element = domish.Element((NS_BLOCKING, name))
    for jid in jids:
        element.addElement("item")["jid"] = jid
    return element

