"""The PROXY protocol on c2s listeners (xmppd.core.proxy): headers from the
listed balancers only, v1 and v2, IPv4 and IPv6; in memory, clock injected."""

import ipaddress
import struct

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.logger import globalLogPublisher, formatEvent
from twisted.python.failure import Failure

from tests.harness import HEADER, TLSStringTransport, make_config, make_server
from xmppd.config import ConfigError
from xmppd.core.c2s import ClientStream, ClientStreamFactory
from xmppd.core.proxy import ProxyProtocol, ProxyProtocolFactory

BALANCERS = '[c2s]\nproxy_protocol_from = ["10.0.0.0/8", "::1"]\n'
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(source=None, port=0, command=0x21):
    """A v2 header (§2.2): PROXY over TCP from ``source``, or LOCAL."""
    if source is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    ip = ipaddress.ip_address(source)
    family, other = (0x11, "192.0.2.1") if ip.version == 4 else (0x21, "2001:db8::1")
    block = ip.packed + ipaddress.ip_address(other).packed + struct.pack("!HH", port, 5222)
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(block)) + block


@pytest.fixture
def logged():
    lines = []

    def observe(event):
        if event.get("log_namespace") == "xmppd.core.proxy":
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def server(tmp_path):
    return make_server(tmp_path, modules=("sasl",), extra=BALANCERS)


def connect(server, peer, inner=None):
    """A connection to a c2s listener from ``peer`` (a Twisted address):
    ``(protocol, transport)``."""
    factory = ProxyProtocolFactory(server, inner or ClientStreamFactory(server))
    protocol = factory.buildProtocol(peer)
    transport = TLSStringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


def balancer(host="10.0.0.5"):
    kind = IPv6Address if ":" in host else IPv4Address
    return kind("TCP", host, 40000)


def stream_of(server):
    streams = [s for s in server.streams if isinstance(s, ClientStream)]
    assert len(streams) == 1
    return streams[0]


def opened(transport):
    return b"<stream:features>" in transport.value()


@pytest.mark.parametrize("header, peer, address", [
    (v2("198.51.100.7", 51234), "198.51.100.7:51234", "198.51.100.7"),
    (v2("2001:db8:0:0:0:0:0:7", 443), "[2001:db8::7]:443", "2001:db8::7"),
    (b"PROXY TCP4 198.51.100.7 192.0.2.1 51234 5222\r\n", "198.51.100.7:51234",
     "198.51.100.7"),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 5222\r\n", "[2001:db8::7]:51234",
     "2001:db8::7"),
])
def test_a_listed_balancer_gives_the_clients_address(server, header, peer, address):
    protocol, transport = connect(server, balancer())
    assert isinstance(protocol, ProxyProtocol)
    assert not server.streams  # no stream before the header
    protocol.dataReceived(header + HEADER.format(to="example.com").encode())
    stream = stream_of(server)
    assert (stream.peer, stream.address) == (peer, address)
    assert opened(transport)


def test_an_ipv6_balancer_and_a_header_cut_into_bytes(server):
    protocol, transport = connect(server, balancer("::1"))
    data = v2("198.51.100.9", 1000) + HEADER.format(to="example.com").encode()
    for i in range(len(data)):
        protocol.dataReceived(data[i:i + 1])
    assert stream_of(server).address == "198.51.100.9"
    assert opened(transport)


def test_an_ipv4_balancer_on_an_ipv6_listener(server):
    protocol, _ = connect(server, balancer("::ffff:10.1.2.3"))
    protocol.dataReceived(v2("198.51.100.7", 1))
    assert stream_of(server).address == "198.51.100.7"


@pytest.mark.parametrize("header", [v2(), b"PROXY UNKNOWN\r\n",
                                    b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"])
def test_local_and_unknown_keep_the_balancers_address(server, header):
    """A health check (v2 LOCAL) or a balancer that knows no address (§2.1)."""
    protocol, transport = connect(server, balancer())
    protocol.dataReceived(header + HEADER.format(to="example.com").encode())
    assert stream_of(server).peer == "10.0.0.5:40000"
    assert opened(transport)


@pytest.mark.parametrize("data", [
    HEADER.format(to="example.com").encode(),  # a client straight to the server
    b"GET / HTTP/1.1\r\n\r\n",
    b"PROXY TCP4 not-an-address 192.0.2.1 1 2\r\n",
    b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n",
    b"PROXY TCP4 198.51.100.7 192.0.2.1 99999 2\r\n",
    b"PROXY TCP4 198.51.100.7 192.0.2.1 port 2\r\n",
    b"PROXY " + b"x" * 120,
    V2_SIGNATURE + bytes([0x31, 0x11]) + b"\x00\x0c" + bytes(12),  # version 3
    V2_SIGNATURE + bytes([0x21, 0x11]) + b"\x00\x04" + bytes(4),  # address cut short
])
def test_a_listed_balancer_without_a_valid_header_is_closed(server, logged, data):
    protocol, transport = connect(server, balancer())
    protocol.dataReceived(data)
    protocol.dataReceived(b"more")
    assert transport.disconnecting
    assert transport.value() == b""  # no XML stream
    assert not server.streams
    protocol.connectionLost(Failure(ConnectionDone()))
    assert logged == ["c2s connection from 10.0.0.5:40000 closed: "
                      "no valid PROXY protocol header"]


def test_a_balancer_that_sends_nothing_is_closed_in_time(server, logged):
    protocol, transport = connect(server, balancer())
    server.clock.advance(server.config.c2s.handshake_timeout - 0.1)
    assert not transport.disconnecting
    server.clock.advance(0.1)
    assert transport.disconnecting
    protocol.connectionLost(Failure(ConnectionDone()))
    assert logged == ["c2s connection from 10.0.0.5:40000 closed: "
                      "no PROXY protocol header in time"]


def test_a_connection_ended_before_its_header(server, logged):
    protocol, _ = connect(server, balancer())
    protocol.dataReceived(V2_SIGNATURE[:5])
    protocol.connectionLost(Failure(ConnectionDone()))
    server.clock.advance(60)
    assert logged == ["c2s connection from 10.0.0.5:40000 ended before its PROXY protocol header"]
    assert not server.clock.getDelayedCalls()


@pytest.mark.parametrize("header", [v2("198.51.100.7", 1),
                                    b"PROXY TCP4 198.51.100.7 192.0.2.1 1 2\r\n"])
def test_an_unlisted_address_is_served_with_its_own(server, header):
    """Its header is not read: it is what it sends, bad XML."""
    protocol, transport = connect(server, IPv4Address("TCP", "192.0.2.99", 4000))
    assert isinstance(protocol, ClientStream)
    protocol.dataReceived(header + HEADER.format(to="example.com").encode())
    assert protocol.address == "192.0.2.99"
    assert b"<stream:error>" in transport.value() and not opened(transport)
    assert transport.disconnecting


def test_off_by_default(tmp_path):
    server = make_server(tmp_path, modules=("sasl",))
    protocol, _ = connect(server, balancer())
    assert isinstance(protocol, ClientStream) and protocol.address == "10.0.0.5"


def test_limits_count_the_clients_address(tmp_path):
    server = make_server(tmp_path, modules=("sasl",),
                         extra=BALANCERS + "[limits]\nmax_connections_per_ip = 1\n")
    transports = []
    for client in ("198.51.100.1", "198.51.100.2", "198.51.100.1"):
        protocol, transport = connect(server, balancer())
        protocol.dataReceived(v2(client, 1) + HEADER.format(to="example.com").encode())
        transports.append(transport)
    assert [opened(t) for t in transports] == [True, True, False]
    assert [b"policy-violation" in t.value() for t in transports] == [False, False, True]


def test_starttls_below_the_wrapper_ends_the_handshake_timer(server):
    """STARTTLS puts TLS under the wrapper; the stream hears its handshake."""
    protocol, transport = connect(server, balancer())
    protocol.dataReceived(v2("198.51.100.7", 1) + HEADER.format(to="example.com").encode())
    protocol.dataReceived(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert transport.tls == "tls-context-for-example.com"
    protocol.handshakeCompleted()
    server.clock.advance(server.config.c2s.handshake_timeout + 1)
    assert not transport.disconnecting
    assert stream_of(server).address == "198.51.100.7"


def test_a_reload_applies_to_new_connections(server, tmp_path):
    server.reconfigure(make_config(tmp_path), server.certificates)
    protocol, _ = connect(server, balancer())
    assert isinstance(protocol, ClientStream)


@pytest.mark.parametrize("value, problem", [
    ('"10.0.0.0/8"', "c2s.proxy_protocol_from: expected an array of strings"),
    ('["balancer.example.com"]', 'c2s.proxy_protocol_from[0]: expected an IP address or '
                                 'network such as "10.0.0.0/8", got "balancer.example.com"'),
    ('["10.0.0.1/8"]', "c2s.proxy_protocol_from[0]: expected an IP address or network"),
])
def test_config_refuses_what_is_no_address(tmp_path, value, problem):
    with pytest.raises(ConfigError) as error:
        make_config(tmp_path, extra=f"[c2s]\nproxy_protocol_from = {value}\n")
    assert str(error.value).startswith(f"{tmp_path / 'xmppd.toml'}: {problem}")


def test_config_normalises_networks(tmp_path):
    config = make_config(tmp_path, extra='[c2s]\nproxy_protocol_from = '
                                         '["127.0.0.1", "10.0.0.0/8", "0:0::1"]\n')
    assert config.c2s.proxy_protocol_from == ("127.0.0.1/32", "10.0.0.0/8", "::1/128")
    assert make_config(tmp_path).c2s.proxy_protocol_from == ()
