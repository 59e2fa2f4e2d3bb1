"""The benchmark's load generator works: it logs in to the real server
(STARTTLS, SASL, bind), plays message ping-pong without losing a stanza,
fills a group chat room and has its occupants get every message, and reads
the server's CPU time and memory.  (A smoke test of bench/, not a
measurement.)"""

import asyncio
import time

import pytest

from bench.loadgen import ServerProcess, Worker
from bench.xmppclient import Target
from tests.integration.conftest import new_accounts, prepare, prepare_web

TIMEOUT = 20.0


def worker_for(deployment, mechanism):
    target = Target("127.0.0.1", deployment.c2s_port, deployment.domain,
                    ca_file=str(deployment.ca_file), mechanism=mechanism)
    return Worker({"target": target, "password": deployment.passwords, "pattern": "{}"})


async def drained(worker, timeout=5.0):
    deadline = time.monotonic() + timeout
    while worker.delivered < worker.expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # bounded polling of a live server


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_login_then_end_the_stream(server, mechanism):
    async def body():
        worker = worker_for(server, mechanism)
        result = await worker.login(["alice", "bob"], concurrency=2, keep=False,
                                    resource=f"smoke-{mechanism}")
        assert (result["failed"], result["errors"]) == (0, [])
        assert len(result["latencies"]) == 2 and all(ms > 0 for ms in result["latencies"])
        assert worker.clients == {}

    asyncio.run(asyncio.wait_for(body(), TIMEOUT))


def test_ping_pong_delivers_every_message(server):
    process = ServerProcess(server.process.process.pid)
    cpu_before = process.cpu_seconds()

    async def body():
        worker = worker_for(server, "PLAIN")
        login = await worker.login(["alice", "bob"], concurrency=2, keep=True, resource="pingpong")
        assert login["failed"] == 0 and set(worker.clients) == {"alice", "bob"}
        start = time.monotonic() + 0.1
        window = await worker.messages([("alice", "bob")], window=3, start_at=start,
                                       end_at=start + 1.0, padding=20)
        await drained(worker)
        counts = worker.counts()
        await worker.close_all()
        return window, counts

    window, counts = asyncio.run(asyncio.wait_for(body(), TIMEOUT))
    assert window["window_delivered"] > 10
    assert len(window["latencies"]) == window["window_delivered"]
    assert counts["sent"] == counts["expected"] == counts["delivered"]
    assert counts["errors"] == []
    assert process.cpu_seconds() > cpu_before
    assert process.rss_bytes() > 10 * 2**20


@pytest.fixture
def muc_server(tmp_path):
    """A server of the test's own with no groupchat message rate per
    occupant, as bench/run.py configures it."""
    deployment = prepare(tmp_path, "[muc]\nmessage_rate = 100000.0\nmessage_burst = 100000\n")
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


def test_group_chat_reaches_every_occupant(muc_server):
    occupants = ["alice", "bob", *new_accounts(muc_server, "occupant", "occupant", "occupant")]
    room = f"bench@conference.{muc_server.domain}"

    async def body():
        worker = worker_for(muc_server, "PLAIN")
        login = await worker.login(occupants, concurrency=5, keep=True, resource="muc")
        assert login["failed"] == 0
        first = await worker.muc_enter(occupants[:1], room, create=True, timeout=TIMEOUT)
        assert (first["entered"], first["created"], first["errors"]) == (1, True, [])
        rest = await worker.muc_enter(occupants[1:], room, create=False, timeout=TIMEOUT,
                                      quiet=0.3)
        assert (rest["entered"], rest["errors"]) == (4, [])
        start = time.monotonic() + 0.1
        window = await worker.muc(room, senders=occupants[:2], window=2, occupants=5,
                                  padding=20, start_at=start, end_at=start + 1.0)
        await drained(worker)
        counts = worker.counts()
        await worker.close_all()
        return window, counts

    window, counts = asyncio.run(asyncio.wait_for(body(), TIMEOUT))
    assert window["sent"] > 4 and window["window_delivered"] > 20
    assert len(window["latencies"]) == window["window_delivered"]
    assert window["echoes"] and len(window["echoes"]) <= window["sent"]
    assert counts["expected"] == 5 * counts["sent"] == counts["delivered"]
    assert counts["errors"] == []


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A server with an HTTPS listener for WebSocket (RFC 7395) and BOSH
    (XEP-0206)."""
    deployment, port = prepare_web(tmp_path_factory.mktemp("xmppd-bench-ws"))
    deployment.process.start()
    yield deployment, port
    deployment.process.check_clean_exit()


@pytest.mark.parametrize("transport", ["websocket", "bosh"])
def test_ping_pong_over_the_web_delivers_every_message(web, transport):
    deployment, port = web

    async def body():
        target = Target("127.0.0.1", deployment.c2s_port, deployment.domain,
                        ca_file=str(deployment.ca_file), mechanism="SCRAM-SHA-256",
                        ws_port=port)
        worker = Worker({"target": target, "password": deployment.passwords,
                         "pattern": "{}"})
        login = await worker.login(["alice", "bob"], concurrency=2, keep=True,
                                   resource=transport, transport=transport)
        assert (login["failed"], login["errors"]) == (0, [])
        assert all(client.jid.endswith(f"/{transport}") for client in worker.clients.values())
        start = time.monotonic() + 0.1
        window = await worker.messages([("alice", "bob")], window=3, start_at=start,
                                       end_at=start + 1.0, padding=20)
        await drained(worker)
        counts = worker.counts()
        await worker.close_all()
        return window, counts

    window, counts = asyncio.run(asyncio.wait_for(body(), TIMEOUT))
    assert window["sent"] > 10 and window["errors"] == []
    assert counts["delivered"] == counts["sent"] > 0
