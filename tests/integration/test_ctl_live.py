"""xmppctl against the running server, through its admin socket: who is
online, kick, and deluser / passwd ending the account's open sessions with
a stream error (RFC 6120 §4.9.3)."""

import datetime
import json

import pytest

from tests.integration.conftest import LoginFailed, prepare, xmppctl_result


@pytest.fixture
def deployment(fresh_server):
    return fresh_server


def xmppctl(deployment, *args):
    return xmppctl_result("-c", deployment.process.config_path, *args)


def test_sessions_and_kick(deployment, run):
    async def body(clients):
        started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        laptop = await clients.login("alice", "laptop")
        phone = await clients.login("alice", "phone", direct_tls=True)
        bob = await clients.login("bob", "desk")

        listing = xmppctl(deployment, "sessions", "--json")
        assert listing.returncode == 0, listing.stderr
        sessions = {s["jid"]: s for s in json.loads(listing.stdout)}
        assert set(sessions) == {laptop.jid, phone.jid, bob.jid}
        for client in (laptop, phone, bob):
            session = sessions[client.jid]
            host, port = client.xmpp.transport.get_extra_info("sockname")[:2]
            assert session["address"] == f"{host}:{port}"
            assert session["tls"] == client.tls.version()
            since = datetime.datetime.fromisoformat(session["since"].replace("Z", "+00:00"))
            assert started <= since <= datetime.datetime.now(datetime.timezone.utc)
        table = xmppctl(deployment, "sessions", deployment.domain)
        assert table.stdout.splitlines()[0].split() == ["JID", "ADDRESS", "TLS", "SINCE"]
        assert laptop.jid in table.stdout and table.stdout.endswith("3 sessions\n")

        kicked = xmppctl(deployment, "kick", phone.jid)
        assert (kicked.returncode, kicked.stdout) == (0, f"ended {phone.jid}\n"), kicked.stderr
        await phone.wait_disconnected()
        assert phone.stream_errors == ["policy-violation"]
        again = xmppctl(deployment, "kick", phone.jid)
        assert (again.returncode, again.stderr) == (1, f"xmppctl: no open session of {phone.jid}\n")

        bob.send_message(laptop.jid, "still here")
        assert str((await laptop.next_message())["body"]) == "still here"

    run(deployment, body)


def test_deluser_ends_the_account_sessions(deployment, run):
    async def body(clients):
        alice = await clients.login("alice")
        bob = await clients.login("bob")
        alice_jid = f"alice@{deployment.domain}"

        result = xmppctl(deployment, "deluser", alice_jid)
        assert (result.returncode, result.stdout, result.stderr) == (
            0, f"deleted {alice_jid}\nended 1 open session of {alice_jid}\n", "")
        await alice.wait_disconnected()
        assert alice.stream_errors == ["not-authorized"]

        with pytest.raises(LoginFailed):
            await clients.login("alice")
        assert clients.all[-1].failed_auth == ["not-authorized"]
        assert not bob.disconnected.done()

    run(deployment, body)


def test_passwd_ends_the_sessions_and_the_old_password_fails(deployment, run):
    async def body(clients):
        bob = await clients.login("bob")
        bob_jid = f"bob@{deployment.domain}"

        result = xmppctl(deployment, "passwd", bob_jid, "--password", "bob-secret-3")
        assert (result.returncode, result.stdout, result.stderr) == (
            0, f"changed the password of {bob_jid}\nended 1 open session of {bob_jid}\n", "")
        await bob.wait_disconnected()
        assert bob.stream_errors == ["reset"]

        with pytest.raises(LoginFailed):
            await clients.login("bob")
        assert clients.all[-1].failed_auth == ["not-authorized"]
        await clients.login("bob", password="bob-secret-3")

    run(deployment, body)


def test_deluser_while_the_server_is_stopped_says_sessions_were_not_ended(tmp_path):
    deployment = prepare(tmp_path)
    socket = deployment.process.config_path.parent / "xmppd.sock"
    result = xmppctl(deployment, "deluser", f"alice@{deployment.domain}")
    assert result.returncode == 0
    assert result.stderr == (
        f"xmppctl: warning: the open sessions of alice@{deployment.domain} (if any) could not "
        f"be ended: xmppd is not running (no answer on {socket}: No such file or directory)\n")
