"""A room in memory (XEP-0045): its configuration, affiliations, subject
and occupants, and the stanzas occupants are sent.

An occupant is a nick with its real bare JID and one or more sessions
(full JIDs) that entered under it (§7.2: multi-session nicks of one
account).  Presence from the room carries ``<x muc#user><item
affiliation role jid?/>`` and status codes (§15.6.2); the real JID only
to moderators, or to everyone in a non-anonymous room (§5.1, §7.2.3), and
an occupant id (XEP-0421 §3) derived from the room's salt and the real
bare JID, stable for the room's life."""

import hashlib
import hmac
import secrets

from xmppd.core.stanzas import addressed_copy, copy_element, make_stanza
from xmppd.core.xmlstream import parse_stanza

from . import NS_MUC, NS_OCCUPANT_ID, NS_USER, SELF
from .config import flag, value
from .roles import entry_role

SALT = "x-occupant-id-salt"  # the config key of the room's occupant id salt


class Occupant:
    __slots__ = ("nick", "bare", "sessions", "role", "occupant_id", "tokens", "last")

    def __init__(self, nick, bare, role, occupant_id):
        self.nick = nick
        self.bare = bare  # real bare JID (text)
        self.sessions = {}  # full JID (text) -> its last presence to the room
        self.role = role
        self.occupant_id = occupant_id
        self.tokens = None  # the message rate bucket (the service's)
        self.last = 0.0

    @property
    def jid(self):
        """The real full JID shown where real JIDs are: the first session's."""
        return next(iter(self.sessions))


class Room:
    """One room of a service; ``jid`` its bare JID (a JID)."""

    def __init__(self, jid, config, affiliations, subject, admins=frozenset(), locked=False):
        self.jid = jid
        self.config = dict(config)
        self.affiliations = dict(affiliations)  # bare JID -> owner/admin/member/outcast
        self.subject = subject  # the message that set it, serialised; "" for none
        self.admins = admins  # the service's admins: owners of every room
        self.locked = locked  # created, awaiting its configuration (§10.1.1)
        self.occupants = {}  # nick -> Occupant
        self.sessions = {}  # real full JID (text) -> Occupant
        if SALT not in self.config:
            self.config[SALT] = secrets.token_hex(16)

    @property
    def name(self):
        return self.jid.local

    def affiliation(self, bare):
        if bare in self.admins:
            return "owner"
        return self.affiliations.get(bare, "none")

    def owners(self):
        return sum(1 for a in self.affiliations.values() if a == "owner")

    def entry_role(self, bare):
        return entry_role(self.affiliation(bare), flag(self.config, "moderatedroom"))

    def occupant_id(self, bare):
        """XEP-0421 §4: the same for one account in this room, not the JID."""
        key = self.config[SALT].encode()
        return hmac.new(key, bare.encode(), hashlib.sha256).hexdigest()[:32]

    def occupant_jid(self, nick):
        return f"{self.jid.full}/{nick}"

    def non_anonymous(self):
        return value(self.config, "whois") == "anyone"

    def sees_jids(self, occupant):
        return occupant.role == "moderator" or self.non_anonymous()

    def reader_sees_jids(self, bare):
        """Whether account ``bare`` may read the real JIDs in the room's
        archive (XEP-0313 §5.1.2): as an occupant would (:meth:`sees_jids`),
        and its owners and admins, who are moderators when they are in."""
        return self.affiliation(bare) in ("owner", "admin") or self.non_anonymous() or any(
            occupant.bare == bare and self.sees_jids(occupant)
            for occupant in self.occupants.values())

    def recipients(self):
        """(occupant, full JID) of every session in the room."""
        for occupant in self.occupants.values():
            for jid in occupant.sessions:
                yield occupant, jid

    # Stanzas

    def presence(self, occupant, type_=None, codes=(), item=None, show_jid=False, body=None,
                 extra=None):
        """Presence from ``occupant`` (no ``to``): its own presence's
        children (``body``: a presence element; the session's last by
        default) with ``<x muc#user>``, ``codes`` and its occupant id;
        ``item`` overrides the item's attributes; ``extra`` (an element)
        goes into ``<x/>``."""
        element = make_stanza("presence", from_=self.occupant_jid(occupant.nick), type_=type_)
        source = body if body is not None else (
            next(iter(occupant.sessions.values())) if occupant.sessions else None)
        if source is not None and type_ is None:
            for child in source.elements():
                if child.uri not in (NS_MUC, NS_USER, NS_OCCUPANT_ID) and child.name != "error":
                    element.addChild(copy_element(child))
        x = element.addElement((NS_USER, "x"))
        entry = x.addElement("item")
        entry["affiliation"] = self.affiliation(occupant.bare)
        entry["role"] = occupant.role if type_ is None else "none"
        if show_jid and occupant.sessions:
            entry["jid"] = occupant.jid
        for name, text in (item or {}).items():
            if name in ("actor", "reason"):
                if text is not None:
                    child = entry.addElement(name)
                    if name == "actor":
                        child["nick"] = text
                    else:
                        child.addContent(text)
            else:
                entry[name] = text
        if extra is not None:
            x.addChild(extra)
        for code in codes:
            x.addElement("status")["code"] = code
        element.addElement((NS_OCCUPANT_ID, "occupant-id"))["id"] = occupant.occupant_id
        return element

    def send_presence(self, route, occupant, type_=None, codes=(), item=None, extra=None,
                      only=None):
        """``occupant``'s presence to every session in the room (to ``only``,
        a full JID, if given); its own sessions get 110 too (§7.2.3)."""
        variants = {}
        for recipient, jid in list(self.recipients()):
            if only is not None and jid != only:
                continue
            mine = recipient is occupant
            show = mine or self.sees_jids(recipient)
            key = (mine, show)
            template = variants.get(key)
            if template is None:
                template = variants[key] = self.presence(
                    occupant, type_, (*codes, SELF) if mine else codes, item, show, extra=extra)
            element = copy_element(template)
            element["to"] = jid
            route(element)

    def joined(self, occupant, jid, route, codes):
        """A session entered (§7.2.3): it gets everyone's presence, then
        everyone gets its own (itself last, with 110 and ``codes``)."""
        for other in self.occupants.values():
            if other is not occupant:
                element = self.presence(other, show_jid=self.sees_jids(occupant))
                element["to"] = jid
                route(element)
        for recipient, to in list(self.recipients()):
            if to == jid:
                continue
            element = self.presence(occupant, show_jid=self.sees_jids(recipient))
            element["to"] = to
            route(element)
        element = self.presence(occupant, codes=(*codes, SELF), show_jid=True)
        element["to"] = jid
        route(element)

    def subject_message(self, to):
        """The subject (§7.2.15): the message that set it, or an empty one."""
        if self.subject:
            element = parse_stanza(self.subject)
        else:
            element = make_stanza("message", from_=self.jid.full, type_="groupchat")
            element.addElement("subject")
        element["to"] = to
        return element

    def status_message(self, codes):
        """A message from the room with status codes (§10.2.1)."""
        element = make_stanza("message", from_=self.jid.full, type_="groupchat")
        x = element.addElement((NS_USER, "x"))
        for code in codes:
            x.addElement("status")["code"] = code
        return element

    def broadcast(self, route, element):
        """A copy of ``element`` to every session in the room."""
        for _, jid in list(self.recipients()):
            route(addressed_copy(element, jid))
