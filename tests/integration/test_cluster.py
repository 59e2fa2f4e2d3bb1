"""Three xmppd nodes of one cluster (docs/cluster.md): messages, presence,
roster pushes and resource conflicts across nodes, no message lost when a
node is killed (bench/cluster_loss.py) or stopped, and a node stalled past
its heartbeat (SIGSTOP) ending its sessions when it comes back.

Each test runs nodes ``a``, ``b`` and ``c`` of its own, ``twistd xmppd``
processes whose configurations differ only in ``[cluster] node`` and their
ports, with one certificate, one PostgreSQL schema of the module's (created
and migrated once, dropped at the end) and one Redis under a prefix of the
test's, with a heartbeat of :data:`HEARTBEAT` seconds.  Each test makes
accounts of its own.  Needs XMPPD_TEST_POSTGRES_URL and XMPPD_TEST_REDIS_URL.
"""

import asyncio
import contextlib
import os
import secrets
import signal
import time

import pytest
from sqlalchemy import create_engine, make_url, text

from bench.cluster_loss import measure
from tests.integration.conftest import (
    CONFIG, DOMAIN, STEP_TIMEOUT, Clients, Deployment, ServerProcess, free_ports, new_accounts,
    prepare, settled)
from tests.integration.test_presence_slixmpp import next_from, online, subscribe_both

POSTGRES_URL = os.environ.get("XMPPD_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("XMPPD_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(
    not (POSTGRES_URL and REDIS_URL),
    reason="a cluster needs XMPPD_TEST_POSTGRES_URL and XMPPD_TEST_REDIS_URL")
redis = pytest.importorskip("redis")

NODES = ("a", "b", "c")
HEARTBEAT = 3.0  # seconds; a dead node is reaped within 4/3 of it
CLUSTER = """\
[cluster]
redis = "{redis}"
node = "{node}"
heartbeat = {heartbeat}
prefix = "{prefix}"

"""


@pytest.fixture(scope="module")
def database():
    """The URL of a new schema of the test database, dropped afterwards."""
    schema = f"xmppd_cluster_{secrets.token_hex(4)}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(scope="module")
def shared(database, tmp_path_factory):
    """The nodes' certificate (and CA) and the database, migrated
    (:func:`prepare` on it)."""
    return prepare(tmp_path_factory.mktemp("xmppd-cluster"), storage_url=database)


class Cluster:
    """The running nodes: ``nodes[NAME]`` is a :class:`Deployment`."""

    def __init__(self, shared, storage_url, directory, prefix):
        self.prefix = prefix
        self.nodes = {}
        self.killed = set()  # names of the nodes a test killed on purpose
        self.redis = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        host = f'[hosts."{DOMAIN}"]'
        for name in NODES:
            home = directory / name
            home.mkdir()
            (home / "certs").symlink_to(shared.process.config_path.parent / "certs")
            c2s_port, direct_tls_port = free_ports(2)
            config = CONFIG.format(c2s_port=c2s_port, direct_tls_port=direct_tls_port,
                                   domain=DOMAIN, storage_url=storage_url)
            (home / "xmppd.toml").write_text(config.replace(host, CLUSTER.format(
                redis=REDIS_URL, node=name, heartbeat=HEARTBEAT, prefix=prefix) + host))
            self.nodes[name] = Deployment(DOMAIN, c2s_port, direct_tls_port, shared.ca_file,
                                          shared.passwords,
                                          ServerProcess(home / "xmppd.toml",
                                                        (c2s_port, direct_tls_port)))

    @property
    def processes(self):
        return [node.process for node in self.nodes.values()]

    def start(self):
        """Start every node; wait until each has joined (its heartbeat)."""
        for node in self.nodes.values():
            node.process.start()
        deadline = time.monotonic() + STEP_TIMEOUT
        keys = [f"{self.prefix}:node:{name}" for name in NODES]
        while self.redis.exists(*keys) < len(keys):
            assert time.monotonic() < deadline, "the nodes did not all join the cluster"
            time.sleep(0.1)

    def pid(self, name):
        return self.nodes[name].process.process.pid

    def stop(self):
        """Stop the nodes not killed; the failures of their clean exits."""
        failures = []
        for name, node in self.nodes.items():
            if name not in self.killed:
                try:
                    node.process.check_clean_exit()
                except pytest.fail.Exception as e:
                    failures.append(str(e))
        return failures

    def leftovers(self):
        """Delete the Redis keys of the prefix; those that would not have
        expired."""
        keys = sorted(self.redis.scan_iter(match=f"{self.prefix}:*"))
        lasting = [key for key in keys if self.redis.ttl(key) == -1]
        if keys:
            self.redis.delete(*keys)
        return lasting


@contextlib.contextmanager
def started(cluster):
    """``cluster`` started; afterwards the nodes not killed must exit
    cleanly, and then leave nothing in Redis that does not expire."""
    try:
        cluster.start()
        yield cluster
    finally:
        failures = cluster.stop()
        leftovers = cluster.leftovers()
        cluster.redis.close()
    if leftovers:
        failures.append(f"the nodes left keys in Redis after they stopped: {leftovers}")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


@pytest.fixture
def cluster(shared, database, tmp_path):
    """Nodes a, b and c (:func:`started`)."""
    with started(Cluster(shared, database, tmp_path,
                         f"xmppdtest{secrets.token_hex(4)}")) as cluster:
        yield cluster


def run_on(cluster, body, timeout=30.0):
    """``await body(clients)`` on a new event loop, ``clients[NAME]`` making
    clients of node NAME; all closed afterwards, the whole bounded."""
    async def main():
        clients = {name: Clients(node) for name, node in cluster.nodes.items()}
        try:
            await body(clients)
        finally:
            await asyncio.gather(*(each.close_all() for each in clients.values()))

    asyncio.run(asyncio.wait_for(main(), timeout))


def test_messages_and_presence_between_nodes(cluster, shared):
    alice, bob = new_accounts(shared, "alice", "bob")

    async def body(clients):
        await subscribe_both(clients["a"], alice, bob)
        b = await online(clients["b"], bob, "phone", available="presence_available",
                         unavailable="presence_unavailable")
        a = await online(clients["a"], alice, "desk", available="presence_available")
        await next_from(b.available, a.jid)  # alice's initial presence, from node a
        await next_from(a.available, b.jid)  # node a answers her probe with bob's, on node b
        a.send_message(f"{bob}@{DOMAIN}", "from node a")
        message = await b.next_message()
        assert (message["body"], str(message["from"])) == ("from node a", a.jid)
        b.send_message(a.jid, "from node b")
        message = await a.next_message()
        assert (message["body"], str(message["from"])) == ("from node b", b.jid)
        await a.close()
        await next_from(b.unavailable, a.jid)

    run_on(cluster, body)


def test_roster_push_to_a_resource_on_another_node(cluster, shared):
    [carol] = new_accounts(shared, "carol")
    friend = f"friend@{DOMAIN}"

    async def body(clients):
        one = await online(clients["a"], carol, "one")
        two = await online(clients["b"], carol, "two")
        await one.xmpp.update_roster(friend, name="Friend", timeout=STEP_TIMEOUT)
        while not two.xmpp.client_roster.has_jid(friend):
            await two.next_roster_push()
        assert two.xmpp.client_roster[friend]["name"] == "Friend"

    run_on(cluster, body)


def test_binding_a_bound_resource_on_another_node_ends_the_first(cluster, shared):
    dave, erin = new_accounts(shared, "dave", "erin")

    async def body(clients):
        first = await clients["a"].login(dave, "same")
        second = await clients["b"].login(dave, "same")
        await first.wait_disconnected()
        assert first.stream_errors == ["conflict"]
        sender = await clients["c"].login(erin, "e")
        sender.send_message(second.jid, "to the second")
        assert (await second.next_message())["body"] == "to the second"
        assert second.stream_errors == []

    run_on(cluster, body)


def test_no_message_lost_when_a_node_is_killed(cluster, shared):
    users = new_accounts(shared, "send", "send", "recv", "recv", "recv", "watch")
    victim, watcher = users[4], users[5]  # the third recipient is on node c
    ports = [cluster.nodes[name].c2s_port for name in NODES]

    async def body(clients):
        await subscribe_both(clients["a"], watcher, victim)
        watch = await online(clients["a"], watcher, "w")
        unavailable = []
        watch.xmpp.add_event_handler("presence_unavailable", lambda presence: unavailable.append(
            (time.monotonic(), str(presence["from"]))))
        outcome = await measure(ports, shared.ca_file, DOMAIN,
                                {user: shared.passwords[user] for user in users[:5]},
                                cluster.pid("c"), messages=1000, rate=250.0, heartbeat=HEARTBEAT)
        cluster.killed.add("c")
        assert cluster.nodes["c"].process.process.poll() == -signal.SIGKILL
        assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
        assert outcome.delivered_offline > 0, outcome  # what went to c's users after it died
        seen = [moment for moment, sender in unavailable if sender == f"{victim}@{DOMAIN}/live"]
        assert seen, f"{watcher} was not told {victim} is unavailable"
        assert seen[0] - outcome.killed_at < HEARTBEAT + 3, seen[0] - outcome.killed_at
        await settled(watch)

    run_on(cluster, body, timeout=60.0)


def test_no_message_lost_when_a_node_stops(cluster, shared):
    users = new_accounts(shared, "send", "send", "recv", "recv", "recv")
    ports = [cluster.nodes[name].c2s_port for name in ("a", "c", "b")]  # b stops

    async def body(clients):
        outcome = await measure(ports, shared.ca_file, DOMAIN,
                                {user: shared.passwords[user] for user in users},
                                cluster.pid("b"), messages=150, rate=150.0, heartbeat=HEARTBEAT,
                                sig=signal.SIGTERM)
        assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
        assert outcome.delivered_offline > 0, outcome
        assert cluster.nodes["b"].process.process.poll() == 0

    run_on(cluster, body, timeout=60.0)


def test_a_node_taken_for_dead_while_it_stalled_ends_its_sessions(cluster, shared):
    alice, bob = new_accounts(shared, "alice", "bob")

    async def body(clients):
        await subscribe_both(clients["a"], alice, bob)
        stalled = await online(clients["b"], bob, "phone")
        a = await online(clients["a"], alice, "desk", available="presence_available",
                         unavailable="presence_unavailable")
        await next_from(a.available, stalled.jid)
        os.kill(cluster.pid("b"), signal.SIGSTOP)  # past its heartbeat: reaped while alive
        try:
            await next_from(a.unavailable, stalled.jid)
            a.send_message(f"{bob}@{DOMAIN}", "while node b stalled")
            await settled(a)
        finally:
            os.kill(cluster.pid("b"), signal.SIGCONT)
        await stalled.wait_disconnected()
        assert "reset" in stalled.stream_errors
        again = await online(clients["b"], bob, "again")
        assert (await again.next_message())["body"] == "while node b stalled"
        await next_from(a.available, again.jid)

    run_on(cluster, body, timeout=60.0)
