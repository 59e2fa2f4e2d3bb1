"""XMPP Ping (XEP-0199), in memory: the server answers pings, and pings
idle clients on the injected clock, closing those that do not answer."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server, reload
from xmppd.core.xmlstream import NS_STREAM_ERRORS

NS_PING = "urn:xmpp:ping"
MODULES = ("bind", "ping")
IDLE, TIMEOUT = 300.0, 60.0  # the defaults of [ping]


def make(tmp_path, extra="", hosts=("example.com",)):
    server = make_server(tmp_path, hosts=hosts, modules=MODULES, extra=extra)
    add_user(server, "alice@example.com")
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


@pytest.fixture
def alice(server):
    client = Client(server)
    client.login("alice@example.com", "res")
    return client


def pings(client):
    """The server pings among what ``client`` received."""
    return [e for e in client.take()
            if e.name == "iq" and e.getAttribute("type") == "get"
            and next(e.elements(NS_PING, "ping"), None) is not None]


def answer(client, ping, type_="result", to="example.com"):
    to_attr = "" if to is None else f" to='{to}'"
    client.send(f"<iq type='{type_}' id='{ping['id']}'{to_attr}/>")


def stream_error(client):
    [error] = [e for e in client.take() if e.name == "error"]
    return next(c.name for c in error.elements() if c.uri == NS_STREAM_ERRORS and c.name != "text")


def test_server_answers_pings(alice):
    alice.send(f"<iq type='get' id='p1' to='example.com'><ping xmlns='{NS_PING}'/></iq>")
    [pong] = alice.take()
    assert (pong["type"], pong["id"], pong["from"]) == ("result", "p1", "example.com")


@pytest.mark.parametrize("to", [None, "alice@example.com"], ids=["no-to", "own-bare-jid"])
def test_server_answers_pings_for_the_account(alice, to):
    """RFC 6120 §10.3.3: no 'to' is handled by the server for the account."""
    to_attr = "" if to is None else f" to='{to}'"
    alice.send(f"<iq type='get' id='p1'{to_attr}><ping xmlns='{NS_PING}'/></iq>")
    [pong] = alice.take()
    assert (pong["type"], pong["id"], pong.getAttribute("from")) == ("result", "p1", to)


def test_ping_to_another_accounts_bare_jid(server, alice):
    """XEP-0199 §4.4: the server answers for the account, if it exists."""
    add_user(server, "bob@example.com")
    alice.send(f"<iq type='get' id='p1' to='bob@example.com'><ping xmlns='{NS_PING}'/></iq>")
    [pong] = alice.take()
    assert (pong["type"], pong["from"]) == ("result", "bob@example.com")
    alice.send(f"<iq type='get' id='p2' to='nobody@example.com'><ping xmlns='{NS_PING}'/></iq>")
    assert error_condition(alice.take()[0]) == "service-unavailable"
    alice.send(f"<iq type='get' id='p3' to='bob@example.com/phone'><ping xmlns='{NS_PING}'/></iq>")
    assert error_condition(alice.take()[0]) == "service-unavailable"  # not bound


@pytest.mark.parametrize("to", [None, "example.com", "alice@example.com"])
def test_ping_to_a_host_with_ping_disabled(tmp_path, to):
    server = make(tmp_path, hosts=(), extra='[hosts."example.com"]\ndisabled_modules = ["ping"]')
    client = Client(server)
    client.login("alice@example.com")
    to_attr = "" if to is None else f" to='{to}'"
    client.send(f"<iq type='get' id='p1'{to_attr}><ping xmlns='{NS_PING}'/></iq>")
    assert error_condition(client.take()[0]) == "service-unavailable"
    server.clock.advance(IDLE + TIMEOUT + 1)
    assert pings(client) == [] and not client.closed


def test_idle_session_is_pinged_and_answer_keeps_it(server, alice):
    server.clock.advance(IDLE - 1)
    assert pings(alice) == []
    server.clock.advance(1)
    [ping] = pings(alice)
    assert ping["to"] == "alice@example.com/res" and ping["from"] == "example.com"
    server.clock.advance(10)
    answer(alice, ping)
    assert alice.take() == []  # the answer is claimed, not bounced
    server.clock.advance(TIMEOUT)
    assert not alice.closed
    server.clock.advance(IDLE - TIMEOUT - 1)
    assert pings(alice) == []
    server.clock.advance(1)
    [second] = pings(alice)
    assert second["id"] != ping["id"]


def test_unanswered_ping_closes_the_session(server, alice):
    server.clock.advance(IDLE)
    assert len(pings(alice)) == 1
    server.clock.advance(TIMEOUT - 1)
    assert not alice.closed
    server.clock.advance(1)
    assert alice.closed and stream_error(alice) == "connection-timeout"


@pytest.mark.parametrize("type_, to", [("error", "example.com"), ("result", None)])
def test_error_or_addressless_answer_counts(server, alice, type_, to):
    server.clock.advance(IDLE)
    [ping] = pings(alice)
    answer(alice, ping, type_, to)
    server.clock.advance(TIMEOUT)
    assert not alice.closed


def test_answer_with_another_id_does_not_count(server, alice):
    server.clock.advance(IDLE)
    [ping] = pings(alice)
    alice.send("<iq type='result' id='something-else' to='example.com'/>")
    server.clock.advance(TIMEOUT)
    assert alice.closed


def test_activity_postpones_the_ping(server, alice):
    server.clock.advance(IDLE - 10)
    alice.send("<presence/>")
    server.clock.advance(10)
    assert pings(alice) == []
    server.clock.advance(IDLE - 10)
    assert len(pings(alice)) == 1


def test_one_ping_at_a_time(tmp_path):
    server = make(tmp_path, extra="[ping]\nidle_timeout = 10.0\ntimeout = 60.0")
    client = Client(server)
    client.login("alice@example.com")
    for _ in range(59):
        server.clock.advance(1)
    assert len(pings(client)) == 1
    assert not client.closed


def test_idle_timeout_zero_never_pings(tmp_path):
    server = make(tmp_path, extra="[ping]\nidle_timeout = 0")
    client = Client(server)
    client.login("alice@example.com")
    server.clock.advance(100000)
    assert pings(client) == [] and not client.closed
    assert server.clock.getDelayedCalls() == []


def test_timers_end_with_the_session(server, alice):
    replacement = Client(server)
    replacement.login("alice@example.com", "res")  # replaces alice's session
    server.clock.advance(IDLE)
    assert pings(alice) == []
    assert len(pings(replacement)) == 1
    replacement.stream.connectionLost(None)
    assert server.clock.getDelayedCalls() == []



def test_reloaded_settings_apply_to_bound_sessions(tmp_path, server, alice):
    server.clock.advance(100)
    reload(server, tmp_path, "[ping]\nidle_timeout = 0")
    server.clock.advance(IDLE * 2)
    assert pings(alice) == [] and server.clock.getDelayedCalls() == []
    reload(server, tmp_path, "[ping]\nidle_timeout = 30.0\ntimeout = 5.0")
    server.clock.advance(30)
    assert len(pings(alice)) == 1
    server.clock.advance(5)
    assert alice.closed
