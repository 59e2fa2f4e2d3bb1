"""TCP transports that write at once (xmppd.core.direct_write): on a socket
pair, with an in-memory reactor that records what it is asked to watch."""

import socket
from types import SimpleNamespace

import pytest
from OpenSSL import SSL
from twisted.internet import ssl, tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOProtocol

from xmppd.certs import make_self_signed
from xmppd.core.direct_write import Server, direct_writes


class Received(Protocol):
    def __init__(self):
        self.data = b""

    def dataReceived(self, data):
        self.data += data


def make_pair(small_buffers=False):
    ours, theirs = socket.socketpair()
    if small_buffers:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    theirs.setblocking(False)
    reactor = MemoryReactorClock()
    protocol = Received()
    server = Server(ours, protocol, ("127.0.0.1", 40000), SimpleNamespace(_realPortNumber=5222),
                    1, reactor)
    protocol.makeConnection(server)
    return server, theirs, reactor


@pytest.fixture
def pair():
    server, theirs, reactor = make_pair()
    yield server, theirs, reactor
    server.socket.close()
    theirs.close()


def receive(sock):
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


def test_a_write_is_sent_at_once(pair):
    server, theirs, reactor = pair
    server.write(b"<message/>")
    server.writeSequence([b"<iq/>", b"<presence/>"])
    assert receive(theirs) == b"<message/><iq/><presence/>"
    assert server not in reactor.writers  # no epoll registration for it


def test_what_the_kernel_does_not_take_waits_and_keeps_its_order():
    server, theirs, reactor = make_pair(small_buffers=True)
    big = bytes(range(256)) * 4096  # 1 MiB: more than both socket buffers hold
    server.write(big)
    assert server in reactor.writers  # the rest waits for the socket
    server.write(b"tail")  # behind what waits, not sent ahead of it
    got = b""
    for _ in range(10000):
        chunk = receive(theirs)
        if not chunk:
            if server not in reactor.writers:
                break
            assert server.doWrite() is None
        got += chunk
    assert got == big + b"tail"
    server.socket.close()
    theirs.close()


def test_a_send_error_is_left_to_twisted(pair):
    server, theirs, reactor = pair
    theirs.close()
    server.write(b"<message/>")  # EPIPE: kept for Twisted's own send
    assert server in reactor.writers
    assert isinstance(server.doWrite(), Exception)  # which reports the lost connection


def test_nothing_is_sent_at_once_after_an_abort_or_while_closing(pair):
    server, theirs, reactor = pair
    server.loseConnection()
    server.write(b"<a/>")
    assert receive(theirs) == b""
    server.doWrite()  # Twisted's path: the bytes, then the close
    assert receive(theirs) == b"<a/>"

    other, peer, _ = make_pair()
    other.abortConnection()
    other.write(b"<b/>")
    assert receive(peer) == b""
    assert other.reactor.calls  # Twisted's own end of the connection, not run here
    other.socket.close()
    peer.close()


class PullProducer:
    def __init__(self):
        self.asked = 0

    def resumeProducing(self):
        self.asked += 1

    def stopProducing(self):
        pass


def test_a_pull_producer_is_asked_for_more_once_its_bytes_are_out(pair):
    server, theirs, reactor = pair
    producer = PullProducer()
    server.registerProducer(producer, False)
    assert producer.asked == 1
    server.write(b"<chunk/>")  # Twisted's path: its send asks for the next chunk
    assert server in reactor.writers and producer.asked == 1
    server.doWrite()
    assert receive(theirs) == b"<chunk/>" and producer.asked == 2


def test_after_starttls_the_tls_records_are_sent_at_once(pair, tmp_path):
    server, theirs, reactor = pair
    cert, key = make_self_signed("example.com", str(tmp_path))
    with open(cert, "rb") as c, open(key, "rb") as k:
        options = ssl.PrivateCertificate.loadPEM(c.read() + k.read()).options()
    server.startTLS(options)
    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    client.set_connect_state()
    with pytest.raises(SSL.WantReadError):
        client.do_handshake()
    theirs.sendall(client.bio_read(65536))
    server.doRead()  # the ClientHello: the server's flight is written
    flight = receive(theirs)
    assert flight and server not in reactor.writers
    client.bio_write(flight)
    client.do_handshake()
    theirs.sendall(client.bio_read(65536))
    server.doRead()
    # What Twisted's TLS layer does with the writes it gathers in a reactor turn:
    TLSMemoryBIOProtocol.write(server.protocol, b"<message/>")
    client.bio_write(receive(theirs))
    assert client.recv(1024) == b"<message/>"
    assert server not in reactor.writers


def test_listening_tcp_ports_hand_out_the_transport():
    port = tcp.Port(0, Factory(), interface="127.0.0.1", reactor=MemoryReactor())
    assert direct_writes(port) is port and port.transport is Server
    other = SimpleNamespace(transport=tcp.Server)  # another kind of port: left alone
    assert direct_writes(other).transport is tcp.Server
