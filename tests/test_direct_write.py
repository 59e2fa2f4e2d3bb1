"""TCP transports that send TLS records at once (xmppd.core.direct_write):
on a socket pair, with an in-memory reactor that records what it is asked
to watch."""

import socket
from types import SimpleNamespace

import pytest
from OpenSSL import SSL
from twisted.internet import defer, error, ssl, tcp, unix
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.protocols import tls

from tests.harness import make_config
from xmppd.certs import make_self_signed
from xmppd.core.direct_write import Server, StartTLSServer, direct_writes
from xmppd.tap import Listener


class Received(Protocol):
    def __init__(self):
        self.data = b""

    def dataReceived(self, data):
        self.data += data


def make_pair(small_buffers=False, kind=Server):
    ours, theirs = socket.socketpair()
    if small_buffers:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    theirs.setblocking(False)
    reactor = MemoryReactorClock()
    protocol = Received()
    server = kind(ours, protocol, ("127.0.0.1", 40000), SimpleNamespace(_realPortNumber=5222),
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
    got = receive(theirs)  # room in the kernel again, while the rest still waits
    assert got
    server.write(b"tail")  # behind what waits, not sent ahead of it
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


class ResetSocket:
    """A socket whose peer has reset the connection."""

    def __init__(self, sock):
        self._sock = sock

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def send(self, data):
        raise ConnectionResetError(104, "Connection reset by peer")


def test_a_failed_send_ends_the_connection_as_lost(pair):
    server, theirs, reactor = pair
    server.socket = ResetSocket(server.socket)
    server.write(b"<message/>")  # the bytes wait; the reset is not forgotten
    assert server in reactor.writers
    assert isinstance(server.doRead(), error.ConnectionLost)  # not the EOF recv would see
    assert isinstance(server.doWrite(), error.ConnectionLost)

    other, peer, reactor = make_pair()
    peer.close()
    other.write(b"<message/>")  # EPIPE
    assert other in reactor.writers
    assert isinstance(other.doWrite(), error.ConnectionLost)
    other.socket.close()


def test_what_twisted_refuses_is_refused(pair):
    server, theirs, reactor = pair
    for write in (lambda: server.write(bytearray(b"<a/>")),
                  lambda: server.writeSequence([b"<a/>", memoryview(b"<b/>")])):
        with pytest.raises(TypeError):
            write()
    assert receive(theirs) == b""


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


def test_plaintext_takes_twisteds_path_on_a_starttls_connection():
    server, theirs, reactor = make_pair(kind=StartTLSServer)
    server.write(b"<a/>")
    server.write(b"<b/>")  # gathered with the first into one send
    assert receive(theirs) == b"" and server in reactor.writers
    server.doWrite()
    assert receive(theirs) == b"<a/><b/>"
    server.socket.close()
    theirs.close()


@pytest.mark.parametrize("kind", [StartTLSServer, Server])
def test_after_starttls_the_tls_records_are_sent_at_once(kind, tmp_path, monkeypatch):
    server, theirs, reactor = make_pair(kind=kind)
    # The clock Twisted's TLS layer gathers a reactor turn's writes with:
    monkeypatch.setattr(tls, "_get_default_clock", lambda: reactor)
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
    server.write(b"<message/>")
    server.writeSequence([b"<iq/>", b"<presence/>"])
    reactor.advance(0)  # the TLS layer writes one record
    record = receive(theirs)
    assert record and b"message" not in record  # encrypted, sent at once
    assert server not in reactor.writers
    client.bio_write(record)
    assert client.recv(1024) == b"<message/><iq/><presence/>"
    server.loseConnection()  # close_notify goes at once; the socket waits for the peer's
    client.bio_write(receive(theirs))
    with pytest.raises(SSL.ZeroReturnError):
        client.recv(1024)
    assert server.connected


class Endpoint:
    def __init__(self, port):
        self.port = port

    def listen(self, factory):
        return defer.succeed(self.port)


@pytest.mark.parametrize("tls, kind", [(False, StartTLSServer), (True, Server)])
def test_listeners_give_their_tcp_ports_the_transports(tmp_path, tls, kind):
    config = make_config(tmp_path)
    listener = Listener(config, "c2s.listen", "tcp:5222", Factory(), MemoryReactor(), tls=tls)
    listener.endpoint = Endpoint(tcp.Port(0, Factory(), interface="127.0.0.1",
                                          reactor=MemoryReactor()))
    listener.privilegedStartService()
    assert listener.endpoint.port.transport is kind
    path = str(tmp_path / "socket")  # a UNIX port keeps its own transport
    assert direct_writes(unix.Port(path, Factory(), reactor=MemoryReactor()),
                         tls).transport is unix.Server
