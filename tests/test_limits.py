"""Abuse limits: connection counting, read throttling, auth throttling."""

import base64

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

from tests.harness import Client, add_user, make_server
from xmppd.config import LimitsConfig
from xmppd.core import limits
from xmppd.core.limits import AuthThrottle, ConnectionCounter, ReadThrottle

LIMITS = LimitsConfig(max_connections=3, max_connections_per_ip=2, auth_failure_delay=1.0,
                      auth_ban_after=5, auth_ban_time=100.0, auth_account_lock_after=6,
                      auth_account_lock_time=200.0)
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


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


# Failed authentications per account (RFC 6120 §13.12)


def test_account_delays_grow_across_addresses():
    throttle = AuthThrottle(Clock())
    delays = [throttle.failed(f"10.0.0.{n}", LIMITS, "alice@example.com") for n in range(5)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert not any(throttle.banned(f"10.0.0.{n}") for n in range(5))
    assert throttle.failed("10.0.0.9", LIMITS, "bob@example.com") == 0.0


def test_account_delays_are_capped():
    throttle = AuthThrottle(Clock())
    many = LimitsConfig(auth_failure_delay=1.0, auth_account_lock_after=100)
    delays = [throttle.failed(f"10.0.{n}.1", many, "alice@example.com") for n in range(12)]
    assert delays[-1] == limits.MAX_AUTH_DELAY


def test_account_is_locked_for_a_while_and_others_are_not():
    clock = Clock()
    throttle = AuthThrottle(clock)
    for n in range(6):
        throttle.failed(f"10.0.0.{n}", LIMITS, "alice@example.com")
    assert throttle.locked("alice@example.com") and not throttle.locked("bob@example.com")
    # Failures while locked count for the address only, and do not extend the lock.
    clock.advance(150)
    throttle.failed("10.0.0.7", LIMITS, "alice@example.com")
    clock.advance(51)
    assert not throttle.locked("alice@example.com")
    assert throttle.failed("10.0.0.8", LIMITS, "alice@example.com") == 0.0


def test_tracked_accounts_are_bounded(monkeypatch):
    monkeypatch.setattr(limits, "MAX_TRACKED", 10)
    throttle = AuthThrottle(Clock())
    throttle.failed("10.0.0.1", LIMITS, "target@example.com")
    for n in range(50):
        throttle.failed(f"10.0.1.{n}", LIMITS, f"user{n}@example.com")
    assert len(throttle.accounts) == 10 and len(throttle.addresses) == 10
    # The one idle longest was forgotten: its next failure is a first one.
    assert throttle.failed("10.0.0.2", LIMITS, "target@example.com") == 0.0


def test_tracked_locks_are_bounded(monkeypatch):
    monkeypatch.setattr(limits, "MAX_TRACKED", 10)
    throttle = AuthThrottle(Clock())
    once = LimitsConfig(auth_account_lock_after=1, auth_ban_after=1000)
    for n in range(50):
        throttle.failed("10.0.0.1", once, f"user{n}@example.com")
    assert len(throttle.accounts) == 10
    assert throttle.locked("user49@example.com") and not throttle.locked("user0@example.com")


ACCOUNT_LOCK = ("[limits]\nauth_account_lock_after = 3\nauth_account_lock_time = 60\n"
                "auth_failure_delay = 0\n")


def plain_attempt(server, password, address, user="alice"):
    """One PLAIN attempt on a new connection from ``address``: the answer."""
    client = Client(server, address=address)
    client.starttls()
    client.open()
    return client.auth_plain(f"{user}@example.com", password)


def scram_first(server, address, user="alice"):
    """A SCRAM-SHA-256 exchange started from ``address``: the client."""
    client = Client(server, address=address)
    client.starttls()
    client.open()
    token = base64.b64encode(f"n,,n={user},r=abcdefgh".encode()).decode()
    client.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{token}</auth>")
    assert client.take()[0].name == "challenge"
    return client


def locked_text(answer):
    assert answer.name == "failure"
    assert [child.name for child in answer.elements()] == ["not-authorized", "text"]
    return str(next(answer.elements(NS_SASL, "text")))


def test_a_locked_account_refuses_even_the_right_password(tmp_path):
    server = make_server(tmp_path, extra=ACCOUNT_LOCK)
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    owner = Client(server, address="192.0.2.1")
    owner.login("alice@example.com")
    with capturedLogs() as events:
        for n in range(3):
            assert plain_attempt(server, "wrong", f"10.0.0.{n}").name == "failure"
    assert ("c2s account alice@example.com locked for 60 s after 3 failed authentications, "
            "the last from 10.0.0.2:54321") in [formatEvent(event) for event in events]
    assert "temporarily locked" in locked_text(plain_attempt(server, "secret", "192.0.2.2"))
    assert "temporarily locked" in locked_text(plain_attempt(server, "wrong", "192.0.2.3"))
    # Other accounts log in; the owner's session goes on.
    assert Client(server, address="10.0.0.1").login("bob@example.com") == "bob@example.com/res"
    owner.send("<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert owner.take()[0]["type"] == "result" and not owner.closed
    server.clock.advance(61)
    assert plain_attempt(server, "secret", "192.0.2.2").name == "success"


def test_scram_failures_lock_the_account_they_name(tmp_path):
    server = make_server(tmp_path, extra=ACCOUNT_LOCK)
    add_user(server, "alice@example.com")
    for n in range(3):
        client = scram_first(server, f"10.0.0.{n}", user="ALICE")  # normalised
        client.send(f"<response xmlns='{NS_SASL}'>"
                    f"{base64.b64encode(b'c=biws,r=wrong,p=AAAA').decode()}</response>")
        assert client.take()[0].name == "failure"
    assert server.auth_throttle.locked("alice@example.com")
    assert "temporarily locked" in locked_text(plain_attempt(server, "secret", "192.0.2.2"))


def test_account_failures_delay_answers_across_addresses(tmp_path):
    server = make_server(tmp_path, extra="[limits]\nauth_failure_delay = 2\n")
    add_user(server, "alice@example.com")
    plain_attempt(server, "wrong", "10.0.0.1")
    client = Client(server, address="10.0.0.2")
    client.starttls()
    client.open()
    token = base64.b64encode(b"\0alice\0wrong").decode()
    client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
    assert client.take() == []
    server.clock.advance(2)
    assert client.take()[0].name == "failure"
    # Another account's first failure, from a third address, is answered at once.
    assert plain_attempt(server, "wrong", "10.0.0.3", user="bob").name == "failure"


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
