"""The benchmark's reconnecting client works against the real server: SASL2
(XEP-0388) with Bind2 inline (XEP-0386), a FAST token (XEP-0484) asked for
with the password login and used afterwards, with and without a count, the
TLS session of the last connection resumed.  (A smoke test of bench/, not a
measurement.)"""

import asyncio

import pytest

from bench.loadgen import Worker
from bench.xmppclient import Client, Reconnect, Target, XMPPError

TIMEOUT = 20.0


def target(deployment, mechanism="SCRAM-SHA-256", fast_count=False):
    return Target("127.0.0.1", deployment.c2s_port, deployment.domain,
                  ca_file=str(deployment.ca_file), mechanism=mechanism, fast_count=fast_count)


async def login(deployment, reconnect, fast_count=False, user="alice"):
    client = Client(target(deployment, fast_count=fast_count), user,
                    deployment.passwords[user], "bench", reconnect)
    await client.login(timeout=TIMEOUT)
    jid = client.jid
    await client.close()
    return jid


@pytest.mark.parametrize("fast_count", [False, True], ids=["no-count", "count"])
def test_a_token_then_logins_with_it_and_the_tls_session(server, fast_count):
    async def body():
        reconnect = Reconnect()
        jid = await login(server, reconnect, fast_count)
        assert jid.startswith(f"alice@{server.domain}/bench")
        assert reconnect.new_token and not reconnect.used_token and not reconnect.tls_resumed
        token = reconnect.token
        for _ in range(3):
            assert await login(server, reconnect, fast_count) == jid  # Bind2: same resource
            assert reconnect.used_token and reconnect.tls_resumed and not reconnect.new_token
        assert reconnect.token == token
        assert reconnect.count == 3  # token uses, sent as count= with fast_count

    asyncio.run(asyncio.wait_for(body(), TIMEOUT))


def test_a_wrong_token_is_refused(server):
    async def body():
        reconnect = Reconnect()
        await login(server, reconnect, user="bob")
        reconnect.token = reconnect.token[:-2] + ("AA" if reconnect.token[-2:] != "AA" else "BB")
        with pytest.raises(XMPPError, match="not-authorized"):
            await login(server, reconnect, user="bob")

    asyncio.run(asyncio.wait_for(body(), TIMEOUT))


def test_sasl2_without_fast(server):
    """The login phase's --sasl2: no token asked for, no TLS session kept."""
    async def body():
        reconnect = Reconnect(fast=False)
        for _ in range(2):
            assert (await login(server, reconnect)).startswith(f"alice@{server.domain}/bench")
            assert reconnect.token is None and not reconnect.tls_resumed

    asyncio.run(asyncio.wait_for(body(), TIMEOUT))


def test_the_worker_counts_fast_logins(server):
    async def body():
        worker = Worker({"target": target(server), "password": server.passwords,
                         "pattern": "{}"})
        first = await worker.login(["alice", "bob"], 2, False, "fast", profile="fast")
        assert (first["failed"], first["new_tokens"], first["token_logins"]) == (0, 2, 0)
        again = await worker.login(["alice", "bob"], 2, False, "fast", profile="fast")
        assert (again["failed"], again["errors"]) == (0, [])
        assert (again["token_logins"], again["tls_resumed"]) == (2, 2)

    asyncio.run(asyncio.wait_for(body(), TIMEOUT))
