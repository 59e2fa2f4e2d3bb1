"""Group chat (XEP-0045) on the real server, driven by slixmpp's own
plugins (xep_0045, xep_0249, xep_0359, xep_0410, xep_0421, xep_0425):

- an owner creates a room, configures it members-only through the
  configuration form, adds a member; the member enters, a non-member is
  refused (``registration-required``), the member changes nick, the owner
  kicks the member, whose self-ping (XEP-0410) then says it is out;
- groupchat messages with the room's stanza ids (XEP-0359) and occupant
  ids (XEP-0421), history on entering, a moderator retracting a message
  (XEP-0425) by its stanza id;
- a direct invitation (XEP-0249) between two accounts, and a mediated one
  (XEP-0045 §7.8.2) that makes the invitee a member of a members-only room;
- a persistent room across a restart: occupants told of the shutdown (332),
  its configuration, affiliations and history there after.

The module runs a server of its own and each test makes accounts and rooms
of its own.
"""

import asyncio
import itertools

import pytest
from slixmpp import JID
from slixmpp.exceptions import PresenceError
from slixmpp.plugins.xep_0410.self_ping import PingStatus

from tests.integration.conftest import DOMAIN, collect, new_accounts, next_of, prepare, settled

SERVICE = f"conference.{DOMAIN}"
PLUGINS = ("xep_0030", "xep_0004", "xep_0045", "xep_0249", "xep_0359", "xep_0410", "xep_0421",
           "xep_0424", "xep_0425")
_rooms = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    deployment = prepare(tmp_path_factory.mktemp("xmppd-muc"))
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


def new_room():
    return JID(f"room{next(_rooms)}@{SERVICE}")


async def login(clients, user, resource="desk"):
    client = clients.new(user, resource)
    for plugin in PLUGINS:
        client.xmpp.register_plugin(plugin)
    client.connect()
    await client.wait_started()
    client.xmpp.send_presence()
    await settled(client)
    return client


async def create(owner, room, nick, **config):
    """``owner`` creates ``room`` and submits its configuration form with
    ``config`` (``membersonly=True`` sets ``muc#roomconfig_membersonly``)."""
    muc = owner.xmpp.plugin["xep_0045"]
    presence, _, _, _ = await muc.join_muc_wait(room, nick, maxstanzas=0, timeout=10)
    assert "201" in {str(code) for code in presence["muc"]["status_codes"]}
    form = await muc.get_room_config(room, timeout=10)
    for name, value in config.items():
        form.field[f"muc#roomconfig_{name}"]["value"] = value
    await muc.set_room_config(room, form, timeout=10)


def occupant_id(stanza):
    return stanza["occupant-id"]["id"]


def test_members_only_room_nick_change_kick_and_self_ping(server, run):
    owner_name, member_name, stranger_name = new_accounts(server, "owner", "member", "stranger")
    room = new_room()

    async def body(clients):
        owner = await login(clients, owner_name)
        member = await login(clients, member_name)
        stranger = await login(clients, stranger_name)
        await create(owner, room, "boss", membersonly=True, roomname="Members")
        owner_muc, member_muc = owner.xmpp.plugin["xep_0045"], member.xmpp.plugin["xep_0045"]

        with pytest.raises(PresenceError) as refused:
            await stranger.xmpp.plugin["xep_0045"].join_muc_wait(room, "nobody", timeout=10)
        assert refused.value.condition == "registration-required"

        await owner_muc.set_affiliation(room, "member", jid=JID(f"{member_name}@{DOMAIN}"),
                                        timeout=10)
        members = await owner_muc.get_affiliation_list(room, "member", timeout=10)
        assert [str(jid) for jid in members] == [f"{member_name}@{DOMAIN}"]
        presence, subject, occupants, _ = await member_muc.join_muc_wait(
            room, "guest", maxstanzas=0, timeout=10)
        assert presence["muc"]["role"] == "participant"
        assert [str(p["from"]) for p in occupants] == [f"{room}/boss", f"{room}/guest"]
        assert occupant_id(presence)

        changed = collect(owner, f"muc::{room}::got_online")
        await member_muc.set_self_nick(room, "renamed", timeout=10)
        seen = [str((await next_of(changed))["from"])]
        while seen[-1] != f"{room}/renamed":  # the guest's entrance may come first
            seen.append(str((await next_of(changed))["from"]))
        assert seen[0] in (f"{room}/guest", f"{room}/renamed")
        assert member_muc.get_our_jid_in_room(room) == f"{room}/renamed"

        status = await member.xmpp.plugin["xep_0410"].send_self_ping(JID(f"{room}/renamed"),
                                                                      timeout=10)
        assert status == PingStatus.JOINED
        kicked = collect(member, f"muc::{room}::got_offline")
        await owner_muc.set_role(room, "renamed", "none", reason="bye", timeout=10)
        gone = await next_of(kicked)
        assert {"307", "110"} <= {str(code) for code in gone["muc"]["status_codes"]}
        status = await member.xmpp.plugin["xep_0410"].send_self_ping(JID(f"{room}/renamed"),
                                                                      timeout=10)
        assert status == PingStatus.DISCONNECTED

    run(server, body)


def test_messages_history_and_moderation(server, run):
    owner_name, talker_name, late_name = new_accounts(server, "owner", "talker", "late")
    room = new_room()

    async def body(clients):
        owner = await login(clients, owner_name)
        talker = await login(clients, talker_name)
        late = await login(clients, late_name)
        await create(owner, room, "boss")
        await talker.xmpp.plugin["xep_0045"].join_muc_wait(room, "talker", maxstanzas=0,
                                                           timeout=10)
        received = collect(owner, "groupchat_message")
        for text in ("first", "second", "regrettable"):
            talker.xmpp.send_message(room, text, mtype="groupchat")
        messages = [await next_of(received) for _ in range(3)]
        assert [m["body"] for m in messages] == ["first", "second", "regrettable"]
        ids = [m["stanza_id"]["id"] for m in messages]
        assert all(str(m["stanza_id"]["by"]) == str(room) for m in messages)
        assert len(set(ids)) == 3 and len({occupant_id(m) for m in messages}) == 1

        _, _, _, history = await late.xmpp.plugin["xep_0045"].join_muc_wait(
            room, "late", maxstanzas=2, timeout=10)
        assert [m["body"] for m in history] == ["second", "regrettable"]

        moderated = collect(late, "moderated_message")
        await owner.xmpp.plugin["xep_0425"].moderate(room, ids[2], "not here", timeout=10)
        retraction = await next_of(moderated)
        assert retraction["retract"]["id"] == ids[2]
        assert str(retraction["retract"]["moderated"]["by"]) == f"{room}/boss"

    run(server, body)


def test_invitations(server, run):
    owner_name, guest_name = new_accounts(server, "owner", "guest")
    room = new_room()

    async def body(clients):
        owner = await login(clients, owner_name)
        guest = await login(clients, guest_name)
        await create(owner, room, "boss", membersonly=True)
        guest_jid = JID(f"{guest_name}@{DOMAIN}")

        direct = collect(guest, "groupchat_direct_invite")
        owner.xmpp.plugin["xep_0249"].send_invitation(guest_jid, room, reason="come")
        invitation = await next_of(direct)
        assert str(invitation["groupchat_invite"]["jid"]) == str(room)

        mediated = collect(guest, "groupchat_invite")
        owner.xmpp.plugin["xep_0045"].invite(room, guest_jid, reason="really")
        invitation = await next_of(mediated)
        assert str(invitation["from"]) == str(room)
        presence, _, _, _ = await guest.xmpp.plugin["xep_0045"].join_muc_wait(
            room, "guest", maxstanzas=0, timeout=10)
        assert presence["muc"]["affiliation"] == "member"

    run(server, body)


def test_a_persistent_room_outlives_a_restart(server, run):
    owner_name, member_name = new_accounts(server, "owner", "member")
    room = new_room()

    async def before(clients):
        owner = await login(clients, owner_name)
        await create(owner, room, "boss", persistentroom=True, roomname="Kept")
        muc = owner.xmpp.plugin["xep_0045"]
        await muc.set_affiliation(room, "member", jid=JID(f"{member_name}@{DOMAIN}"), timeout=10)
        owner.xmpp.send_message(room, "remember me", mtype="groupchat")
        await settled(owner)
        goodbye = collect(owner, f"muc::{room}::got_offline")
        await asyncio.to_thread(server.process.stop)
        presence = await next_of(goodbye)
        assert {"332", "110"} <= {str(code) for code in presence["muc"]["status_codes"]}

    run(server, before)
    server.process.start()

    async def after(clients):
        member = await login(clients, member_name)
        presence, _, _, history = await member.xmpp.plugin["xep_0045"].join_muc_wait(
            room, "member", maxstanzas=5, timeout=10)
        assert "201" not in {str(code) for code in presence["muc"]["status_codes"]}
        assert presence["muc"]["affiliation"] == "member"
        assert [m["body"] for m in history] == ["remember me"]
        info = await member.xmpp.plugin["xep_0030"].get_info(room, timeout=10)
        assert [identity[3] for identity in info["disco_info"]["identities"]] == ["Kept"]
        assert "muc_persistent" in info["disco_info"]["features"]

    run(server, after)
