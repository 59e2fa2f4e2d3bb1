"""User avatars (XEP-0084) and vCard avatars (XEP-0153) kept in step
(XEP-0398): PEP to vCard, vCard to PEP, the hash in presence.
Capabilities (XEP-0115) come from a toy ``client_caps`` service."""

import base64
import hashlib

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from tests.harness import online
from tests.pep_support import Caps, pep_server
from xmppd.pubsub import NS_EVENT, NS_PUBSUB
from xmppd.storage import RosterItem

ALICE, BOB = "alice@example.com", "bob@example.com"
DATA, METADATA = "urn:xmpp:avatar:data", "urn:xmpp:avatar:metadata"
VCARD = "vcard-temp"
UPDATE = "vcard-temp:x:update"
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
SHA1 = hashlib.sha1(IMAGE).hexdigest()
B64 = base64.b64encode(IMAGE).decode()


@pytest.fixture
def caps():
    return Caps()


def build(tmp_path, caps, extra="", hosts=("example.com",)):
    return pep_server(tmp_path, caps, (ALICE, BOB), extra, hosts)


@pytest.fixture
def server(tmp_path, caps):
    return build(tmp_path, caps)


@pytest.fixture
def logged_warnings():
    logged = []
    globalLogPublisher.addObserver(logged.append)
    yield lambda: [event for event in logged if event["log_level"] >= LogLevel.warn]
    globalLogPublisher.removeObserver(logged.append)


def answer(client, id_):
    return next(e for e in client.take() if e.name == "iq" and e.getAttribute("id") == id_)


def publish(client, node, item_id, payload):
    client.send(f"<iq type='set' id='pub'><pubsub xmlns='{NS_PUBSUB}'>"
                f"<publish node='{node}'><item id='{item_id}'>{payload}</item></publish>"
                "</pubsub></iq>")
    result = answer(client, "pub")
    assert result["type"] == "result", result.toXml()


def publish_avatar(client, image=B64, item_id=SHA1):
    publish(client, DATA, item_id, f"<data xmlns='{DATA}'>{image}</data>")
    publish(client, METADATA, item_id, f"<metadata xmlns='{METADATA}'>"
            f"<info id='{item_id}' type='image/png' bytes='{len(IMAGE)}'/></metadata>")


def items(client, node):
    """``[(id, payload element)]`` of the account's node, oldest first."""
    client.send(f"<iq type='get' id='items'><pubsub xmlns='{NS_PUBSUB}'>"
                f"<items node='{node}'/></pubsub></iq>")
    result = answer(client, "items")
    if result["type"] == "error":
        return []
    found = next(next(result.elements(NS_PUBSUB, "pubsub")).elements(NS_PUBSUB, "items"))
    return [(item["id"], item.firstChildElement())
            for item in found.elements(NS_PUBSUB, "item")]


def set_vcard(client, children):
    client.send(f"<iq type='set' id='v'><vCard xmlns='{VCARD}'>{children}</vCard></iq>")
    result = answer(client, "v")
    assert result["type"] == "result", result.toXml()


def get_vcard(client):
    client.send(f"<iq type='get' id='g'><vCard xmlns='{VCARD}'/></iq>")
    return answer(client, "g").firstChildElement()


def photo(vcard):
    """``(TYPE, BINVAL)`` of the vCard's photo, or None."""
    found = next(vcard.elements(VCARD, "PHOTO"), None)
    if found is None:
        return None
    return str(next(found.elements(VCARD, "TYPE"))), str(next(found.elements(VCARD, "BINVAL")))


def events(client):
    """``(node, item id)`` of each pubsub event item the client received."""
    return [(batch["node"], entry["id"]) for message in client.take()
            for event in message.elements(NS_EVENT, "event")
            for batch in event.elements(NS_EVENT, "items") for entry in batch.elements()]


# PEP to vCard (§3.1)

def test_a_pep_avatar_becomes_the_vcard_photo(server):
    alice = online(server, ALICE)
    set_vcard(alice, "<FN>Alice</FN>")
    publish_avatar(alice)
    vcard = get_vcard(alice)
    assert photo(vcard) == ("image/png", B64)
    assert str(next(vcard.elements(VCARD, "FN"))) == "Alice"


def test_an_empty_metadata_removes_the_vcard_photo(server):
    alice = online(server, ALICE)
    set_vcard(alice, f"<FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{B64}</BINVAL></PHOTO>")
    publish(alice, METADATA, "none", f"<metadata xmlns='{METADATA}'/>")
    vcard = get_vcard(alice)
    assert photo(vcard) is None
    assert str(next(vcard.elements(VCARD, "FN"))) == "Alice"


def test_an_external_avatar_is_passed_over_for_the_one_in_pep(server):
    alice = online(server, ALICE)
    publish(alice, DATA, SHA1, f"<data xmlns='{DATA}'>{B64}</data>")
    publish(alice, METADATA, SHA1, f"<metadata xmlns='{METADATA}'>"
            f"<info id='0000' type='image/png' bytes='9' url='https://example.com/a.png'/>"
            f"<info id='{SHA1}' type='image/png' bytes='{len(IMAGE)}'/></metadata>")
    assert photo(get_vcard(alice)) == ("image/png", B64)


@pytest.mark.parametrize("image, item_id", [("not base64!", SHA1), (B64, "0" * 40)])
def test_bad_data_is_not_converted_and_the_publish_succeeds(server, logged_warnings, image,
                                                            item_id):
    alice = online(server, ALICE)
    set_vcard(alice, "<FN>Alice</FN>")
    publish_avatar(alice, image, item_id)  # answered with a result
    assert photo(get_vcard(alice)) is None
    assert [item_id for item_id, _ in items(alice, METADATA)] == [item_id]
    [line] = logged_warnings()
    assert line["log_level"] == LogLevel.warn and "log_failure" not in line


def test_metadata_without_its_data_is_not_converted(server, logged_warnings):
    alice = online(server, ALICE)
    publish(alice, METADATA, SHA1, f"<metadata xmlns='{METADATA}'>"
            f"<info id='{SHA1}' type='image/png' bytes='{len(IMAGE)}'/></metadata>")
    assert photo(get_vcard(alice)) is None
    assert len(logged_warnings()) == 1


# vCard to PEP (§3.2)

def test_a_vcard_photo_is_published_to_pep(server, caps):
    alice = online(server, ALICE)
    caps.learn(f"{ALICE}/other", METADATA)
    other = online(server, ALICE, "other")
    wrapped = "\n".join(B64[i:i + 76] for i in range(0, len(B64), 76))
    set_vcard(alice, f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{wrapped}</BINVAL></PHOTO>")
    [(data_id, data)] = items(alice, DATA)
    assert (data_id, str(data)) == (SHA1, B64)
    [(metadata_id, metadata)] = items(alice, METADATA)
    info = next(metadata.elements(METADATA, "info"))
    assert metadata_id == SHA1
    assert (info["id"], info["type"], info["bytes"]) == (SHA1, "image/png", str(len(IMAGE)))
    assert events(other) == [(METADATA, SHA1)]
    assert photo(get_vcard(alice)) == ("image/png", wrapped)  # the client's vCard, as set


def test_a_vcard_without_photo_publishes_an_empty_metadata(server):
    alice = online(server, ALICE)
    publish_avatar(alice)
    set_vcard(alice, "<FN>Alice</FN>")
    _, metadata = items(alice, METADATA)[-1]
    assert list(metadata.elements()) == []


def test_a_vcard_never_given_a_photo_publishes_nothing(server):
    alice = online(server, ALICE)
    set_vcard(alice, "<FN>Alice</FN>")
    assert items(alice, METADATA) == []


def test_a_bad_vcard_photo_is_stored_and_not_converted(server, logged_warnings):
    alice = online(server, ALICE)
    set_vcard(alice, "<PHOTO><TYPE>image/png</TYPE><BINVAL>@@@</BINVAL></PHOTO>")
    assert photo(get_vcard(alice)) == ("image/png", "@@@")
    assert items(alice, METADATA) == []
    assert len(logged_warnings()) == 1


def test_nothing_is_converted_back(server, caps):
    alice = online(server, ALICE)
    caps.learn(f"{ALICE}/other", METADATA, DATA)
    other = online(server, ALICE, "other")
    publish_avatar(alice)
    assert events(other) == [(DATA, SHA1), (METADATA, SHA1)]  # the client's own only
    set_vcard(alice, f"<FN>A</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{B64}</BINVAL></PHOTO>")
    assert events(other) == []  # PEP has that avatar already


# Presence (§4)

def presence_from_alice(server, stanza):
    """The presence ``alice/other`` gets when ``alice/res`` sends ``stanza``."""
    alice, other = online(server, ALICE), online(server, ALICE, "other")
    alice.take()
    alice.send(stanza)
    [presence] = [e for e in other.take() if e.name == "presence"]
    return presence


def update_photo(presence):
    update = next(presence.elements(UPDATE, "x"))
    return [str(photo) for photo in update.elements(UPDATE, "photo")]


def test_presence_carries_the_avatar_hash(server):
    alice = online(server, ALICE)
    set_vcard(alice, f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{B64}</BINVAL></PHOTO>")
    assert update_photo(presence_from_alice(server, "<presence/>")) == [SHA1]
    empty_x = presence_from_alice(server, f"<presence><x xmlns='{UPDATE}'/></presence>")
    assert update_photo(empty_x) == [SHA1]


def test_presence_of_an_account_without_avatar_is_left_alone(server):
    presence = presence_from_alice(server, "<presence/>")
    assert next(presence.elements(UPDATE, "x"), None) is None
    own = presence_from_alice(server, f"<presence><x xmlns='{UPDATE}'><photo/></x></presence>")
    assert update_photo(own) == [""]
    asked = presence_from_alice(server, f"<presence><x xmlns='{UPDATE}'/></presence>")
    assert update_photo(asked) == [""]


def test_presence_says_an_avatar_was_removed(server):
    alice, other = online(server, ALICE), online(server, ALICE, "other")
    publish_avatar(alice)
    publish(alice, METADATA, "none", f"<metadata xmlns='{METADATA}'/>")
    other.take()
    alice.send("<presence/>")
    [presence] = [e for e in other.take() if e.name == "presence"]
    assert update_photo(presence) == [""]


def test_directed_presence_and_a_changed_avatar(server):
    for user, contact in ((ALICE, BOB), (BOB, ALICE)):
        local, domain = user.split("@")
        server.sql.set_roster_item(local, domain, RosterItem(contact, subscription="both"))
    bob = online(server, BOB)
    alice = online(server, ALICE)
    bob.take()
    publish_avatar(alice)
    alice.send(f"<presence to='{BOB}/res'/>")
    [presence] = [e for e in bob.take() if e.name == "presence"]
    assert update_photo(presence) == [SHA1]


def test_the_account_advertises_the_conversion(server):
    alice = online(server, ALICE)
    alice.send(f"<iq type='get' id='d' to='{ALICE}'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert "urn:xmpp:pep-vcard-conversion:0" in answer(alice, "d").toXml()


def test_nothing_where_vcards_are_disabled(tmp_path, caps):
    server = build(tmp_path, caps, extra='[hosts."example.com"]\ndisabled_modules = ["vcard"]',
                   hosts=())
    alice = online(server, ALICE)
    publish_avatar(alice)
    alice.send(f"<iq type='get' id='d' to='{ALICE}'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert "pep-vcard-conversion" not in answer(alice, "d").toXml()
    presence = presence_from_alice(server, "<presence/>")
    assert next(presence.elements(UPDATE, "x"), None) is None
