"""Roster management (RFC 6121 §2).

- get (§2.1.3, §2.2): the whole roster; with roster versioning (§2.6) an
  empty result when the client's ``ver`` is current.  A resource that asked
  for its roster receives roster pushes (§2.1.6).
- set (§2.1.5, §2.3): add or update one item (name and groups; the
  subscription state is the server's and any ``subscription`` other than
  ``remove``, and any ``ask``, are ignored), then push it to every
  interested resource of the account.
- remove (§2.5): ``subscription='remove'`` deletes the item and pushes the
  removal.

Publishes the ``roster`` service (:class:`RosterService`) so presence and
subscription handling can push the items they change.
"""

from twisted.words.xish import domish

from xmppd.core.events import BARE
from xmppd.core.stanzas import StanzaError, make_stanza
from xmppd.jid import JID, InvalidJID
from xmppd.storage import RosterItem

NS_ROSTER = "jabber:iq:roster"
NS_ROSTERVER = "urn:xmpp:features:rosterver"
MAX_TEXT = 1023  # longest item name or group name, in characters


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
    """Roster pushes (RFC 6121 §2.1.6), for this and other modules."""

    def __init__(self, api):
        self._api = api

    def push(self, user, item, version, remove=False):
        """Send ``item`` of ``user`` (a bare JID) to each interested resource."""
        for session in self._api.sessions.resources(user):
            if session.roster_requested:
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
        stanza.origin.roster_requested = True
        client_ver = stanza.payload.getAttribute("ver")
        d = api.storage.get_roster(user.local, user.domain)

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
            return _remove(user, request["jid"])
        d = api.storage.get_roster_item(user.local, user.domain, request["jid"])

        def store(existing):
            item = RosterItem(
                jid=request["jid"], name=request.getAttribute("name") or None,
                subscription=existing.subscription if existing else "none",
                ask=existing.ask if existing else False,
                pending_in=existing.pending_in if existing else False,
                approved=existing.approved if existing else False,
                groups=tuple(str(g) for g in request.elements(NS_ROSTER, "group")))
            return api.storage.set_roster_item(user.local, user.domain, item).addCallback(
                lambda version: roster.push(user, item, version))

        return d.addCallback(store).addCallback(lambda _: None)

    def _remove(user, jid):
        d = api.storage.get_roster_item(user.local, user.domain, jid)

        def remove(existing):
            if existing is None:
                raise StanzaError("item-not-found")
            return api.storage.remove_roster_item(user.local, user.domain, jid).addCallback(
                lambda version: roster.push(user, existing, version, remove=True))

        return d.addCallback(remove).addCallback(lambda _: None)

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
