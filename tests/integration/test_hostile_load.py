"""Clients that hold the server's resources, against the real server on
127.0.0.1 over real TLS (RFC 6120 §13.12).

- A TLS handshake that never starts, after ``<proceed/>`` (STARTTLS) or
  from the connection (direct TLS), is aborted after
  ``c2s.handshake_timeout``.
- Past ``limits.max_unauthenticated_per_ip`` connections not yet
  authenticated from one address, the next from that address is refused
  as it connects (a stream error on STARTTLS, a close on direct TLS), while
  other addresses log in; past ``limits.max_unauthenticated`` every address
  is refused.
- A client that stops reading is cut off with ``policy-violation`` once
  more than ``c2s.max_output_buffer`` bytes wait for it; the server's
  memory stays bounded, and the client that sent to it is only held.

The timeouts and limits are small, so every wait is bounded by a few
seconds.
"""

import asyncio
import base64
import socket
import ssl
import time

import pytest

from tests.integration.conftest import DOMAIN, STEP_TIMEOUT, read_to_end
from tests.integration.test_c2s_slixmpp import (
    NS_SASL, NS_TLS, STREAM_OPEN, XML_DECLARATION, parse_stream, stream_error_condition)
from xmppd.core.stream import MAX_HOLD

HANDSHAKE_TIMEOUT = 1.0
PER_ADDRESS = 3  # limits.max_unauthenticated_per_ip
UNAUTHENTICATED = 5  # limits.max_unauthenticated
OUTPUT_LIMIT = 65536  # c2s.max_output_buffer, the smallest allowed
SLACK = 3.0  # seconds a close may take beyond its timeout on a loaded machine
RECEIVE_BUFFER = 4096  # bytes: the slow reader's, as on a slow link
MESSAGE_BYTES = 10000
MESSAGES = 1000  # 10 MB for the slow reader: far past what the server may keep

HEADER = (XML_DECLARATION + STREAM_OPEN.format(to=DOMAIN)).encode()
STARTTLS = f"<starttls xmlns='{NS_TLS}'/>".encode()
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"


@pytest.fixture
def server_settings():
    """``fresh_server``'s settings: small timeouts and limits, and rates
    that let one client send megabytes at once."""
    return {
        "c2s": {"handshake_timeout": HANDSHAKE_TIMEOUT, "max_output_buffer": OUTPUT_LIMIT},
        "limits": {"max_unauthenticated_per_ip": PER_ADDRESS,
                   "max_unauthenticated": UNAUTHENTICATED,
                   "c2s_read_rate": 64 * 2**20, "c2s_read_burst": 64 * 2**20},
    }


def bound(source):
    """A non-blocking TCP socket bound to ``source`` (an address of
    127.0.0.0/8)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock


async def tcp_connect(sock, port):
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)),
                           STEP_TIMEOUT)


async def connect(port, source="127.0.0.1"):
    """A connection to 127.0.0.1:``port`` from ``source``: (reader, writer,
    the source port)."""
    sock = bound(source)
    await tcp_connect(sock, port)
    reader, writer = await asyncio.open_connection(sock=sock)
    return reader, writer, sock.getsockname()[1]


async def wait_for_log(process, text, timeout=STEP_TIMEOUT):
    """Wait until ``text`` is in the server's log."""
    deadline = time.monotonic() + timeout
    while text not in process.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"not in the server log within {timeout} s: {text}"
        await asyncio.sleep(0.05)


def names(elements):
    return [element.tag.split("}")[1] for element in elements]


# The TLS handshake timeout


def test_a_tls_handshake_that_never_starts_after_proceed_is_aborted(fresh_server):
    async def body():
        reader, writer, port = await connect(fresh_server.c2s_port)
        try:
            writer.write(HEADER + STARTTLS)  # and never a ClientHello
            data = await asyncio.wait_for(reader.readuntil(b"<proceed"), STEP_TIMEOUT)
            proceeded = time.monotonic()
            data += await asyncio.wait_for(read_to_end(reader), HANDSHAKE_TIMEOUT + SLACK)
        finally:
            writer.close()
        elements, ended = parse_stream(data)
        assert names(elements) == ["features", "proceed"]
        assert not ended  # aborted: nothing more could be said
        assert time.monotonic() - proceeded >= HANDSHAKE_TIMEOUT - 0.1
        await wait_for_log(fresh_server.process, f"c2s TLS handshake with 127.0.0.1:{port} "
                           f"not finished within {HANDSHAKE_TIMEOUT:g} s")

    asyncio.run(asyncio.wait_for(body(), 15))


def test_a_direct_tls_connection_without_a_client_hello_is_aborted(fresh_server):
    async def body():
        started = time.monotonic()
        reader, writer, port = await connect(fresh_server.direct_tls_port)
        try:
            data = await asyncio.wait_for(read_to_end(reader), HANDSHAKE_TIMEOUT + SLACK)
        finally:
            writer.close()
        assert data == b""
        assert time.monotonic() - started >= HANDSHAKE_TIMEOUT - 0.1
        await wait_for_log(fresh_server.process, f"c2s TLS handshake with 127.0.0.1:{port} "
                           f"not finished within {HANDSHAKE_TIMEOUT:g} s")

    asyncio.run(asyncio.wait_for(body(), 15))


# The unauthenticated budget


async def stall(port, source):
    """A STARTTLS connection from ``source`` that opened its stream and
    got the features, then says nothing: it stays unauthenticated."""
    reader, writer, _ = await connect(port, source)
    writer.write(HEADER)
    data = await asyncio.wait_for(reader.readuntil(b"</stream:features>"), STEP_TIMEOUT)
    assert names(parse_stream(data)[0]) == ["features"]
    return writer


async def refused(deployment, source):
    """Connect from ``source`` to both ports, sending nothing: what the
    server sent on the STARTTLS port until it closed the connection, and
    the source ports; the direct TLS handshake must fail."""
    reader, writer, starttls_port = await connect(deployment.c2s_port, source)
    try:
        data = await asyncio.wait_for(read_to_end(reader), STEP_TIMEOUT)
    finally:
        writer.close()
    sock = bound(source)
    direct_tls_port = sock.getsockname()[1]
    context = ssl.create_default_context(cafile=str(deployment.ca_file))
    # Aborted so soon that connecting may fail already.
    with sock, pytest.raises((ssl.SSLError, ConnectionError)):
        await tcp_connect(sock, deployment.direct_tls_port)
        await asyncio.wait_for(asyncio.open_connection(sock=sock, ssl=context,
                                                       server_hostname=DOMAIN), STEP_TIMEOUT)
    return data, (starttls_port, direct_tls_port)


async def refused_with(server, address, condition):
    """A STARTTLS connection from ``address`` is refused at once with
    ``condition``, and the server logs why."""
    data, ports = await refused(server, address)
    elements, ended = parse_stream(data)
    assert stream_error_condition(elements) == condition and ended
    for port in ports:
        await wait_for_log(server.process, f"c2s connection from {address}:{port} refused: "
                                           f"{condition}")


def test_unauthenticated_connections_are_limited_per_address_and_in_all(fresh_server, run):
    async def body(clients):
        stalled = []
        try:
            for _ in range(PER_ADDRESS):
                stalled.append(await stall(fresh_server.c2s_port, "127.0.0.2"))
            # The next one from that address is refused as it connects.
            await refused_with(fresh_server, "127.0.0.2", "policy-violation")
            # Another address logs in: the budget of all addresses is not spent.
            await clients.login("alice")
            # Two more from a third address spend it: every address is refused.
            for _ in range(UNAUTHENTICATED - PER_ADDRESS):
                stalled.append(await stall(fresh_server.c2s_port, "127.0.0.3"))
            await refused_with(fresh_server, "127.0.0.1", "resource-constraint")
        finally:
            for writer in stalled:
                writer.close()

    run(fresh_server, body)


# A client that does not read


def receive_until(sock, marker):
    """Read from ``sock`` (blocking, with its timeout) until ``marker``
    has come; what was read."""
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection before {marker!r}: {data!r}"
        data += chunk
    return data


def receive_all(sock):
    """What the server sends on ``sock`` until it closes the connection."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def raw_session(deployment, user, resource):
    """``user``'s session, available, on a direct TLS socket with a small
    receive buffer (SASL PLAIN, binding and initial presence by hand), for
    a client that can stop reading: the socket, and what the server sent
    on the stream after authentication."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.settimeout(STEP_TIMEOUT)
    sock.connect(("127.0.0.1", deployment.direct_tls_port))
    context = ssl.create_default_context(cafile=str(deployment.ca_file))
    tls = context.wrap_socket(sock, server_hostname=DOMAIN)
    tls.sendall(HEADER)
    receive_until(tls, b"</stream:features>")
    token = base64.b64encode(f"\0{user}\0{deployment.passwords[user]}".encode()).decode()
    tls.sendall(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>".encode())
    assert b"<success" in receive_until(tls, b"/>")  # or a failure
    tls.sendall(HEADER)  # the stream restarts (RFC 6120 §6.4.6)
    stream = receive_until(tls, b"</stream:features>")
    tls.sendall(f"<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>{resource}"
                "</resource></bind></iq>".encode())
    stream += receive_until(tls, b"</iq>")
    tls.sendall(b"<presence/>")
    stream += receive_until(tls, b"<presence")  # ours, reflected: it is available
    return tls, stream


def rss(process):
    """The resident memory of the server process, in bytes."""
    with open(f"/proc/{process.process.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_a_client_that_does_not_read_is_cut_off_and_its_sender_only_held(fresh_server, run):
    process = fresh_server.process
    reader, stream = raw_session(fresh_server, "bob", "slow")
    port = reader.getsockname()[1]

    async def body(clients):
        alice = await clients.login("alice")
        before = rss(process)
        # Headlines to bob's bare JID: while bob is connected they are his;
        # once he is gone they are dropped (RFC 6121 §8.5.2.2.1).  While
        # too much waits for bob, alice stops being read (for MAX_HOLD
        # seconds at most); once more than the limit waits, bob is cut off.
        for _ in range(MESSAGES):
            alice.xmpp.send_message(f"bob@{DOMAIN}", "x" * MESSAGE_BYTES, mtype="headline")
        await wait_for_log(process, f"c2s 127.0.0.1:{port} (bob@{DOMAIN}) does not read: "
                           f"more than {OUTPUT_LIMIT} bytes wait, closing",
                           timeout=MAX_HOLD + STEP_TIMEOUT)
        received = await asyncio.to_thread(receive_all, reader)
        elements, ended = parse_stream(stream + received)
        assert stream_error_condition(elements) == "policy-violation" and ended
        # Every message has been handled once the ping after them is answered.
        result = await alice.xmpp.plugin["xep_0199"].send_ping(DOMAIN, timeout=STEP_TIMEOUT)
        assert result["type"] == "result"
        assert not alice.disconnected.done() and alice.stream_errors == []
        # What was sent for bob was not kept.
        assert rss(process) - before < MESSAGES * MESSAGE_BYTES

    try:
        run(fresh_server, body)
    finally:
        reader.close()
