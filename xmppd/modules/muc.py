"""Multi-user chat (XEP-0045 v1.34) at ``conference.HOST`` (``muc.subdomain``),
a service domain of each host it is enabled on (the delivery table's), so
it is inside the host's closed domain.

- Entering (§7.2): presence to ``room@service/nick``.  A room that does
  not exist is created by whoever may create rooms (``muc.create_rooms``:
  ``local`` accounts of the host, default; ``admins``; ``anyone``), locked
  until its owner submits the configuration or accepts the instant room
  (§10.1; status 201); others get ``item-not-found`` meanwhile.  Refusals:
  a ban ``forbidden``, a members-only room ``registration-required``, a
  wrong password ``not-authorized``, a nick another account holds
  ``conflict``, a full room ``service-unavailable``, no nick
  ``jid-malformed`` (§7.2.4-§7.2.10).  The newcomer gets the occupants'
  presence, then its own (110; 100 in a non-anonymous room, 170 with
  logging, 201 when created), the history (§7.2.14: ``maxstanzas``,
  ``maxchars``, ``seconds``, ``since``; ``muc.history`` messages by
  default) from the room's archive, then the subject (§7.2.15).  Several
  sessions of one account may share a nick.
- Occupants (§7): nick changes (303, §7.6), presence updates, leaving
  (§7.14; a temporary room goes with its last occupant), groupchat
  messages (§7.4; visitors of a moderated room are ``forbidden``, a
  non-occupant ``not-acceptable``), private messages (§7.5, by
  ``muc#roomconfig_allowpm``), the subject (§8.1, moderators or anyone by
  ``muc#roomconfig_changesubject``), mediated invitations and declines
  (§7.8; an invitation to a members-only room by an admin, or by an
  occupant where ``allowinvites`` is on, makes the invitee a member),
  voice requests (§7.13) and their approval by a moderator (§8.6).  An
  error bounced by an occupant's session that says it is gone (XEP-0410
  §4's conditions) removes that session (333).  When the server stops,
  every occupant gets its unavailable presence with 332.
- Moderators and admins (§8, §9): kick (307), voice, moderator; ban (301),
  membership, admin, owner (§10.3-§10.7), each checked by
  :mod:`xmppd.muc.roles`; lists of affiliations and roles.  Owners
  (§10): the configuration form (:mod:`xmppd.muc.config`; changes
  announced with 104, 170/171, 172/173; non-members leave a room made
  members-only with 322), destruction with an alternate venue (§10.9).
- Stanza ids (XEP-0359, ``muc#stable_id``): each groupchat message gets
  ``<stanza-id by='room@service'/>``, the id of its row in the room's
  archive; ids a client put there, and its ``muc#user`` ``<x/>`` (which
  could name another's real JID, XEP-0313 §8.4), are removed, from
  private messages too.  Occupant ids (XEP-0421) on
  presence and messages.  Moderation (XEP-0425, ``urn:xmpp:message-moderate:0``
  and ``:1``): a moderator retracts a message by its stanza id; the room
  announces it in both forms, archives the announcement and keeps a
  tombstone of the message in its place (XEP-0425 §5).
- The room's archive (XEP-0313 §5) answers queries to the room's JID from
  anyone who could enter it (members of a members-only room, never
  outcasts) while ``muc#roomconfig_enablelogging`` is on; otherwise the
  room keeps only its last ``muc.max_history`` messages, for the history.
  Each message keeps its sender's real bare JID (``<x
  xmlns='…muc#user'><item jid/></x>``, §5.1.2), shown in results and in
  the history to whom may see real JIDs at the time: everyone in a
  non-anonymous room, else owners, admins and moderators.
- Self-ping (XEP-0410): a ping to one's own occupant JID is answered by
  the service, ``not-acceptable`` for who is not that occupant.
- Discovery (§6): the service (``conference/text``) lists its public,
  unlocked rooms; a room's disco#info has its features and ``muc#roominfo``;
  its disco#items the occupants, to occupants.  The host lists the service.
- Room avatars (XEP-0054 on the room, XEP-0486): owners set the room's
  vCard; anyone reads it; its photo's hash is in disco#info.
- Limits: ``max_rooms`` per service, ``max_rooms_per_user`` owned by one
  account, ``max_occupants`` (the highest ``maxusers``), a message rate
  per occupant (``message_rate`` per second, bursts of ``message_burst``:
  beyond it ``resource-constraint``).

Rooms, their configuration, affiliations and subject are in the ``rooms``
store ``muc``; their messages in the ``room_archive`` store ``muc``.
Occupants are not kept: clients enter again after a restart.
"""

import base64
import hashlib
from datetime import datetime, timezone

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import archive as queries
from xmppd.archive import (NS_DELAY, NS_FORWARD, NS_MAM, NS_SID, ArchiveIds, by_payload,
                           parse_time)
from xmppd.core.events import BARE, FULL, HOST, SERVER_STOPPING, message_event, presence_event
from xmppd.core.serial import SerialJobs
from xmppd.core.stanzas import (NS_STANZAS, StanzaError, addressed_copy, child, copy_element,
                                 error_reply, make_stanza, xep0082_stamp)
from xmppd.core.xmlstream import NS_CLIENT, parse_stanza
from xmppd.jid import JID, InvalidJID
from xmppd.modules.disco import NS_INFO, NS_ITEMS, info_element, items_element
from xmppd.muc import (
    AFFILIATION_REMOVED, BANNED, CONFIG_CHANGED, CREATED, KICKED, LOGGING_OFF, LOGGING_ON,
    MEMBERS_ONLY_REMOVED, NEW_NICK, NON_ANONYMOUS, NOW_NON_ANONYMOUS, NOW_SEMI_ANONYMOUS,
    NS_ADMIN, NS_CONFERENCE, NS_MUC, NS_OCCUPANT_ID, NS_OWNER, NS_REQUEST, NS_SELF_PING,
    NS_STABLE_ID, NS_USER, NS_VCARD, SELF, SHUTDOWN, TECHNICAL_REMOVAL)
from xmppd.muc.config import (DEFAULTS, config_form, features, flag, info_form, read_form,
                              value)
from xmppd.muc.roles import (AFFILIATIONS, ROLES, check_affiliation_change, check_role_change,
                             role_rank)
from xmppd.muc.room import Occupant, Room
from xmppd.options import (Option, Options, choice, dns_label, integer, positive_number,
                           strings)
from xmppd.storage import StorageError, TooManyRooms, UnknownArchiveId
from xmppd.storage.batches import BatchedWrites
from xmppd.storage.kinds import ArchiveRecord
from xmppd.storage.kinds import Room as StoredRoom
from xmppd.wokkel_compat import data_form

NS_PING = "urn:xmpp:ping"
NS_FASTEN = "urn:xmpp:fasten:0"
NS_MODERATE_0 = "urn:xmpp:message-moderate:0"
NS_MODERATE_1 = "urn:xmpp:message-moderate:1"
NS_RETRACT_0 = "urn:xmpp:message-retract:0"
NS_RETRACT_1 = "urn:xmpp:message-retract:1"
NS_HINTS = "urn:xmpp:hints"
GONE = ("gone", "item-not-found", "recipient-unavailable", "redirect", "remote-server-not-found",
        "remote-server-timeout", "service-unavailable")
SERVICE_FEATURES = (NS_INFO, NS_ITEMS, NS_MUC)
ROOM_FEATURES = (NS_INFO, NS_ITEMS, NS_MUC, NS_STABLE_ID, NS_SELF_PING, NS_SID, NS_OCCUPANT_ID,
                 NS_MODERATE_0, NS_MODERATE_1, NS_VCARD, NS_CONFERENCE)
MAX_VCARD = 65536  # bytes of a room's vCard
VCARD = "x-vcard"  # the config key of the room's vCard


OPTIONS = Options(  # [muc]
    subdomain=Option("conference", dns_label),
    create_rooms=Option("local", choice(("local", "admins", "anyone"))),
    admins=Option((), strings),  # bare JIDs: they create rooms and own every room
    max_rooms=Option(10000, integer(1)),  # per service
    max_rooms_per_user=Option(100, integer(1)),  # rooms one account owns
    max_occupants=Option(1000, integer(1)),  # per room: the highest maxusers
    history=Option(20, integer(0)),  # messages of history on entering, unless asked
    max_history=Option(100, integer(0)),
    message_rate=Option(5.0, positive_number),  # groupchat messages per second per occupant
    message_burst=Option(20, integer(1)),
    page=Option(50, integer(1)),  # archive queries (XEP-0313)
    max_page=Option(250, integer(1)),
)


def _room_jid(jid):
    """The room of ``jid``; ``jid-malformed`` for the service's own JID."""
    if jid.local is None:
        raise StanzaError("jid-malformed", "a room JID has a localpart")
    return jid.bare


def _gone(element):
    """Whether an error bounced by an occupant's session says the session
    is gone (the conditions XEP-0410 §4 lists), rather than refusing one
    stanza."""
    error = child(element, NS_CLIENT, "error")
    return error is None or any(node.uri == NS_STANZAS and node.name in GONE
                                for node in error.elements())


def _x(element, uri):
    return child(element, uri, "x")


def _forwarded(result):
    """The archived message inside a query result (XEP-0313 §4.2)."""
    forwarded = child(child(result, NS_MAM, "result"), NS_FORWARD, "forwarded")
    return child(forwarded, NS_CLIENT, "message")


def _user_x(node):
    """Whether ``node`` is a ``muc#user`` ``<x/>`` (the room's to write:
    it may name a sender's real JID)."""
    return node.uri == NS_USER and node.name == "x"


def _forged(node):
    """Whether a child of an occupant's message is the room's to write:
    stanza ids, occupant ids, the ``muc#user`` ``<x/>``."""
    return (node.uri == NS_SID and node.name == "stanza-id") or node.uri == NS_OCCUPANT_ID \
        or _user_x(node)


def _without(message, test):
    """``message`` without its child elements for which ``test`` holds."""
    message.children = [node for node in message.children
                        if not (isinstance(node, domish.Element) and test(node))]
    return message


class MUC:
    """The rooms of every ``conference.HOST`` service."""

    def __init__(self, api, store, archive):
        self._api = api
        self._store = store
        self._archive = archive
        self.rooms = {}  # room bare JID (JID) -> Room, while in use
        self._jobs = SerialJobs()
        self._ids = ArchiveIds(api.clock)
        self._writes = BatchedWrites(archive.append_many, api.log, "room message(s)")
        self._trims = {}  # room JID -> messages since its last trim (no logging)
        self._unwritten = {}  # room JID -> the write of its newest message, until done
        archive.last_id().addCallbacks(self._ids.seen, lambda failure: api.log.failure(
            "cannot read the last room archive id", failure))

    def _options(self, service):
        return self._api.options_for(self._api.owner(service))

    # Rooms

    def room(self, jid):
        """The room ``jid``: a Room, None if there is none, or a Deferred of
        either while it is read from the store."""
        room = self.rooms.get(jid)
        if room is not None:
            return room
        return self._jobs.run(jid, self._load, jid)

    def _load(self, jid):
        room = self.rooms.get(jid)
        if room is not None:
            return room

        def loaded(stored):
            if stored is None or jid in self.rooms:
                return self.rooms.get(jid)
            room = self.rooms[jid] = Room(jid, stored.config, stored.affiliations,
                                          stored.subject, self._admins(jid.domain))
            return room

        return self._store.get_room(jid.domain, jid.local).addCallback(loaded)

    def _admins(self, service):
        return frozenset(self._options(service).admins)

    def _may_create(self, service, sender):
        policy = self._options(service).create_rooms
        if policy == "anyone":
            return True
        if policy == "admins":
            return sender.bare.full in self._options(service).admins
        return sender.domain == self._api.owner(service)

    @defer.inlineCallbacks
    def _create(self, jid, sender):
        """``(room, True)`` once room ``jid`` is created for ``sender``, its
        owner (locked, §10.1.1); ``(room, False)`` if someone else's entering
        created it meanwhile.  Run as a job of the room, after its loads."""
        if jid in self.rooms:
            return self.rooms[jid], False
        if not self._may_create(jid.domain, sender):
            raise StanzaError("not-allowed", "you may not create rooms here")
        options = self._options(jid.domain)
        owner = sender.bare.full
        if owner not in options.admins:
            owned = yield self._store.owned_rooms(jid.domain, owner)
            if len(owned) >= options.max_rooms_per_user:
                raise StanzaError("resource-constraint",
                                  f"you own {len(owned)} rooms, the most allowed")
        room = Room(jid, DEFAULTS, {owner: "owner"}, "", self._admins(jid.domain), locked=True)
        try:
            yield self._store.create_room(jid.domain, StoredRoom(
                jid.local, room.config, "", dict(room.affiliations)), options.max_rooms)
        except TooManyRooms:
            raise StanzaError("resource-constraint", "this service has too many rooms")
        self.rooms[jid] = room
        return room, True

    def _forget(self, room):
        """An empty room: a temporary one goes, a persistent one leaves memory."""
        if room.occupants or self.rooms.get(room.jid) is not room:
            return
        del self.rooms[room.jid]
        self._trims.pop(room.jid, None)
        if not flag(room.config, "persistentroom"):
            self._store.delete_room(room.jid.domain, room.name).addErrback(
                self._api.log.failure, "deleting the temporary room {room}", room=room.jid)

    def _save(self, d, what):
        return d.addErrback(lambda failure: self._api.log.failure(
            "storing {what} failed", failure, what=what))

    # Presence (§7.2, §7.6, §7.14)

    def presence(self, stanza):
        sender, recipient = stanza.sender, stanza.recipient
        if sender is None or sender.resource is None:
            return True
        type_ = stanza.type
        if type_ not in (None, "unavailable", "error"):
            return True
        jid = recipient.bare
        found = self.room(jid)
        if isinstance(found, defer.Deferred):
            return found.addCallback(lambda room: self._presence(room, stanza))
        return self._presence(found, stanza)

    def _presence(self, room, stanza):
        sender, nick, type_ = stanza.sender.full, stanza.recipient.resource, stanza.type
        occupant = room.sessions.get(sender) if room is not None else None
        if type_ == "error":
            if occupant is not None and _gone(stanza.element):
                self._leave(room, occupant, sender, codes=(TECHNICAL_REMOVAL,))
            return True
        if type_ == "unavailable":
            if occupant is not None:
                self._leave(room, occupant, sender, body=stanza.element)
            return True
        if occupant is not None:
            if occupant.nick == nick:
                occupant.sessions[sender] = stanza.element
                room.send_presence(self._api.route, occupant)
                return True
            return self._refusing(stanza, self._change_nick, room, occupant, nick)
        return self._refusing(stanza, self._enter, room, stanza)

    def _refusing(self, stanza, action, *args):
        """``action(*args)``, a refusal answered as a presence error with
        ``<x xmlns=muc/>`` (§7.2.4)."""
        def refuse(failure):
            failure.trap(StanzaError)
            self._api.reply(stanza, error_reply(stanza.element, failure.value))
            return True

        d = defer.maybeDeferred(action, *args)
        d.addCallbacks(lambda _: True, refuse)
        d.addErrback(self._failed, stanza)
        return True if d.called else d

    def _failed(self, failure, stanza):
        if failure.check(StorageError):
            self._api.log.error("storage unavailable for {stanza!r}: {error}",
                                stanza=stanza, error=failure.value)
        else:
            self._api.log.failure("group chat failed on {stanza!r}", failure, stanza=stanza)
        self._api.bounce(stanza, "internal-server-error")
        return True

    @defer.inlineCallbacks
    def _enter(self, room, stanza):
        sender, jid, nick = stanza.sender, stanza.recipient.bare, stanza.recipient.resource
        bare, codes = sender.bare.full, []
        if room is None:
            room, created = yield self._jobs.run(jid, self._create, jid, sender)
            if created:
                codes.append(CREATED)
        x = _x(stanza.element, NS_MUC)
        self._admit(room, bare, nick, x)
        history = yield self._history(room, x)
        # Checked again: the room may have changed while the history was read.
        if self.rooms.get(room.jid) is not room:  # destroyed meanwhile
            raise StanzaError("item-not-found", "no such room")
        occupant = self._admit(room, bare, nick, x)
        if occupant is None:
            occupant = room.occupants[nick] = Occupant(
                nick, bare, room.entry_role(bare), room.occupant_id(bare))
        occupant.sessions[sender.full] = stanza.element
        room.sessions[sender.full] = occupant
        if room.non_anonymous():
            codes.append(NON_ANONYMOUS)
        if flag(room.config, "enablelogging"):
            codes.append(LOGGING_ON)
        room.joined(occupant, sender.full, self._api.route, codes)
        for message in history:
            message["to"] = sender.full
            if not room.sees_jids(occupant):
                _without(message, _user_x)
            self._api.route(message)
        self._api.route(room.subject_message(sender.full))

    def _admit(self, room, bare, nick, x):
        """The occupant already holding ``nick`` for the account ``bare``
        (another session of it), or None; the refusal of §7.2.4-§7.2.10 if
        it may not enter."""
        affiliation = room.affiliation(bare)
        if room.locked and affiliation != "owner":
            raise StanzaError("item-not-found", "the room is being set up")
        if affiliation == "outcast":
            raise StanzaError("forbidden", "you are banned from this room")
        if flag(room.config, "membersonly") and affiliation == "none":
            raise StanzaError("registration-required", "the room is for members only")
        if flag(room.config, "passwordprotectedroom") and affiliation != "owner":
            given = child(x, NS_MUC, "password") if x is not None else None
            if given is None or str(given) != value(room.config, "roomsecret"):
                raise StanzaError("not-authorized", "a password is needed")
        holder = room.occupants.get(nick)
        if holder is not None and holder.bare != bare:
            raise StanzaError("conflict", "the nick is in use")
        if (holder is None and affiliation not in ("admin", "owner")
                and len(room.occupants) >= int(value(room.config, "maxusers"))):
            raise StanzaError("service-unavailable", "the room is full")
        return holder

    def _change_nick(self, room, occupant, nick):
        """§7.6: unavailable from the old nick with 303, then available
        from the new one."""
        holder = room.occupants.get(nick)
        if holder is not None and holder is not occupant:
            raise StanzaError("conflict", "the nick is in use")
        room.send_presence(self._api.route, occupant, "unavailable", (NEW_NICK,),
                           {"nick": nick})
        del room.occupants[occupant.nick]
        occupant.nick = nick
        room.occupants[nick] = occupant
        room.send_presence(self._api.route, occupant)

    def _leave(self, room, occupant, jid, codes=(), item=None, body=None, extra=None):
        """Session ``jid`` of ``occupant`` leaves: the others see the
        occupant go once its last session did."""
        if len(occupant.sessions) > 1:
            del occupant.sessions[jid]
            room.sessions.pop(jid, None)
            element = room.presence(occupant, "unavailable", (*codes, SELF), item,
                                    show_jid=True, body=body, extra=extra)
            element["to"] = jid
            self._api.route(element)
            return
        if body is not None:
            occupant.sessions[jid] = body
        occupant.role = "none"
        room.send_presence(self._api.route, occupant, "unavailable", codes, item, extra)
        self._remove(room, occupant)

    def _remove(self, room, occupant):
        for jid in occupant.sessions:
            room.sessions.pop(jid, None)
        room.occupants.pop(occupant.nick, None)
        self._forget(room)

    def _history(self, room, x):
        """Deferred: the messages of history a newcomer asked for (§7.2.14)."""
        options = self._options(room.jid.domain)
        limit, start, max_chars = options.history, None, None
        spec = child(x, NS_MUC, "history") if x is not None else None
        if spec is not None:
            try:
                if spec.hasAttribute("maxstanzas"):
                    limit = int(spec["maxstanzas"])
                if spec.hasAttribute("maxchars"):
                    max_chars = int(spec["maxchars"])
                if spec.hasAttribute("seconds"):
                    start = datetime.fromtimestamp(
                        self._api.clock.seconds() - int(spec["seconds"]), timezone.utc)
            except ValueError:
                raise StanzaError("bad-request", "history limits are numbers")
            if spec.hasAttribute("since"):
                since = parse_time(spec["since"], "since")
                start = since if start is None else max(start, since)
        limit = max(0, min(limit, options.max_history))
        if limit == 0 or max_chars == 0:
            return defer.succeed([])
        d = self._after_writes(room).addCallback(lambda _: self._archive.find(
            room.name, room.jid.domain, start=start, limit=limit, before=""))
        return d.addCallback(self._history_messages, room, max_chars)

    def _history_messages(self, page, room, max_chars):
        messages = []
        for item in page.items:
            message = parse_stanza(item.xml)
            delay = message.addElement((NS_DELAY, "delay"))
            delay["from"], delay["stamp"] = room.jid.full, xep0082_stamp(item.timestamp)
            messages.append(message)
        if max_chars is not None:  # the newest that fit, each serialised once
            sizes = [len(m.toXml()) for m in messages]
            total = sum(sizes)
            while messages and total > max_chars:
                total -= sizes.pop(0)
                messages.pop(0)
        return messages

    # Messages (§7.4, §7.5, §7.8, §7.13, §8.1)

    def message(self, stanza):
        sender = stanza.sender
        if sender is None:
            return True
        found = self.room(stanza.recipient.bare)
        if isinstance(found, defer.Deferred):
            return found.addCallback(lambda room: self._message(room, stanza))
        return self._message(found, stanza)

    def _message(self, room, stanza):
        if room is None:
            if stanza.type != "error":
                self._api.bounce(stanza, "item-not-found", "no such room")
            return True
        sender, type_ = stanza.sender.full, stanza.type
        occupant = room.sessions.get(sender)
        if type_ == "error":
            if occupant is not None and _gone(stanza.element):
                self._leave(room, occupant, sender, codes=(TECHNICAL_REMOVAL,))
            return True
        try:
            if stanza.recipient.resource is not None:
                self._private(room, occupant, stanza)
            elif type_ == "groupchat":
                self._groupchat(room, occupant, stanza)
            else:
                return self._refusing(stanza, self._mediated, room, occupant, stanza)
        except StanzaError as e:
            self._api.reply(stanza, error_reply(stanza.element, e))
        return True

    def _groupchat(self, room, occupant, stanza):
        if occupant is None:
            raise StanzaError("not-acceptable", "only occupants send to the room")
        element = stanza.element
        subject = child(element, NS_CLIENT, "subject")
        if subject is not None and child(element, NS_CLIENT, "body") is None:
            if not (occupant.role == "moderator" or (
                    flag(room.config, "changesubject") and occupant.role != "visitor")):
                raise StanzaError("forbidden", "you may not change the subject")
        elif occupant.role == "visitor":
            raise StanzaError("forbidden", "visitors have no voice here")
        self._throttle(room, occupant)
        message = make_stanza("message", from_=room.occupant_jid(occupant.nick),
                              type_="groupchat", id_=element.getAttribute("id"))
        for name in ("xml:lang",):
            if element.hasAttribute(name):
                message[name] = element[name]
        for node in element.elements():
            if not _forged(node):
                message.addChild(node)
        message.addElement((NS_OCCUPANT_ID, "occupant-id"))["id"] = occupant.occupant_id
        if subject is not None and child(element, NS_CLIENT, "body") is None:
            room.subject = message.toXml()
            self._save(self._store.set_subject(room.jid.domain, room.name, room.subject),
                       "a room's subject")
        self._archived(room, message, occupant.bare)
        room.broadcast(self._api.route, message)

    def _archived(self, room, message, sender=None):
        """Give ``message`` its stanza-id and write it to the room's archive
        (occupants get it at once; what reads the archive waits for the
        write, :meth:`_after_writes`), with the real bare JID of the
        occupant who wrote it (``sender``) for the readers who may see it
        (XEP-0313 §5.1.2)."""
        if not _archivable(message):
            return
        archive_id = self._ids.next()
        if sender is None:
            xml = message.toXml()
        else:
            x = message.addElement((NS_USER, "x"))
            x.addElement("item")["jid"] = sender
            xml = message.toXml()
            message.children.remove(x)
        mark = message.addElement((NS_SID, "stanza-id"))
        mark["by"], mark["id"] = room.jid.full, archive_id
        written = self._writes.add(ArchiveRecord(room.name, room.jid.domain, archive_id,
                                                 message["from"], message.getAttribute("id"),
                                                 "in", xml))
        self._unwritten[room.jid] = written
        written.addBoth(self._committed, room.jid, written)  # a failure is logged by the batch
        if not flag(room.config, "enablelogging"):
            count = self._trims.get(room.jid, 0) + 1
            keep = self._options(room.jid.domain).max_history
            if count >= max(keep, 10):  # now and then, not for every message
                count = 0
                self._save(self._archive.trim(room.name, room.jid.domain, keep),
                           "a room's history")
            self._trims[room.jid] = count

    def _committed(self, _, jid, written):
        if self._unwritten.get(jid) is written:
            del self._unwritten[jid]

    def _after_writes(self, room):
        """Deferred: fires once the room's messages sent so far are in its
        archive (history and queries read what occupants already got)."""
        done = defer.Deferred()
        written = self._unwritten.get(room.jid)
        if written is None:
            done.callback(None)
        else:
            written.addBoth(lambda result: (done.callback(None), result)[1])
        return done

    def _throttle(self, room, occupant):
        options = self._options(room.jid.domain)
        now = self._api.clock.seconds()
        tokens = options.message_burst if occupant.tokens is None else min(
            options.message_burst, occupant.tokens + (now - occupant.last) * options.message_rate)
        occupant.last = now
        if tokens < 1:
            occupant.tokens = tokens
            raise StanzaError("resource-constraint", "you are sending messages too fast")
        occupant.tokens = tokens - 1

    def _private(self, room, occupant, stanza):
        """§7.5: a message to an occupant, from the sender's occupant JID."""
        if stanza.type == "groupchat":
            raise StanzaError("bad-request", "groupchat goes to the room")
        if occupant is None:
            raise StanzaError("not-acceptable", "only occupants send private messages")
        allowed = value(room.config, "allowpm")
        if allowed == "none" or role_rank(occupant.role) < role_rank(
                {"anyone": "visitor", "participants": "participant"}.get(allowed, "moderator")):
            raise StanzaError("forbidden", "private messages are not allowed here")
        target = room.occupants.get(stanza.recipient.resource)
        if target is None:
            raise StanzaError("item-not-found", "no such occupant")
        message = copy_element(stanza.element)
        message["from"] = room.occupant_jid(occupant.nick)
        _without(message, _forged).addElement((NS_USER, "x"))
        for jid in target.sessions:
            self._api.route(addressed_copy(message, jid))

    def _mediated(self, room, occupant, stanza):
        """Invitations and declines (§7.8), voice requests and their
        approval (§7.13, §8.6), in a message to the room."""
        x = _x(stanza.element, NS_USER)
        if x is not None:
            for invite in x.elements(NS_USER, "invite"):
                return self._invite(room, occupant, stanza, invite)
            for decline in x.elements(NS_USER, "decline"):
                return self._decline(room, stanza, decline)
        form = _x(stanza.element, data_form.NS_X_DATA)
        if form is not None:
            return self._voice(room, occupant, form)
        raise StanzaError("bad-request", "a message to a room is groupchat")

    @defer.inlineCallbacks
    def _invite(self, room, occupant, stanza, invite):
        if occupant is None:
            raise StanzaError("not-acceptable", "only occupants invite")
        try:
            invitee = JID.parse(invite.getAttribute("to") or "")
        except InvalidJID:
            raise StanzaError("jid-malformed", "invite to whom?")
        affiliation = room.affiliation(occupant.bare)
        privileged = affiliation in ("admin", "owner")
        if flag(room.config, "membersonly"):
            if not (privileged or flag(room.config, "allowinvites")):
                raise StanzaError("forbidden", "you may not invite to this room")
            if room.affiliation(invitee.bare.full) == "none":
                yield self._set_affiliation(room, invitee.bare.full, "member", None, None)
        message = make_stanza("message", to=invitee.full, from_=room.jid.full,
                              id_=stanza.element.getAttribute("id"))
        x = message.addElement((NS_USER, "x"))
        sent = x.addElement("invite")
        sent["from"] = (stanza.sender.full if room.non_anonymous() or privileged
                        else room.occupant_jid(occupant.nick))
        reason = child(invite, NS_USER, "reason")
        if reason is not None:
            sent.addElement("reason", content=str(reason))
        if flag(room.config, "passwordprotectedroom"):
            x.addElement("password", content=value(room.config, "roomsecret"))
        self._api.route(message)

    def _decline(self, room, stanza, decline):
        try:
            inviter = JID.parse(decline.getAttribute("to") or "")
        except InvalidJID:
            raise StanzaError("jid-malformed", "decline to whom?")
        message = make_stanza("message", to=inviter.full, from_=room.jid.full)
        sent = message.addElement((NS_USER, "x")).addElement("decline")
        sent["from"] = stanza.sender.bare.full
        reason = child(decline, NS_USER, "reason")
        if reason is not None:
            sent.addElement("reason", content=str(reason))
        self._api.route(message)

    def _voice(self, room, occupant, x):
        if occupant is None:
            raise StanzaError("not-acceptable", "only occupants ask for voice")
        try:
            form = data_form.Form.fromElement(x)
        except Exception:
            raise StanzaError("bad-request", "a malformed data form")
        fields = {var: str(field.value) for var, field in form.fields.items()}
        if NS_REQUEST not in (form.formNamespace, fields.get("FORM_TYPE")):
            # A FORM_TYPE field that does not say it is hidden is one all the same.
            raise StanzaError("bad-request", "a message to a room is groupchat")
        if occupant.role == "moderator" and "muc#request_allow" in fields:
            target = room.occupants.get(fields.get("muc#roomnick", ""))
            if fields["muc#request_allow"] in ("1", "true") and target is not None \
                    and target.role == "visitor":
                self._set_role(room, occupant, target, "participant", None)
            return
        if occupant.role != "visitor":
            return
        request = data_form.Form("form", title="Voice request", formNamespace=NS_REQUEST)
        request.addField(data_form.Field("list-single", var="muc#role", value="participant"))
        request.addField(data_form.Field("jid-single", var="muc#jid", value=occupant.jid))
        request.addField(data_form.Field("text-single", var="muc#roomnick",
                                         value=occupant.nick))
        request.addField(data_form.Field("boolean", var="muc#request_allow", value=False,
                                         label="Grant voice?"))
        for moderator in room.occupants.values():
            if moderator.role == "moderator":
                for jid in moderator.sessions:
                    message = make_stanza("message", to=jid, from_=room.jid.full)
                    message.addChild(request.toElement())
                    self._api.route(message)

    # Moderation (§8, §9, §10; XEP-0425)

    def _requester(self, room, stanza):
        """The occupant (or None) and affiliation of an iq's sender."""
        return room.sessions.get(stanza.sender.full), room.affiliation(stanza.sender.bare.full)

    def _set_role(self, room, actor, target, role, reason):
        actor_nick = actor.nick if actor is not None else None
        if role == "none":
            room.send_presence(self._api.route, target, "unavailable", (KICKED,),
                               {"actor": actor_nick, "reason": reason})
            self._remove(room, target)
            return
        target.role = role
        room.send_presence(self._api.route, target, item={"reason": reason})

    @defer.inlineCallbacks
    def _set_affiliation(self, room, bare, affiliation, actor, reason):
        """Store and apply an affiliation (§9, §10): occupants of that
        account are updated, banned (301) or, in a members-only room,
        removed (321)."""
        yield self._store.set_affiliation(room.jid.domain, room.name, bare,
                                          None if affiliation == "none" else affiliation)
        if affiliation == "none":
            room.affiliations.pop(bare, None)
        else:
            room.affiliations[bare] = affiliation
        for occupant in [o for o in room.occupants.values() if o.bare == bare]:
            item = {"actor": actor.nick if actor is not None else None, "reason": reason}
            if affiliation == "outcast":
                room.send_presence(self._api.route, occupant, "unavailable", (BANNED,), item)
                self._remove(room, occupant)
            elif affiliation == "none" and flag(room.config, "membersonly"):
                room.send_presence(self._api.route, occupant, "unavailable",
                                   (AFFILIATION_REMOVED,), item)
                self._remove(room, occupant)
            else:
                occupant.role = room.entry_role(bare)
                room.send_presence(self._api.route, occupant, item=item)

    def admin_get(self, stanza):
        """Lists of an affiliation or a role (§9.5, §8.5)."""
        return self._in_room(stanza, self._admin_get)

    def _admin_get(self, room, stanza):
        occupant, affiliation = self._requester(room, stanza)
        item = child(stanza.payload, NS_ADMIN, "item")
        if item is None:
            raise StanzaError("bad-request", "which list?")
        answer = domish.Element((NS_ADMIN, "query"))
        wanted = item.getAttribute("affiliation")
        if wanted is not None:
            if wanted not in AFFILIATIONS or wanted == "none":
                raise StanzaError("bad-request", f"no list of {wanted!r}")
            if affiliation not in ("admin", "owner") and not (
                    wanted == "member" and affiliation == "member"):
                raise StanzaError("forbidden", "only admins and owners see this list")
            for bare, held in sorted(room.affiliations.items()):
                if held == wanted:
                    entry = answer.addElement("item")
                    entry["affiliation"], entry["jid"] = held, bare
            return answer
        wanted = item.getAttribute("role")
        if wanted not in ROLES or wanted == "none":
            raise StanzaError("bad-request", "an affiliation or a role")
        if occupant is None or occupant.role != "moderator":
            raise StanzaError("forbidden", "only moderators see this list")
        for nick, other in sorted(room.occupants.items()):
            if other.role == wanted:
                entry = answer.addElement("item")
                entry["role"], entry["nick"] = other.role, nick
                entry["affiliation"], entry["jid"] = room.affiliation(other.bare), other.jid
        return answer

    def admin_set(self, stanza):
        return self._in_room(stanza, self._admin_set)

    @defer.inlineCallbacks
    def _admin_set(self, room, stanza):
        """Role and affiliation changes (§8, §9, §10): every item is
        checked before any is made."""
        occupant, affiliation = self._requester(room, stanza)
        role = occupant.role if occupant is not None else "none"
        changes = []
        owners = room.owners()
        for item in stanza.payload.elements(NS_ADMIN, "item"):
            reason = child(item, NS_ADMIN, "reason")
            reason = str(reason) if reason is not None else None
            if item.hasAttribute("role"):
                target = room.occupants.get(item.getAttribute("nick", ""))
                if target is None:
                    raise StanzaError("item-not-found", "no such occupant")
                check_role_change(affiliation, role, room.affiliation(target.bare),
                                  target.role, item["role"])
                changes.append(("role", target, item["role"], reason))
            elif item.hasAttribute("affiliation"):
                if item.hasAttribute("jid"):
                    try:
                        bare = JID.parse(item["jid"]).bare.full
                    except InvalidJID:
                        raise StanzaError("jid-malformed", "not a JID")
                else:
                    target = room.occupants.get(item.getAttribute("nick", ""))
                    if target is None:
                        raise StanzaError("item-not-found", "no such occupant")
                    bare = target.bare
                check_affiliation_change(affiliation, room.affiliation(bare),
                                         item["affiliation"], owners)
                if room.affiliation(bare) == "owner" and item["affiliation"] != "owner":
                    owners -= 1
                changes.append(("affiliation", bare, item["affiliation"], reason))
            else:
                raise StanzaError("bad-request", "an item needs a role or an affiliation")
        if not changes:
            raise StanzaError("bad-request", "no items")
        for kind, target, new, reason in changes:
            if kind == "role":
                if room.occupants.get(target.nick) is target:
                    self._set_role(room, occupant, target, new, reason)
            else:
                yield self._set_affiliation(room, target, new, occupant, reason)

    def owner_get(self, stanza):
        return self._in_room(stanza, self._owner_get)

    def _owner_get(self, room, stanza):
        if self._requester(room, stanza)[1] != "owner":
            raise StanzaError("forbidden", "only owners configure the room")
        answer = domish.Element((NS_OWNER, "query"))
        answer.addChild(config_form(room.config))
        return answer

    def owner_set(self, stanza):
        return self._in_room(stanza, self._owner_set)

    @defer.inlineCallbacks
    def _owner_set(self, room, stanza):
        if self._requester(room, stanza)[1] != "owner":
            raise StanzaError("forbidden", "only owners configure or destroy the room")
        destroy = child(stanza.payload, NS_OWNER, "destroy")
        if destroy is not None:
            yield self._destroy(room, destroy)
            return
        x = _x(stanza.payload, data_form.NS_X_DATA)
        if x is None:
            raise StanzaError("bad-request", "a configuration form or destroy")
        if x.getAttribute("type") == "cancel":
            if room.locked:  # the initial configuration cancelled (§10.1.3)
                yield self._destroy(room, None)
            return
        options = self._options(room.jid.domain)
        before = dict(room.config)
        config = {**room.config, **read_form(x, options.max_occupants)}
        if flag(config, "passwordprotectedroom") and not value(config, "roomsecret"):
            raise StanzaError("not-acceptable", "a password-protected room needs a password")
        yield self._store.configure_room(room.jid.domain, room.name, config)
        room.config = config
        room.locked = False
        self._announce_config(room, before)

    def _announce_config(self, room, before):
        """§10.2.1: status codes of the changes; members-only removes
        non-members (322); moderation gives and takes voice."""
        codes = []
        if before != room.config:
            codes.append(CONFIG_CHANGED)
        if flag(before, "enablelogging") != flag(room.config, "enablelogging"):
            codes.append(LOGGING_ON if flag(room.config, "enablelogging") else LOGGING_OFF)
        if value(before, "whois") != value(room.config, "whois"):
            codes.append(NOW_NON_ANONYMOUS if room.non_anonymous() else NOW_SEMI_ANONYMOUS)
        if codes and room.occupants:
            room.broadcast(self._api.route, room.status_message(codes))
        if flag(room.config, "membersonly") and not flag(before, "membersonly"):
            for occupant in list(room.occupants.values()):
                if room.affiliation(occupant.bare) == "none":
                    room.send_presence(self._api.route, occupant, "unavailable",
                                       (MEMBERS_ONLY_REMOVED,))
                    self._remove(room, occupant)
        if flag(room.config, "moderatedroom") != flag(before, "moderatedroom"):
            for occupant in room.occupants.values():
                role = room.entry_role(occupant.bare)
                if occupant.role != "moderator" and role != occupant.role:
                    occupant.role = role
                    room.send_presence(self._api.route, occupant)
        if not flag(room.config, "persistentroom") and not room.occupants:
            self._forget(room)

    @defer.inlineCallbacks
    def _destroy(self, room, destroy):
        """§10.9: every occupant leaves with the alternate venue, if any."""
        extra = None
        if destroy is not None:
            extra = domish.Element((NS_USER, "destroy"))
            if destroy.hasAttribute("jid"):
                extra["jid"] = destroy["jid"]
            for name in ("reason", "password"):
                node = child(destroy, NS_OWNER, name)
                if node is not None:
                    extra.addElement(name, content=str(node))
        self.rooms.pop(room.jid, None)
        for occupant in list(room.occupants.values()):
            occupant.role = "none"
            room.send_presence(self._api.route, occupant, "unavailable", (),
                               {"affiliation": "none"}, extra)
        room.occupants.clear()
        room.sessions.clear()
        yield self._store.delete_room(room.jid.domain, room.name)

    def moderate(self, stanza):
        """XEP-0425: a moderator retracts a message (``:1``, or ``:0``
        inside a XEP-0422 ``<apply-to/>``)."""
        return self._in_room(stanza, self._moderate)

    @defer.inlineCallbacks
    def _moderate(self, room, stanza):
        payload = stanza.payload
        if payload.uri == NS_FASTEN:
            request = child(payload, NS_MODERATE_0, "moderate")
            target = payload.getAttribute("id")
        else:
            request, target = payload, payload.getAttribute("id")
        if request is None or not target:
            raise StanzaError("bad-request", "moderate which message?")
        occupant = room.sessions.get(stanza.sender.full)
        if occupant is None or occupant.role != "moderator":
            raise StanzaError("forbidden", "only moderators retract messages")
        yield self._after_writes(room)
        try:
            page = yield self._archive.find(room.name, room.jid.domain, ids=[target], limit=1)
        except UnknownArchiveId:
            raise StanzaError("item-not-found", "no such message in the room")
        if not page.items:
            raise StanzaError("item-not-found", "no such message in the room")
        reason = child(request, request.uri, "reason")
        reason = str(reason) if reason is not None else None
        by = room.occupant_jid(occupant.nick)
        message = make_stanza("message", from_=room.jid.full, type_="groupchat",
                              id_=self._api.next_id())
        retract = message.addElement((NS_RETRACT_1, "retract"))
        retract["id"] = target
        moderated = retract.addElement((NS_MODERATE_1, "moderated"))
        moderated["by"] = by
        moderated.addElement((NS_OCCUPANT_ID, "occupant-id"))["id"] = occupant.occupant_id
        if reason is not None:
            retract.addElement("reason", content=reason)
        apply_to = message.addElement((NS_FASTEN, "apply-to"))
        apply_to["id"] = target
        moderated = apply_to.addElement((NS_MODERATE_0, "moderated"))
        moderated["by"] = by
        moderated.addElement((NS_RETRACT_0, "retract"))
        if reason is not None:
            moderated.addElement("reason", content=reason)
        message.addElement((NS_HINTS, "store"))
        yield self._archive.replace(room.name, room.jid.domain, target,
                                    _tombstone(page.items[0].xml, by, occupant, reason,
                                               self._api.clock.seconds()))
        self._archived(room, message)
        room.broadcast(self._api.route, message)

    def _in_room(self, stanza, action):
        """``action(room, stanza)`` for an existing room, else ``item-not-found``."""
        jid = _room_jid(stanza.recipient)

        def act(room):
            if room is None:
                raise StanzaError("item-not-found", "no such room")
            return action(room, stanza)

        found = self.room(jid)
        if isinstance(found, defer.Deferred):
            return found.addCallback(act)
        return act(found)

    # Self-ping (XEP-0410), the archive (XEP-0313 §5), the room's vCard

    def self_ping(self, stanza):
        def answer(room):
            occupant = room.sessions.get(stanza.sender.full) if room is not None else None
            if occupant is None or occupant.nick != stanza.recipient.resource:
                raise StanzaError("not-acceptable", "you are not this occupant")
            return None

        found = self.room(stanza.recipient.bare)
        if isinstance(found, defer.Deferred):
            return found.addCallback(answer)
        return answer(found)

    def _archive_reader(self, room, stanza):
        affiliation = room.affiliation(stanza.sender.bare.full)
        if not flag(room.config, "enablelogging"):
            raise StanzaError("service-unavailable", "this room keeps no archive")
        if affiliation == "outcast" or (flag(room.config, "membersonly")
                                        and affiliation == "none"):
            raise StanzaError("forbidden", "you may not read this room's archive")
        return room.jid

    def mam_query(self, stanza):
        def answer(room, stanza):
            options = self._options(room.jid.domain)
            reader = self._archive_reader(room, stanza)
            sees = room.reader_sees_jids(stanza.sender.bare.full)

            def send(result):
                if not sees:
                    _without(_forwarded(result), _user_x)
                self._api.route(result)

            return self._after_writes(room).addCallback(lambda _: queries.query(
                self._archive, reader, stanza, options.page, options.max_page, send))
        return self._in_room(stanza, answer)

    def mam_form(self, stanza):
        def answer(room, stanza):
            self._archive_reader(room, stanza)
            return queries.form_answer()
        return self._in_room(stanza, answer)

    def mam_metadata(self, stanza):
        def answer(room, stanza):
            reader = self._archive_reader(room, stanza)
            return self._after_writes(room).addCallback(
                lambda _: queries.metadata(self._archive, reader))
        return self._in_room(stanza, answer)

    def vcard_get(self, stanza):
        def answer(room, stanza):
            vcard = room.config.get(VCARD)
            return parse_stanza(vcard) if vcard else domish.Element((NS_VCARD, "vCard"))
        return self._in_room(stanza, answer)

    def vcard_set(self, stanza):
        return self._in_room(stanza, self._vcard_set)

    @defer.inlineCallbacks
    def _vcard_set(self, room, stanza):
        if self._requester(room, stanza)[1] != "owner":
            raise StanzaError("forbidden", "only owners set the room's vCard")
        xml = stanza.payload.toXml()
        if len(xml.encode()) > MAX_VCARD:
            raise StanzaError("not-acceptable", f"a vCard has at most {MAX_VCARD} bytes")
        config = {**room.config, VCARD: xml}
        yield self._store.configure_room(room.jid.domain, room.name, config)
        room.config = config
        update = make_stanza("presence", from_=room.jid.full)
        update.addElement(("vcard-temp:x:update", "x")).addElement(
            "photo", content=_avatar_hash(room) or "")
        room.broadcast(self._api.route, update)

    # Discovery (§6)

    def service_info(self, stanza):
        return info_element([("conference", "text", "Chatrooms")], sorted(SERVICE_FEATURES))

    @defer.inlineCallbacks
    def service_items(self, stanza):
        """§6.3: the public rooms that may be entered."""
        service = stanza.recipient.domain
        stored = yield self._store.rooms(service)
        items = []
        for room in stored:
            live = self.rooms.get(JID.parse(f"{room.name}@{service}"))
            if live is not None and live.locked:
                continue
            config = live.config if live is not None else room.config
            if flag(config, "publicroom"):
                items.append((f"{room.name}@{service}", value(config, "roomname") or room.name))
        return items_element(items)

    def room_info(self, stanza):
        def answer(room, stanza):
            if stanza.payload.getAttribute("node"):
                raise StanzaError("item-not-found", "no such node")
            found = features(room.config)
            if flag(room.config, "enablelogging"):
                found.append(NS_MAM)
            query = info_element(
                [("conference", "text", value(room.config, "roomname") or room.name)],
                sorted({*ROOM_FEATURES, *found}))
            subject = ""
            if room.subject:
                node = child(parse_stanza(room.subject), NS_CLIENT, "subject")
                subject = str(node) if node is not None else ""
            query.addChild(info_form(room.config, len(room.occupants), subject,
                                     _avatar_hash(room)))
            return query
        return self._in_room(stanza, answer)

    def room_items(self, stanza):
        def answer(room, stanza):
            if stanza.sender.full not in room.sessions:
                return items_element([])
            return items_element([(room.occupant_jid(nick), None)
                                  for nick in sorted(room.occupants)])
        return self._in_room(stanza, answer)

    # Start and stop

    def stopping(self, _):
        """The server stops: every occupant is told (332, §7.14) and the
        rooms are left as they are stored."""
        for room in list(self.rooms.values()):
            for occupant in list(room.occupants.values()):
                room.send_presence(self._api.route, occupant, "unavailable", (SHUTDOWN,))
            room.occupants.clear()
            room.sessions.clear()
        self.rooms.clear()

    @defer.inlineCallbacks
    def drop_temporary(self, service):
        """This process starts serving ``service``: temporary rooms left by a
        previous run go (no one is in them), and so do the rooms it held in
        memory when it served it before (a cluster node that lost the
        service to another and takes it back: their occupants have moved)."""
        for jid in [jid for jid in self.rooms if jid.domain == service]:
            del self.rooms[jid]
        try:
            for room in (yield self._store.rooms(service)):
                if not flag(room.config, "persistentroom"):
                    yield self._store.delete_room(service, room.name)
        except StorageError:
            self._api.log.failure("cannot drop the temporary rooms of {service}",
                                  service=service)


def _archivable(message):
    """Messages with a body, a subject, or a store hint; not chat states
    alone, nor what a no-store hint excludes (XEP-0334)."""
    kept = False
    for node in message.elements():
        if node.uri == NS_HINTS and node.name in ("no-store", "no-permanent-store"):
            return False
        kept = kept or (node.uri == NS_CLIENT and node.name in ("body", "subject")) or (
            node.uri == NS_HINTS and node.name == "store")
    return kept


def _tombstone(xml, by, moderator, reason, now):
    """What the archive keeps of a moderated message (XEP-0425 §5): its
    addresses, id and occupant id, and who retracted it when and why."""
    original = parse_stanza(xml)
    tombstone = make_stanza("message", from_=original.getAttribute("from"), type_="groupchat",
                            id_=original.getAttribute("id"))
    retracted = tombstone.addElement((NS_RETRACT_1, "retracted"))
    retracted["stamp"] = xep0082_stamp(now)
    moderated = retracted.addElement((NS_MODERATE_1, "moderated"))
    moderated["by"] = by
    moderated.addElement((NS_OCCUPANT_ID, "occupant-id"))["id"] = moderator.occupant_id
    if reason is not None:
        retracted.addElement("reason", content=reason)
    author = child(original, NS_OCCUPANT_ID, "occupant-id")
    if author is not None:
        tombstone.addChild(author)
    return tombstone.toXml()


def _avatar_hash(room):
    """The SHA-1 of the room's vCard photo (XEP-0153 §4), None without one."""
    vcard = room.config.get(VCARD)
    if not vcard:
        return None
    photo = child(parse_stanza(vcard), NS_VCARD, "PHOTO")
    binval = child(photo, NS_VCARD, "BINVAL") if photo is not None else None
    if binval is None:
        return None
    try:
        data = base64.b64decode("".join(str(binval).split()), validate=True)
    except ValueError:
        return None
    return hashlib.sha1(data).hexdigest()


def setup(api):
    muc = MUC(api, api.open_store("rooms"), api.open_store("room_archive"))
    api.hook(SERVER_STOPPING, muc.stopping)
    for _, domain in api.add_services(lambda host: api.options_for(host).subdomain,
                                      "Chatrooms", placed=muc.drop_temporary):
        api.hook(presence_event(FULL), muc.presence, host=domain)
        api.hook(presence_event(BARE), lambda stanza: _no_nick(api, stanza), host=domain)
        for target in (BARE, FULL):
            api.hook(message_event(target), muc.message, host=domain)
        api.handle_iq("get", HOST, NS_INFO, muc.service_info, host=domain)
        api.handle_iq("get", HOST, NS_ITEMS, muc.service_items, host=domain)
        api.handle_iq("get", BARE, NS_INFO, muc.room_info, host=domain)
        api.handle_iq("get", BARE, NS_ITEMS, muc.room_items, host=domain)
        api.handle_iq("get", BARE, NS_ADMIN, muc.admin_get, host=domain)
        api.handle_iq("set", BARE, NS_ADMIN, muc.admin_set, host=domain)
        api.handle_iq("get", BARE, NS_OWNER, muc.owner_get, host=domain)
        api.handle_iq("set", BARE, NS_OWNER, muc.owner_set, host=domain)
        api.handle_iq("set", BARE, NS_MODERATE_1, muc.moderate, host=domain)
        api.handle_iq("set", BARE, NS_FASTEN, muc.moderate, host=domain)
        api.handle_iq("get", BARE, NS_VCARD, muc.vcard_get, host=domain)
        api.handle_iq("set", BARE, NS_VCARD, muc.vcard_set, host=domain)
        api.handle_iq("get", BARE, NS_MAM, by_payload(
            {"query": muc.mam_form, "metadata": muc.mam_metadata}), host=domain)
        api.handle_iq("set", BARE, NS_MAM, by_payload({"query": muc.mam_query}), host=domain)
        api.handle_iq("get", FULL, NS_PING, muc.self_ping, host=domain)


def _no_nick(api, stanza):
    """Presence to the room's bare JID: no nick (§7.2.1)."""
    if stanza.type is None:
        api.reply(stanza, error_reply(stanza.element, "jid-malformed", "a nick is needed"))
    return True
