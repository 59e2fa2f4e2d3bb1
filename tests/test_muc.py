"""Multi-user chat (XEP-0045) at conference.example.com: entering and
creating rooms, the occupants' presence and messages, history, nick
changes, roles and affiliations, configuration, invitations, voice
requests, moderation (XEP-0425), self-ping (XEP-0410), the room archive
(XEP-0313), discovery, persistence and limits."""

import pytest

from tests.harness import add_user, error_condition, make_server, online
from tests.paused_storage import pausable_server
from xmppd.control import Controller
from xmppd.muc import NS_ADMIN, NS_MUC, NS_OCCUPANT_ID, NS_OWNER, NS_REQUEST, NS_USER
from xmppd.tap import MODULES

SERVICE = "conference.example.com"
ROOM = f"room@{SERVICE}"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"
NS_MAM = "urn:xmpp:mam:2"
CONFIG = "http://jabber.org/protocol/muc#roomconfig"
NS_INFO = "http://jabber.org/protocol/disco#info"


def make(tmp_path, extra=""):
    server = make_server(tmp_path, modules=MODULES + ("muc",), extra=extra)
    for user in (ALICE, BOB, CAROL):
        add_user(server, user)
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


def enter(client, nick, room=ROOM, x=""):
    """Send the presence that enters ``room`` as ``nick``; what came back."""
    client.send(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'>{x}</x></presence>")
    return client.take()


def items(element):
    x = next(element.elements(NS_USER, "x"))
    item = next(x.elements(NS_USER, "item"))
    return dict(item.attributes)


def codes(element):
    x = next(element.elements(NS_USER, "x"), None)
    return set() if x is None else {s["code"] for s in x.elements(NS_USER, "status")}


def iq(client, type_, payload, to=ROOM, id_="q"):
    client.send(f"<iq type='{type_}' id='{id_}' to='{to}'>{payload}</iq>")
    received = client.take()
    answer = next(e for e in received if e.name == "iq" and e.getAttribute("id") == id_)
    client.received.extend(e for e in received if e is not answer)
    return answer


def configure(client, room=ROOM, **fields):
    values = "".join(f"<field var='muc#roomconfig_{var}'><value>{value}</value></field>"
                     for var, value in fields.items())
    return iq(client, "set", f"<query xmlns='{NS_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
                             f"<field var='FORM_TYPE'><value>{CONFIG}</value></field>{values}"
                             f"</x></query>", to=room)


def admin(client, item, id_="a"):
    return iq(client, "set", f"<query xmlns='{NS_ADMIN}'>{item}</query>", id_=id_)


def room_with(server, **config):
    """Alice's configured room with alice (owner) and bob in it."""
    alice, bob = online(server, ALICE), online(server, BOB)
    enter(alice, "alice")
    assert configure(alice, **config)["type"] == "result"
    enter(bob, "bob")
    alice.take()
    return alice, bob


def say(client, text, room=ROOM):
    client.send(f"<message type='groupchat' to='{room}' id='m-{text}'><body>{text}</body>"
                f"</message>")


def bodies(elements):
    return [str(next(e.elements("jabber:client", "body"))) for e in elements
            if e.name == "message" and e.getAttribute("type") != "error"
            and next(e.elements("jabber:client", "body"), None)]


def test_entering_creates_a_locked_room_until_the_owner_configures_it(server):
    alice, bob = online(server, ALICE), online(server, BOB)
    [presence, subject] = enter(alice, "alice")
    assert presence["from"] == f"{ROOM}/alice" and codes(presence) == {"110", "201", "170"}
    assert items(presence) == {"affiliation": "owner", "role": "moderator",
                               "jid": "alice@example.com/res"}
    assert next(presence.elements(NS_OCCUPANT_ID, "occupant-id"))["id"]
    assert subject.name == "message" and next(subject.elements()).name == "subject"
    [refused] = enter(bob, "bob")
    assert refused["type"] == "error" and error_condition(refused) == "item-not-found"

    instant = iq(alice, "set", f"<query xmlns='{NS_OWNER}'><x xmlns='jabber:x:data' "
                               f"type='submit'/></query>")
    assert instant["type"] == "result"
    received = enter(bob, "bob")
    assert [e["from"] for e in received if e.name == "presence"] == [
        f"{ROOM}/alice", f"{ROOM}/bob"]
    assert "jid" not in items(received[0])  # semi-anonymous: bob is no moderator
    assert codes(received[1]) == {"110", "170"}
    [seen] = alice.take()
    assert seen["from"] == f"{ROOM}/bob" and items(seen)["jid"] == "bob@example.com/res"
    assert items(seen)["role"] == "participant"


def test_groupchat_reaches_every_occupant_with_stanza_and_occupant_ids(server):
    alice, bob = room_with(server)
    bob.send(f"<message type='groupchat' to='{ROOM}' id='m1'><body>hi</body>"
             f"<stanza-id xmlns='{NS_SID}' by='{ROOM}' id='forged'/>"
             f"<x xmlns='{NS_USER}'><item jid='alice@example.com/res'/></x></message>")
    [to_alice], [to_bob] = alice.take(), bob.take()
    for message, to in ((to_alice, "alice@example.com/res"), (to_bob, "bob@example.com/res")):
        assert (message["from"], message["to"], message["type"]) == (
            f"{ROOM}/bob", to, "groupchat")
        [sid] = list(message.elements(NS_SID, "stanza-id"))
        assert sid["by"] == ROOM and sid["id"] != "forged"
        assert next(message.elements(NS_USER, "x"), None) is None  # not bob's to say
        assert next(message.elements(NS_OCCUPANT_ID, "occupant-id"))["id"]
    carol = online(server, CAROL)
    say(carol, "intruder")
    [refused] = carol.take()
    assert error_condition(refused) == "not-acceptable"
    assert [e.toXml() for e in alice.take()] == []


def test_history_comes_before_the_subject_and_follows_the_limits(server):
    alice, bob = room_with(server)
    alice.send(f"<message type='groupchat' to='{ROOM}'><subject>Plans</subject></message>")
    for text in ("one", "two", "three"):
        say(alice, text)
    carol = online(server, CAROL)
    received = enter(carol, "carol")
    messages = [e for e in received if e.name == "message"]
    assert bodies(messages) == ["one", "two", "three"]
    assert all(next(m.elements(NS_DELAY, "delay"))["from"] == ROOM for m in messages[:3])
    assert str(next(messages[-1].elements("jabber:client", "subject"))) == "Plans"

    dave = online(server, ALICE, "other")
    received = enter(dave, "alice", x="<history maxstanzas='1'/>")
    assert bodies(received) == ["three"]
    received = enter(online(server, BOB, "third"), "bob", x="<history maxchars='0'/>")
    assert bodies(received) == []


def test_nick_changes_and_conflicts(server):
    alice, bob = room_with(server)
    [conflict] = enter(online(server, CAROL), "bob")
    assert error_condition(conflict) == "conflict"
    bob.send(f"<presence to='{ROOM}/robert'/>")
    gone, back = alice.take()
    assert (gone["type"], codes(gone), items(gone)["nick"]) == ("unavailable", {"303"}, "robert")
    assert back["from"] == f"{ROOM}/robert"
    gone, back = bob.take()
    assert codes(gone) == {"303", "110"} and codes(back) == {"110"}


def test_kick_and_the_role_rules(server):
    alice, bob = room_with(server)
    carol = online(server, CAROL)
    enter(carol, "carol")
    alice.take(), bob.take()
    refused = admin(bob, "<item nick='carol' role='none'/>")
    assert error_condition(refused) == "forbidden"
    refused = admin(carol, "<item nick='alice' role='none'/>")
    assert error_condition(refused) == "forbidden"
    assert admin(alice, "<item nick='carol' role='none'><reason>spam</reason></item>")[
        "type"] == "result"
    [kicked] = carol.take()
    assert kicked["type"] == "unavailable" and codes(kicked) == {"307", "110"}
    item = next(next(kicked.elements(NS_USER, "x")).elements(NS_USER, "item"))
    assert str(next(item.elements(NS_USER, "reason"))) == "spam"
    assert next(item.elements(NS_USER, "actor"))["nick"] == "alice"
    [seen] = bob.take()
    assert codes(seen) == {"307"}
    ping = iq(carol, "get", "<ping xmlns='urn:xmpp:ping'/>", to=f"{ROOM}/carol")
    assert error_condition(ping) == "not-acceptable"  # XEP-0410: no longer in the room


def test_admins_cannot_be_kicked_and_the_last_owner_stays(server):
    alice, bob = room_with(server)
    assert admin(alice, f"<item jid='{BOB}' affiliation='admin'/>")["type"] == "result"
    [update] = bob.take()
    assert items(update)["affiliation"] == "admin" and items(update)["role"] == "moderator"
    assert error_condition(admin(bob, "<item nick='alice' role='none'/>")) == "not-allowed"
    assert error_condition(admin(bob, f"<item jid='{ALICE}' affiliation='outcast'/>")) == \
        "not-allowed"
    assert error_condition(admin(alice, f"<item jid='{ALICE}' affiliation='member'/>")) == \
        "conflict"


def test_a_ban_removes_and_keeps_out(server):
    alice, bob = room_with(server)
    assert admin(alice, f"<item jid='{BOB}' affiliation='outcast'/>")["type"] == "result"
    [banned] = bob.take()
    assert banned["type"] == "unavailable" and codes(banned) == {"301", "110"}
    [refused] = enter(bob, "bob")
    assert error_condition(refused) == "forbidden"
    lists = iq(alice, "get", f"<query xmlns='{NS_ADMIN}'><item affiliation='outcast'/></query>")
    assert [i["jid"] for i in next(lists.elements()).elements()] == [BOB]
    mam = iq(bob, "set", f"<query xmlns='{NS_MAM}'/>")
    assert error_condition(mam) == "forbidden"


def test_members_only_rooms(server):
    alice, bob = room_with(server)
    carol = online(server, CAROL)
    enter(carol, "carol")
    alice.take(), bob.take()
    assert admin(alice, f"<item jid='{BOB}' affiliation='member'/>")["type"] == "result"
    alice.take(), bob.take()
    assert configure(alice, membersonly="1")["type"] == "result"
    removed = [e for e in carol.take() if e.name == "presence"]
    assert removed[-1]["type"] == "unavailable" and "322" in codes(removed[-1])
    [refused] = enter(carol, "carol")
    assert error_condition(refused) == "registration-required"
    assert any(e.name == "presence" and "322" in codes(e) for e in bob.take())

    alice.send(f"<message to='{ROOM}'><x xmlns='{NS_USER}'><invite to='{CAROL}'>"
               f"<reason>join us</reason></invite></x></message>")
    [invitation] = carol.take()
    invite = next(next(invitation.elements(NS_USER, "x")).elements(NS_USER, "invite"))
    assert invitation["from"] == ROOM and invite["from"] == "alice@example.com/res"
    received = enter(carol, "carol")
    assert codes([e for e in received if e.name == "presence"][-1]) == {"110", "170"}


def test_passwords_and_full_rooms(server):
    alice, bob = room_with(server, passwordprotectedroom="1", roomsecret="s3cret", maxusers="2")
    bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    alice.take()
    [refused] = enter(bob, "bob")
    assert error_condition(refused) == "not-authorized"
    enter(bob, "bob", x="<password>s3cret</password>")
    [full] = enter(online(server, CAROL), "carol", x="<password>s3cret</password>")
    assert error_condition(full) == "service-unavailable"


def test_private_messages_and_allowpm(server):
    alice, bob = room_with(server)
    bob.send(f"<message type='chat' to='{ROOM}/alice'><body>psst</body>"
             f"<stanza-id xmlns='{NS_SID}' by='{ROOM}' id='forged'/>"
             f"<x xmlns='{NS_USER}'><item jid='carol@example.com/res'/></x></message>")
    [private] = alice.take()
    assert private["from"] == f"{ROOM}/bob" and private["to"] == "alice@example.com/res"
    [x] = list(private.elements(NS_USER, "x"))
    assert x.children == [] and next(private.elements(NS_SID, "stanza-id"), None) is None
    configure(alice, allowpm="none")
    bob.take()
    bob.send(f"<message type='chat' to='{ROOM}/alice'><body>psst</body></message>")
    [refused] = bob.take()
    assert error_condition(refused) == "forbidden"


def test_moderated_rooms_and_voice_requests(server):
    alice, bob = room_with(server, moderatedroom="1")
    carol = online(server, CAROL)
    received = enter(carol, "carol")
    assert items([e for e in received if e.name == "presence"][-1])["role"] == "visitor"
    alice.take(), bob.take()
    say(carol, "may I?")
    [refused] = carol.take()
    assert error_condition(refused) == "forbidden"
    carol.send(f"<message to='{ROOM}'><x xmlns='jabber:x:data' type='submit'>"
               f"<field var='FORM_TYPE'><value>{NS_REQUEST}</value></field>"
               f"<field var='muc#role'><value>participant</value></field></x></message>")
    [request] = alice.take()
    assert request["from"] == ROOM and bob.take() == []
    alice.send(f"<message to='{ROOM}'><x xmlns='jabber:x:data' type='submit'>"
               f"<field var='FORM_TYPE'><value>{NS_REQUEST}</value></field>"
               f"<field var='muc#roomnick'><value>carol</value></field>"
               f"<field var='muc#request_allow'><value>true</value></field></x></message>")
    [voiced] = [e for e in carol.take() if e.name == "presence"]
    assert items(voiced)["role"] == "participant"
    say(carol, "thanks")
    assert bodies(bob.take()) == ["thanks"]


def test_moderation_retracts_a_message_by_its_stanza_id(server):
    alice, bob = room_with(server)
    say(bob, "oops")
    [message] = alice.take()
    bob.take()
    stanza_id = next(message.elements(NS_SID, "stanza-id"))["id"]
    moderate = (f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{stanza_id}'>"
                f"<retract xmlns='urn:xmpp:message-retract:1'/><reason>off topic</reason>"
                f"</moderate>")
    assert error_condition(iq(bob, "set", moderate)) == "forbidden"
    assert iq(alice, "set", moderate)["type"] == "result"
    [announced] = bob.take()
    retract = next(announced.elements("urn:xmpp:message-retract:1", "retract"))
    assert retract["id"] == stanza_id
    assert next(retract.elements("urn:xmpp:message-moderate:1", "moderated"))["by"] == \
        f"{ROOM}/alice"
    assert next(announced.elements("urn:xmpp:fasten:0", "apply-to"))["id"] == stanza_id
    mam = iq(bob, "set", f"<query xmlns='{NS_MAM}'/>")
    archived = [next(next(next(r.elements(NS_MAM, "result")).elements()).elements(
        "jabber:client", "message")) for r in bob.take() if r.name == "message"]
    assert mam["type"] == "result" and bodies(archived) == []
    tombstone = next(archived[0].elements("urn:xmpp:message-retract:1", "retracted"))
    assert next(tombstone.elements("urn:xmpp:message-moderate:1", "moderated"))["by"] == \
        f"{ROOM}/alice"
    assert next(archived[1].elements("urn:xmpp:message-retract:1", "retract"))["id"] == \
        stanza_id
    unknown = moderate.replace(stanza_id, "123")
    assert error_condition(iq(alice, "set", unknown)) == "item-not-found"


def test_self_ping(server):
    alice, bob = room_with(server)
    assert iq(bob, "get", "<ping xmlns='urn:xmpp:ping'/>", to=f"{ROOM}/bob")["type"] == "result"
    assert error_condition(iq(bob, "get", "<ping xmlns='urn:xmpp:ping'/>",
                              to=f"{ROOM}/alice")) == "not-acceptable"


def test_the_room_archive(server):
    alice, bob = room_with(server)
    for text in ("a", "b", "c"):
        say(alice, text)
    bob.take()
    carol = online(server, CAROL)  # never entered: an open room's archive is public
    answer = iq(carol, "set", f"<query xmlns='{NS_MAM}' queryid='x'><set "
                              f"xmlns='http://jabber.org/protocol/rsm'><max>2</max>"
                              f"<before/></set></query>")
    results = [e for e in carol.received if e.name == "message"]
    assert answer["type"] == "result" and len(results) == 2
    forwarded = [next(next(next(r.elements(NS_MAM, "result")).elements()).elements(
        "jabber:client", "message")) for r in results]
    assert bodies(forwarded) == ["b", "c"]
    assert all(r["from"] == ROOM for r in results)


def test_destroy_with_an_alternate_venue(server):
    alice, bob = room_with(server)
    answer = iq(alice, "set", f"<query xmlns='{NS_OWNER}'><destroy jid='new@{SERVICE}'>"
                              f"<reason>moved</reason></destroy></query>")
    assert answer["type"] == "result"
    others, gone = bob.take()  # alice goes, then bob himself
    assert others["from"] == f"{ROOM}/alice" and codes(gone) == {"110"}
    destroy = next(next(gone.elements(NS_USER, "x")).elements(NS_USER, "destroy"))
    assert gone["type"] == "unavailable" and destroy["jid"] == f"new@{SERVICE}"
    [created] = [e for e in enter(bob, "bob") if e.name == "presence"]
    assert "201" in codes(created)  # a new room


def test_discovery_lists_public_rooms_only(server):
    alice, bob = room_with(server, roomname="Public room")
    enter(alice, "alice", room=f"hidden@{SERVICE}")
    configure(alice, room=f"hidden@{SERVICE}", publicroom="0")
    listing = iq(bob, "get", "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                 to=SERVICE)
    assert [(i["jid"], i["name"]) for i in next(listing.elements()).elements()] == [
        (ROOM, "Public room")]
    info = next(iq(bob, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>")
                .elements())
    features = {f["var"] for f in info.elements(NS_INFO, "feature")}
    assert {"muc_public", "muc_temporary", "muc_open", "muc_semianonymous",
            "urn:xmpp:occupant-id:0", "urn:xmpp:message-moderate:1", NS_MAM} <= features
    host = iq(bob, "get", "<query xmlns='http://jabber.org/protocol/disco#items'/>",
              to="example.com")
    assert SERVICE in [i["jid"] for i in next(host.elements()).elements()]


def test_a_persistent_room_outlives_its_occupants_and_a_temporary_one_does_not(server):
    alice, bob = room_with(server, persistentroom="1", roomname="Kept")
    for client, nick in ((alice, "alice"), (bob, "bob")):
        client.send(f"<presence to='{ROOM}/{nick}' type='unavailable'/>")
    bob.take()
    muc_rooms = server.sql.open("rooms", "muc")
    assert muc_rooms.get_room(SERVICE, "room").config["muc#roomconfig_roomname"] == "Kept"
    [back] = [e for e in enter(bob, "bob") if e.name == "presence"]
    assert "201" not in codes(back)

    enter(alice, "alice", room=f"brief@{SERVICE}")
    configure(alice, room=f"brief@{SERVICE}")
    alice.send(f"<presence to='brief@{SERVICE}/alice' type='unavailable'/>")
    assert muc_rooms.get_room(SERVICE, "brief") is None


def test_serving_the_service_again_forgets_the_rooms_held_before(server):
    room_with(server, persistentroom="1")
    started = server.router.placed[SERVICE]  # a cluster node's, losing it and taking it back
    started(SERVICE)
    carol = online(server, CAROL)
    occupants = [e["from"] for e in enter(carol, "carol") if e.name == "presence"]
    assert occupants == [f"{ROOM}/carol"]  # alice and bob moved with the service


def test_occupants_sending_too_fast_are_refused(tmp_path):
    server = make(tmp_path, "[muc]\nmessage_burst = 2\nmessage_rate = 1.0\n")
    alice, bob = room_with(server)
    for text in ("1", "2", "3"):
        say(bob, text)
    received = bob.take()
    assert bodies(received) == ["1", "2"]
    assert [error_condition(e) for e in received if e.getAttribute("type") == "error"] == [
        "resource-constraint"]
    server.clock.advance(1)
    say(bob, "4")
    assert bodies(bob.take()) == ["4"]


def test_who_may_create_rooms(tmp_path):
    server = make(tmp_path, f'[muc]\ncreate_rooms = "admins"\nadmins = ["{ALICE}"]\n')
    [refused] = enter(online(server, BOB), "bob")
    assert error_condition(refused) == "not-allowed"
    assert "201" in codes(enter(online(server, ALICE), "alice")[0])


def test_rooms_per_user_are_limited(tmp_path):
    server = make(tmp_path, "[muc]\nmax_rooms_per_user = 1\n")
    alice = online(server, ALICE)
    enter(alice, "alice")
    [refused] = enter(alice, "alice", room=f"second@{SERVICE}")
    assert error_condition(refused) == "resource-constraint"


def test_entering_without_a_nick_is_refused(server):
    alice = online(server, ALICE)
    alice.send(f"<presence to='{ROOM}'/>")
    [refused] = alice.take()
    assert error_condition(refused) == "jid-malformed"


def test_a_session_gone_is_removed_but_not_one_refusing_a_stanza(server):
    alice, bob = room_with(server)
    bob.lose()  # its directed presence goes: unavailable to the room
    [gone] = alice.take()
    assert gone["type"] == "unavailable" and gone["from"] == f"{ROOM}/bob"
    carol = online(server, CAROL)
    enter(carol, "carol")
    alice.take()
    error = ("<message type='error' to='{room}'><error type='{type}'><{condition} "
             "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    carol.send(error.format(room=ROOM, type="modify", condition="not-acceptable"))
    assert alice.take() == []
    carol.send(error.format(room=ROOM, type="cancel", condition="service-unavailable"))
    [ghost] = alice.take()
    assert ghost["type"] == "unavailable" and codes(ghost) == {"333"}


def test_non_anonymous_rooms_show_real_jids_to_everyone(server):
    alice, bob = room_with(server, whois="anyone")
    carol = online(server, CAROL)
    received = [e for e in enter(carol, "carol") if e.name == "presence"]
    assert [items(p).get("jid") for p in received] == [
        "alice@example.com/res", "bob@example.com/res", "carol@example.com/res"]
    assert codes(received[-1]) == {"110", "100", "170"}
    configure(alice, whois="moderators")
    [notice] = carol.take()
    assert codes(notice) == {"104", "173"}


def real_jids(messages):
    """The real JID of each message's sender, as the room tells (None if not)."""
    return [items(m).get("jid") if next(m.elements(NS_USER, "x"), None) else None
            for m in messages]


def archived(client):
    """The room archive's messages, as ``client`` reads them."""
    iq(client, "set", f"<query xmlns='{NS_MAM}' queryid='x'/>")
    return [next(next(next(r.elements(NS_MAM, "result")).elements()).elements(
        "jabber:client", "message")) for r in client.received if r.name == "message"]


def test_the_archive_and_history_show_real_jids_to_whom_may_see_them(server):
    alice, bob = room_with(server)  # semi-anonymous: only moderators see real JIDs
    say(bob, "from bob")
    alice.take()
    bob.take()
    carol = online(server, CAROL)
    assert real_jids(archived(carol)) == [None]
    carol.received.clear()
    history = [m for m in enter(carol, "carol") if m.name == "message" and m.body]
    assert real_jids(history) == [None]
    alice.received.clear()
    assert real_jids(archived(alice)) == ["bob@example.com"]  # the owner
    configure(alice, whois="anyone")
    carol.take()
    carol.received.clear()
    assert real_jids(archived(carol)) == ["bob@example.com"]
    add_user(server, "dave@example.com")
    dave = online(server, "dave@example.com")
    history = [m for m in enter(dave, "dave") if m.name == "message" and m.body]
    assert real_jids(history) == ["bob@example.com"]


def test_an_occupant_blocked_sends_nothing(server):
    alice, bob = room_with(server)
    alice.send(f"<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'>"
               f"<item jid='{ROOM}/bob'/></block></iq>")
    alice.take()
    say(bob, "can you hear me")
    bob.send(f"<presence to='{ROOM}/bob'><status>here</status></presence>")
    assert bodies(bob.take()) == ["can you hear me"]
    assert [e.toXml() for e in alice.take()] == []


def test_the_room_vcard(server):
    alice, bob = room_with(server)
    photo = "iVBORw0KGgo="
    vcard = (f"<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>{photo}</BINVAL>"
             f"</PHOTO></vCard>")
    assert error_condition(iq(bob, "set", vcard)) == "forbidden"
    assert iq(alice, "set", vcard)["type"] == "result"
    [update] = bob.take()
    hashed = str(next(next(update.elements("vcard-temp:x:update", "x")).elements()))
    assert update["from"] == ROOM and len(hashed) == 40
    read = iq(online(server, CAROL), "get", "<vCard xmlns='vcard-temp'/>")
    assert photo in read.toXml()
    info = iq(bob, "get", f"<query xmlns='{NS_INFO}'/>")
    assert hashed in info.toXml()



def test_occupants_are_told_when_the_server_stops(server):
    alice, bob = room_with(server, persistentroom="1")
    Controller(server, server.clock).stopService()
    shutdown = [e for e in bob.take() if e.name == "presence"]
    assert [(p["from"], codes(p)) for p in shutdown] == [
        (f"{ROOM}/alice", {"332"}), (f"{ROOM}/bob", {"332", "110"})]
    assert server.sql.open("rooms", "muc").get_room(SERVICE, "room") is not None


def test_history_and_queries_wait_for_the_messages_being_written(tmp_path):
    server = pausable_server(tmp_path, modules=MODULES + ("muc",))
    for user in (ALICE, BOB, CAROL):
        add_user(server, user)
    alice, bob = room_with(server)
    carol = online(server, CAROL)
    server.runner.pause()
    say(alice, "just now")
    enter(carol, "carol")
    [(_, write, _, _)] = server.runner.calls  # the write only: the history read waits for it
    assert write.__name__ == "room_archive_append_many"
    server.runner.resume()
    assert bodies(carol.take()) == ["just now"]


def test_two_accounts_entering_a_new_room_at_once(tmp_path):
    server = pausable_server(tmp_path, modules=MODULES + ("muc",))
    for user in (ALICE, BOB):
        add_user(server, user)
    alice, bob = online(server, ALICE), online(server, BOB)
    server.runner.pause()
    enter(alice, "alice")
    enter(bob, "bob")
    server.runner.resume()
    first = [e for e in alice.take() + bob.take() if e.name == "presence"]
    outcomes = sorted(str(sorted(codes(p))) if p.getAttribute("type") != "error"
                      else error_condition(p) for p in first)
    assert outcomes == ["['110', '170', '201']", "item-not-found"]  # the room is then locked
