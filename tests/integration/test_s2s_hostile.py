"""Incoming server streams that never authenticate, against the real server
on 127.0.0.1 (RFC 6120 §13.12).

Streams that send a header and then only whitespace keepalives are closed
with ``connection-timeout`` once ``s2s.negotiation_timeout`` has passed;
past ``limits.s2s_max_unauthenticated_per_ip`` of them a new stream is
refused at once; a TLS handshake that never starts is aborted after
``s2s.handshake_timeout``.  The timeouts are small, so every wait is
bounded by a few seconds.
"""

import asyncio
import time
from dataclasses import dataclass

import pytest

from tests.integration.conftest import ServerProcess, free_ports, prepare, read_to_end
from tests.integration.test_c2s_slixmpp import parse_stream, stream_error_condition

NEGOTIATION_TIMEOUT = 8.0  # long enough to open every stream before the first times out
HANDSHAKE_TIMEOUT = 1.0
MAX_UNAUTHENTICATED = 12
KEEPALIVE_INTERVAL = 0.5
SLACK = 3.0  # seconds a close may take beyond its timeout on a loaded machine

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
          "xmlns:stream='http://etherx.jabber.org/streams' "
          "xmlns:db='jabber:server:dialback' from='remote.test' to='example.test' "
          "version='1.0'>").encode()
STARTTLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"


@dataclass
class Listener:
    """The s2s port of a running server."""

    port: int
    process: ServerProcess

    @property
    def processes(self):
        return (self.process,)


@pytest.fixture
def hostile(tmp_path):
    """xmppd for ``example.test`` with an s2s listener and small timeouts."""
    s2s_port, = free_ports(1)
    deployment = prepare(tmp_path, (
        f'[s2s]\nlisten = ["tcp:{s2s_port}:interface=127.0.0.1"]\nallow = ["remote.test"]\n'
        f"negotiation_timeout = {NEGOTIATION_TIMEOUT}\nhandshake_timeout = {HANDSHAKE_TIMEOUT}\n"),
        settings={"limits": {"s2s_max_unauthenticated_per_ip": MAX_UNAUTHENTICATED}})
    config = tmp_path / "xmppd.toml"
    listener = Listener(s2s_port, ServerProcess(config, (deployment.c2s_port, s2s_port)))
    try:
        listener.process.start()
        settle_probe(listener.process)
        yield listener
    finally:
        listener.process.check_clean_exit()


def settle_probe(process):
    """Wait until the server has seen the start-up probe's connection to
    the s2s port close: until then it counts as an unauthenticated stream
    from 127.0.0.1, one of the address's budget."""
    deadline = time.monotonic() + 5
    while "(? -> ?) closed" not in process.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the probe's connection was never closed"
        time.sleep(0.05)


async def keepalive_stream(port, opened):
    """Open a stream, then send a space every KEEPALIVE_INTERVAL seconds
    until the server closes the connection; ``opened`` is set once the
    server's features have come.  Returns what it sent and how many seconds
    after connecting it closed."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEADER)
    data = await asyncio.wait_for(read_features(reader), 5)
    opened.set()

    async def keepalives():
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            writer.write(b" ")

    sending = asyncio.create_task(keepalives())
    try:
        data += await asyncio.wait_for(read_to_end(reader), NEGOTIATION_TIMEOUT + SLACK)
    finally:
        sending.cancel()
        writer.close()
    return data, time.monotonic() - started


async def features(port):
    """Open a stream and read the server's features; None if it refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(HEADER)
        data = await asyncio.wait_for(read_features(reader), 5)
    finally:
        writer.close()
    elements, _ = parse_stream(data)
    return elements


async def read_features(reader):
    try:
        return await reader.readuntil(b"</stream:features>")
    except asyncio.IncompleteReadError as e:
        return e.partial


def test_unauthenticated_streams_are_timed_out_and_limited_per_address(hostile):
    async def body():
        opened = [asyncio.Event() for _ in range(MAX_UNAUTHENTICATED)]
        streams = [asyncio.create_task(keepalive_stream(hostile.port, event))
                   for event in opened]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 10)
        # One more from the same address is refused at once.
        assert stream_error_condition(await features(hostile.port)) == "policy-violation"
        for data, elapsed in await asyncio.gather(*streams):
            elements, ended = parse_stream(data)
            assert stream_error_condition(elements) == "connection-timeout" and ended
            assert NEGOTIATION_TIMEOUT - 0.5 < elapsed < NEGOTIATION_TIMEOUT + SLACK
        # Timed out streams no longer count against the address.
        assert [element.tag.split("}")[1] for element in await features(hostile.port)] == \
            ["features"]

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_tls_handshake_that_never_starts_is_aborted(hostile):
    async def body():
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", hostile.port)
        writer.write(HEADER + STARTTLS)  # and never a TLS ClientHello
        try:
            data = await asyncio.wait_for(read_to_end(reader), NEGOTIATION_TIMEOUT + SLACK)
        finally:
            writer.close()
        elements, ended = parse_stream(data)
        assert [element.tag.split("}")[1] for element in elements] == ["features", "proceed"]
        assert not ended  # aborted: no closing tag
        assert time.monotonic() - started < NEGOTIATION_TIMEOUT  # before the other timeout

    asyncio.run(asyncio.wait_for(body(), 15))
    assert "TLS handshake not finished within 1 s, aborting" in hostile.process.log_tail()
