"""Abuse limits: connection counting, read throttling, auth throttling."""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.harness import Client, add_user, make_server
from xmppd.config import LimitsConfig
from xmppd.core.limits import AuthThrottle, ConnectionCounter, ReadThrottle

LIMITS = LimitsConfig(max_connections=3, max_connections_per_ip=2, auth_failure_delay=1.0,
                      auth_ban_after=5, auth_ban_time=100.0)


def test_connection_counter():
    counter = ConnectionCounter()
    assert counter.admit("a", LIMITS) is None and counter.admit("a", LIMITS) is None
    assert counter.admit("a", LIMITS) == "policy-violation"
    assert counter.admit("b", LIMITS) is None
    assert counter.admit("c", LIMITS) == "resource-constraint"
    counter.release("a")
    assert counter.count("a") == 1 and counter.admit("c", LIMITS) is None


class Reader:
    def __init__(self, transport):
        self.pause = transport.pauseProducing
        self.resume = transport.resumeProducing


def test_read_throttle_token_bucket():
    clock, transport = Clock(), StringTransport()
    throttle = ReadThrottle(Reader(transport), clock, rate=100, burst=200)
    throttle.consumed(200)
    assert not throttle.paused
    throttle.consumed(50)
    assert throttle.paused and transport.producerState == "paused"
    clock.advance(0.49)
    assert throttle.paused
    clock.advance(0.02)
    assert not throttle.paused and transport.producerState == "producing"
    clock.advance(10)
    throttle.consumed(200)
    assert not throttle.paused  # refilled to the burst, no more


def test_auth_delays_double_then_ban():
    clock = Clock()
    throttle = AuthThrottle(clock)
    delays = [throttle.failed("a", LIMITS) for _ in range(4)]
    assert delays == [0.0, 1.0, 2.0, 4.0]
    assert not throttle.banned("a") and not throttle.banned("b")
    throttle.failed("a", LIMITS)
    assert throttle.banned("a")
    clock.advance(101)
    assert not throttle.banned("a")
    assert throttle.failed("a", LIMITS) == 0.0


def test_auth_failures_are_forgotten_after_quiet():
    clock = Clock()
    throttle = AuthThrottle(clock)
    for _ in range(3):
        throttle.failed("a", LIMITS)
    clock.advance(101)
    assert throttle.failed("a", LIMITS) == 0.0


# Unauthenticated connections have their own, smaller budget


def unauthenticated_server(tmp_path, total=100, per_ip=2):
    server = make_server(tmp_path, extra=f"[limits]\nmax_unauthenticated = {total}\n"
                                         f"max_unauthenticated_per_ip = {per_ip}\n")
    add_user(server, "alice@example.com")
    return server


def test_unauthenticated_connections_are_limited_per_address(tmp_path):
    server = unauthenticated_server(tmp_path)
    waiting = [Client(server), Client(server)]
    refused = Client(server)
    assert refused.closed and b"policy-violation" in refused.transport.value()
    assert not any(c.closed for c in waiting)
    assert not Client(server, address="10.0.0.2").closed  # another address


def test_authenticating_leaves_the_unauthenticated_budget(tmp_path):
    server = unauthenticated_server(tmp_path, per_ip=1)
    client = Client(server)
    client.starttls()
    client.open()
    assert client.auth_plain("alice@example.com").name == "success"
    assert server.connections.unauthenticated.total == 0
    assert not Client(server).closed
    assert server.connections.total == 2


def test_unauthenticated_connections_are_limited_in_all(tmp_path):
    server = unauthenticated_server(tmp_path, total=3)
    clients = [Client(server, address=f"10.0.0.{n}") for n in range(3)]
    refused = Client(server, address="10.0.0.9")
    assert refused.closed and b"resource-constraint" in refused.transport.value()
    clients[0].lose()
    assert not Client(server, address="10.0.0.9").closed


def test_a_refused_direct_tls_connection_is_aborted_before_tls(tmp_path):
    server = unauthenticated_server(tmp_path, per_ip=1)
    Client(server, direct_tls=True)
    refused = Client(server, direct_tls=True)
    assert refused.transport.disconnected and refused.transport.value() == b""
    assert server.connections.total == 1 and server.connections.unauthenticated.total == 1
