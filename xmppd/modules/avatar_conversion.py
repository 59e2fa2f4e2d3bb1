"""User avatars (XEP-0084) and vCard-based avatars (XEP-0153) kept in step
by the server (XEP-0398).

- PEP to vCard (§3.1): a client publishes to ``urn:xmpp:avatar:metadata``;
  its first ``<info/>`` without a ``url`` names the ``urn:xmpp:avatar:data``
  item that holds the image, whose SHA-1 must be that id.  The image
  becomes the vCard's ``<PHOTO/>`` (``TYPE``, ``BINVAL``), the rest of the
  vCard kept.  An empty ``<metadata/>`` (XEP-0084 §3.5, avatar disabled)
  removes the ``<PHOTO/>``.
- vCard to PEP (§3.2): a client sets a vCard whose ``<PHOTO/>`` has a
  ``BINVAL`` and a ``TYPE``: the image is published to the data node, with
  its SHA-1 as item id, then one ``<info/>`` about it to the metadata node,
  notified as a client's publish is; a vCard without a photo publishes an
  empty ``<metadata/>``.  Nothing is published when PEP has that avatar (or
  no avatar) already.
- Presence (§4): every available presence of the account's clients,
  broadcast or directed (a room join), carries
  ``<x xmlns='vcard-temp:x:update'><photo>SHA-1</photo></x>`` of the
  vCard's photo, unless the client put a ``<photo/>`` there itself.  An
  account without a photo gets an empty ``<photo/>`` only where it says
  something: once its photo was removed during the session, or in an
  ``<x/>`` the client sent; otherwise its presence is left as it is (the
  presence of accounts without avatars costs nothing more).  The hash is
  kept while the account has sessions on this node; the other nodes of a
  cluster are told when a vCard is set, and read the hash again.

What the server writes is not converted back.  A conversion that cannot
be made (no data item, data that is not base64 or whose SHA-1 is not its
id, a vCard that would outgrow ``vcard.max_size``) is logged and skipped:
the client's request succeeds all the same.  The conversions of one account
run one at a time.  Advertised as ``urn:xmpp:pep-vcard-conversion:0`` on
the accounts (§2).
"""

import base64
import binascii
import hashlib
from typing import NamedTuple

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.events import SESSION_UNBOUND, pre_events
from xmppd.core.serial import SerialJobs
from xmppd.core.stanzas import StanzaError, child
from xmppd.core.xmlstream import parse_stanza
from xmppd.jid import JID

NS_DATA = "urn:xmpp:avatar:data"
NS_METADATA = "urn:xmpp:avatar:metadata"
NS_VCARD = "vcard-temp"
NS_UPDATE = "vcard-temp:x:update"
NS_CONVERSION = "urn:xmpp:pep-vcard-conversion:0"
PRESENCE_PRIORITY = -90  # on the pre-events: after the policies, before the presence module
# Told to the other nodes of a cluster (api.tell_cluster), whose hashes of
# the vCard's photo are stale; argument: the account's bare JID.
VCARD_CHANGED = "vcard/changed"


class Unconvertible(Exception):
    """An avatar that cannot be converted; the text says why."""


class Avatar(NamedTuple):
    type: str
    image: bytes

    @property
    def id(self):
        """The SHA-1 of the image in hex: the avatar's id in XEP-0084 and
        its hash in XEP-0153."""
        return hashlib.sha1(self.image).hexdigest()


def _decoded(text):
    """The bytes of base64 ``text`` (line breaks allowed), None if it is not base64."""
    try:
        return base64.b64decode("".join(text.split()), validate=True) or None
    except binascii.Error:
        return None


def _content(element):
    return "".join(text for text in element.children if isinstance(text, str)).strip()


def _text(element, name):
    child = next((child for child in element.elements() if child.name == name), None)
    return None if child is None else _content(child)


def _photo(vcard):
    return None if vcard is None else next(vcard.elements(NS_VCARD, "PHOTO"), None)


def vcard_avatar(vcard):
    """The avatar of the vCard's ``<PHOTO/>``, None if it has none;
    :class:`Unconvertible` if it has one that is not usable."""
    photo = _photo(vcard)
    binval = None if photo is None else _text(photo, "BINVAL")
    if not binval:
        if photo is not None and _text(photo, "EXTVAL"):
            raise Unconvertible("the vCard's photo is an external one")
        return None
    image, type_ = _decoded(binval), _text(photo, "TYPE")
    if image is None:
        raise Unconvertible("the vCard's photo is not base64")
    if not type_:
        raise Unconvertible("the vCard's photo has no TYPE")
    return Avatar(type_, image)


def photo_hash(vcard):
    """The SHA-1 of the vCard's photo, or "" for none (or none usable)."""
    try:
        avatar = vcard_avatar(vcard)
    except Unconvertible:
        return ""
    return "" if avatar is None else avatar.id


def with_photo(vcard, avatar):
    """``vcard`` (None: an empty one) with ``avatar`` (None: no photo) as
    its ``<PHOTO/>`` and everything else kept."""
    if vcard is None:
        vcard = domish.Element((NS_VCARD, "vCard"))
    vcard.children = [child for child in vcard.children
                      if not (isinstance(child, domish.Element)
                              and (child.uri, child.name) == (NS_VCARD, "PHOTO"))]
    if avatar is not None:
        photo = vcard.addElement((NS_VCARD, "PHOTO"))
        photo.addElement((NS_VCARD, "TYPE"), content=avatar.type)
        photo.addElement((NS_VCARD, "BINVAL"),
                         content=base64.b64encode(avatar.image).decode("ascii"))
    return vcard


def metadata_info(payload):
    """The first ``<info/>`` without ``url`` of a serialised metadata
    payload; None for an empty ``<metadata/>`` (no avatar)."""
    metadata = parse_stanza(payload)
    if (metadata.uri, metadata.name) != (NS_METADATA, "metadata"):
        raise Unconvertible("the metadata item is no <metadata/>")
    infos = list(metadata.elements(NS_METADATA, "info"))
    if not infos:
        return None
    info = next((info for info in infos if not info.hasAttribute("url")), None)
    if info is None:
        raise Unconvertible("the avatar is only at a URL")
    return info


class AvatarConversion:
    """Converts each account's avatar when one of its clients changes it,
    and adds its hash to the clients' presence."""

    def __init__(self, api):
        self._api = api
        self._pep = api.service("pep")
        self._vcards = api.service("vcard")
        self._jobs = SerialJobs()
        self._hashes = {}  # account -> SHA-1 of its vCard's photo ("": none)
        self._removed = set()  # accounts whose photo went during their sessions
        self._told = 0  # vCard changes other nodes told of
        # Bound once: what this module writes names it as the publisher or
        # writer, and the services tell every listener but that one.
        self._pep_listener = self._pep_changed
        self._vcard_listener = self._vcard_set
        self._pep.listen(self._pep_listener)
        self._vcards.listen(self._vcard_listener)

    def _run(self, account, job, *args):
        def failed(failure):
            if failure.check(Unconvertible, StanzaError):
                self._api.log.warn("the avatar of {account} is not converted: {why}",
                                   account=account, why=failure.value)
            else:
                self._api.log.failure("cannot convert the avatar of {account}", failure,
                                      account=account)
        return self._jobs.run(account, job, *args).addErrback(failed)

    def _learn(self, account, vcard):
        if self._api.sessions.here(account):
            sha1 = photo_hash(vcard)
            if self._hashes.get(account) and not sha1:
                self._removed.add(account)
            self._hashes[account] = sha1

    # PEP to vCard (§3.1)

    def _pep_changed(self, account, node, item, retracted):
        if node == NS_METADATA and item is not None and self._api.enabled(account.domain):
            self._run(account, self._to_vcard, account, item.payload)

    @defer.inlineCallbacks
    def _to_vcard(self, account, payload):
        info = metadata_info(payload)
        avatar = None if info is None else (yield self._pep_avatar(account, info))
        vcard = yield self._vcards.get(account)
        if (_photo(vcard) is None if avatar is None else photo_hash(vcard) == avatar.id):
            return
        vcard = with_photo(vcard, avatar)
        yield self._vcards.set(account, vcard, writer=self._vcard_listener)
        self._learn(account, vcard)
        self._api.tell_cluster(VCARD_CHANGED, account.full)

    @defer.inlineCallbacks
    def _pep_avatar(self, account, info):
        """The avatar an ``<info/>`` names, from the data node, its SHA-1 checked."""
        item_id, type_ = info.getAttribute("id", ""), info.getAttribute("type")
        items = yield self._pep.items_of(account, NS_DATA)
        item = next((item for item in items if item.id == item_id), None)
        if item is None:
            raise Unconvertible(f"no data item {item_id!r}")
        data = parse_stanza(item.payload)
        image = _decoded(_content(data)) if (data.uri, data.name) == (NS_DATA, "data") else None
        if image is None:
            raise Unconvertible(f"data item {item_id!r} is not base64 <data/>")
        if not type_:
            raise Unconvertible("the metadata has no type")
        avatar = Avatar(type_, image)
        if avatar.id != item_id.lower():
            raise Unconvertible(f"data item {item_id!r} has the SHA-1 {avatar.id}")
        return avatar

    # vCard to PEP (§3.2)

    def _vcard_set(self, account, vcard):
        if not self._api.enabled(account.domain):
            return None
        self._learn(account, vcard)
        self._api.tell_cluster(VCARD_CHANGED, account.full)
        return self._run(account, self._to_pep, account, vcard)

    def vcard_changed_elsewhere(self, account):
        """Another node of the cluster set the vCard of ``account`` (text):
        its hash is read again with the next presence."""
        self._told += 1
        account = JID.normalised(account)
        if self._hashes.pop(account, None):
            self._removed.add(account)  # what _learn does, should the photo be gone

    @defer.inlineCallbacks
    def _to_pep(self, account, vcard):
        avatar = vcard_avatar(vcard)
        if (yield self._published(account)) == ("" if avatar is None else avatar.id):
            return
        metadata = domish.Element((NS_METADATA, "metadata"))
        if avatar is not None:
            data = domish.Element((NS_DATA, "data"))
            data.addContent(base64.b64encode(avatar.image).decode("ascii"))
            yield self._pep.put(account, NS_DATA, avatar.id, data,
                                publisher=self._pep_listener)
            info = metadata.addElement((NS_METADATA, "info"))
            info["id"] = avatar.id
            info["type"] = avatar.type
            info["bytes"] = str(len(avatar.image))
        yield self._pep.put(account, NS_METADATA, None if avatar is None else avatar.id,
                            metadata, publisher=self._pep_listener)

    @defer.inlineCallbacks
    def _published(self, account):
        """The id of the avatar on PEP: "" for none, None if unknown."""
        items = yield self._pep.items_of(account, NS_METADATA)
        if not items:
            return ""
        try:
            info = metadata_info(items[-1].payload)
        except Unconvertible:
            return None
        return "" if info is None else info.getAttribute("id")

    # Presence (§4)

    def presence(self, stanza):
        """A local client's available presence: the avatar's hash added."""
        if stanza.origin is None or stanza.type is not None or \
                not self._api.enabled(stanza.sender.domain):
            return False
        update = child(stanza.element, NS_UPDATE, "x")
        if update is not None and child(update, NS_UPDATE, "photo") is not None:
            return False
        account = stanza.sender.bare
        known = self._hashes.get(account)
        if known is not None:
            self._add_hash(account, stanza.element, update, known)
            return False
        told = self._told

        def found(vcard):
            if told == self._told:  # else another node's vCard may be newer
                self._learn(account, vcard)
            self._add_hash(account, stanza.element, update, photo_hash(vcard))
            return False

        def failed(failure):
            self._api.log.failure("cannot read the vCard of {account}", failure,
                                  account=account)
            return False

        return self._vcards.get(account).addCallbacks(found, failed)

    def _add_hash(self, account, presence, update, sha1):
        if not (sha1 or update is not None or account in self._removed):
            return
        if update is None:
            update = presence.addElement((NS_UPDATE, "x"))
        update.addElement((NS_UPDATE, "photo"), content=sha1 or None)

    def forget(self, session):
        if not self._api.sessions.here(session.jid.bare):
            self._hashes.pop(session.jid.bare, None)
            self._removed.discard(session.jid.bare)


def setup(api):
    api.depends("pep")
    api.depends("vcard")
    conversion = AvatarConversion(api)
    api.account_feature(NS_CONVERSION)
    for event in pre_events("presence"):
        api.hook(event, conversion.presence, priority=PRESENCE_PRIORITY)
    api.hook(SESSION_UNBOUND, conversion.forget)
    api.hook(VCARD_CHANGED, conversion.vcard_changed_elsewhere)
