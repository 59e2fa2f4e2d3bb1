"""What a ``<user/>`` of a XEP-0227 file becomes in the database.

:func:`read_user` turns the element into a :class:`UserData`, checked
through (JIDs, keys, sizes), reporting what it leaves out; only then does
:func:`write_user` write it, so bad input never leaves an account half
imported.  Writing is idempotent: an account that exists keeps its
credentials, and only what differs from the database is written (roster
items are replaced, a message already imported is not stored again).

- Credentials (§4.2, §4.3): ``<scram-credentials/>`` of SCRAM-SHA-1,
  -SHA-256 and -SHA-512, as Prosody writes them and as ejabberd 23.01 does
  (its values base64-encoded twice); a plaintext ``password`` is hashed
  with :func:`~xmppd.core.scram.derive_all` and never stored.
- The roster (§4.4) with names, groups, ``subscription``, ``ask`` and
  ``approved``; pending inbound requests (§4.9: ``<presence
  type='subscribe'/>``, in ``jabber:client`` or, as Prosody writes them,
  in the file's namespace) as the subscription module keeps them.
- Offline messages (§4.5), private XML (§4.6), the vCard (§4.7), PEP nodes
  with their configuration and items (§4.10) and the message archive
  (§4.11), in the stores of the modules that serve them.
- Privacy lists (§4.8) and anything else are reported and left out.
"""

import base64
import binascii
import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from twisted.words.xish import domish

from xmppd.core.scram import HASHES, derive_all, prepare_password
from xmppd.core.xmlstream import NS_CLIENT, serialize
from xmppd.jid import JID, InvalidJID
from xmppd.modules import private as private_module
from xmppd.modules import vcard as vcard_module
from xmppd.modules.mam import stanza_id
from xmppd.modules.subscription import REQUESTS
from xmppd.pubsub import NS_OWNER, NS_PUBSUB
from xmppd.pubsub.config import PEP_DEFAULTS, max_items, read_form
from xmppd.storage import SUBSCRIPTIONS, NodeExists, RosterItem, ScramKeys
from xmppd.storage.kinds import ArchiveRecord, PubSubItem, archive_id_time, first_archive_id
from xmppd.wokkel_compat import data_form

from .reader import NS_PIE, PIE_NAMESPACES

NS_SCRAM = NS_PIE + "#scram"
NS_PIE_MAM = NS_PIE + "#mam"
NS_ROSTER = "jabber:iq:roster"
NS_PRIVACY = "jabber:iq:privacy"
NS_MAM = "urn:xmpp:mam:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
MECHANISMS = {"SCRAM-SHA-1": "SHA-1", "SCRAM-SHA-256": "SHA-256", "SCRAM-SHA-512": "SHA-512"}
MAX_ITERATIONS = 10_000_000  # each PLAIN login derives the key that many times
PEP_STORE = "pep"  # the pubsub store of xmppd.modules.pep
ARCHIVE_STORE = "mam"  # the archive store of xmppd.modules.mam
MARKS = "portable"  # keyval: "offline SHA-256" of each offline message imported
ARCHIVE_PAGE = 1000


@dataclass
class UserData:
    """One account as the file has it, checked."""

    jid: JID
    keys: dict = field(default_factory=dict)
    roster: dict = field(default_factory=dict)  # bare JID -> RosterItem
    requests: dict = field(default_factory=dict)  # bare JID -> <presence/> XML
    vcard: str | None = None
    private: dict = field(default_factory=dict)
    offline: list = field(default_factory=list)
    nodes: dict = field(default_factory=dict)  # node -> (config, [(item id, payload)])
    archive: list = field(default_factory=list)  # ArchiveRecord
    pep_limit: int = 0  # pep.max_items of the host: what "max" means


class Counts(dict):
    """What was (or would be) written, by kind."""

    def add(self, kind, number=1):
        if number:
            self[kind] = self.get(kind, 0) + number


def _where(jid, element):
    return f"{jid}: <{element.name} xmlns='{element.uri}'/>"


def read_user(config, domain, user, skip):
    """The :class:`UserData` of the ``<user/>`` element of the host
    ``domain``, or None if the account cannot be imported; ``skip(what,
    why)`` hears of everything left out."""
    name = user.getAttribute("name") or ""
    try:
        jid = JID.parse(f"{name}@{domain}")
    except InvalidJID as e:
        skip(f"{name}@{domain}", f"invalid JID: {e}")
        return None
    if jid.local is None or jid.resource is not None or name == "":
        skip(f"{name}@{domain}", "invalid JID")
        return None
    host = config.hosts.get(jid.domain)
    if host is None:
        skip(jid.bare_str, f"{jid.domain} is not hosted in {config.path}")
        return None
    if host.authentication == "anonymous":
        skip(jid.bare_str, f"{jid.domain} is an anonymous host")
        return None
    data = UserData(jid, pep_limit=config.options("pep", jid.domain).max_items)
    try:
        data.keys = _credentials(jid, user, skip)
    except ValueError as e:
        skip(jid.bare_str, f"password refused: {e}")
        return None
    pending = []
    for child in user.elements():
        reader = _READERS.get((child.uri, child.name))
        if child.name == "presence" and child.uri in (NS_CLIENT, *PIE_NAMESPACES):
            pending.append(child)
        elif reader is not None:
            reader(config, data, child, skip)
        elif (child.uri, child.name) == (NS_PRIVACY, "query"):
            skip(_where(jid, child), "privacy lists (XEP-0016) are not imported: "
                                     "xmppd blocks with XEP-0191")
        elif child.uri != NS_SCRAM:
            skip(_where(jid, child), "unknown element")
    for presence in pending:
        _request(data, presence, skip)
    return data


def _credentials(jid, user, skip):
    """The SCRAM keys by hash: from a plaintext password (every hash), else
    from <scram-credentials/> (§4.3)."""
    password = user.getAttribute("password")
    if password:
        prepare_password(password)
        return derive_all(password)
    keys = {}
    for element in user.elements(NS_SCRAM, "scram-credentials"):
        mechanism = element.getAttribute("mechanism")
        hash_name = MECHANISMS.get(mechanism)
        what = f"{jid.bare_str}: <scram-credentials mechanism='{mechanism}'/>"
        if hash_name is None:
            skip(what, "unsupported mechanism")
            continue
        try:
            keys[hash_name] = _scram_keys(element, hash_name)
        except ValueError as e:
            skip(what, str(e))
    return keys


def _text_of(element, name):
    child = next(element.elements(None, name), None)
    if child is None:
        child = next((c for c in element.elements() if c.name == name), None)
    if child is None:
        raise ValueError(f"no <{name}/>")
    return str(child).strip()


def _base64(text, name):
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"<{name}/> is not base64") from None


def _scram_keys(element, hash_name):
    try:
        iterations = int(_text_of(element, "iter-count"))
    except ValueError as e:
        raise ValueError(str(e) if "no <" in str(e) else "<iter-count/> is not a number")
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iteration count {iterations} out of range")
    values = [_base64(_text_of(element, name), name)
              for name in ("salt", "stored-key", "server-key")]
    size = HASHES[hash_name]().digest_size
    if len(values[1]) != size:  # ejabberd 23.01 encodes its base64 text once more
        try:
            values = [base64.b64decode(value, validate=True) for value in values]
        except (binascii.Error, ValueError):
            pass
    salt, stored, server = values
    if len(stored) != size or len(server) != size or not salt:
        raise ValueError(f"keys of the wrong length for {hash_name}")
    return ScramKeys(salt, iterations, stored, server)


def _bare(text):
    """The normalised bare JID of ``text``; InvalidJID."""
    return JID.parse(text or "").bare_str


def _roster(config, data, query, skip):
    for item in query.elements(NS_ROSTER, "item"):
        what = f"{data.jid.bare_str}: roster item {item.getAttribute('jid')!r}"
        try:
            contact = JID.parse(item.getAttribute("jid") or "")
        except InvalidJID as e:
            skip(what, f"invalid JID: {e}")
            continue
        subscription = item.getAttribute("subscription", "none")
        if contact.resource is not None or subscription not in SUBSCRIPTIONS:
            skip(what, "a full JID" if contact.resource else f"subscription {subscription!r}")
            continue
        groups = {str(group).strip() for group in item.elements(NS_ROSTER, "group")}
        data.roster[contact.bare_str] = RosterItem(
            jid=contact.bare_str, name=item.getAttribute("name") or None,
            subscription=subscription, ask=item.getAttribute("ask") == "subscribe",
            approved=item.getAttribute("approved") in ("true", "1"),
            groups=tuple(sorted(group for group in groups if group)))


def _request(data, presence, skip):
    """A pending inbound subscription request (§4.9)."""
    if presence.getAttribute("type") != "subscribe":
        skip(_where(data.jid, presence), "only subscription requests are imported")
        return
    try:
        contact = _bare(presence.getAttribute("from"))
    except InvalidJID as e:
        skip(_where(data.jid, presence), f"invalid JID: {e}")
        return
    request = domish.Element((NS_CLIENT, "presence"), NS_CLIENT,
                             {"from": contact, "to": data.jid.bare_str, "type": "subscribe"})
    for child in presence.elements():
        request.addChild(child)
    data.requests[contact] = serialize(request).decode("utf-8")
    item = data.roster.get(contact)
    if item is not None and item.subscription in ("none", "to"):
        data.roster[contact] = replace(item, pending_in=True)


def _sized(config, data, element, module, skip):
    """``element`` serialised, if within ``module.max_size`` of its host."""
    text = element.toXml()
    limit = config.options(module.__name__.rsplit(".", 1)[1], data.jid.domain).max_size
    if len(text.encode("utf-8")) > limit:
        skip(_where(data.jid, element), f"larger than {limit} bytes")
        return None
    return text


def _vcard(config, data, vcard, skip):
    data.vcard = _sized(config, data, vcard, vcard_module, skip)


def _private(config, data, query, skip):
    for element in query.elements():
        reserved = element.uri in private_module.RESERVED or element.uri.startswith(
            private_module.RESERVED_PREFIXES)
        if not element.uri or reserved:
            skip(_where(data.jid, element), "a reserved namespace (XEP-0049 §2.3)")
            continue
        text = _sized(config, data, element, private_module, skip)
        if text is not None:
            data.private[f"{element.uri} {element.name}"] = text


def _offline(config, data, messages, skip):
    for message in messages.elements():
        if (message.uri, message.name) != (NS_CLIENT, "message"):
            skip(_where(data.jid, message), "not a message")
            continue
        data.offline.append(message.toXml())


def _node_config(config, data, owner, skip):
    for configure in owner.elements(NS_OWNER, "configure"):
        node = configure.getAttribute("node")
        form = next(configure.elements(data_form.NS_X_DATA, "x"), None)
        settings = dict(PEP_DEFAULTS)
        try:
            if form is not None:
                settings.update(read_form(form))
        except Exception as e:  # a StanzaError of xmppd.pubsub, or wokkel's
            skip(f"{data.jid.bare_str}: PEP node {node!r}", f"bad configuration: {e}")
            continue
        if node:
            data.nodes[node] = (settings, data.nodes.get(node, (None, []))[1])


def _node_items(config, data, pubsub, skip):
    limit = config.options("pep", data.jid.domain).max_item_size
    for items in pubsub.elements(NS_PUBSUB, "items"):
        node = items.getAttribute("node")
        if not node:
            skip(_where(data.jid, items), "no node")
            continue
        kept = data.nodes.setdefault(node, (None, []))[1]
        for item in items.elements(NS_PUBSUB, "item"):
            payload = next(item.elements(), None)
            what = f"{data.jid.bare_str}: PEP item {item.getAttribute('id')!r} of {node!r}"
            if payload is None or not item.getAttribute("id"):
                skip(what, "no id or no payload")
            elif len(payload.toXml().encode("utf-8")) > limit:
                skip(what, f"larger than {limit} bytes")
            else:
                kept.append((item["id"], payload.toXml()))


def _archive(config, data, archive, skip):
    user = data.jid
    for result in archive.elements(NS_MAM, "result"):
        forwarded = next(result.elements(NS_FORWARD, "forwarded"), None)
        what = f"{user.bare_str}: archived message {result.getAttribute('id')!r}"
        delay = forwarded and next(forwarded.elements(NS_DELAY, "delay"), None)
        message = forwarded and next(forwarded.elements(NS_CLIENT, "message"), None)
        try:
            stamp = datetime.fromisoformat(delay["stamp"].replace("Z", "+00:00"))
            if stamp.tzinfo is None or stamp.year < 1970:
                raise ValueError
            sender, recipient = (JID.parse(message.getAttribute(a) or "") for a in ("from", "to"))
        except (AttributeError, TypeError, KeyError, ValueError, InvalidJID):
            skip(what, "no message, or its delay stamp or addresses are invalid")
            continue
        outgoing = sender.bare == user.bare
        xml = message.toXml()
        digest = hashlib.sha256(f"{user.bare_str}\0{xml}".encode("utf-8")).digest()
        if stamp.microsecond == 0:  # whole seconds (Prosody's): spread over the second
            stamp = stamp.replace(microsecond=int.from_bytes(digest[2:5], "big") % 1_000_000)
        archive_id = first_archive_id(stamp.astimezone(timezone.utc)) | (
            int.from_bytes(digest[:2], "big") & 0xFFF)
        data.archive.append(ArchiveRecord(
            user.local, user.domain, str(archive_id), str(recipient if outgoing else sender),
            stanza_id(message), "out" if outgoing else "in", xml))


_READERS = {
    (NS_ROSTER, "query"): _roster,
    (vcard_module.NS_VCARD, "vCard"): _vcard,
    (private_module.NS_PRIVATE, "query"): _private,
    (NS_PIE, "offline-messages"): _offline,
    (PIE_NAMESPACES[1], "offline-messages"): _offline,
    (NS_OWNER, "pubsub"): _node_config,
    (NS_PUBSUB, "pubsub"): _node_items,
    (NS_PIE_MAM, "archive"): _archive,
}


# Writing


def write_user(store, data, dry_run):
    """Write ``data`` where it differs from the database (nothing with
    ``dry_run``); ``(outcome, Counts)``, outcome being "created",
    "updated", "unchanged" or None (not created: no credentials)."""
    user = data.jid
    counts = Counts()
    exists = store.account_exists(user.local, user.domain)
    if not exists:
        if not data.keys:
            return None, counts
        if not dry_run:
            store.create_account(user.local, user.domain, data.keys)
    for write in (_write_roster, _write_requests, _write_vcard, _write_private,
                  _write_offline, _write_nodes, _write_archive):
        write(store, data, counts, dry_run)
    if not exists:
        return "created", counts
    return ("updated" if counts else "unchanged"), counts


def _write_roster(store, data, counts, dry_run):
    user = data.jid
    for item in data.roster.values():
        if store.get_roster_item(user.local, user.domain, item.jid) != item:
            counts.add("roster items")
            if not dry_run:
                store.set_roster_item(user.local, user.domain, item)


def _write_values(store, data, name, values, kind, counts, dry_run):
    user = data.jid
    stored = store.get_values(user.local, user.domain, name)
    changed = {key: value for key, value in values.items() if stored.get(key) != value}
    counts.add(kind, len(changed))
    if changed and not dry_run:
        store.open("keyval", name).set_many(user.local, user.domain, changed)


def _write_requests(store, data, counts, dry_run):
    _write_values(store, data, REQUESTS, data.requests, "subscription requests", counts,
                  dry_run)


def _write_vcard(store, data, counts, dry_run):
    if data.vcard is not None:
        _write_values(store, data, vcard_module.STORE, {vcard_module.KEY: data.vcard},
                      "vCards", counts, dry_run)


def _write_private(store, data, counts, dry_run):
    _write_values(store, data, private_module.STORE, data.private, "private XML elements",
                  counts, dry_run)


def _write_offline(store, data, counts, dry_run):
    """The messages not imported before (marked by their SHA-256)."""
    user = data.jid
    marks = store.get_values(user.local, user.domain, MARKS)
    new = {}
    for xml in data.offline:
        mark = "offline " + hashlib.sha256(xml.encode("utf-8")).hexdigest()
        if mark not in marks:
            new.setdefault(mark, xml)
    counts.add("offline messages", len(new))
    if new and not dry_run:
        store.open("offline").append_many(
            [(user.local, user.domain, xml) for xml in new.values()], None)
        store.open("keyval", MARKS).set_many(user.local, user.domain, dict.fromkeys(new, ""))


def _write_nodes(store, data, counts, dry_run):
    user = data.jid
    pep = store.open("pubsub", PEP_STORE)
    service = user.bare_str
    for name, (settings, items) in data.nodes.items():
        node = pep.get_node(service, name)
        settings = settings or (node.config if node else dict(PEP_DEFAULTS))
        if node is None or node.config != settings:
            counts.add("PEP nodes")
            if not dry_run:
                _put_node(pep, service, name, settings, node, user)
        stored = {} if node is None else {i.id: i.payload for i in pep.get_items(service, name)}
        keep = max_items(settings, data.pep_limit)
        for item_id, payload in items:
            if stored.get(item_id) != payload:
                counts.add("PEP items")
                if not dry_run:
                    pep.publish(service, name, PubSubItem(
                        item_id, service, payload, datetime.now(timezone.utc)), keep)


def _put_node(pep, service, name, settings, node, user):
    if node is None:
        try:
            pep.create_node(service, name, settings, account=(user.local, user.domain))
            return
        except NodeExists:
            pass
    pep.configure_node(service, name, settings)


def _write_archive(store, data, counts, dry_run):
    """The messages whose ids (from their time and content) the account's
    archive does not hold."""
    if not data.archive:
        return
    user = data.jid
    archive = store.open("archive", ARCHIVE_STORE)
    held = _archive_ids(archive, user, data.archive)
    new = {}
    for record in data.archive:
        if record.id not in held:
            new.setdefault(record.id, record)
    counts.add("archived messages", len(new))
    if new and not dry_run:
        archive.append_many(sorted(new.values(), key=lambda record: int(record.id)))


def _archive_ids(archive, user, records):
    """The ids the account's archive holds in the time span of ``records``."""
    times = [archive_id_time(record.id) for record in records]
    held, after = set(), None
    while True:
        page = archive.find(user.local, user.domain, start=min(times), end=max(times),
                            after=after, limit=ARCHIVE_PAGE)
        held.update(message.id for message in page.items)
        if page.complete or page.last is None:
            return held
        after = page.last
