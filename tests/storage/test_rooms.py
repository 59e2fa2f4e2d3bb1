"""Contract of the ``rooms`` store (xmppd.storage.kinds.RoomStore): rooms of
XEP-0045 services with their configuration, subject and affiliations,
scoped by store name and by service; a room's archive goes with it."""

import pytest
from sqlalchemy import Engine, event

from xmppd.storage import RoomExists, RoomNotFound, TooManyRooms
from xmppd.storage.deferred import AsyncStore, immediate_runner
from xmppd.storage.kinds import INTERACTIVE, Room, lane, methods
from xmppd.storage.models import MucAffiliationRow, MucRoomRow, RoomArchiveEntry

from .conftest import row_count

SERVICE = "conference.example.org"
ALICE, BOB, EVE = "alice@example.org", "bob@example.net", "eve@example.com"
CONFIG = {"muc#roomconfig_roomname": "The lobby", "muc#roomconfig_persistentroom": "1",
          "muc#roomconfig_presencebroadcast": ["moderator", "participant"]}
SUBJECT = (f"<message xmlns='jabber:client' from='lobby@{SERVICE}/alice' type='groupchat'>"
           "<subject>Welcome</subject></message>")
LOBBY = Room("lobby", CONFIG, SUBJECT, {ALICE: "owner", BOB: "member"})


def room(name: str, owner: str = ALICE) -> Room:
    return Room(name, {}, "", {owner: "owner"})


@pytest.fixture
def rooms(store):
    """The ``muc`` store, with the room LOBBY of SERVICE."""
    rooms = store.open("rooms", "muc")
    rooms.create_room(SERVICE, LOBBY)
    return rooms


# Rooms (XEP-0045 §10.1, §10.2, §10.9)


def test_create_and_get_room(rooms):
    assert rooms.get_room(SERVICE, "lobby") == LOBBY
    assert rooms.get_room(SERVICE, "cellar") is None
    rooms.create_room(SERVICE, Room("cellar", {}, "", {}))
    assert rooms.get_room(SERVICE, "cellar") == Room("cellar", {}, "", {})


def test_rooms_sorted_with_their_affiliations(rooms):
    for name in ("zoo", "attic", "cellar"):
        rooms.create_room(SERVICE, room(name, owner=BOB))
    rooms.create_room("conference.example.net", room("other"))
    statements = []

    def executed(connection, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", executed)
    try:
        found = rooms.rooms(SERVICE)
    finally:
        event.remove(Engine, "before_cursor_execute", executed)
    assert found == [room("attic", BOB), room("cellar", BOB), LOBBY, room("zoo", BOB)]
    assert sum(statement.lstrip().startswith("SELECT") for statement in statements) == 2
    assert rooms.rooms("conference.example.com") == []


def test_configure_room(rooms):
    rooms.configure_room(SERVICE, "lobby", {"muc#roomconfig_roomname": "Hall"})
    assert rooms.get_room(SERVICE, "lobby") == Room(
        "lobby", {"muc#roomconfig_roomname": "Hall"}, SUBJECT, LOBBY.affiliations)
    rooms.configure_room(SERVICE, "lobby", {"a": ("x", "y"), "b": [], "c": "", "d": "☃"})
    assert rooms.get_room(SERVICE, "lobby").config == {"a": ["x", "y"], "b": [], "c": "",
                                                        "d": "☃"}
    for bad in ({"a": 1}, {"a": ["x", 2]}, {"a": None}):
        with pytest.raises((ValueError, TypeError)):
            rooms.configure_room(SERVICE, "lobby", bad)
        with pytest.raises((ValueError, TypeError)):
            rooms.create_room(SERVICE, Room("cellar", bad, "", {}))
    assert rooms.get_room(SERVICE, "lobby").config["d"] == "☃"
    assert rooms.get_room(SERVICE, "cellar") is None


def test_set_subject(rooms):
    rooms.set_subject(SERVICE, "lobby", "<message><subject/></message>")
    assert rooms.get_room(SERVICE, "lobby") == Room(
        "lobby", CONFIG, "<message><subject/></message>", LOBBY.affiliations)
    rooms.set_subject(SERVICE, "lobby", "")
    assert rooms.get_room(SERVICE, "lobby").subject == ""


def test_delete_room(rooms):
    rooms.create_room(SERVICE, room("cellar"))
    assert rooms.delete_room(SERVICE, "lobby") is True
    assert rooms.delete_room(SERVICE, "lobby") is False
    assert rooms.get_room(SERVICE, "lobby") is None
    assert rooms.rooms(SERVICE) == [room("cellar")]
    assert rooms.owned_rooms(SERVICE, ALICE) == ["cellar"]


def test_delete_room_takes_its_affiliations_and_archive(backend, store, rooms):
    rooms.create_room(SERVICE, room("cellar"))
    archive = store.open("room_archive", "muc")
    for n, name in enumerate(("lobby", "cellar", "lobby"), start=1):
        archive.append(name, SERVICE, f"{name}@{SERVICE}/alice", None, "in", "<m/>", id=str(n))
    assert rooms.delete_room(SERVICE, "lobby") is True
    assert row_count(backend, MucRoomRow) == 1
    assert row_count(backend, MucAffiliationRow) == 1
    assert row_count(backend, RoomArchiveEntry) == 1
    assert [item.id for item in archive.find("cellar", SERVICE).items] == ["2"]

    rooms.create_room(SERVICE, Room("lobby", {}, "", {}))
    assert rooms.get_room(SERVICE, "lobby") == Room("lobby", {}, "", {})
    assert archive.find("lobby", SERVICE).items == []


def test_room_exists(rooms):
    with pytest.raises(RoomExists):
        rooms.create_room(SERVICE, room("lobby", owner=EVE))
    with pytest.raises(RoomExists):  # before the limit
        rooms.create_room(SERVICE, room("lobby", owner=EVE), max_rooms=1)
    assert rooms.get_room(SERVICE, "lobby") == LOBBY


def test_too_many_rooms(store, rooms):
    rooms.create_room(SERVICE, room("cellar"), max_rooms=2)
    with pytest.raises(TooManyRooms):
        rooms.create_room(SERVICE, room("attic"), max_rooms=2)
    with pytest.raises(TooManyRooms):
        rooms.create_room(SERVICE, room("attic"), max_rooms=0)
    assert [found.name for found in rooms.rooms(SERVICE)] == ["cellar", "lobby"]
    assert rooms.owned_rooms(SERVICE, ALICE) == ["cellar", "lobby"]
    rooms.create_room(SERVICE, room("attic"), max_rooms=3)
    # The limit is the service's in this store.
    store.open("rooms", "other").create_room(SERVICE, room("lobby"), max_rooms=1)
    rooms.create_room("conference.example.net", room("lobby"), max_rooms=1)


def test_unknown_room(rooms):
    for write in (lambda: rooms.configure_room(SERVICE, "cellar", {}),
                  lambda: rooms.set_subject(SERVICE, "cellar", ""),
                  lambda: rooms.set_affiliation(SERVICE, "cellar", BOB, "member"),
                  lambda: rooms.set_affiliation(SERVICE, "cellar", BOB, None)):
        with pytest.raises(RoomNotFound):
            write()
    assert rooms.get_room(SERVICE, "cellar") is None
    assert rooms.delete_room(SERVICE, "cellar") is False
    assert [found.name for found in rooms.rooms(SERVICE)] == ["lobby"]


def test_room_names(rooms):
    for bad in ("x" * 1024, ""):
        with pytest.raises(ValueError):
            rooms.create_room(SERVICE, room(bad))
    rooms.create_room(SERVICE, room("x" * 1023))
    assert rooms.get_room(SERVICE, "x" * 1023) == room("x" * 1023)
    assert rooms.get_room(SERVICE, "x" * 1024) is None


# Affiliations (XEP-0045 §5.2, §9, §10)


def test_affiliations(rooms):
    rooms.set_affiliation(SERVICE, "lobby", EVE, "outcast")
    rooms.set_affiliation(SERVICE, "lobby", BOB, "admin")
    rooms.set_affiliation(SERVICE, "lobby", "carol@example.net", "member")
    assert rooms.get_room(SERVICE, "lobby").affiliations == {
        ALICE: "owner", BOB: "admin", EVE: "outcast", "carol@example.net": "member"}
    rooms.set_affiliation(SERVICE, "lobby", BOB, None)
    rooms.set_affiliation(SERVICE, "lobby", EVE, "none")
    rooms.set_affiliation(SERVICE, "lobby", "dave@example.net", "none")
    assert rooms.get_room(SERVICE, "lobby").affiliations == {
        ALICE: "owner", "carol@example.net": "member"}


def test_invalid_affiliations(rooms):
    for bad in ("king", "publisher", "", "Owner"):
        with pytest.raises(ValueError):
            rooms.set_affiliation(SERVICE, "lobby", BOB, bad)
        with pytest.raises(ValueError):
            rooms.create_room(SERVICE, Room("cellar", {}, "", {ALICE: "owner", BOB: bad}))
    assert rooms.get_room(SERVICE, "lobby") == LOBBY
    assert rooms.get_room(SERVICE, "cellar") is None


def test_owned_rooms(store, rooms):
    rooms.create_room(SERVICE, Room("cellar", {}, "", {BOB: "owner", ALICE: "owner"}))
    rooms.create_room(SERVICE, Room("attic", {}, "", {ALICE: "admin"}))
    rooms.create_room(SERVICE, room("zoo", owner=BOB))
    rooms.create_room("conference.example.net", room("hall"))
    store.open("rooms", "other").create_room(SERVICE, room("hall"))
    assert rooms.owned_rooms(SERVICE, ALICE) == ["cellar", "lobby"]
    assert rooms.owned_rooms(SERVICE, BOB) == ["cellar", "zoo"]
    rooms.set_affiliation(SERVICE, "attic", ALICE, "owner")
    rooms.set_affiliation(SERVICE, "lobby", ALICE, "member")
    assert rooms.owned_rooms(SERVICE, ALICE) == ["attic", "cellar"]
    assert rooms.owned_rooms(SERVICE, EVE) == []
    assert rooms.owned_rooms("conference.example.net", ALICE) == ["hall"]


# Scopes


def test_store_names_do_not_see_each_other(store, rooms):
    other = store.open("rooms", "other")
    assert other.get_room(SERVICE, "lobby") is None
    assert other.rooms(SERVICE) == []
    assert other.owned_rooms(SERVICE, ALICE) == []
    with pytest.raises(RoomNotFound):
        other.set_affiliation(SERVICE, "lobby", BOB, "owner")
    other.create_room(SERVICE, room("lobby", owner=EVE))
    other.set_subject(SERVICE, "lobby", "<message/>")
    other.configure_room(SERVICE, "lobby", {"muc#roomconfig_roomname": "Other"})
    assert rooms.get_room(SERVICE, "lobby") == LOBBY
    assert other.delete_room(SERVICE, "lobby") is True
    assert rooms.get_room(SERVICE, "lobby") == LOBBY


def test_services_do_not_see_each_other(rooms):
    net = "conference.example.net"
    assert rooms.get_room(net, "lobby") is None
    with pytest.raises(RoomNotFound):
        rooms.configure_room(net, "lobby", {})
    rooms.create_room(net, room("lobby", owner=EVE))
    rooms.set_affiliation(net, "lobby", BOB, "outcast")
    assert rooms.get_room(net, "lobby") == Room("lobby", {}, "", {EVE: "owner", BOB: "outcast"})
    assert rooms.get_room(SERVICE, "lobby") == LOBBY
    assert rooms.owned_rooms(SERVICE, EVE) == []
    assert rooms.delete_room(net, "lobby") is True
    assert rooms.get_room(SERVICE, "lobby") == LOBBY


# Through the server's store


def test_every_call_is_interactive():
    assert {lane(method) for method in methods("rooms").values()} == {INTERACTIVE}


def test_through_async_store(store):
    rooms = AsyncStore(store, immediate_runner).open("rooms", "muc")
    results = []
    rooms.create_room(SERVICE, LOBBY, max_rooms=1).addCallback(results.append)
    rooms.get_room(SERVICE, "lobby").addCallback(results.append)
    rooms.owned_rooms(SERVICE, ALICE).addCallback(results.append)
    rooms.create_room(SERVICE, room("cellar"), max_rooms=1).addErrback(
        lambda failure: results.append(failure.trap(TooManyRooms)))
    rooms.set_subject(SERVICE, "cellar", "").addErrback(
        lambda failure: results.append(failure.trap(RoomNotFound)))
    assert results == [None, LOBBY, ["lobby"], TooManyRooms, RoomNotFound]
