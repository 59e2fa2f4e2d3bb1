"""Writing the accounts of the database as a XEP-0227 file.

One file, UTF-8, ``<server-data xmlns='urn:xmpp:pie:0'>`` with a
``<host/>`` per domain and a ``<user/>`` per account (§4.1, §4.2), created
readable by its owner only (§6): SCRAM verifiers as ``<scram-credentials/>``
(§4.3, never a password: none is stored), the roster (§4.4), offline
messages (§4.5), private XML (§4.6), the vCard (§4.7), pending inbound
subscription requests (§4.9), PEP nodes with their configuration and
items (§4.10) and the message archive, oldest first (§4.11).
"""

import base64
import os

from twisted.words.xish import domish

from xmppd.core.stanzas import xep0082_stamp
from xmppd.core.xmlstream import parse_stanza
from xmppd.modules import private as private_module
from xmppd.modules import vcard as vcard_module
from xmppd.modules.roster import item_element
from xmppd.modules.subscription import REQUESTS
from xmppd.pubsub import NS_OWNER, NS_PUBSUB
from xmppd.pubsub.config import config_form

from .importer import (ARCHIVE_STORE, NS_DELAY, NS_FORWARD, NS_MAM, NS_PIE_MAM, NS_ROSTER,
                       NS_SCRAM, PEP_STORE, Counts)
from .reader import NS_PIE

ARCHIVE_PAGE = 500
HEAD = f"<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='{NS_PIE}'>\n"


def export(store, accounts, path):
    """Write ``accounts`` (``(username, domain)`` pairs) to ``path``,
    replacing it at once when complete; the Counts of what was written."""
    counts = Counts()
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(HEAD)
            host = None
            for username, domain in sorted(accounts, key=lambda pair: (pair[1], pair[0])):
                if domain != host:
                    if host is not None:
                        out.write("</host>\n")
                    out.write(f"<host jid='{domish.escapeToXml(domain, True)}'>\n")
                    host = domain
                out.write(user_element(store, username, domain, counts).toXml() + "\n")
            if host is not None:
                out.write("</host>\n")
            out.write("</server-data>\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return counts


def user_element(store, username, domain, counts):
    """The ``<user/>`` of one account."""
    user = domish.Element((NS_PIE, "user"))
    user["name"] = username
    for hash_name, keys in sorted(store.get_credentials(username, domain).items()):
        credentials = user.addElement((NS_SCRAM, "scram-credentials"))
        credentials["mechanism"] = f"SCRAM-{hash_name}"
        credentials.addElement("iter-count", content=str(keys.iterations))
        for name, value in (("salt", keys.salt), ("server-key", keys.server_key),
                            ("stored-key", keys.stored_key)):
            credentials.addElement(name, content=base64.b64encode(value).decode("ascii"))
    counts.add("accounts")
    _roster(store, user, username, domain, counts)
    for text in store.get_values(username, domain, REQUESTS).values():
        user.addChild(parse_stanza(text))
    vcard = store.get_value(username, domain, vcard_module.STORE, vcard_module.KEY)
    if vcard is not None:
        user.addChild(parse_stanza(vcard))
        counts.add("vCards")
    _values(user, (private_module.NS_PRIVATE, "query"),
            store.get_values(username, domain, private_module.STORE), "private XML elements",
            counts)
    _values(user, (NS_PIE, "offline-messages"), dict(enumerate(
        store.open("offline").peek(username, domain))), "offline messages", counts)
    _pep(store, user, f"{username}@{domain}", counts)
    _archive(store, user, username, domain, counts)
    return user


def _roster(store, user, username, domain, counts):
    _, items = store.get_roster(username, domain)
    if not items:
        return
    query = user.addElement((NS_ROSTER, "query"))
    for item in items:
        query.addChild(item_element(item))
    counts.add("roster items", len(items))


def _values(user, qname, values, kind, counts):
    """A ``qname`` element holding the stored elements ``values``."""
    if values:
        holder = user.addElement(qname)
        for text in values.values():
            holder.addChild(parse_stanza(text))
        counts.add(kind, len(values))


def _pep(store, user, service, counts):
    pep = store.open("pubsub", PEP_STORE)
    nodes = pep.nodes(service)
    if not nodes:
        return
    owner = user.addElement((NS_OWNER, "pubsub"))
    pubsub = user.addElement((NS_PUBSUB, "pubsub"))
    for node in nodes:
        owner.addElement("configure")["node"] = node.name
        owner.children[-1].addChild(config_form(node.config, "submit"))
        items = pubsub.addElement("items")
        items["node"] = node.name
        for stored in reversed(pep.get_items(service, node.name)):  # oldest first
            item = items.addElement("item")
            item["id"] = stored.id
            if stored.payload:
                item.addChild(parse_stanza(stored.payload))
            counts.add("PEP items")
        counts.add("PEP nodes")


def _archive(store, user, username, domain, counts):
    archive = store.open("archive", ARCHIVE_STORE)
    holder, after = None, None
    while True:
        page = archive.find(username, domain, after=after, limit=ARCHIVE_PAGE)
        for message in page.items:
            if holder is None:
                holder = user.addElement((NS_PIE_MAM, "archive"))
            result = holder.addElement((NS_MAM, "result"))
            result["id"] = message.id
            forwarded = result.addElement((NS_FORWARD, "forwarded"))
            forwarded.addElement((NS_DELAY, "delay"))["stamp"] = xep0082_stamp(message.timestamp)
            forwarded.addChild(parse_stanza(message.xml))
            counts.add("archived messages")
        if page.complete or page.last is None:
            return
        after = page.last
