"""Durability under kill -9: a stanza the server has visibly handled is on
disk.

A client sends messages to an offline account, each followed by a ping to
the server.  RFC 6120 §10.1 makes the server handle them in order, and an
offline message counts as handled only once its row is committed, so a
ping's answer means every message before it is stored.  The server is
killed with SIGKILL at random moments (a seeded random, printed with a
failure) while the client keeps sending; after each restart, no message
whose following ping was answered may be missing.
"""

import asyncio
import random
import signal
import time

import pytest

from bench.xmppclient import Client, Target, XMPPError
from tests.integration.conftest import prepare
from xmppd.config import load
from xmppd.storage.sql import SQLStore

TRIALS = 3
SEND_LIMIT = 20000  # messages per trial at most
RUN_LIMIT = 15.0  # seconds a trial may take at most


@pytest.fixture
def deployment(tmp_path):
    # Room for every message of a trial: none is refused for a full queue.
    deployment = prepare(tmp_path, extra_config="[offline]\nmax_messages = 1000000")
    yield deployment
    deployment.process.stop()  # a trial that failed before its kill


async def send_until_killed(deployment, first, kill_after):
    """Send numbered messages and pings from ``first`` on; SIGKILL the
    server after ``kill_after`` seconds; the numbers whose ping was
    answered."""
    target = Target("127.0.0.1", deployment.c2s_port, deployment.domain,
                    ca_file=str(deployment.ca_file))
    client = Client(target, "alice", deployment.passwords["alice"], resource="durable")
    await client.login(10.0)
    answered = []
    client.on_stanza = lambda element: (
        element.name == "iq" and element.get("type") == "result"
        and answered.append(int(element.get("id")[1:])))
    killed_at = time.monotonic() + kill_after
    deadline = time.monotonic() + RUN_LIMIT
    number = first
    while not client.closed.done() and time.monotonic() < deadline:
        if time.monotonic() >= killed_at:
            deployment.process.process.kill()
            break
        if number < first + SEND_LIMIT and client.transport.get_write_buffer_size() < 65536:
            client.send(f"<message to='bob@{deployment.domain}' type='chat'>"
                        f"<body>{number}</body></message>"
                        f"<iq type='get' id='p{number}' to='{deployment.domain}'>"
                        "<ping xmlns='urn:xmpp:ping'/></iq>")
            number += 1
        await asyncio.sleep(0.001)
    client.transport.abort()
    return answered, number


def stored_numbers(store, domain):
    return {int(text.split("<body>")[1].split("<")[0])
            for text in store.take_offline("bob", domain)}


def test_no_answered_message_is_lost_to_sigkill(deployment):
    seed = random.randrange(2**32)
    chance = random.Random(seed)
    store = SQLStore(load(str(deployment.process.config_path)).storage.url)
    first = 0
    try:
        for trial in range(TRIALS):
            deployment.process.start()
            kill_after = chance.uniform(0.3, 1.5)
            try:
                answered, first_unsent = asyncio.run(
                    send_until_killed(deployment, first, kill_after))
            except XMPPError as e:
                pytest.fail(f"trial {trial} (seed {seed}): {e}")
            assert deployment.process.process.wait(10) == -signal.SIGKILL
            stored = stored_numbers(store, deployment.domain)
            missing = sorted(n for n in answered if n not in stored)
            assert answered, f"trial {trial} (seed {seed}): no ping answered"
            assert not missing, (f"trial {trial} (seed {seed}, killed after "
                                 f"{kill_after:.2f} s): answered but lost: {missing[:20]}")
            first = first_unsent
    finally:
        store.close()
