"""Federation between two real xmppd processes, with slixmpp clients on
both sides.

``a.test`` and ``b.test`` run on 127.0.0.1 with distinct ports and routes
pinned to each other (DNS is never queried).  With certificates from one
shared CA, configured as ``s2s.ca_file``, they authenticate each other with
SASL EXTERNAL; with certificates the other does not trust (and
``require_valid_certificates`` off), with dialback.  ``c.test`` is not on
either allowlist; ``down.test`` and ``silent.test`` are allowed peers that
are down or never answer.
"""

import asyncio
import socket
import time
from dataclasses import dataclass, field

import pytest
import trustme

from tests.integration.conftest import (
    CONFIG, PASSWORDS, STEP_TIMEOUT, Clients, Deployment, ServerProcess,
    free_ports, run_xmppctl, write_certificate)
from tests.integration.test_c2s_slixmpp import exchange, parse_stream, stream_error_condition

CONNECT_TIMEOUT = 3.0

S2S = """\
[s2s]
listen = ["tcp:{s2s_port}:interface=127.0.0.1"]
allow = ["{peer}", "down.test", "silent.test"]
connect_timeout = {connect_timeout}
{trust}

[s2s.routes]
"{peer}" = "tcp:host=127.0.0.1:port={peer_port}"
"c.test" = "tcp:host=127.0.0.1:port={c_port}"
"down.test" = "tcp:host=127.0.0.1:port={down_port}"
"silent.test" = "tcp:host=127.0.0.1:port={silent_port}"
"""


def listening_socket():
    """A socket on 127.0.0.1 that takes connections and never answers."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    probe.listen(16)
    probe.setblocking(False)
    return probe


def connections_to(probe):
    """How many connections ``probe`` received (and now closes)."""
    count = 0
    while True:
        try:
            connection, _ = probe.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


@dataclass
class Pair:
    """Two federated servers, and the sockets standing for ``c.test`` and
    ``silent.test`` (they take connections and never answer)."""

    a: Deployment
    b: Deployment
    s2s_ports: dict
    probes: dict
    processes: list = field(default_factory=list)


def prepare_pair(directory, shared_ca):
    """a.test and b.test, not started; with ``shared_ca`` both certificates
    come from one CA that both trust, otherwise from two CAs nobody trusts."""
    probes = {domain: listening_socket() for domain in ("c.test", "silent.test")}
    down_port, a_s2s, b_s2s = free_ports(3)
    ports = {"a.test": a_s2s, "b.test": b_s2s}
    one_ca = trustme.CA()
    deployments = {}
    for domain, peer in (("a.test", "b.test"), ("b.test", "a.test")):
        ca = one_ca if shared_ca else trustme.CA()
        home = directory / domain
        home.mkdir()
        ca_file = home / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        write_certificate(ca, home / "certs", domain)
        trust = f'ca_file = "{ca_file}"' if shared_ca else ""
        s2s = S2S.format(s2s_port=ports[domain], peer=peer, peer_port=ports[peer],
                         c_port=probes["c.test"].getsockname()[1], down_port=down_port,
                         silent_port=probes["silent.test"].getsockname()[1],
                         connect_timeout=CONNECT_TIMEOUT, trust=trust)
        c2s_port, direct_tls_port = free_ports(2)
        text = CONFIG.format(c2s_port=c2s_port, direct_tls_port=direct_tls_port,
                             domain=domain, storage_url="sqlite:///xmppd.sqlite")
        host = f'[hosts."{domain}"]'
        config_path = home / "xmppd.toml"
        config_path.write_text(text.replace(
            host, f"{s2s}\n{host}\ncross_domain_messages = true\n"))
        run_xmppctl("-c", config_path, "migrate")
        for user, password in PASSWORDS.items():
            run_xmppctl("-c", config_path, "adduser", f"{user}@{domain}", "--password", password)
        process = ServerProcess(config_path, (c2s_port, direct_tls_port, ports[domain]))
        deployments[domain] = Deployment(domain, c2s_port, direct_tls_port, ca_file,
                                         dict(PASSWORDS), process)
    processes = [d.process for d in deployments.values()]
    return Pair(deployments["a.test"], deployments["b.test"], ports, probes, processes)


def running(pair):
    """Run both servers for a fixture; both must exit cleanly afterwards."""
    try:
        for process in pair.processes:
            process.start()
        yield pair
    finally:
        for probe in pair.probes.values():
            probe.close()
        for process in pair.processes:
            process.check_clean_exit()


@pytest.fixture(scope="module")
def certified(tmp_path_factory):
    """a.test and b.test trusting each other's certificates."""
    yield from running(prepare_pair(tmp_path_factory.mktemp("federation-certified"), True))


@pytest.fixture
def dialback(tmp_path):
    """a.test and b.test with certificates the other cannot check."""
    yield from running(prepare_pair(tmp_path, shared_ca=False))


def run_both(pair, body, timeout=40):
    """Run ``await body(a_clients, b_clients)`` with clients of both servers."""

    async def main():
        a_clients, b_clients = Clients(pair.a), Clients(pair.b)
        try:
            await body(a_clients, b_clients)
        finally:
            await asyncio.gather(a_clients.close_all(), b_clients.close_all())

    asyncio.run(asyncio.wait_for(main(), timeout))


def queue_of(client, event):
    queue = asyncio.Queue()
    client.xmpp.add_event_handler(event, queue.put_nowait)
    return queue


async def next_of(queue, match=lambda stanza: True, timeout=STEP_TIMEOUT):
    while True:
        stanza = await asyncio.wait_for(queue.get(), timeout)
        if match(stanza):
            return stanza


async def online(clients, user, resource):
    """A logged-in client that answers subscription requests itself and
    sent its initial presence, with queues of presence events."""
    client = clients.new(user, resource)
    client.xmpp.auto_authorize = None
    client.xmpp.auto_subscribe = False
    client.requests = queue_of(client, "presence_subscribe")
    client.approvals = queue_of(client, "presence_subscribed")
    client.available = queue_of(client, "presence_available")
    client.away = queue_of(client, "presence_away")
    client.errors = queue_of(client, "message_error")
    client.connect()
    await client.wait_started()
    await client.xmpp.get_roster(timeout=STEP_TIMEOUT)
    client.xmpp.send_presence()
    return client


async def exchange_messages(alice, bob):
    alice.send_message(bob.jid, "hello from a.test")
    message = await bob.next_message(timeout=15)
    assert (str(message["from"]), str(message["body"])) == (alice.jid, "hello from a.test")
    bob.send_message("alice@a.test", "hello from b.test")
    message = await alice.next_message(timeout=15)
    assert (str(message["from"]), str(message["body"])) == (bob.jid, "hello from b.test")


async def subscribe(user, contact):
    """``user`` subscribes to ``contact``'s presence; ``contact`` approves;
    ``user`` then sees ``contact`` available."""
    contact_bare = contact.xmpp.boundjid.bare
    user.xmpp.send_presence(pto=contact_bare, ptype="subscribe")
    request = await next_of(contact.requests)
    assert str(request["from"]) == user.xmpp.boundjid.bare
    contact.xmpp.send_presence(pto=user.xmpp.boundjid.bare, ptype="subscribed")
    approval = await next_of(user.approvals)
    assert str(approval["from"]) == contact_bare
    await next_of(user.available, lambda p: str(p["from"]) == contact.jid)


def authenticated_lines(pair, method):
    return [line for process in pair.processes
            for line in process.log_tail(2000).splitlines()
            if "authenticated" in line and method in line]


def test_sasl_external_messages_subscriptions_and_presence(certified):
    async def body(a_clients, b_clients):
        alice = await online(a_clients, "alice", "laptop")
        bob = await online(b_clients, "bob", "phone")
        await exchange_messages(alice, bob)
        await subscribe(alice, bob)
        await subscribe(bob, alice)
        # Presence changes now flow both ways.
        bob.xmpp.send_presence(pshow="away", pstatus="lunch")
        away = await next_of(alice.away, lambda p: str(p["from"]) == bob.jid)
        assert (away["show"], away["status"]) == ("away", "lunch")
        alice.xmpp.send_presence(pshow="away", pstatus="meeting")
        away = await next_of(bob.away, lambda p: str(p["from"]) == alice.jid)
        assert (away["show"], away["status"]) == ("away", "meeting")

    run_both(certified, body)
    assert authenticated_lines(certified, "SASL EXTERNAL")
    assert not authenticated_lines(certified, "(dialback")


def test_dialback_without_trusted_certificates(dialback):
    async def body(a_clients, b_clients):
        alice = await online(a_clients, "alice", "laptop")
        bob = await online(b_clients, "bob", "phone")
        await exchange_messages(alice, bob)

    run_both(dialback, body)
    assert authenticated_lines(dialback, "(dialback)")
    assert not authenticated_lines(dialback, "SASL EXTERNAL")


def test_domain_not_allowed_is_refused_both_ways(certified):
    async def body(a_clients, b_clients):
        alice = await online(a_clients, "alice", "refused")
        alice.send_message("carol@c.test", "not allowed")
        error = await next_of(alice.errors)
        assert (str(error["from"]), error["error"]["condition"]) == \
            ("carol@c.test", "service-unavailable")
        # An inbound stream from c.test is refused before anything else.
        header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                  "xmlns:stream='http://etherx.jabber.org/streams' "
                  "xmlns:db='jabber:server:dialback' from='c.test' to='a.test' version='1.0'>")
        data = await exchange(certified.s2s_ports["a.test"], header.encode())
        elements, ended = parse_stream(data)
        assert stream_error_condition(elements) == "policy-violation" and ended

    run_both(certified, body)
    assert connections_to(certified.probes["c.test"]) == 0  # c.test was never tried
    log = certified.a.process.log_tail(2000)
    assert "refused c.test from 127.0.0.1" in log


def test_peer_down_or_silent_bounces_within_connect_timeout(certified):
    async def body(a_clients, b_clients):
        alice = await online(a_clients, "alice", "bounces")
        for domain, condition in (("down.test", "remote-server-not-found"),
                                  ("silent.test", "remote-server-timeout")):
            started = time.monotonic()
            alice.send_message(f"someone@{domain}", "anybody there?")
            error = await next_of(alice.errors, timeout=CONNECT_TIMEOUT + 5)
            assert (str(error["from"]), error["error"]["condition"]) == \
                (f"someone@{domain}", condition)
            assert time.monotonic() - started < CONNECT_TIMEOUT + 2

    run_both(certified, body)
    assert connections_to(certified.probes["silent.test"]) == 1
