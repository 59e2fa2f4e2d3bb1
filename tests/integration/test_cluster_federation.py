"""Federation of an xmppd cluster with a real Prosody (docs/cluster.md,
"Federation").

Nodes ``a``, ``b`` and ``c`` of one cluster (:class:`Cluster`) serve
``xmppd.test`` besides ``example.test``; Prosody serves ``prosody.test``
(:class:`Prosody`); both run once for the module.  Every node listens for
servers: node b where ``xmppd.test`` resolves (127.0.0.2, port 5269), the
others on ports of 127.0.0.1 that nothing names, so Prosody reaches node b
alone; every node reaches Prosody through a route pinned in its own
configuration.  Neither side trusts the other's certificate: the streams
are authenticated with dialback (XEP-0220), and Prosody checks a key that
node a or c sent it on node b, which knows it by the ``s2s.dialback_secret``
the nodes share.  Each test makes accounts of its own.  Needs
XMPPD_TEST_POSTGRES_URL, XMPPD_TEST_REDIS_URL and Prosody (see
:mod:`tests.integration.interop`).
"""

import secrets
from dataclasses import dataclass

import pytest
import trustme

from tests.integration import test_cluster
from tests.integration.conftest import (
    STEP_TIMEOUT, Deployment, free_ports, new_accounts, run_xmppctl, settled,
    write_certificate)
from tests.integration.interop import (
    C2S_PORT, PEER_PASSWORD, PEER_USER, S2S_PORT, XMPPD_ADDRESS, XMPPD_DOMAIN, PeerClients,
    Prosody, map_hosts)
from tests.integration.test_cluster import Cluster, run_on
from tests.integration.test_federation import online, subscribe
from tests.integration.test_presence_slixmpp import pushed

# The skip condition and the database fixtures of test_cluster.
pytestmark, database, shared = test_cluster.pytestmark, test_cluster.database, test_cluster.shared

NODE_S2S = """
[s2s]
listen = ["{listen}"]
allow = ["{peer}"]
dialback_secret = "{secret}"

[s2s.routes]
"{peer}" = "tcp:host={peer_address}:port={peer_port}"

[hosts."{domain}"]
cross_domain_messages = true
"""
VERIFIED = f"{Prosody.domain} verified a dialback key of {XMPPD_DOMAIN}: valid"


@dataclass
class Federation:
    """The running cluster and Prosody: ``nodes[NAME]`` is node NAME as
    clients of ``xmppd.test`` see it."""

    cluster: Cluster
    nodes: dict
    peer: Prosody
    peer_deployment: Deployment

    @property
    def processes(self):
        return (*self.cluster.processes, self.peer)


@pytest.fixture(scope="module")
def peer():
    """Prosody for ``prosody.test`` with the account PEER_USER, running."""
    Prosody.require()
    map_hosts({XMPPD_DOMAIN: XMPPD_ADDRESS, Prosody.domain: Prosody.address})
    peer = Prosody(trustme.CA(), None)
    try:
        peer.start()
        peer.register(PEER_USER, PEER_PASSWORD)
        yield peer
    finally:
        try:
            peer.stop()
        finally:
            peer.remove()


@pytest.fixture(scope="module")
def federation(peer, shared, database, tmp_path_factory):
    """The cluster federating with ``peer``; its nodes must exit cleanly
    and leave nothing in Redis that does not expire."""
    directory = tmp_path_factory.mktemp("xmppd-cluster-federation")
    ca = trustme.CA()
    ca_file = directory / "xmppd-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    write_certificate(ca, shared.process.config_path.parent / "certs", XMPPD_DOMAIN)
    cluster = Cluster(shared, database, directory, f"xmppdtest{secrets.token_hex(4)}")
    secret = secrets.token_hex(16)
    elsewhere = iter(free_ports(2))
    passwords = {}
    nodes = {}
    for name, node in cluster.nodes.items():
        address, port = (XMPPD_ADDRESS, S2S_PORT) if name == "b" else ("127.0.0.1", next(elsewhere))
        with open(node.process.config_path, "a") as config:
            config.write(NODE_S2S.format(
                listen=f"tcp:{port}:interface={address}", peer=peer.domain, secret=secret,
                peer_address=peer.address, peer_port=S2S_PORT, domain=XMPPD_DOMAIN))
        nodes[name] = Deployment(XMPPD_DOMAIN, node.c2s_port, node.direct_tls_port, ca_file,
                                 passwords, node.process)
    peer_deployment = Deployment(peer.domain, C2S_PORT, None, peer.ca_file,
                                 {PEER_USER: PEER_PASSWORD})
    with test_cluster.started(cluster):
        yield Federation(cluster, nodes, peer, peer_deployment)


def run(federation, body, timeout=40.0):
    """``await body(clients, peer_clients)`` as :func:`run_on` runs it,
    ``peer_clients`` making clients of Prosody."""
    async def with_peer(clients):
        peer_clients = PeerClients(federation.peer_deployment, federation.peer.address)
        try:
            await body(clients, peer_clients)
        finally:
            await peer_clients.close_all()

    run_on(federation, with_peer, timeout)


async def delivered_once(sender, receiver, body):
    """``sender``'s message to the bare JID of ``receiver`` arrives once:
    nothing more has come when ``receiver`` answers a ping that ``sender``
    sent after it the same way (servers keep one sender's stanzas in order,
    RFC 6120 §10.1)."""
    sender.send_message(receiver.xmpp.boundjid.bare, body)
    message = await receiver.next_message(timeout=15)
    assert (str(message["from"]), str(message["body"])) == (sender.jid, body)
    await sender.xmpp.plugin["xep_0199"].send_ping(receiver.jid, timeout=STEP_TIMEOUT)
    assert receiver.messages.empty(), f"{body!r} arrived more than once"


def s2s_peers(node):
    """The peers with a server connection of ``node``, as ``xmppctl
    status`` lists them."""
    status = run_xmppctl("-c", node.process.config_path, "status")
    [line] = [line for line in status.splitlines() if line.startswith("s2s peers: ")]
    return line.removeprefix("s2s peers: ")


def test_users_of_two_nodes_exchange_messages_with_the_peer(federation):
    """Messages leave from each user's node and come back through node b."""
    alice, bob = new_accounts(federation.nodes["a"], "alice", "bob")

    async def body(clients, peer_clients):
        carol = await online(peer_clients, PEER_USER, "phone")
        await settled(carol)  # available: messages to her bare JID come to her
        for name, user in (("a", alice), ("b", bob)):
            client = await online(clients[name], user, "desk")
            await delivered_once(client, carol, f"from node {name}")
            await delivered_once(carol, client, f"to node {name}")

    run(federation, body)
    assert s2s_peers(federation.nodes["a"]) == Prosody.domain


def test_dialback_key_of_a_node_verified_by_another(federation):
    """Node c's first stanza opens its own link; Prosody, which reaches
    node b only, checks the key node c sent there (XEP-0220 §2.1.2)."""
    [dave] = new_accounts(federation.nodes["c"], "dave")
    node_b, node_c = federation.nodes["b"].process, federation.nodes["c"].process
    assert s2s_peers(federation.nodes["c"]) == "none"
    verified_before = node_b.log_path.read_text().count(VERIFIED)

    async def body(clients, peer_clients):
        carol = await online(peer_clients, PEER_USER, "tablet")
        await settled(carol)
        client = await online(clients["c"], dave, "desk")
        await delivered_once(client, carol, "from node c")

    run(federation, body)
    assert s2s_peers(federation.nodes["c"]) == Prosody.domain
    log_c = node_c.log_path.read_text()
    assert f"s2s outgoing {XMPPD_DOMAIN} -> {Prosody.domain}: authenticated (dialback)" in log_c
    assert "s2s incoming connection" not in log_c
    assert node_b.log_path.read_text().count(VERIFIED) > verified_before


def test_subscription_with_a_user_of_a_node_the_peer_does_not_reach(federation):
    """A subscription both ways (RFC 6121 §3.1) between a user of Prosody
    and one of node a, which Prosody never connects to: each sees the other
    available, both rosters end with "both"."""
    [erin] = new_accounts(federation.nodes["a"], "erin")
    federation.peer.register("frank", "frank-secret")
    federation.peer_deployment.passwords["frank"] = "frank-secret"

    async def body(clients, peer_clients):
        user = await online(clients["a"], erin, "desk")
        contact = await online(peer_clients, "frank", "phone")
        await subscribe(contact, user)  # each sees the other's available presence
        await subscribe(user, contact)
        await pushed(user, contact.xmpp.boundjid.bare, "both")
        await pushed(contact, user.xmpp.boundjid.bare, "both")

    run(federation, body)
