"""bench/login_floor.py answers the benchmark's logins as a server would:
a SCRAM login with a valid server signature, a SASL2 password login that
gets a FAST token, then a token login over a resumed TLS session.  (A
smoke test of bench/, not a measurement.)"""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import free_port, wait_listening
from bench.xmppclient import Client, Reconnect, Target
from xmppd.certs import make_self_signed

DOMAIN = "floor.test"
PASSWORD = "floor-password"
TIMEOUT = 20.0
FLOOR = Path(__file__).resolve().parents[2] / "bench" / "login_floor.py"


@pytest.fixture
def floor(tmp_path):
    cert, _ = make_self_signed(DOMAIN, tmp_path)
    port = free_port()
    log = tmp_path / "floor.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, str(FLOOR), "--port", str(port),
                                    "--certificates", str(tmp_path), "--domain", DOMAIN,
                                    "--password", PASSWORD], stdout=out, stderr=out)
    try:
        wait_listening(process, port, log)
        yield Target("127.0.0.1", port, DOMAIN, ca_file=str(cert), mechanism="SCRAM-SHA-1")
    finally:
        process.terminate()
        process.wait(TIMEOUT)


async def login(target, reconnect=None):
    client = Client(target, "bench0", PASSWORD, "bench", reconnect)
    await client.login(timeout=TIMEOUT)
    await client.close()
    return client


def test_scram_and_fast_logins(floor):
    async def body():
        assert (await login(floor)).jid == f"floor@{DOMAIN}/bench"
        reconnect = Reconnect()
        await login(floor, reconnect)
        assert reconnect.new_token and not reconnect.tls_resumed
        await login(floor, reconnect)
        assert reconnect.used_token and reconnect.tls_resumed

    asyncio.run(asyncio.wait_for(body(), TIMEOUT))
