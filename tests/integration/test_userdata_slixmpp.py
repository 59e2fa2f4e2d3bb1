"""Per-user stored XML over real TLS, driven by slixmpp: vcard-temp
(XEP-0054), private XML storage (XEP-0049) and blocking (XEP-0191).

Each test starts from the session-wide server of ``conftest.py`` (accounts
alice and bob of ``example.test``) and leaves no block in place.
"""

import asyncio
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

NS_PRIVATE = "jabber:iq:private"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
PNG = b"\x89PNG\r\n\x1a\n"


async def login(clients, user, resource, *plugins):
    """A client of ``user`` with the slixmpp ``plugins``, at session start."""
    client = clients.new(user, resource)
    for plugin in plugins:
        client.xmpp.register_plugin(plugin)
    client.connect()
    await client.wait_started()
    return client


async def private_request(client, type_, child):
    """A jabber:iq:private get or set carrying ``child``; the result iq."""
    iq = client.xmpp.Iq()
    iq["type"] = type_
    ET.SubElement(iq.xml, f"{{{NS_PRIVATE}}}query").append(child)
    return await iq.send(timeout=10)


async def next_message_error(client):
    """The next message of type error that ``client`` receives."""
    while True:
        message = await client.next_message()
        if message["type"] == "error":
            return message


def test_vcard_set_then_get_own_and_others(server, run):
    """alice publishes a vCard with a photo (XEP-0153 avatars need nothing
    more); she and bob read it back, bob's answered by the server."""

    async def body(clients):
        alice = await login(clients, "alice", "vcard", "xep_0054")
        bob = await login(clients, "bob", "vcard", "xep_0054")
        vcards = alice.xmpp.plugin["xep_0054"]
        vcard = vcards.make_vcard()
        vcard["FN"] = "Alice Liddell"
        vcard["PHOTO"]["TYPE"] = "image/png"
        vcard["PHOTO"]["BINVAL"] = PNG
        await vcards.publish_vcard(vcard, timeout=10)

        for client in (alice, bob):
            result = await client.xmpp.plugin["xep_0054"].get_vcard(
                f"alice@{server.domain}", timeout=10)
            assert str(result["from"]) == f"alice@{server.domain}"
            stored = result["vcard_temp"]
            assert stored["FN"] == "Alice Liddell"
            assert (stored["PHOTO"]["TYPE"], stored["PHOTO"]["BINVAL"]) == ("image/png", PNG)

        with pytest.raises(IqError) as error:
            await bob.xmpp.plugin["xep_0054"].publish_vcard(vcard, jid=f"alice@{server.domain}",
                                                           timeout=10)
        assert error.value.iq["error"]["condition"] == "forbidden"

    run(server, body)


def test_private_storage_set_then_get(server, run):
    """alice stores bookmarks from one resource and reads them from another;
    a namespace never stored comes back empty; jabber:* is refused."""
    bookmarks = ET.Element("{storage:bookmarks}storage")
    ET.SubElement(bookmarks, "{storage:bookmarks}conference",
                  {"jid": "tea@party.example.test", "autojoin": "true"})

    async def body(clients):
        writer = await login(clients, "alice", "writer")
        reader = await login(clients, "alice", "reader")
        await private_request(writer, "set", bookmarks)

        result = await private_request(reader, "get", ET.Element("{storage:bookmarks}storage"))
        [stored] = result.xml.find(f"{{{NS_PRIVATE}}}query")
        conference = stored.find("{storage:bookmarks}conference")
        assert conference.get("jid") == "tea@party.example.test"

        result = await private_request(reader, "get", ET.Element("{urn:example:never}data"))
        [empty] = result.xml.find(f"{{{NS_PRIVATE}}}query")
        assert (empty.tag, list(empty)) == ("{urn:example:never}data", [])

        with pytest.raises(IqError) as error:
            await private_request(writer, "set", ET.Element("{jabber:iq:roster}query"))
        assert error.value.iq["error"]["condition"] == "not-acceptable"

    run(server, body)


def test_block_then_unblock(server, run):
    """Once alice blocks bob, his messages never reach her (he gets
    service-unavailable, as if she were offline) and hers to him are refused
    with <blocked/>; every resource that asked for the block list gets the
    pushes; after the unblock messages flow again."""

    async def body(clients):
        alice = await login(clients, "alice", "desk", "xep_0191")
        phone = await login(clients, "alice", "phone", "xep_0191")
        bob = await login(clients, "bob", "laptop")
        blocking = alice.xmpp.plugin["xep_0191"]
        pushes = asyncio.Queue()
        phone.xmpp.add_event_handler("blocked", pushes.put_nowait)
        phone.xmpp.add_event_handler("unblocked", pushes.put_nowait)
        assert await phone.xmpp.plugin["xep_0191"].get_blocked_jids(timeout=10) == set()
        try:
            await blocking.block(f"bob@{server.domain}", timeout=10)
            push = await asyncio.wait_for(pushes.get(), 10)
            assert [str(item["jid"]) for item in push["block"]] == [f"bob@{server.domain}"]
            assert {str(jid) for jid in await blocking.get_blocked_jids(timeout=10)} == {
                f"bob@{server.domain}"}

            bob.send_message(alice.jid, "can you hear me?")
            error = await next_message_error(bob)
            assert error["error"]["condition"] == "service-unavailable"

            alice.send_message(bob.jid, "no")
            error = await next_message_error(alice)
            assert error["error"]["condition"] == "not-acceptable"
            assert error.xml.find(f".//{{{NS_BLOCKING_ERRORS}}}blocked") is not None
        finally:
            await blocking.unblock(f"bob@{server.domain}", timeout=10)

        push = await asyncio.wait_for(pushes.get(), 10)
        assert [str(item["jid"]) for item in push["unblock"]] == [f"bob@{server.domain}"]
        bob.send_message(alice.jid, "and now?")
        # The first message alice receives: the blocked one never arrived.
        message = await alice.next_message()
        assert (message["body"], str(message["from"])) == ("and now?", bob.jid)
        alice.send_message(bob.jid, "loud and clear")
        assert (await bob.next_message())["body"] == "loud and clear"

    run(server, body)
