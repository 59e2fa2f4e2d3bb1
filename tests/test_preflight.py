"""Start-up checks (xmppd.preflight) and how a part that cannot start ends
the process (xmppd.tap.XmppdService)."""

import errno
import io
import socket

import pytest
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor

from xmppd import preflight
from xmppd.certs import make_self_signed
from xmppd.config import parse
from xmppd.errors import StartupError
from xmppd.tap import Listener, XmppdService


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    make_self_signed("example.com", str(directory), key_type="ec")
    return directory


@pytest.fixture
def configure(tmp_path, certificates):
    """``configure(text)``: a config in ``tmp_path`` with ``text`` before the
    host table (``top`` at the top), the admin socket off and no listener
    unless ``text`` says."""

    def configure(text="", admin='socket = ""', top=""):
        text = (f'{top}\n[tls]\ncertificates = "{certificates}"\n'
                f'[c2s]\nlisten = []\n[admin]\n{admin}\n{text}\n[hosts."example.com"]\n')
        return parse(text, str(tmp_path / "xmppd.toml"))

    return configure


def only(problems, config):
    [problem] = problems
    assert problem.startswith(f"{config.path}: ") and "\n" not in problem
    return problem.removeprefix(f"{config.path}: ")


def test_a_good_config_has_no_problems(configure):
    assert preflight.problems(configure()) == []


def test_listen_port_in_use(configure):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = configure(f'[metrics]\nlisten = ["tcp:{port}:interface=127.0.0.1"]')
        assert only(preflight.problems(config), config) == (
            f"metrics.listen: cannot listen on tcp:{port}:interface=127.0.0.1: "
            "address already in use")


def test_one_address_listed_twice(configure):
    config = configure('[s2s]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
                       'direct_tls = ["tcp:0:interface=127.0.0.1"]')
    assert preflight.problems(config) == []  # port 0: any free port, each its own
    config = configure('[s2s]\nlisten = ["tcp:65000:interface=127.0.0.1"]\n'
                       'direct_tls = ["tcp:65000:interface=127.0.0.1"]')
    problems = [p for p in preflight.problems(config) if "already in use" not in p]
    assert only(problems, config) == (
        "s2s.direct_tls: tcp:65000:interface=127.0.0.1 is the address of "
        "s2s.listen tcp:65000:interface=127.0.0.1 too")


@pytest.mark.parametrize("description, problem", [
    ("tcp:http", "bad endpoint 'tcp:http': invalid literal for int()"),
    ("tcp:70000", "cannot listen on tcp:70000: the port must be 0-65535"),
    ("bogus:1", "bad endpoint 'bogus:1': Unknown endpoint type: 'bogus'"),
])
def test_bad_listener(configure, description, problem):
    config = configure(f'[s2s]\ndirect_tls = ["{description}"]')
    assert only(preflight.problems(config), config).startswith(f"s2s.direct_tls: {problem}")


@pytest.mark.parametrize("route, problem", [
    ("tcp:host=peer.example", "missing 1 required positional argument: 'port'"),
    ("tcp:host=peer.example:port=99999", "a host and a port (1-65535) are needed"),
    ("carrier-pigeon:x", "Unknown endpoint type"),
])
def test_bad_s2s_route(configure, route, problem):
    config = configure(f'[s2s.routes]\n"Peer.example" = "{route}"')
    message = only(preflight.problems(config), config)
    assert message.startswith(f"s2s.routes.\"peer.example\": bad endpoint {route!r}: ")
    assert problem in message


def test_good_s2s_routes(configure):
    config = configure('[s2s.routes]\n"a.example" = "tcp:host=192.0.2.1:port=5269"\n'
                       '"b.example" = "tls:b.example:5270"')
    assert preflight.problems(config) == []


def test_log_json_not_writable(configure, tmp_path):
    config = configure(top='log_json = "missing/events.json"')
    assert only(preflight.problems(config), config) == (
        f"log_json: cannot write {tmp_path}/missing/events.json: "
        f"the directory {tmp_path}/missing does not exist")
    (tmp_path / "logs").mkdir()
    config = configure(top='log_json = "logs"')
    assert only(preflight.problems(config), config) == (
        f"log_json: cannot write {tmp_path}/logs: it is a directory")


def test_storage_driver_not_installed(configure):
    try:
        import pg8000  # noqa: F401
        pytest.skip("pg8000 is installed")
    except ImportError:
        pass
    config = configure('[storage]\nurl = "postgresql+pg8000://xmppd@localhost/xmppd"')
    assert only(preflight.problems(config), config) == (
        "storage.url: the driver for postgresql+pg8000 is not installed "
        "(No module named 'pg8000')")


def test_in_memory_database_refused(configure):
    config = configure('[storage]\nurl = "sqlite://"')
    assert only(preflight.problems(config), config).startswith(
        "storage.url: an in-memory SQLite database cannot hold accounts")


def test_admin_socket(configure, tmp_path):
    config = configure(admin='socket = "run/admin.sock"')
    assert only(preflight.problems(config), config) == (
        f"admin.socket: the directory {tmp_path}/run does not exist")
    (tmp_path / "run").mkdir()
    assert preflight.problems(config) == []
    with socket.socket(socket.AF_UNIX) as running:
        running.bind(str(tmp_path / "run" / "admin.sock"))
        running.listen()
        assert only(preflight.problems(config), config) == (
            f"admin.socket: another xmppd is running: {tmp_path}/run/admin.sock answers")
    (tmp_path / "run" / "admin.sock").unlink()
    (tmp_path / "run" / "admin.sock").write_text("not a socket")
    assert only(preflight.problems(config), config) == (
        f"admin.socket: {tmp_path}/run/admin.sock exists and is not a socket")
    config = configure(admin=f'socket = "{"x" * 120}.sock"')
    assert "longer than the 107 bytes" in only(preflight.problems(config), config)


def test_missing_certificate(configure, tmp_path):
    config = parse('[hosts."example.org"]\n', str(tmp_path / "xmppd.toml"))
    problems = [p for p in preflight.problems(config) if "tls.certificates" in p]
    assert only(problems, config).startswith(
        "tls.certificates: no certificate for example.org")


# A part that cannot start


class Part(service.Service):
    def __init__(self, fail=False):
        self.fail = fail
        self.stopped = False

    def startService(self):
        super().startService()
        if self.fail:
            raise StartupError("/x.toml: admin.socket: the socket is in use")

    def stopService(self):
        self.stopped = True
        return super().stopService()


class Exited(Exception):
    pass


def root(config):
    stderr = io.StringIO()

    def exit(status):
        raise Exited(status)

    return XmppdService(config, stderr=stderr, exit=exit), stderr


def test_startup_error_stops_what_started_and_exits(configure):
    top, stderr = root(configure())
    first, failing, never = Part(), Part(fail=True), Part()
    for part in (first, failing, never):
        part.setServiceParent(top)
    with pytest.raises(Exited) as exited:
        top.startService()
    assert exited.value.args == (1,)
    assert stderr.getvalue() == "xmppd: /x.toml: admin.socket: the socket is in use\n"
    assert first.stopped and failing.stopped and not never.stopped
    assert not first.running and not top.running


class SlowPart(service.Service):
    """A part whose stop ends when the test says."""

    def __init__(self, name, log):
        self.name, self.log = name, log
        self.done = defer.Deferred()

    def stopService(self):
        super().stopService()
        self.log.append(f"{self.name} stopping")
        return self.done.addCallback(lambda _: self.log.append(f"{self.name} stopped"))


def test_parts_stop_one_after_another_the_last_started_first(configure):
    top, _ = root(configure())
    log = []
    pool, cluster, listener = (SlowPart(name, log) for name in ("pool", "cluster", "listener"))
    for part in (pool, cluster, listener):
        part.setServiceParent(top)
    top.startService()
    stopped = top.stopService()
    assert log == ["listener stopping"]
    listener.done.callback(None)
    assert log[-1] == "cluster stopping"
    cluster.done.callback(None)
    pool.done.callback(None)
    assert stopped.called
    assert log == ["listener stopping", "listener stopped", "cluster stopping",
                   "cluster stopped", "pool stopping", "pool stopped"]


class Port:
    stopped = False

    def stopListening(self):
        self.stopped = True


class Reactor(MemoryReactor):
    """Listens on the first port asked, finds the others in use."""

    def __init__(self):
        super().__init__()
        self.ports = []

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if self.ports:
            raise CannotListenError(interface, port,
                                    OSError(errno.EADDRINUSE, "Address already in use"))
        self.ports.append(Port())
        return self.ports[0]


def test_listener_that_cannot_listen(configure):
    config = configure()
    top, stderr = root(config)
    reactor = Reactor()
    for key, description in (("c2s.listen", "tcp:5222:interface=127.0.0.1"),
                             ("s2s.listen", "tcp:5269:interface=127.0.0.1"),
                             ("metrics.listen", "tcp:5281")):
        Listener(config, key, description, object(), reactor).setServiceParent(top)
    with pytest.raises(Exited):
        top.privilegedStartService()
    assert stderr.getvalue() == (
        f"xmppd: {config.path}: s2s.listen: cannot listen on "
        "tcp:5269:interface=127.0.0.1: address already in use\n")
    [port] = reactor.ports
    assert port.stopped


def test_unknown_feature_modules_are_named(tmp_path):
    text = ('modules_enabled = ["bind", "nosuch"]\n'
            '[hosts."example.com"]\nmodules_enabled = ["vcard", "other"]\n')
    found = [p for p in preflight.problems(parse(text, str(tmp_path / "x.toml")))
             if "modules_enabled" in p]
    assert found == [
        f"{tmp_path / 'x.toml'}: modules_enabled[1]: no feature module 'nosuch' "
        "(xmppd/modules/nosuch.py)",
        f'{tmp_path / "x.toml"}: hosts."example.com".modules_enabled[1]: no feature module '
        "'other' (xmppd/modules/other.py)"]
