"""Integration test fixtures: the real server and real clients.

The ``server`` fixture runs xmppd as a ``twistd`` subprocess listening on
127.0.0.1, with a certificate for ``example.test`` (and ``*.example.test``)
issued by a throw-away CA, an SQLite database in a temporary directory and
the accounts of :data:`PASSWORDS`.  Tests drive it with slixmpp clients that
verify the server certificate against that CA, each test on its own asyncio
event loop with every wait bounded, so a broken server fails a test instead
of hanging it.  When a test fails, the end of the server log is shown with it.
"""

import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import slixmpp
import trustme

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOMAIN = "example.test"
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}

STARTUP_TIMEOUT = 20.0  # seconds for twistd to accept connections
SHUTDOWN_TIMEOUT = 10.0  # seconds for twistd to exit after SIGTERM
STEP_TIMEOUT = 10.0  # seconds for one client step (login, a stanza, a close)
TEST_TIMEOUT = 30.0  # seconds for a whole test body
LOG_TAIL = 150  # server log lines shown with a failed test


def pytest_configure(config):
    """Register the ``integration`` marker."""
    config.addinivalue_line(
        "markers", "integration: starts the real server as a subprocess (slower)")


def pytest_collection_modifyitems(items):
    """Mark every test of this directory ``integration``."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the end of every server log the failed test used."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        for process in getattr(value, "processes", ()):
            report.sections.append((f"xmppd log {process.log_path}", process.log_tail()))


# Server processes


def free_ports(count=2):
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def xmppctl_result(*args):
    """Run ``xmppctl ARGS``; the finished process (status and output)."""
    command = [sys.executable, str(BIN / "xmppctl"), *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)


def run_xmppctl(*args):
    """Run ``xmppctl ARGS``; fail the test with its output unless it succeeds."""
    result = xmppctl_result(*args)
    if result.returncode != 0:
        command = ["xmppctl", *map(str, args)]
        pytest.fail(f"{' '.join(command)} exited with {result.returncode}:\n"
                    f"{result.stdout}{result.stderr}", pytrace=False)
    return result.stdout


class ServerProcess:
    """``twistd -n xmppd --config FILE`` as a subprocess, its output in a log file."""

    def __init__(self, config_path, ports):
        self.config_path = Path(config_path)
        self.ports = tuple(ports)
        self.log_path = self.config_path.parent / "xmppd.log"
        self.process = None

    def start(self, env=None, command=None):
        """Start the server (``command`` replaces the twistd command line,
        e.g. to run it under systemd-socket-activate) and wait until every
        port accepts connections."""
        command = (command or []) + [sys.executable, str(BIN / "twistd"), "-n", "--pidfile=",
                                     "xmppd", "--config", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        waiting = list(self.ports)
        while waiting:
            if self.process.poll() is not None:
                self._fail(f"xmppd exited with status {self.process.returncode} at start-up")
            try:
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=1).close()
                waiting.pop(0)
                continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                self._fail(f"xmppd did not listen on 127.0.0.1:{waiting[0]} "
                           f"within {STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def stop(self):
        """SIGTERM, then SIGKILL if it is still running after a bound; the
        exit status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(SHUTDOWN_TIMEOUT)
            self._fail(f"xmppd did not exit within {SHUTDOWN_TIMEOUT:.0f} s of SIGTERM")

    def check_clean_exit(self):
        """Stop the server; fail unless it exits with status 0 and no
        traceback in its log (nothing to check if it never started)."""
        if self.process is None:
            return
        status = self.stop()
        log = self.log_path.read_text(errors="replace")
        if status != 0:
            self._fail(f"xmppd exited with status {status} after SIGTERM")
        if "Traceback" in log:
            start = log.rfind("\n", 0, log.index("Traceback")) + 1
            excerpt = "\n".join(log[start:].splitlines()[:LOG_TAIL])
            pytest.fail(f"{self.log_path} has a traceback:\n{excerpt}", pytrace=False)

    def log_tail(self, lines=LOG_TAIL):
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, message):
        pytest.fail(f"{message}\n--- {self.log_path} ---\n{self.log_tail()}", pytrace=False)


@dataclass
class Deployment:
    """A running server as clients see it."""

    domain: str
    c2s_port: int
    direct_tls_port: int
    ca_file: Path
    passwords: dict
    process: ServerProcess = None

    @property
    def processes(self):
        return () if self.process is None else (self.process,)


CONFIG = """\
log_level = "info"

[storage]
url = "{storage_url}"

[tls]
certificates = "certs"

[c2s]
listen = ["tcp:{c2s_port}:interface=127.0.0.1"]
direct_tls = ["tcp:{direct_tls_port}:interface=127.0.0.1"]
auth_timeout = 20.0

[limits]
# Every test connects from 127.0.0.1: keep failed logins of one test from
# slowing down or banning the next (the delays double with each failure of
# an address, so any first delay grows past a client's patience).
auth_failure_delay = 0.0
auth_ban_after = 1000

[hosts."{domain}"]
"""


def write_certificate(ca, directory, domain):
    """``DOMAIN.crt`` (leaf then chain) and ``DOMAIN.key`` issued by ``ca``."""
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(domain, f"*.{domain}")
    (directory / f"{domain}.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(directory / f"{domain}.key"))


def prepare(directory, extra_config="", storage_url="sqlite:///xmppd.sqlite", settings=None):
    """A server directory for ``example.test``: CA, certificate, config
    (``extra_config`` appended before the host table; ``settings``, such as
    ``{"c2s": {"handshake_timeout": 1.0}}``, added to the ``[c2s]`` and
    ``[limits]`` tables :data:`CONFIG` has), database with alice and bob.
    Returns the :class:`Deployment`, not started."""
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    write_certificate(ca, directory / "certs", DOMAIN)
    c2s_port, direct_tls_port = free_ports(2)
    config_path = directory / "xmppd.toml"
    text = CONFIG.format(c2s_port=c2s_port, direct_tls_port=direct_tls_port, domain=DOMAIN,
                         storage_url=storage_url)
    for table, values in (settings or {}).items():
        assert f"[{table}]\n" in text, f"CONFIG has no [{table}] table"
        lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
        text = text.replace(f"[{table}]\n", f"[{table}]\n{lines}", 1)
    host = f'[hosts."{DOMAIN}"]'
    config_path.write_text(text.replace(host, extra_config + "\n" + host))
    run_xmppctl("-c", config_path, "migrate")
    for user, password in PASSWORDS.items():
        run_xmppctl("-c", config_path, "adduser", f"{user}@{DOMAIN}", "--password", password)
    process = ServerProcess(config_path, (c2s_port, direct_tls_port))
    return Deployment(DOMAIN, c2s_port, direct_tls_port, ca_file, dict(PASSWORDS), process)


def prepare_web(directory, extra_config=""):
    """:func:`prepare` with an HTTPS listener (``[http]``: WebSocket, BOSH,
    HTTP modules) on 127.0.0.1; ``(deployment, its port)``, not started."""
    port, = free_ports(1)
    deployment = prepare(directory, f'[http]\nlisten = ["ssl:{port}:interface=127.0.0.1"]\n'
                         + extra_config)
    return deployment, port


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """xmppd for ``example.test`` on 127.0.0.1 with alice and bob, for the session."""
    deployment = prepare(tmp_path_factory.mktemp("xmppd"))
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


class Launcher:
    """Starts extra servers for one test and stops them after it."""

    free_ports = staticmethod(free_ports)

    def __init__(self):
        self.processes = []

    def start(self, config_path, domain, c2s_port, direct_tls_port, ca_file, passwords):
        """Run xmppd on ``config_path`` and wait for its two ports; returns
        the :class:`Deployment` to give clients."""
        process = ServerProcess(config_path, (c2s_port, direct_tls_port))
        self.processes.append(process)
        process.start()
        return Deployment(domain, c2s_port, direct_tls_port, Path(ca_file), passwords, process)


@pytest.fixture
def server_settings():
    """The ``settings`` of :func:`prepare` for ``fresh_server``: none here,
    a test module may override this fixture."""
    return {}


@pytest.fixture
def fresh_server(tmp_path, server_settings):
    """A server of the test's own (accounts changed, stopped and started
    again...), started; it must exit cleanly afterwards."""
    deployment = prepare(tmp_path, settings=server_settings)
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


@pytest.fixture
def launcher():
    """Start servers of a test's own (see :class:`Launcher`); each must exit
    cleanly on SIGTERM afterwards."""
    launcher = Launcher()
    yield launcher
    for process in launcher.processes:
        process.check_clean_exit()


@pytest.fixture
def xmppctl():
    """``xmppctl(*args)`` runs the command and returns its output."""
    return run_xmppctl


# Raw streams


async def read_to_end(reader):
    """What the server sends on an asyncio stream until it closes the
    connection (ended by a reset when it aborts, or when the client wrote
    after its close)."""
    data = b""
    try:
        while chunk := await reader.read(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


# Clients


class LoginFailed(AssertionError):
    """A client did not reach session start."""


@dataclass
class Client:
    """A slixmpp ``ClientXMPP`` with what it received collected.

    ``messages`` and ``roster_pushes`` are queues of received stanzas;
    ``failed_auth`` and ``stream_errors`` list the conditions of SASL
    failures and stream errors, ``connection_failures`` why connecting
    (TCP or direct TLS) failed; ``started`` and ``disconnected`` are futures.
    """

    xmpp: slixmpp.ClientXMPP
    address: tuple
    messages: asyncio.Queue = field(default_factory=asyncio.Queue)
    roster_pushes: asyncio.Queue = field(default_factory=asyncio.Queue)
    failed_auth: list = field(default_factory=list)
    stream_errors: list = field(default_factory=list)
    connection_failures: list = field(default_factory=list)
    mechanism: str = None

    def __post_init__(self):
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.disconnected = loop.create_future()
        self.connection_failed = loop.create_future()
        on = self.xmpp.add_event_handler
        on("session_start", lambda _: _resolve(self.started))
        on("disconnected", lambda _: _resolve(self.disconnected))
        on("connection_failed", self._connection_failed)
        on("auth_success", lambda _: setattr(
            self, "mechanism", self.xmpp.plugin["feature_mechanisms"].mech.name))
        on("failed_auth", lambda failure: self.failed_auth.append(failure["condition"]))
        on("stream_error", lambda error: self.stream_errors.append(error["condition"]))
        on("message", self.messages.put_nowait)
        on("roster_update", self.roster_pushes.put_nowait)

    def _connection_failed(self, error):
        self.connection_failures.append(str(error))
        _resolve(self.connection_failed)

    @property
    def jid(self):
        """The bound full JID (a string)."""
        return self.xmpp.boundjid.full

    @property
    def tls(self):
        """The ``ssl.SSLObject`` of the connection, or None."""
        transport = self.xmpp.transport
        return None if transport is None else transport.get_extra_info("ssl_object")

    def connect(self):
        self.xmpp.connect(*self.address)

    async def wait_started(self, timeout=STEP_TIMEOUT):
        """Wait for session start; LoginFailed if connecting fails or the
        connection ends first."""
        done, _ = await asyncio.wait(
            {self.started, self.disconnected, self.connection_failed},
            timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self.started not in done:
            self.xmpp.cancel_connection_attempt()
            raise LoginFailed(
                f"{self.xmpp.requested_jid} did not log in to {self.address} "
                f"({'failed' if done else f'timed out after {timeout} s'}; "
                f"connection failures {self.connection_failures}, "
                f"SASL failures {self.failed_auth}, stream errors {self.stream_errors})")

    async def wait_disconnected(self, timeout=STEP_TIMEOUT):
        await asyncio.wait_for(asyncio.shield(self.disconnected), timeout)

    def send_message(self, to, body, **attributes):
        """Send a chat message; extra ``attributes`` (e.g. ``mfrom``) go to
        ``make_message``.  Returns the message as sent."""
        message = self.xmpp.make_message(mto=to, mbody=body, mtype="chat", **attributes)
        message.send()
        return message

    async def next_message(self, timeout=STEP_TIMEOUT):
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def next_roster_push(self, timeout=STEP_TIMEOUT):
        return await asyncio.wait_for(self.roster_pushes.get(), timeout)

    async def close(self):
        """End the stream; abort the connection if that takes too long."""
        self.xmpp.cancel_connection_attempt()
        if self.disconnected.done() or self.xmpp.transport is None:
            return
        self.xmpp.disconnect(wait=2)
        try:
            await self.wait_disconnected(timeout=4)
        except asyncio.TimeoutError:
            self.xmpp.abort()


def _resolve(future):
    if not future.done():
        future.set_result(True)


class Clients:
    """Makes slixmpp clients of a :class:`Deployment`; closes them at the end."""

    def __init__(self, deployment):
        self.deployment = deployment
        self.all = []

    def new(self, user, resource=None, *, password=None, direct_tls=False,
            mechanism="SCRAM-SHA-256", ca_file=None):
        """A client of ``user`` that is not connected yet.

        TLS is verified against the deployment's CA (or ``ca_file``).
        ``direct_tls`` connects to the XEP-0368 port, otherwise STARTTLS on
        the standard port is the only way in.  ``mechanism`` restricts SASL to
        that one mechanism; None lets slixmpp use all the server offers.
        """
        deployment = self.deployment
        jid = f"{user}@{deployment.domain}" + (f"/{resource}" if resource else "")
        if password is None:
            password = deployment.passwords[user]
        xmpp = slixmpp.ClientXMPP(jid, password, sasl_mech=mechanism)
        xmpp.ca_certs = Path(ca_file or deployment.ca_file)
        xmpp.enable_direct_tls = direct_tls
        xmpp.enable_starttls = not direct_tls
        xmpp.enable_plaintext = False
        xmpp.register_plugin("xep_0199", {"keepalive": False})
        port = deployment.direct_tls_port if direct_tls else deployment.c2s_port
        client = Client(xmpp, ("127.0.0.1", port))
        self.all.append(client)
        return client

    async def login(self, user, resource=None, **options):
        """A client of ``user`` (options as for :meth:`new`) at session start."""
        client = self.new(user, resource, **options)
        client.connect()
        await client.wait_started()
        return client

    async def close_all(self):
        await asyncio.gather(*(client.close() for client in self.all))


@pytest.fixture
def run():
    """``run(deployment, body)`` runs ``await body(clients)`` on a new event
    loop, ``clients`` being a :class:`Clients` of ``deployment``; the clients
    are closed afterwards and the whole is bounded by ``timeout`` seconds."""

    def run(deployment, body, timeout=TEST_TIMEOUT):
        async def main():
            clients = Clients(deployment)
            try:
                await body(clients)
            finally:
                await clients.close_all()

        asyncio.run(asyncio.wait_for(main(), timeout))

    return run


_accounts = itertools.count(1)


def new_accounts(deployment, *names):
    """An account on ``deployment`` for each of ``names`` (made unique);
    their usernames."""
    users = []
    for name in names:
        user = f"{name}{next(_accounts)}"
        password = f"{user}-secret"
        run_xmppctl("-c", deployment.process.config_path, "adduser",
                    f"{user}@{deployment.domain}", "--password", password)
        deployment.passwords[user] = password
        users.append(user)
    return users


async def settled(client):
    """The server processed what ``client`` sent so far (a ping is answered
    after the stanzas before it, RFC 6120 §10.1)."""
    await client.xmpp.plugin["xep_0199"].send_ping(client.xmpp.boundjid.domain,
                                                   timeout=STEP_TIMEOUT)


async def replier(clients, user, received):
    """``user`` logged in over TCP and available (a message to its bare
    JID comes to it), answering each message with a body with
    "USER read: BODY", after keeping it in ``received``."""
    client = await clients.login(user, "tcp")

    def reply(message):
        if message["body"]:
            received.append(message)
            client.xmpp.send_message(mto=message["from"], mtype="chat",
                                     mbody=f"{user} read: {message['body']}")

    client.xmpp.add_event_handler("message", reply)
    client.xmpp.send_presence()
    await settled(client)
    return client


async def node_script(script, options, timeout, env=None):
    """Run the node script ``script`` (a Path, run in its directory) with
    ``options`` as its JSON argument; its exit status, the JSON of its last
    line of output, and what it wrote to stderr."""
    process = await asyncio.create_subprocess_exec(
        shutil.which("node"), str(script), json.dumps(options), cwd=script.parent,
        env=None if env is None else {**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{script.name} took longer than {timeout:.0f} s")
    lines = stdout.decode(errors="replace").strip().splitlines()
    assert lines, f"{script.name} printed nothing (status {process.returncode}):\n" \
                  f"{stderr.decode()}"
    return process.returncode, json.loads(lines[-1]), stderr.decode()


def collect(client, event):
    """A queue of what slixmpp's ``event`` brings ``client``."""
    queue = asyncio.Queue()
    client.xmpp.add_event_handler(event, queue.put_nowait)
    return queue


async def next_of(queue):
    """The next item of ``queue``, within STEP_TIMEOUT."""
    return await asyncio.wait_for(queue.get(), STEP_TIMEOUT)
