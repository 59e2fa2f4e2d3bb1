"""Server metrics counted on the hot path (in memory)."""

from tests.harness import Client


def sample(server, name, **labels):
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def test_connections_sessions_and_stanzas(server):
    alice, bob = Client(server), Client(server)
    alice.login("alice@example.com", "a")
    bob.login("bob@example.com", "b")
    assert sample(server, "xmppd_connections", kind="c2s") == 2
    assert sample(server, "xmppd_sessions") == 2
    assert sample(server, "xmppd_logins_total") == 2
    alice.send("<message to='bob@example.com/b' type='chat'><body>x</body></message>")
    assert sample(server, "xmppd_stanzas_received_total", kind="message") == 1
    assert sample(server, "xmppd_stanzas_sent_total", kind="message") == 1
    assert sample(server, "xmppd_routing_seconds_count") >= 1
    bob.stream.connectionLost(None)
    assert sample(server, "xmppd_sessions") == 1
    assert sample(server, "xmppd_connections", kind="c2s") == 1


def test_auth_failures_counted(server):
    client = Client(server)
    client.starttls()
    client.open()
    client.auth_plain("alice@example.com", "wrong")
    assert sample(server, "xmppd_auth_failures_total") == 1


def test_storage_calls_timed(server):
    timed = server.metrics.timed_runner(lambda call: call())
    assert timed(server.sql.account_exists, "alice", "example.com") is True
    assert sample(server, "xmppd_storage_call_seconds_count", method="account_exists") == 1


def test_process_platform_and_build_info(server):
    from prometheus_client import generate_latest

    from xmppd import __version__
    assert sample(server, "xmppd_build_info", version=__version__) == 1
    assert sample(server, "process_resident_memory_bytes") > 0
    assert sample(server, "process_open_fds") > 0
    text = generate_latest(server.metrics.registry).decode()
    assert f'xmppd_build_info{{version="{__version__}"}} 1.0' in text
    assert "python_info{" in text
