"""Presence and subscriptions on the real server with slixmpp clients
(RFC 6121 §2.6, §3, §4): a subscription handshake with the contact offline
during it, roster versioning across connections, and probes, broadcasts and
unavailable presence when a connection drops.

The module runs a server of its own, and each test makes accounts of its
own, so no subscription or presence reaches the clients of other tests.
"""

import asyncio

import pytest

from tests.integration.conftest import (
    STEP_TIMEOUT, collect, new_accounts, prepare, settled)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    deployment = prepare(tmp_path_factory.mktemp("xmppd-presence"))
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


async def next_from(queue, sender):
    """The next stanza of ``queue`` from ``sender`` (a JID string)."""
    while True:
        stanza = await asyncio.wait_for(queue.get(), STEP_TIMEOUT)
        if str(stanza["from"]) == sender:
            return stanza


async def online(clients, user, resource, status=None, **handlers):
    """A client of ``user`` that fetched its roster and is available, with
    queues of the slixmpp events named in ``handlers`` (name=event) made
    before it connected (as ``client.NAME``)."""
    client = clients.new(user, resource)
    client.xmpp.auto_authorize = None  # the tests answer requests themselves
    client.xmpp.auto_subscribe = False
    for name, event in handlers.items():
        setattr(client, name, collect(client, event))
    client.connect()
    await client.wait_started()
    await client.xmpp.get_roster(timeout=STEP_TIMEOUT)
    client.xmpp.send_presence(pstatus=status)
    await settled(client)
    return client


async def pushed(client, contact, subscription, ask=""):
    """Wait for the roster pushes until ``contact`` has ``subscription``
    (and ``ask``) in the roster of ``client``; then check that a fresh
    roster get says the same."""
    def current():
        item = client.xmpp.client_roster[contact]
        return item["subscription"], "subscribe" if item["pending_out"] else ""

    while current() != (subscription, ask):
        await client.next_roster_push()
    get = client.xmpp.Iq(stype="get")
    get.enable("roster")  # without a version: the whole roster
    item = (await get.send(timeout=STEP_TIMEOUT))["roster"]["items"][contact]
    assert (item["subscription"], item["ask"]) == (subscription, ask)


async def subscribe_both(clients, user, contact):
    """Make ``user`` and ``contact`` subscribed to each other."""
    a = await online(clients, user, "setup", requests="presence_subscribe")
    b = await online(clients, contact, "setup", requests="presence_subscribe")
    for sender, receiver in ((a, b), (b, a)):
        sender.xmpp.send_presence(pto=receiver.xmpp.boundjid.bare, ptype="subscribe")
        await next_from(receiver.requests, sender.xmpp.boundjid.bare)
        receiver.xmpp.send_presence(pto=sender.xmpp.boundjid.bare, ptype="subscribed")
    await pushed(a, b.xmpp.boundjid.bare, "both")
    await pushed(b, a.xmpp.boundjid.bare, "both")
    await a.close()
    await b.close()


def test_subscription_handshake_with_the_contact_offline(server, run):
    alice, bob = new_accounts(server, "alice", "bob")
    alice_jid, bob_jid = f"{alice}@{server.domain}", f"{bob}@{server.domain}"

    async def body(clients):
        a = await online(clients, alice, "desk", subscribed="presence_subscribed",
                         available="presence_available")
        a.xmpp.send_presence(pto=bob_jid, ptype="subscribe")
        await pushed(a, bob_jid, "none", "subscribe")

        # bob logs in later: the request waits for his initial presence
        b = await online(clients, bob, "phone", "here", requests="presence_subscribe")
        request = await next_from(b.requests, alice_jid)
        assert str(request["to"]) == bob_jid
        b.xmpp.send_presence(pto=alice_jid, ptype="subscribed")
        await next_from(a.subscribed, bob_jid)
        presence = await next_from(a.available, f"{bob_jid}/phone")  # sent after approval
        assert presence["status"] == "here"
        await pushed(a, bob_jid, "to")
        await pushed(b, alice_jid, "from")

        # and back: bob asks, alice approves
        a.requests = collect(a, "presence_subscribe")
        b.xmpp.send_presence(pto=alice_jid, ptype="subscribe")
        await next_from(a.requests, bob_jid)
        a.xmpp.send_presence(pto=bob_jid, ptype="subscribed")
        await pushed(a, bob_jid, "both")
        await pushed(b, alice_jid, "both")

    run(server, body)


def test_roster_versioning_round_trip(server, run):
    [carol] = new_accounts(server, "carol")

    async def body(clients):
        first = await online(clients, carol, "one")
        old = first.xmpp.client_roster.version
        assert old
        await first.xmpp.update_roster(f"friend@{server.domain}", name="Friend",
                                       timeout=STEP_TIMEOUT)
        while first.xmpp.client_roster.version == old:  # the push brings the new version
            await first.next_roster_push()
        new = first.xmpp.client_roster.version

        current = clients.new(carol, "two")
        current.xmpp.client_roster.version = new
        current.connect()
        await current.wait_started()
        result = await current.xmpp.get_roster(timeout=STEP_TIMEOUT)
        assert not result["roster"]["items"]  # up to date: nothing sent (§2.6.3)

        stale = clients.new(carol, "three")
        stale.xmpp.client_roster.version = old
        stale.connect()
        await stale.wait_started()
        result = await stale.xmpp.get_roster(timeout=STEP_TIMEOUT)
        assert result["roster"]["ver"] == new
        assert result["roster"]["items"][f"friend@{server.domain}"]["name"] == "Friend"

    run(server, body)


def test_probe_broadcast_and_unavailable_when_the_connection_drops(server, run):
    dave, erin = new_accounts(server, "dave", "erin")
    dave_jid, erin_jid = f"{dave}@{server.domain}", f"{erin}@{server.domain}"

    async def body(clients):
        await subscribe_both(clients, dave, erin)
        d = await online(clients, dave, "home", "at home", available="presence_available",
                         away="presence_away", unavailable="presence_unavailable")
        e = await online(clients, erin, "laptop", "working", available="presence_available")
        # erin's initial presence: her probe is answered with dave's presence,
        # and her presence is broadcast to dave
        assert (await next_from(e.available, f"{dave_jid}/home"))["status"] == "at home"
        assert (await next_from(d.available, f"{erin_jid}/laptop"))["status"] == "working"
        # an update is broadcast
        e.xmpp.send_presence(pshow="away", pstatus="lunch")
        update = await next_from(d.away, f"{erin_jid}/laptop")
        assert (update["show"], update["status"]) == ("away", "lunch")
        # erin's connection drops without a closing stream
        e.xmpp.transport.abort()
        await e.wait_disconnected()
        await next_from(d.unavailable, f"{erin_jid}/laptop")

    run(server, body)
