"""Bookmarks kept in step between PEP Native Bookmarks (XEP-0402) and
Bookmark Storage (XEP-0048), in private XML storage (XEP-0049) and in its
PEP node, as XEP-0402 §5.3 and XEP-0411 §3 ask of a server.

- A client stores ``<storage xmlns='storage:bookmarks'/>`` in private
  storage, or publishes it as the item of the ``storage:bookmarks`` node
  (XEP-0048 §3.2): it is a replacement list (§5.3.2).  Each
  ``<conference/>`` with a ``jid`` becomes the ``urn:xmpp:bookmarks:1``
  item whose id is that JID, published only when new or changed (no
  notification for an unchanged one) and keeping the item's
  ``<extensions/>``; the items of rooms no longer listed are retracted.  The
  storage also goes to the other XEP-0048 store.
- A client publishes or retracts a ``urn:xmpp:bookmarks:1`` item (§5.3.1):
  that room's ``<conference/>``, with the item id as ``jid``, replaces or
  leaves the private storage, whose other rooms and ``<url/>`` elements
  stay; the storage goes to the ``storage:bookmarks`` node too.

The server publishes with the publish-options XEP-0402 asks of clients
(persistent, ``max`` items, ``whitelist`` access, the last item ``never``
sent on presence) and, on the ``storage:bookmarks`` node, those of XEP-0048
§3.2 (persistent, ``whitelist``); a node whose configuration does not hold
them is not written.  Notifications go out as for a client's publish.
What the server writes is not converted back; a conversion that fails is
logged, and the client's request succeeds all the same.  The conversions of
one account run one at a time.

Advertised on the accounts: ``urn:xmpp:bookmarks:1#compat`` and
``#compat-pep`` (XEP-0402 §5.3), ``urn:xmpp:bookmarks-conversion:0``
(XEP-0411 §2).
"""

from typing import NamedTuple

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.serial import SerialJobs
from xmppd.core.stanzas import StanzaError
from xmppd.core.xmlstream import parse_stanza

NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_LEGACY = "storage:bookmarks"
LEGACY_ITEM = "current"  # the one item of the storage:bookmarks node (XEP-0048 §3.2)
FEATURES = (f"{NS_BOOKMARKS}#compat", f"{NS_BOOKMARKS}#compat-pep",
            "urn:xmpp:bookmarks-conversion:0")
PUBLISH_OPTIONS = {"pubsub#persist_items": "true", "pubsub#max_items": "max",
                   "pubsub#send_last_published_item": "never",
                   "pubsub#access_model": "whitelist"}
LEGACY_PUBLISH_OPTIONS = {"pubsub#persist_items": "true", "pubsub#access_model": "whitelist"}


class Bookmark(NamedTuple):
    """One bookmarked room; ``extensions``, the serialised
    ``<extensions/>`` of its XEP-0402 item, has no XEP-0048 form."""

    jid: str
    name: str | None
    autojoin: bool
    nick: str | None
    password: str | None
    extensions: str | None = None


def _text(element, name):
    child = next((child for child in element.elements() if child.name == name), None)
    return None if child is None else str(child)


def _is_true(value):
    return value in ("1", "true")


def from_legacy(storage):
    """The bookmarks of a ``storage:bookmarks`` element's conferences."""
    for conference in storage.elements(NS_LEGACY, "conference"):
        jid = conference.getAttribute("jid")
        if jid:
            yield Bookmark(jid, conference.getAttribute("name"),
                           _is_true(conference.getAttribute("autojoin")),
                           _text(conference, "nick"), _text(conference, "password"))


def from_item(item_id, payload):
    """The bookmark of a ``urn:xmpp:bookmarks:1`` item, or None if its
    payload (serialised) is no ``<conference/>``."""
    conference = parse_stanza(payload)
    if (conference.uri, conference.name) != (NS_BOOKMARKS, "conference"):
        return None
    extensions = next(conference.elements(NS_BOOKMARKS, "extensions"), None)
    return Bookmark(item_id, conference.getAttribute("name"),
                    _is_true(conference.getAttribute("autojoin")),
                    _text(conference, "nick"), _text(conference, "password"),
                    None if extensions is None else extensions.toXml())


def conference_element(bookmark, namespace):
    """``bookmark`` as the ``<conference/>`` of ``namespace``: an item's
    payload (XEP-0402) or a child of the storage (XEP-0048, with its jid)."""
    conference = domish.Element((namespace, "conference"))
    if namespace == NS_LEGACY:
        conference["jid"] = bookmark.jid
    if bookmark.name is not None:
        conference["name"] = bookmark.name
    if bookmark.autojoin or namespace == NS_LEGACY:
        conference["autojoin"] = "true" if bookmark.autojoin else "false"
    for name in ("nick", "password"):
        value = getattr(bookmark, name)
        if value is not None:
            conference.addElement((namespace, name), content=value)
    if bookmark.extensions is not None and namespace == NS_BOOKMARKS:
        conference.addChild(parse_stanza(bookmark.extensions))
    return conference


def _is_room(element, jid):
    return (element.uri, element.name) == (NS_LEGACY, "conference") and \
        element.getAttribute("jid") == jid


class BookmarksConversion:
    """Converts each account's bookmarks when one of its clients writes them."""

    def __init__(self, api):
        self._api = api
        self._pep = api.service("pep")
        self._private = api.service("private")
        self._jobs = SerialJobs()
        # Bound once: what this module writes names it as the publisher or
        # writer, and the services tell every listener but that one.
        self._pep_listener = self._pep_changed
        self._private_listener = self._private_stored
        self._pep.listen(self._pep_listener)
        self._private.listen(self._private_listener)

    def _private_stored(self, account, element):
        if (element.uri, element.name) == (NS_LEGACY, "storage") and \
                self._api.enabled(account.domain):
            return self._run(account, self._from_legacy, account, element, False)
        return None

    def _pep_changed(self, account, node, item, retracted):
        if node not in (NS_BOOKMARKS, NS_LEGACY) or not self._api.enabled(account.domain):
            return
        if node == NS_BOOKMARKS:
            self._run(account, self._from_pep, account, retracted or item.id,
                      None if item is None else item.payload)
        elif item is not None:
            storage = parse_stanza(item.payload)
            if (storage.uri, storage.name) == (NS_LEGACY, "storage"):
                self._run(account, self._from_legacy, account, storage, True)

    def _run(self, account, job, *args):
        def failed(failure):
            if failure.check(StanzaError):  # refused: a node's configuration, a limit
                self._api.log.warn("the bookmarks of {account} are not converted: {why}",
                                   account=account, why=failure.value)
            else:
                self._api.log.failure("cannot convert the bookmarks of {account}", failure,
                                      account=account)
        return self._jobs.run(account, job, *args).addErrback(failed)

    @defer.inlineCallbacks
    def _from_legacy(self, account, storage, from_pep):
        """A client's XEP-0048 ``storage`` (in private storage, or on PEP
        if ``from_pep``) to the XEP-0402 node and the other XEP-0048 store."""
        current = {}
        for item in (yield self._pep.items_of(account, NS_BOOKMARKS)):
            bookmark = from_item(item.id, item.payload)
            if bookmark is not None:
                current[item.id] = bookmark
        listed = {}
        for bookmark in from_legacy(storage):
            old = current.get(bookmark.jid)
            listed[bookmark.jid] = bookmark._replace(
                extensions=None if old is None else old.extensions)
        for jid, bookmark in listed.items():
            if bookmark != current.get(jid):
                yield self._pep.put(account, NS_BOOKMARKS, jid,
                                    conference_element(bookmark, NS_BOOKMARKS),
                                    PUBLISH_OPTIONS, publisher=self._pep_listener)
        for jid in current:
            if jid not in listed:
                yield self._pep.remove(account, NS_BOOKMARKS, jid, publisher=self._pep_listener)
        if from_pep:
            yield self._private.set(account, storage, writer=self._private_listener)
        else:
            yield self._put_legacy(account, storage)

    @defer.inlineCallbacks
    def _from_pep(self, account, jid, payload):
        """A client published (``payload``) or retracted (None) the XEP-0402
        item of room ``jid``: the XEP-0048 stores follow."""
        bookmark = None if payload is None else from_item(jid, payload)
        if payload is not None and bookmark is None:
            return  # not a bookmark: nothing to convert
        old = yield self._private.get(account, NS_LEGACY, "storage")
        storage = domish.Element((NS_LEGACY, "storage"))
        for child in () if old is None else old.elements():
            if not _is_room(child, jid):
                storage.addChild(child)
            elif bookmark is not None:  # in place of the room's old entry
                storage.addChild(conference_element(bookmark, NS_LEGACY))
                bookmark = None
        if bookmark is not None:
            storage.addChild(conference_element(bookmark, NS_LEGACY))
        yield self._private.set(account, storage, writer=self._private_listener)
        yield self._put_legacy(account, storage)

    def _put_legacy(self, account, storage):
        return self._pep.put(account, NS_LEGACY, LEGACY_ITEM, storage, LEGACY_PUBLISH_OPTIONS,
                             publisher=self._pep_listener)


def setup(api):
    api.depends("pep")
    api.depends("private")
    BookmarksConversion(api)
    for feature in FEATURES:
        api.account_feature(feature)
