"""Tests for the admin socket (xmppd.admin): its commands driven over a
string transport against the in-memory server, and its start-up checks on a
real temporary UNIX socket path with a memory reactor."""

import json
import os
import shutil
import socket
import tempfile

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor, StringTransport

from tests.harness import Client, error_condition
from xmppd.admin import AdminFactory, AdminSocketService
from xmppd.control import Controller
from xmppd.core.scram import derive_all
from xmppd.errors import StartupError


@pytest.fixture
def controller(server):
    return Controller(server, MemoryReactorClock())


@pytest.fixture
def admin(controller):
    """``admin(request)``: one request over the admin protocol, its answer."""
    protocol = AdminFactory(controller).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)

    def admin(request):
        transport.clear()
        line = request if isinstance(request, bytes) else json.dumps(request).encode()
        protocol.dataReceived(line + b"\n")
        return json.loads(transport.value())

    return admin


def stream_error(client):
    """The condition and text of the stream error that closed ``client``."""
    [error] = [e for e in client.take() if e.name == "error"]
    text = next((str(c) for c in error.elements() if c.name == "text"), None)
    assert client.closed
    return error_condition(error), text


class TLSHandle:
    """Stands in for the OpenSSL connection a TLS transport's handle is."""

    def get_protocol_version_name(self):
        return "TLSv1.3"

    def export_keying_material(self, label, length):  # tls-exporter (RFC 9266)
        return bytes(length)

    def get_context(self):
        return self

    def get_certificate(self):
        return None


# sessions


def test_sessions_lists_jid_address_tls_and_bind_time(server, admin):
    server.clock.advance(1000)
    laptop = Client(server)
    laptop.transport.getHandle = TLSHandle
    laptop.login("alice@example.com", "laptop")
    server.clock.advance(5)
    Client(server).login("bob@example.com", "phone")

    assert admin({"command": "sessions"}) == {"ok": True, "sessions": [
        {"jid": "alice@example.com/laptop", "address": "192.168.1.1:54321",
         "tls": "TLSv1.3", "since": 1000.0, "client": None},
        {"jid": "bob@example.com/phone", "address": "192.168.1.1:54321",
         "tls": None, "since": 1005.0, "client": None},
    ]}


def test_sessions_of_one_domain(tmp_path, admin, server):
    Client(server).login("alice@example.com")
    assert [s["jid"] for s in admin({"command": "sessions", "domain": "EXAMPLE.com"})[
        "sessions"]] == ["alice@example.com/res"]
    assert admin({"command": "sessions", "domain": "example.org"})["sessions"] == []
    answer = admin({"command": "sessions", "domain": "bad domain"})
    assert not answer["ok"] and answer["error"].startswith("invalid domain 'bad domain'")


# end-sessions


def test_deleted_account_streams_end_with_not_authorized(server, admin):
    laptop, phone, bob = Client(server), Client(server), Client(server)
    laptop.login("alice@example.com", "laptop")
    phone.login("alice@example.com", "phone")
    bob.login("bob@example.com")
    unbound = Client(server)  # authenticated, resource not bound yet
    unbound.starttls()
    unbound.open()
    assert unbound.auth_plain("alice@example.com").name == "success"
    unbound.open()

    answer = admin({"command": "end-sessions", "jid": "Alice@example.com",
                    "reason": "account-deleted"})

    assert answer == {"ok": True, "ended": ["alice@example.com", "alice@example.com/laptop",
                                            "alice@example.com/phone"]}
    for client in (laptop, phone, unbound):
        assert stream_error(client) == ("not-authorized", "the account was deleted")
    assert not bob.closed


def test_password_change_ends_streams_with_reset_and_the_old_password_fails(server, admin):
    alice = Client(server)
    alice.login("alice@example.com")
    server.sql.set_credentials("alice", "example.com", derive_all("new secret"))

    answer = admin({"command": "end-sessions", "jid": "alice@example.com",
                    "reason": "password-changed"})

    assert answer == {"ok": True, "ended": ["alice@example.com/res"]}
    assert stream_error(alice) == ("reset", "the password was changed")
    again = Client(server)
    again.starttls()
    again.open()
    failure = again.auth_plain("alice@example.com", "secret")
    assert failure.name == "failure" and next(failure.elements()).name == "not-authorized"
    Client(server).login("alice@example.com", password="new secret")


def test_kick_of_a_full_jid_ends_that_session_only(server, admin):
    laptop, phone = Client(server), Client(server)
    laptop.login("alice@example.com", "laptop")
    phone.login("alice@example.com", "phone")

    answer = admin({"command": "end-sessions", "jid": "alice@example.com/phone",
                    "reason": "kicked"})

    assert answer == {"ok": True, "ended": ["alice@example.com/phone"]}
    assert stream_error(phone) == ("policy-violation", "ended by an administrator")
    assert not laptop.closed
    assert admin({"command": "end-sessions", "jid": "alice@example.com/tablet",
                  "reason": "kicked"}) == {"ok": True, "ended": []}


@pytest.mark.parametrize("request_, error", [
    ({"command": "end-sessions", "jid": "a@b@c", "reason": "kicked"}, "invalid JID 'a@b@c'"),
    ({"command": "end-sessions", "jid": "example.com", "reason": "kicked"},
     "example.com is not an account JID"),
    ({"command": "end-sessions", "jid": 5, "reason": "kicked"}, "expected a JID, not 5"),
    ({"command": "end-sessions", "jid": "alice@example.com", "reason": "bored"},
     "unknown reason 'bored'"),
    ({"command": "end-sessions", "jid": "alice@example.com", "reason": ["kicked"]},
     "unknown reason ['kicked']"),
    ({"command": "shutdown"}, "unknown command"),
    (["status"], "unknown command"),
])
def test_bad_requests_are_refused(admin, request_, error):
    answer = admin(request_)
    assert answer["ok"] is False and answer["error"].startswith(error)


def test_not_json_is_refused(admin):
    assert admin(b"{status") == {"ok": False, "error": "unknown command"}


def test_status_still_answers(admin, server):
    Client(server).login("alice@example.com")
    status = admin({"command": "status"})["status"]
    assert status["sessions"] == 1 and status["hosts"] == ["example.com"]


# Start-up


@pytest.fixture
def socket_dir():
    """A directory with a path short enough for a UNIX socket."""
    directory = tempfile.mkdtemp(prefix="xmppd-admin-")
    yield directory
    shutil.rmtree(directory)


def start(controller, path, reactor=None):
    reactor = reactor or MemoryReactorClock()
    service = AdminSocketService(path, controller, reactor)
    service.startService()
    return service, reactor


def test_listens_with_mode_0600(controller, socket_dir):
    path = os.path.join(socket_dir, "admin.sock")
    service, reactor = start(controller, path)
    [(address, factory, _, mode)] = [entry[:4] for entry in reactor.unixServers]
    assert (address, mode, factory.controller) == (path, 0o600, controller)
    assert service.running


def test_missing_directory_is_a_startup_error(controller, socket_dir):
    path = os.path.join(socket_dir, "missing", "admin.sock")
    with pytest.raises(StartupError) as raised:
        start(controller, path)
    assert str(raised.value) == (
        f"{controller.server.config.path}: admin.socket: {path}: "
        f"the directory {os.path.dirname(path)} does not exist")


def test_socket_of_a_running_server_is_a_startup_error(controller, socket_dir):
    path = os.path.join(socket_dir, "admin.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(path)
        other.listen()
        with pytest.raises(StartupError) as raised:
            start(controller, path)
    assert str(raised.value) == (f"{controller.server.config.path}: admin.socket: {path}: "
                                 "another xmppd is using this admin socket")
    assert os.path.exists(path)


def test_a_file_in_the_way_is_kept_and_a_startup_error(controller, socket_dir):
    path = os.path.join(socket_dir, "admin.sock")
    with open(path, "w") as f:
        f.write("mine")
    with pytest.raises(StartupError, match="admin.socket: .* exists and is not a socket$"):
        start(controller, path)
    with open(path) as f:
        assert f.read() == "mine"


def test_stale_socket_is_replaced(controller, socket_dir):
    path = os.path.join(socket_dir, "admin.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(path)  # left behind: nobody listens on it any more
    _, reactor = start(controller, path)
    assert not os.path.exists(path)  # removed for listenUNIX to bind again
    assert reactor.unixServers[0][0] == path


def test_cannot_listen_is_a_startup_error(controller, socket_dir):
    path = os.path.join(socket_dir, "admin.sock")
    reactor = RaisingMemoryReactor(CannotListenError(path, 0, OSError("Permission denied")))
    with pytest.raises(StartupError, match=r"admin\.socket: .*: cannot listen: Permission denied$"):
        start(controller, path, reactor)
