"""Message delivery on the real server with slixmpp clients: priorities
(RFC 6121 §8.5), offline messages across a reconnect and a restart
(XEP-0160, XEP-0203), carbons (XEP-0280) and closed domains.

These tests run servers of their own: offline messages left behind would
otherwise reach the clients of other tests.  The module's server hosts
``example.test`` (alice, bob) and ``other.test`` (carol, dave), each with its
own certificate from the test CA, neither allowing cross-domain messages.
"""

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
import trustme

from tests.integration.conftest import (
    DOMAIN, STEP_TIMEOUT, Clients, Deployment, collect, next_of, prepare, run_xmppctl, settled,
    write_certificate)
from xmppd.storage.sql import SQLStore

OTHER = "other.test"
OTHER_PASSWORDS = {"carol": "carol-secret-3", "dave": "dave-secret-4"}
NS_DELAY = "{urn:xmpp:delay}delay"


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory):
    """The module's server; yields the deployments of its two domains."""
    directory = tmp_path_factory.mktemp("xmppd-messaging")
    deployment = prepare(directory, f'[hosts."{OTHER}"]')
    # prepare() certified example.test alone: one new CA certifies both.
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(deployment.ca_file))
    for domain in (DOMAIN, OTHER):
        write_certificate(ca, directory / "certs", domain)
    for user, password in OTHER_PASSWORDS.items():
        run_xmppctl("-c", deployment.process.config_path, "adduser", f"{user}@{OTHER}",
                    "--password", password)
    deployment.process.start()
    other = Deployment(OTHER, deployment.c2s_port, deployment.direct_tls_port,
                       deployment.ca_file, dict(OTHER_PASSWORDS))
    yield deployment, other
    deployment.process.check_clean_exit()


@pytest.fixture
def server(two_domains):
    return two_domains[0]


@pytest.fixture
def restartable(fresh_server):
    """A server of this test's own, to stop and start again."""
    return fresh_server


async def online(clients, user, resource, priority=0, carbons=False):
    """A logged-in client that enabled carbons if asked and is available
    with ``priority`` once this returns."""
    client = clients.new(user, resource)
    if carbons:
        client.xmpp.register_plugin("xep_0280")
    client.connect()
    await client.wait_started()
    if carbons:
        await client.xmpp.plugin["xep_0280"].enable(timeout=STEP_TIMEOUT)
    client.xmpp.send_presence(ppriority=priority)
    await settled(client)
    return client


async def next_non_error(client):
    """The next message ``client`` received that is not an error (errors
    that keep the body of what they answer count as messages to slixmpp)."""
    while True:
        message = await client.next_message()
        if message["type"] != "error":
            return message


async def stored_offline(server, user, count):
    """Wait until ``server`` (a deployment) keeps ``count`` messages for
    ``user`` (a bare JID): a sender cannot tell when the server stored them
    (policies on the way can take their time)."""
    database = server.process.config_path.parent / "xmppd.sqlite"
    store = SQLStore(f"sqlite:///{database}")
    local, domain = user.split("@")
    try:
        for _ in range(int(STEP_TIMEOUT / 0.05)):
            if store.count_offline(local, domain) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{count} offline messages for {user} not stored in time")
    finally:
        store.close()


def check_delay(message, domain):
    delay = message.xml.find(NS_DELAY)
    assert delay is not None, f"no delay in {message}"
    assert delay.get("from") == domain
    stamp = datetime.fromisoformat(delay.get("stamp"))
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=5)


def test_bare_jid_messages_go_to_the_highest_priority(server, run):
    async def body(clients):
        alice = await online(clients, "alice", "desk")
        high = await online(clients, "bob", "high", priority=5)
        low = await online(clients, "bob", "low", priority=1)
        negative = await online(clients, "bob", "away", priority=-1)
        alice.send_message("bob@example.test", "to the most available")
        message = await high.next_message()
        assert (message["body"], str(message["from"])) == ("to the most available", alice.jid)
        for client in (low, negative):  # their first message is the marker sent later
            alice.send_message(client.jid, "marker")
            assert (await client.next_message())["body"] == "marker"
        assert alice.messages.empty()

    run(server, body)


def test_offline_message_delivered_with_delay_on_available_presence(two_domains, run):
    server, other = two_domains  # dave receives nothing in the other tests

    async def body(clients):
        carol = await online(clients, "carol", "c")
        carol.send_message(f"dave@{OTHER}", "while you were away")
        await stored_offline(server, f"dave@{OTHER}", 1)
        dave = await clients.login("dave", "later")
        dave.xmpp.send_presence(ppriority=0)
        message = await dave.next_message()
        assert (message["body"], str(message["from"])) == ("while you were away", carol.jid)
        check_delay(message, OTHER)
        assert carol.messages.empty()

    run(other, body)


def test_offline_message_survives_a_restart(restartable, run):
    async def before(clients):
        alice = await clients.login("alice", "desk")
        for text in ("first", "second"):
            alice.send_message("bob@example.test", text)
        await stored_offline(restartable, "bob@example.test", 2)
        assert alice.messages.empty()

    async def after(clients):
        bob = await clients.login("bob", "phone")
        bob.xmpp.send_presence(ppriority=3)
        first, second = await bob.next_message(), await bob.next_message()
        assert [first["body"], second["body"]] == ["first", "second"]
        for message in (first, second):
            check_delay(message, DOMAIN)

    run(restartable, before)
    assert restartable.process.stop() == 0
    restartable.process.start()
    run(restartable, after)


def test_carbons_between_two_resources(server, run):
    async def body(clients):
        desk = await online(clients, "alice", "desk", carbons=True)
        phone = await online(clients, "alice", "phone", carbons=True)
        bob = await online(clients, "bob", "b")
        received, sent = collect(phone, "carbon_received"), collect(phone, "carbon_sent")

        bob.send_message(desk.jid, "to your desk")
        assert (await desk.next_message())["body"] == "to your desk"
        carbon = await next_of(received)
        assert str(carbon["from"]) == "alice@example.test"
        original = carbon["carbon_received"]
        assert (original["body"], str(original["from"]), str(original["to"])) == (
            "to your desk", bob.jid, desk.jid)

        desk.send_message(bob.jid, "from my desk")
        assert (await bob.next_message())["body"] == "from my desk"
        carbon = await next_of(sent)
        original = carbon["carbon_sent"]
        assert (original["body"], str(original["from"]), str(original["to"])) == (
            "from my desk", desk.jid, bob.jid)
        assert phone.messages.empty()

    run(server, body)


def test_messages_between_two_hosted_domains_are_refused(two_domains, run):
    server, other = two_domains

    async def body(clients):
        others = Clients(other)
        try:
            alice = await online(clients, "alice", "desk")
            carol = await online(others, "carol", "c")
            dave = await online(others, "dave", "d")
            for sender, recipient in ((alice, carol), (carol, alice)):
                errors = collect(sender, "message_error")
                sender.send_message(recipient.jid, "across")
                error = await next_of(errors)
                assert error["error"]["condition"] == "service-unavailable"
                assert str(error["from"]) == recipient.jid
            dave.send_message(carol.jid, "within the domain")
            assert (await next_non_error(carol))["body"] == "within the domain"
        finally:
            await others.close_all()

    run(server, body)
