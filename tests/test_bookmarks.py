"""Bookmarks kept in step (XEP-0402 §5.3, XEP-0411): private XML storage
and the ``storage:bookmarks`` PEP node (XEP-0048) on one side, the
``urn:xmpp:bookmarks:1`` node on the other.  Capabilities (XEP-0115) come
from a toy ``client_caps`` service that says what each full JID wants."""


import pytest
from twisted.logger import LogLevel, globalLogPublisher

from tests.harness import online
from tests.pep_support import Caps, pep_server
from xmppd.pubsub import NS_EVENT, NS_OWNER, NS_PUBLISH_OPTIONS, NS_PUBSUB

ALICE = "alice@example.com"
NS = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
ROOM, OTHER = "room@muc.example.com", "other@muc.example.com"
COMPAT_OPTIONS = {"persist_items": "true", "max_items": "max",
                  "send_last_published_item": "never", "access_model": "whitelist"}


@pytest.fixture
def caps():
    return Caps()


def build(tmp_path, caps, extra="", hosts=("example.com",)):
    return pep_server(tmp_path, caps, (ALICE,), extra, hosts)


@pytest.fixture
def server(tmp_path, caps):
    return build(tmp_path, caps)


def answer(client, id_):
    return next(e for e in client.take() if e.name == "iq" and e.getAttribute("id") == id_)


def set_private(client, storage):
    client.send(f"<iq type='set' id='p'><query xmlns='jabber:iq:private'>{storage}</query></iq>")
    result = answer(client, "p")
    assert result["type"] == "result", result.toXml()


def get_private(client):
    """The stored ``<storage xmlns='storage:bookmarks'/>``."""
    client.send(f"<iq type='get' id='g'><query xmlns='jabber:iq:private'>"
                f"<storage xmlns='{LEGACY}'/></query></iq>")
    return next(answer(client, "g").firstChildElement().elements(LEGACY, "storage"))


def conferences(storage):
    """``{jid: (name, autojoin, nick)}`` of a legacy storage element."""
    return {c["jid"]: (c.getAttribute("name"), c.getAttribute("autojoin"),
                       _text(c, "nick")) for c in storage.elements(LEGACY, "conference")}


def _text(element, name):
    child = next((c for c in element.elements() if c.name == name), None)
    return None if child is None else str(child)


def options_form(options):
    fields = "".join(f"<field var='pubsub#{var}'><value>{value}</value></field>"
                     for var, value in options.items())
    return (f"<publish-options><x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{NS_PUBLISH_OPTIONS}</value></field>"
            f"{fields}</x></publish-options>")


def publish(client, item_id, payload, node=NS, options=None):
    options = COMPAT_OPTIONS if options is None else options
    client.send(f"<iq type='set' id='pub'><pubsub xmlns='{NS_PUBSUB}'>"
                f"<publish node='{node}'><item id='{item_id}'>{payload}</item></publish>"
                f"{options_form(options) if options else ''}</pubsub></iq>")
    result = answer(client, "pub")
    assert result["type"] == "result", result.toXml()


def retract(client, item_id, node=NS):
    client.send(f"<iq type='set' id='r'><pubsub xmlns='{NS_PUBSUB}'><retract node='{node}'>"
                f"<item id='{item_id}'/></retract></pubsub></iq>")
    assert answer(client, "r")["type"] == "result"


def items(client, node=NS):
    """``{id: payload element}`` of the account's node."""
    client.send(f"<iq type='get' id='items'><pubsub xmlns='{NS_PUBSUB}'>"
                f"<items node='{node}'/></pubsub></iq>")
    result = answer(client, "items")
    if result["type"] == "error":
        return {}
    found = next(next(result.elements(NS_PUBSUB, "pubsub")).elements(NS_PUBSUB, "items"))
    return {item["id"]: item.firstChildElement() for item in found.elements(NS_PUBSUB, "item")}


def events(client):
    """``(node, kind, id)`` of each pubsub event item the client received."""
    found = []
    for message in client.take():
        for event in message.elements(NS_EVENT, "event"):
            for batch in event.elements(NS_EVENT, "items"):
                found += [(batch["node"], entry.name, entry["id"]) for entry in batch.elements()]
    return found


LEGACY_STORAGE = (f"<storage xmlns='{LEGACY}'>"
                  f"<conference jid='{ROOM}' name='The Room' autojoin='true'>"
                  "<nick>al</nick><password>pw</password></conference>"
                  f"<conference jid='{OTHER}' name='Other'/>"
                  "<url name='Site' url='https://example.com/'/></storage>")


# Private storage to PEP

def test_private_bookmarks_become_pep_items(server):
    alice = online(server, ALICE)
    set_private(alice, LEGACY_STORAGE)
    found = items(alice)
    assert sorted(found) == [OTHER, ROOM]
    room = found[ROOM]
    assert (room.uri, room.name) == (NS, "conference")
    assert (room["name"], room["autojoin"]) == ("The Room", "true")
    assert (_text(room, "nick"), _text(room, "password")) == ("al", "pw")
    assert (found[OTHER]["name"], found[OTHER].getAttribute("autojoin")) == ("Other", None)
    [legacy] = items(alice, LEGACY).values()
    assert conferences(legacy) == conferences(get_private(alice))


def test_the_node_is_private_and_keeps_every_item(server):
    alice = online(server, ALICE)
    set_private(alice, LEGACY_STORAGE)
    alice.send(f"<iq type='get' id='c'><pubsub xmlns='{NS_OWNER}'>"
               f"<configure node='{NS}'/></pubsub></iq>")
    config = answer(alice, "c").toXml()
    for value in ("whitelist", "max", "never"):
        assert f"<value>{value}</value>" in config


def test_changed_and_removed_conferences_only_are_published(server, caps):
    alice = online(server, ALICE)
    caps.learn(f"{ALICE}/other", NS)
    other = online(server, ALICE, "other")
    set_private(alice, LEGACY_STORAGE)
    assert sorted(events(other)) == [(NS, "item", OTHER), (NS, "item", ROOM)]
    changed = LEGACY_STORAGE.replace("name='Other'", "name='Renamed'")
    set_private(alice, changed)
    assert events(other) == [(NS, "item", OTHER)]
    set_private(alice, changed.replace(f"<conference jid='{OTHER}' name='Renamed'/>", ""))
    assert events(other) == [(NS, "retract", OTHER)]
    assert sorted(items(alice)) == [ROOM]


def test_a_changed_conference_keeps_its_extensions(server):
    alice = online(server, ALICE)
    publish(alice, ROOM, f"<conference xmlns='{NS}' name='The Room'><nick>al</nick>"
            "<extensions><state xmlns='urn:example:pinned'/></extensions></conference>")
    set_private(alice, get_private(alice).toXml().replace("al<", "alice<"))
    room = items(alice)[ROOM]
    assert _text(room, "nick") == "alice"
    assert "urn:example:pinned" in room.toXml()


# PEP to private storage

def test_published_and_retracted_items_rewrite_private_storage(server):
    alice = online(server, ALICE)
    set_private(alice, LEGACY_STORAGE)
    third = "third@muc.example.com"
    publish(alice, third, f"<conference xmlns='{NS}' name='Third' autojoin='1'>"
            "<nick>A</nick></conference>")
    assert conferences(get_private(alice))[third] == ("Third", "true", "A")
    publish(alice, ROOM, f"<conference xmlns='{NS}' name='New name'/>")
    stored = get_private(alice)
    assert conferences(stored)[ROOM] == ("New name", "false", None)
    retract(alice, OTHER)
    stored = get_private(alice)
    assert sorted(conferences(stored)) == [ROOM, third]
    [url] = stored.elements(LEGACY, "url")
    assert url["url"] == "https://example.com/"
    [legacy] = items(alice, LEGACY).values()
    assert conferences(legacy) == conferences(stored)


def test_a_purged_or_deleted_node_empties_private_storage(server):
    alice = online(server, ALICE)
    for verb in ("purge", "delete"):
        set_private(alice, LEGACY_STORAGE)
        alice.send(f"<iq type='set' id='o'><pubsub xmlns='{NS_OWNER}'><{verb} node='{NS}'/>"
                   "</pubsub></iq>")
        assert answer(alice, "o")["type"] == "result"
        stored = get_private(alice)
        assert conferences(stored) == {}
        [url] = stored.elements(LEGACY, "url")
        assert url["url"] == "https://example.com/"


def test_a_pep_bookmark_reaches_a_client_of_private_storage(server):
    pep_client, legacy_client = online(server, ALICE, "new"), online(server, ALICE, "old")
    publish(pep_client, ROOM, f"<conference xmlns='{NS}' name='R' autojoin='true'/>")
    assert conferences(get_private(legacy_client)) == {ROOM: ("R", "true", None)}
    assert items(pep_client)[ROOM]["name"] == "R"  # the client's item, not written again


def test_a_private_bookmark_reaches_a_pep_client(server):
    legacy_client, pep_client = online(server, ALICE, "old"), online(server, ALICE, "new")
    set_private(legacy_client, LEGACY_STORAGE)
    assert sorted(items(pep_client)) == [OTHER, ROOM]


def test_the_legacy_pep_node_converts_too(server, caps):
    alice = online(server, ALICE)
    caps.learn(f"{ALICE}/other", NS, LEGACY)
    other = online(server, ALICE, "other")
    publish(alice, "current", LEGACY_STORAGE, node=LEGACY,
            options={"persist_items": "true", "access_model": "whitelist"})
    assert sorted(items(alice)) == [OTHER, ROOM]
    assert sorted(conferences(get_private(alice))) == [OTHER, ROOM]
    assert sorted(events(other)) == [(LEGACY, "item", "current"), (NS, "item", OTHER),
                                     (NS, "item", ROOM)]


def test_nothing_is_converted_back(server, caps):
    """Each write is notified once: the server's own writes do not come
    back to it as new changes."""
    alice = online(server, ALICE)
    caps.learn(f"{ALICE}/other", NS, LEGACY)
    other = online(server, ALICE, "other")
    publish(alice, ROOM, f"<conference xmlns='{NS}' name='R'/>")
    assert sorted(events(other)) == [(LEGACY, "item", "current"), (NS, "item", ROOM)]
    set_private(alice, get_private(alice).toXml())
    assert events(other) == [(LEGACY, "item", "current")]  # the room is unchanged


def test_a_node_of_another_configuration_is_left_alone(server):
    """A bookmarks node a client made readable by contacts: the server
    does not put rooms (and passwords) there, and says so once; private
    storage is written."""
    alice = online(server, ALICE)
    publish(alice, ROOM, f"<conference xmlns='{NS}' name='R'/>", options={})
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        set_private(alice, LEGACY_STORAGE)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    [line] = [event for event in logged if event["log_level"] >= LogLevel.warn]
    assert "precondition-not-met" in str(line["why"].application)
    assert sorted(items(alice)) == [ROOM]
    assert sorted(conferences(get_private(alice))) == [OTHER, ROOM]


def test_the_account_advertises_the_conversion(server):
    alice = online(server, ALICE)
    alice.send(f"<iq type='get' id='d' to='{ALICE}'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    info = answer(alice, "d").toXml()
    for feature in (f"{NS}#compat", f"{NS}#compat-pep", "urn:xmpp:bookmarks-conversion:0"):
        assert f"var='{feature}'" in info.replace('"', "'")


def test_nothing_where_private_storage_is_disabled(tmp_path, caps):
    server = build(tmp_path, caps, extra='[hosts."example.com"]\ndisabled_modules = ["private"]',
                   hosts=())
    alice = online(server, ALICE)
    publish(alice, ROOM, f"<conference xmlns='{NS}' name='R'/>")
    assert items(alice, LEGACY) == {}
    alice.send(f"<iq type='get' id='d' to='{ALICE}'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert "compat" not in answer(alice, "d").toXml()
