"""Operations on the real server: systemd notifications, reload, status,
graceful shutdown and socket activation."""

import shutil
import signal
import socket

import pytest

from tests.integration.conftest import prepare, xmppctl_result

NOTIFY_TIMEOUT = 15.0


@pytest.fixture
def deployment(tmp_path):
    deployment = prepare(tmp_path)
    yield deployment
    deployment.process.check_clean_exit()


@pytest.fixture
def notifications(tmp_path):
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(NOTIFY_TIMEOUT)
    yield path, sock
    sock.close()


def next_states(notifications):
    return notifications[1].recv(4096).decode().split("\n")


def xmppctl(config_path, *args):
    return xmppctl_result("-c", config_path, *args)


def test_ready_reload_status_and_graceful_stop(deployment, notifications, run):
    process = deployment.process
    config_path = process.config_path
    process.start(env={"NOTIFY_SOCKET": notifications[0]})
    assert "READY=1" in next_states(notifications)

    async def body(clients):
        alice = await clients.login("alice", "laptop")
        status = xmppctl(config_path, "status")
        assert status.returncode == 0, status.stderr
        assert "running" in status.stdout and "sessions: 1" in status.stdout

        good = config_path.read_text()
        config_path.write_text(good.replace('log_level = "info"', 'log_level = "loud"'))
        refused = xmppctl(config_path, "reload")
        assert refused.returncode == 1 and "log_level" in refused.stderr
        process.process.send_signal(signal.SIGHUP)
        assert next_states(notifications)[0] == "RELOADING=1"
        assert next_states(notifications)[0] == "READY=1"
        assert "reload refused" in process.log_tail()

        config_path.write_text(good.replace('log_level = "info"', 'log_level = "debug"\n'
                                            'log_json = "events.json"\n'
                                            '[metrics]\nlisten = ["tcp:0"]'))
        reloaded = xmppctl(config_path, "reload")
        assert reloaded.returncode == 0 and "ok: reloaded" in reloaded.stdout
        for key in ("metrics.listen", "log_json"):
            assert f"warning: {key} changed; it takes effect after a restart" in reloaded.stdout
        assert next_states(notifications)[0] == "RELOADING=1"
        assert next_states(notifications)[0] == "READY=1"

        # The session survived both reloads.
        bob = await clients.login("bob")
        bob.send_message(alice.jid, "still here")
        assert str((await alice.next_message())["body"]) == "still here"

        process.process.send_signal(signal.SIGTERM)
        await alice.wait_disconnected()
        assert "system-shutdown" in alice.stream_errors
        assert process.process.wait(15) == 0
        assert "STOPPING=1" in next_states(notifications)

    run(deployment, body)


def test_status_when_not_running(deployment):
    result = xmppctl(deployment.process.config_path, "status")
    assert result.returncode == 1
    assert result.stderr.startswith("xmppctl: xmppd is not running")


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed (Debian package systemd)")
def test_socket_activation(tmp_path, run):
    deployment = prepare(tmp_path)
    config_path = deployment.process.config_path
    text = config_path.read_text()
    config_path.write_text(
        text.replace(f'listen = ["tcp:{deployment.c2s_port}:interface=127.0.0.1"]',
                     'listen = ["systemd:domain=INET:index=0"]'))
    # systemd names every socket it passes (LISTEN_FDNAMES), which Twisted
    # requires; systemd-socket-activate does so only when asked.
    deployment.process.start(command=[
        shutil.which("systemd-socket-activate"), "-l", f"127.0.0.1:{deployment.c2s_port}",
        "--fdname=c2s"])
    try:
        async def body(clients):
            alice = await clients.login("alice")
            assert alice.jid.startswith("alice@")

        run(deployment, body)
    finally:
        deployment.process.check_clean_exit()


def test_metrics_endpoint(tmp_path, run):
    import urllib.request

    from tests.integration.conftest import free_ports
    [port] = free_ports(1)
    deployment = prepare(tmp_path, f'[metrics]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n')
    deployment.process.start()
    try:
        async def body(clients):
            await clients.login("alice")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                text = reply.read().decode()
            assert "xmppd_sessions 1.0" in text
            assert 'xmppd_connections{kind="c2s"} 1.0' in text
            assert "xmppd_logins_total 1.0" in text
            assert 'xmppd_build_info{version="' in text
            assert "process_resident_memory_bytes" in text

        run(deployment, body)
        log = deployment.process.log_tail()
        assert "/metrics" not in log  # scrapes are not logged
        banner = [line.split("] ", 1)[1] for line in log.splitlines() if "[xmppd#info]" in line]
        assert banner[0].startswith("xmppd ") and " starting (" in banner[0]
        assert banner[1:] == [
            "hosts: example.test",
            f"listening: c2s.listen tcp:{deployment.c2s_port}:interface=127.0.0.1, "
            f"c2s.direct_tls tcp:{deployment.direct_tls_port}:interface=127.0.0.1, "
            f"metrics.listen tcp:{port}:interface=127.0.0.1, "
            f"admin.socket {tmp_path}/xmppd.sock",
            "ready"]
    finally:
        deployment.process.check_clean_exit()


def test_acknowledged_roster_change_survives_sigkill(deployment, run):
    """SQLite in WAL mode with synchronous commits: what the server
    acknowledged is on disk even if the process is killed at once."""
    process = deployment.process
    process.start()

    async def change(clients):
        alice = await clients.login("alice")
        iq = alice.xmpp.Iq()
        iq["type"] = "set"
        iq["roster"]["items"] = {"carol@example.test": {"name": "Carol", "groups": ["Team"]}}
        await iq.send(timeout=10)
        process.process.kill()

    run(deployment, change)
    assert process.process.wait(10) == -signal.SIGKILL
    process.start()

    async def check(clients):
        alice = await clients.login("alice")
        iq = alice.xmpp.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        items = (await iq.send(timeout=10))["roster"]["items"]
        assert items["carol@example.test"]["name"] == "Carol"
        assert items["carol@example.test"]["groups"] == ["Team"]

    run(deployment, check)


def test_stored_offline_message_survives_sigkill(deployment, run):
    """A message stored for an offline user is delivered after a SIGKILL."""
    import asyncio
    import time

    from xmppd.config import load
    from xmppd.storage.sql import SQLStore

    process = deployment.process
    process.start()
    store = SQLStore(load(str(process.config_path)).storage.url)

    async def send(clients):
        alice = await clients.login("alice")
        alice.send_message("bob@example.test", "kept on disk")
        deadline = time.monotonic() + 10
        while store.count_offline("bob", "example.test") == 0:
            assert time.monotonic() < deadline, "the message was never stored"
            await asyncio.sleep(0.05)  # bounded polling: lets the client send
        process.process.kill()

    run(deployment, send)
    store.close()
    assert process.process.wait(10) == -signal.SIGKILL
    process.start()

    async def receive(clients):
        bob = await clients.login("bob")
        bob.xmpp.send_presence()
        message = await bob.next_message()
        assert str(message["body"]) == "kept on disk"
        assert message.xml.find("{urn:xmpp:delay}delay").get("stamp")

    run(deployment, receive)
