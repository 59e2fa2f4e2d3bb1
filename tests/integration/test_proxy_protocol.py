"""The PROXY protocol on real c2s listeners behind a balancer on 127.0.0.1
(``c2s.proxy_protocol_from``): headers written here, then a real HAProxy
(``send-proxy-v2``, health checks included) if it is installed.  Clients
log in over real TLS, STARTTLS and direct TLS (XEP-0368); the server's log
and limits must see the address the header carries."""

import asyncio
import base64
import ipaddress
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time

import pytest

from tests.integration.conftest import (DOMAIN, STEP_TIMEOUT, free_ports, prepare,
                                        read_to_end)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
STREAM = (f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          f"xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' "
          f"version='1.0'>").encode()
# A second loopback address: what HAProxy's clients connect from, so that
# their address differs from the balancer's (127.0.0.1).
CLIENT_ADDRESS = "127.0.0.2"


def v2(source, port):
    """A v2 PROXY header (§2.2) for a TCP/IPv4 client at ``source:port``."""
    block = (ipaddress.ip_address(source).packed + ipaddress.ip_address("127.0.0.1").packed
             + struct.pack("!HH", port, 5222))
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


@pytest.fixture
def deployment(tmp_path):
    """A server taking PROXY headers from 127.0.0.1, one unauthenticated
    connection per client address."""
    deployment = prepare(tmp_path, settings={
        "c2s": {"proxy_protocol_from": ["127.0.0.1"]},
        "limits": {"max_unauthenticated_per_ip": 1}})
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


async def read_until(reader, marker):
    data = b""
    while marker not in data:
        chunk = await asyncio.wait_for(reader.read(4096), STEP_TIMEOUT)
        assert chunk, f"closed before {marker!r}: {data!r}"
        data += chunk
    return data


async def connect(deployment, *, header=b"", direct_tls=False, port=None,
                  local_address="127.0.0.1"):
    """A connection to the server (or to ``port``) with ``header`` sent
    first, TLS started (direct TLS or STARTTLS) and the features of the
    stream over TLS read: ``(reader, writer)``."""
    port = port or (deployment.direct_tls_port if direct_tls else deployment.c2s_port)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, local_addr=(local_address, 0)), STEP_TIMEOUT)
    context = ssl.create_default_context(cafile=str(deployment.ca_file))
    writer.write(header)
    if not direct_tls:
        writer.write(STREAM)
        await read_until(reader, b"</stream:features>")
        writer.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await read_until(reader, b"<proceed")
    await writer.drain()
    await asyncio.wait_for(writer.start_tls(context, server_hostname=DOMAIN), STEP_TIMEOUT)
    writer.write(STREAM)
    features = await read_until(reader, b"</stream:features>")
    # The stream sees the TLS under the header: it offers channel binding.
    assert b"SCRAM-SHA-256-PLUS" in features
    return reader, writer


async def login(deployment, **options):
    """As :func:`connect`, then SASL PLAIN as alice and bind; the writer."""
    reader, writer = await connect(deployment, **options)
    token = base64.b64encode(f"\0alice\0{deployment.passwords['alice']}".encode())
    writer.write(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                 + token + b"</auth>")
    await read_until(reader, b"<success")
    writer.write(STREAM)
    await read_until(reader, b"</stream:features>")
    writer.write(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert f"<jid>alice@{DOMAIN}/".encode() in await read_until(reader, b"</iq>")
    return writer


async def logged(deployment, text, count=1):
    """Wait until the server's log has ``count`` lines containing ``text``;
    those lines."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        log = deployment.process.log_path.read_text(errors="replace")
        lines = [line for line in log.splitlines() if text in line]
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.05)
    pytest.fail(f"not {count} log lines with {text!r}:\n{deployment.process.log_tail()}")


def test_headers_give_the_clients_address(deployment):
    async def body():
        for direct_tls, port in ((False, 40001), (True, 40002)):
            writer = await login(deployment, header=v2("198.51.100.7", port),
                                 direct_tls=direct_tls)
            await logged(deployment, f"c2s 198.51.100.7:{port} authenticated as alice@")
            writer.close()
        # The limit of one unauthenticated connection counts client addresses.
        first = await connect(deployment, header=v2("198.51.100.8", 1))
        second = await connect(deployment, header=v2("198.51.100.9", 1), direct_tls=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", deployment.c2s_port)
        writer.write(v2("198.51.100.8", 2))
        assert b"policy-violation" in await asyncio.wait_for(read_to_end(reader),
                                                             STEP_TIMEOUT)
        await logged(deployment, "c2s connection from 198.51.100.8:2 refused")
        for _, w in (first, second, (reader, writer)):
            w.close()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_no_header_from_a_listed_address_and_headers_from_others(deployment):
    async def body():
        reader, writer = await asyncio.open_connection("127.0.0.1", deployment.c2s_port)
        writer.write(STREAM)
        assert await asyncio.wait_for(read_to_end(reader), STEP_TIMEOUT) == b""
        await logged(deployment, "closed: no valid PROXY protocol header")
        # Not listed: its own address, its header bad XML.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", deployment.c2s_port, local_addr=(CLIENT_ADDRESS, 0))
        writer.write(v2("198.51.100.7", 1) + STREAM)
        assert b"<stream:error>" in await asyncio.wait_for(read_to_end(reader), STEP_TIMEOUT)
        await logged(deployment, f"c2s connection from {CLIENT_ADDRESS}:")
        log = deployment.process.log_path.read_text()
        assert "198.51.100.7" not in log

    asyncio.run(asyncio.wait_for(body(), 60))


HAPROXY_CONFIG = """\
global
    maxconn 100
{user}
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend c2s
    bind 127.0.0.1:{c2s}
    default_backend xmppd_c2s

frontend c2s_direct_tls
    bind 127.0.0.1:{direct_tls}
    default_backend xmppd_direct_tls

backend xmppd_c2s
    server xmppd 127.0.0.1:{server_c2s} send-proxy-v2 check inter 200ms

backend xmppd_direct_tls
    server xmppd 127.0.0.1:{server_direct_tls} send-proxy-v2 check inter 200ms
"""


@pytest.fixture
def haproxy(deployment, tmp_path):
    """HAProxy on 127.0.0.1 in front of ``deployment``: ``(c2s port,
    direct TLS port)``; skipped if not installed."""
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if binary is None:
        pytest.skip("haproxy is not installed (Debian package haproxy)")
    c2s, direct_tls = free_ports(2)
    config = tmp_path / "haproxy.cfg"
    # Started as root, it drops to nobody once listening.
    user = "    uid 65534\n    gid 65534\n" if os.geteuid() == 0 else ""
    config.write_text(HAPROXY_CONFIG.format(
        user=user, c2s=c2s, direct_tls=direct_tls, server_c2s=deployment.c2s_port,
        server_direct_tls=deployment.direct_tls_port))
    log = open(tmp_path / "haproxy.log", "wb")
    process = subprocess.Popen([binary, "-db", "-f", str(config)], stdin=subprocess.DEVNULL,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_listening(process, (c2s, direct_tls), tmp_path / "haproxy.log")
        yield c2s, direct_tls
    finally:
        process.terminate()
        process.wait(STEP_TIMEOUT)
        log.close()


def _wait_listening(process, ports, log_path):
    """Wait until HAProxy listens on ``ports``, by binding them: a probe
    connection would reach the server."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"haproxy exited: {log_path.read_text(errors='replace')}")
        busy = 0
        for port in ports:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    busy += 1
        if busy == len(ports):
            return
        time.sleep(0.05)
    pytest.fail(f"haproxy did not listen: {log_path.read_text(errors='replace')}")


def test_through_haproxy(deployment, haproxy):
    c2s, direct_tls = haproxy

    async def body():
        for count, (direct, port) in enumerate(((False, c2s), (True, direct_tls)), 1):
            writer = await login(deployment, port=port, direct_tls=direct,
                                 local_address=CLIENT_ADDRESS)
            lines = await logged(deployment, f"c2s {CLIENT_ADDRESS}:", count)
            assert all("authenticated as alice@" in line for line in lines)
            writer.close()
        # Its health checks (LOCAL) are served with the balancer's address.
        await logged(deployment, "c2s connection from 127.0.0.1:")
        assert "PROXY protocol header" not in deployment.process.log_path.read_text()

    asyncio.run(asyncio.wait_for(body(), 60))
