"""Abuse limits: connection counting, read throttling, auth throttling."""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

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
