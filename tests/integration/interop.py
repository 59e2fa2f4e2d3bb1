"""Federation between xmppd and real Prosody and ejabberd servers.

Each test runs xmppd for ``xmppd.test`` and one peer server, Prosody for
``prosody.test`` or ejabberd for ``ejabberd.test``, installed from Debian's
packages.  The peer runs from a private configuration in a directory of its
own, as its own system user, and is stopped afterwards; the system service
and configuration are never used.

Each server's federation listener is on its own loopback address, port
5269: xmppd on 127.0.0.2, Prosody on 127.0.0.3, ejabberd on 127.0.0.4.
The test domains are mapped to these addresses in ``/etc/hosts`` (added
once, kept).  Nothing queries DNS:

- xmppd reaches the peer through a route pinned in ``[s2s.routes]``;
- Prosody resolves through libunbound (Debian package lua-unbound), which
  answers every ``.test`` name it does not find in ``/etc/hosts`` locally
  with NXDOMAIN (RFC 6761), SRV lookups included;
- ejabberd looks up SRV records with Erlang's resolver, which its private
  ``inetrc`` leaves without name servers, and addresses with the system's
  ``getaddrinfo``, which finds them in ``/etc/hosts``.

With ``trusted`` certificates one CA issues every server's certificate and
every server trusts it (xmppd through ``s2s.ca_file``, Prosody through
``ssl.cafile``, ejabberd through ``ca_file``): the servers authenticate each
other with SASL EXTERNAL (XEP-0178); xmppd and Prosody are configured to
insist on valid certificates.  Otherwise each server has a CA of its own
that the other does not trust, and they authenticate with dialback
(XEP-0220).  With ``trusted="xmppd"`` xmppd trusts the peer's CA (without
requiring valid certificates) but the peer does not trust xmppd's: a peer
that offers SASL EXTERNAL all the same refuses it when xmppd tries, and
xmppd falls back to dialback.

Clients of both servers are slixmpp clients (:class:`PeerClients` for the
peer, which listens for clients on its own address, port 5222).
"""

import asyncio
import datetime
import errno
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.integration.conftest import (
    CONFIG, PASSWORDS, Clients, Deployment, ServerProcess, free_ports, run_xmppctl,
    write_certificate)
from tests.integration.test_federation import next_of, online, subscribe

XMPPD_DOMAIN = "xmppd.test"
XMPPD_ADDRESS = "127.0.0.2"
S2S_PORT = 5269
C2S_PORT = 5222
PEER_USER = "carol"  # the account on the peer server
PEER_PASSWORD = "carol-secret-3"

STARTUP_TIMEOUT = 30.0  # seconds for a peer server to listen
SHUTDOWN_TIMEOUT = 15.0  # seconds for a peer server to exit when asked
COMMAND_TIMEOUT = 30.0  # seconds for prosodyctl or ejabberdctl
LOG_TAIL = 150
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

S2S = """\
[s2s]
listen = ["tcp:{port}:interface={address}"]
allow = ["{peer}"]
{trust}

[s2s.routes]
"{peer}" = "tcp:host={peer_address}:port={port}"
"""


# Peer servers


class PeerServer:
    """A peer server of a Debian package, run by its system user from a
    private directory (``home``) that is deleted afterwards.

    Subclasses set the class attributes and implement :meth:`configure`,
    :meth:`command`, :meth:`register` and :meth:`request_stop`.
    """

    name = None  # for messages, e.g. "Prosody"
    package = None  # Debian package
    program = None  # a program of the package, to check it is installed
    user = None  # system user running it
    domain = None
    address = None

    def __init__(self, ca, trusted_ca_file):
        """``ca`` issues the certificate; ``trusted_ca_file`` is the CA file
        the server trusts for peers (None: the system store)."""
        self.account = pwd.getpwnam(self.user)
        self.home = Path(tempfile.mkdtemp(prefix=f"{self.user}-interop-"))
        self.log_path = self.home / "output.log"
        self.ca_file = self.home / "ca.pem"  # what its clients trust
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.trusted_ca_file = None
        if trusted_ca_file is not None:  # copied where the server's user can read it
            self.trusted_ca_file = self.home / "trusted-ca.pem"
            shutil.copyfile(trusted_ca_file, self.trusted_ca_file)
        self.process = None
        # Short-lived: ejabberd's certificate watcher cannot schedule the
        # expiry of trustme's default (year 3000) certificates.
        leaf = ca.issue_cert(self.domain, not_after=datetime.datetime.now(datetime.timezone.utc)
                             + datetime.timedelta(days=30))
        self.certificate = b"".join(pem.bytes() for pem in leaf.cert_chain_pems)
        self.private_key = leaf.private_key_pem.bytes()
        self.configure()
        for path in [self.home, *self.home.rglob("*")]:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)
        self.home.chmod(0o700)

    @classmethod
    def require(cls):
        """Skip the test unless this peer can run here."""
        if shutil.which(cls.program, path=SYSTEM_PATH) is None:
            pytest.skip(f"{cls.name} is not installed (Debian package {cls.package})")
        if os.geteuid() != 0:
            pytest.skip(f"interop tests run {cls.name} as the system user {cls.user} and map "
                        "test domains in /etc/hosts: they need root")
        try:
            pwd.getpwnam(cls.user)
        except KeyError:
            pytest.skip(f"no system user {cls.user} (reinstall the Debian package {cls.package})")
        for address, port in ((XMPPD_ADDRESS, S2S_PORT), (cls.address, S2S_PORT),
                              (cls.address, C2S_PORT)):
            probe = socket.socket()
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    pytest.fail(f"{address}:{port} is in use (another XMPP server?)",
                                pytrace=False)
                pytest.skip(f"cannot use the loopback address {address}: {e}")
            finally:
                probe.close()

    def configure(self):
        """Write the configuration into ``home``."""
        raise NotImplementedError

    def command(self):
        """The command line running the server in the foreground."""
        raise NotImplementedError

    def register(self, user, password):
        """Create the account ``user`` on the peer's domain."""
        raise NotImplementedError

    def request_stop(self):
        """Ask the server to shut down."""
        self.process.send_signal(signal.SIGTERM)

    # Running

    def run_as_user(self, *command):
        """Run ``command`` as the server's user; fail the test unless it
        succeeds.  Returns its output."""
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT, **self._as_user())
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} exited with {result.returncode}:\n"
                        f"{result.stdout}{result.stderr}", pytrace=False)
        return result.stdout

    def _as_user(self):
        return dict(user=self.account.pw_uid, group=self.account.pw_gid, extra_groups=[],
                    cwd=self.home, stdin=subprocess.DEVNULL,
                    env={"PATH": SYSTEM_PATH, "HOME": str(self.home), "LANG": "C.UTF-8"})

    def start(self):
        """Start the server and wait until it takes client and server
        connections on its address."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, **self._as_user())
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for port in (C2S_PORT, S2S_PORT):
            while not self._listening(port):
                if self.process.poll() is not None:
                    self._fail(f"{self.name} exited with status {self.process.returncode} "
                               "at start-up")
                if time.monotonic() > deadline:
                    self.stop()
                    self._fail(f"{self.name} did not listen on {self.address}:{port} within "
                               f"{STARTUP_TIMEOUT:.0f} s")
                time.sleep(0.1)

    def _listening(self, port):
        try:
            socket.create_connection((self.address, port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        """Shut the server down, killing what is left of it after a bound."""
        if self.process is None or self.process.poll() is not None:
            return
        self.request_stop()
        try:
            self.process.wait(SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(SHUTDOWN_TIMEOUT)
            self._fail(f"{self.name} did not stop within {SHUTDOWN_TIMEOUT:.0f} s")

    def remove(self):
        shutil.rmtree(self.home, ignore_errors=True)

    # Logs

    def log_text(self):
        """Everything the server logged (its own log files and its output)."""
        return "\n".join(path.read_text(errors="replace") for path in self.log_files())

    def log_files(self):
        return [self.log_path]

    def log_tail(self, lines=LOG_TAIL):
        try:
            return "\n".join(self.log_text().splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    def _fail(self, message):
        pytest.fail(f"{message}\n--- {self.home} ---\n{self.log_tail()}", pytrace=False)


def lua_string(value):
    """A Lua string literal."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Prosody(PeerServer):
    """Prosody (``prosody -F``) for ``prosody.test`` on 127.0.0.3.

    Outgoing connections find ``xmppd.test`` through libunbound, told to
    read ``/etc/hosts`` (Prosody turns that off by default): the SRV lookups
    are answered NXDOMAIN locally (``.test``), the address comes from
    ``/etc/hosts``, the port is the default 5269.
    """

    name = "Prosody"
    package = "prosody"
    program = "prosodyctl"
    user = "prosody"
    domain = "prosody.test"
    address = "127.0.0.3"

    @classmethod
    def require(cls):
        super().require()
        probe = subprocess.run(["lua5.4", "-e", 'require "lunbound"'], capture_output=True,
                               env={"PATH": SYSTEM_PATH})
        if probe.returncode != 0:
            pytest.skip("Prosody resolves test domains without DNS only through libunbound "
                        "(Debian package lua-unbound)")

    @property
    def config_path(self):
        return self.home / "prosody.cfg.lua"

    def configure(self):
        certs = self.home / "certs"
        certs.mkdir()
        (certs / f"{self.domain}.crt").write_bytes(self.certificate)
        (certs / f"{self.domain}.key").write_bytes(self.private_key)
        (self.home / "data").mkdir()
        trusted = self.trusted_ca_file is not None
        ssl = f"ssl = {{ cafile = {lua_string(self.trusted_ca_file)} }}\n" if trusted else ""
        self.config_path.write_text(f"""\
data_path = {lua_string(self.home / "data")}
log = {{ debug = {lua_string(self.home / "prosody.log")} }}
interfaces = {{ "{self.address}" }}
c2s_ports = {{ {C2S_PORT} }}
s2s_ports = {{ {S2S_PORT} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping" }}
authentication = "internal_hashed"
allow_registration = false
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {"true" if trusted else "false"}
certificates = {lua_string(certs)}
{ssl}unbound = {{ hoststxt = true }}

VirtualHost "{self.domain}"
""")

    def command(self):
        return ["prosody", "--config", str(self.config_path), "-F"]

    def register(self, user, password):
        self.run_as_user("prosodyctl", "--config", str(self.config_path), "register",
                         user, self.domain, password)

    def log_files(self):
        return [self.log_path, self.home / "prosody.log"]


class Ejabberd(PeerServer):
    """ejabberd 23.01 (``ejabberdctl foreground``) for ``ejabberd.test`` on
    127.0.0.4.

    ``ejabberdctl --config-dir HOME`` reads everything from ``home``:
    ``ejabberd.yml``, ``ejabberdctl.cfg`` (a unique node name and cookie,
    the spool and log directories) and ``inetrc``.  The node listens for
    ``ejabberdctl`` on a port of its own on 127.0.0.1 (``ERL_DIST_PORT``),
    so no epmd is started or used.  The listeners have a backlog of 128
    (ejabberd's default is 5) and no traffic shaper (Debian's configuration
    limits clients to 3,000 bytes per second).
    """

    name = "ejabberd"
    package = "ejabberd"
    program = "ejabberdctl"
    user = "ejabberd"
    domain = "ejabberd.test"
    address = "127.0.0.4"

    def configure(self):
        home = self.home
        certificate = home / f"{self.domain}.pem"
        certificate.write_bytes(self.private_key + self.certificate)
        for directory in ("spool", "logs"):
            (home / directory).mkdir()
        trust = "" if self.trusted_ca_file is None else f'ca_file: "{self.trusted_ca_file}"\n'
        (home / "ejabberd.yml").write_text(f"""\
loglevel: info
log_rotate_count: 0
hosts:
  - "{self.domain}"
certfiles:
  - "{certificate}"
{trust}listen:
  -
    port: {C2S_PORT}
    ip: "{self.address}"
    module: ejabberd_c2s
    starttls_required: true
    backlog: 128
  -
    port: {S2S_PORT}
    ip: "{self.address}"
    module: ejabberd_s2s_in
    backlog: 128
s2s_use_starttls: required
s2s_access: s2s
outgoing_s2s_families:
  - ipv4
auth_password_format: scram
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  s2s:
    allow: all
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_s2s_dialback: {{}}
""")
        node = f"interop-{os.urandom(4).hex()}"
        (home / "ejabberdctl.cfg").write_text(f"""\
ERLANG_NODE={node}@localhost
ERL_DIST_PORT={free_ports(1)[0]}
INET_DIST_INTERFACE=127.0.0.1
ERL_OPTIONS="-setcookie {os.urandom(16).hex()}"
SPOOL_DIR={home / "spool"}
LOGS_DIR={home / "logs"}
""")
        (home / "inetrc").write_text('{lookup, ["file"]}.\n{resolv_conf, ""}.\n')

    def ctl(self, *args):
        return ["ejabberdctl", "--config-dir", str(self.home), *args]

    def command(self):
        return self.ctl("foreground")

    def register(self, user, password):
        self.run_as_user(*self.ctl("register", user, self.domain, password))

    def request_stop(self):
        subprocess.run(self.ctl("stop"), capture_output=True, timeout=COMMAND_TIMEOUT,
                       **self._as_user())

    def log_files(self):
        return [self.log_path, self.home / "logs" / "ejabberd.log"]


# xmppd and the peer together


def map_hosts(addresses, path=Path("/etc/hosts")):
    """Map each domain of ``addresses`` to its address in ``path``, adding
    only the lines missing; fail if a domain is mapped elsewhere."""
    text = path.read_text()
    names = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            names.setdefault(name.lower(), fields[0])
    missing = []
    for name, address in addresses.items():
        if names.get(name, address) != address:
            pytest.fail(f"{path} maps {name} to {names[name]}, the interop tests need "
                        f"{address}", pytrace=False)
        if name not in names:
            missing.append(f"{address} {name}  # xmppd interop tests\n")
    if missing:
        with open(path, "a") as hosts:
            hosts.write("".join(missing) if text.endswith("\n") else "\n" + "".join(missing))


class PeerClients(Clients):
    """Clients of the peer server: on its own address, SCRAM-SHA-1 (which
    both Prosody's and ejabberd's stored credentials support)."""

    def __init__(self, deployment, address):
        super().__init__(deployment)
        self.address = address

    def new(self, user, resource=None, **options):
        options.setdefault("mechanism", "SCRAM-SHA-1")
        client = super().new(user, resource, **options)
        client.address = (self.address, C2S_PORT)
        return client


@dataclass
class Interop:
    """xmppd and a peer server, running; ``processes`` for the failure
    report of conftest."""

    xmppd: Deployment
    peer: PeerServer
    peer_deployment: Deployment

    @property
    def processes(self):
        return (self.xmppd.process, self.peer)

    def xmppd_methods(self):
        """How xmppd's streams with the peer were authenticated, from its
        log: ``{"outgoing": {...}, "incoming": {...}}``."""
        log = self.xmppd.process.log_path.read_text(errors="replace")
        peer = re.escape(self.peer.domain)
        return {
            "outgoing": set(re.findall(
                rf"s2s outgoing {re.escape(XMPPD_DOMAIN)} -> {peer}: authenticated \(([^)]+)\)",
                log)),
            "incoming": set(re.findall(rf": {peer} authenticated \(([^)]+)\)", log)),
        }


def prepare_xmppd(directory, ca, trusted_ca_file, peer, require_valid=True):
    """xmppd for ``xmppd.test`` (accounts of conftest's PASSWORDS), with
    ``peer`` allowed and pinned, trusting ``trusted_ca_file`` (and then
    requiring valid certificates if ``require_valid``), not started."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    write_certificate(ca, directory / "certs", XMPPD_DOMAIN)
    trust = ""
    if trusted_ca_file is not None:
        trust = f'ca_file = "{trusted_ca_file}"'
        if require_valid:
            trust += "\nrequire_valid_certificates = true"
    s2s = S2S.format(port=S2S_PORT, address=XMPPD_ADDRESS, peer=peer.domain,
                     peer_address=peer.address, trust=trust)
    c2s_port, direct_tls_port = free_ports(2)
    text = CONFIG.format(c2s_port=c2s_port, direct_tls_port=direct_tls_port,
                         domain=XMPPD_DOMAIN, storage_url="sqlite:///xmppd.sqlite")
    host = f'[hosts."{XMPPD_DOMAIN}"]'
    config_path = directory / "xmppd.toml"
    config_path.write_text(text.replace(host, f"{s2s}\n{host}\ncross_domain_messages = true\n"))
    run_xmppctl("-c", config_path, "migrate")
    for user, password in PASSWORDS.items():
        run_xmppctl("-c", config_path, "adduser", f"{user}@{XMPPD_DOMAIN}", "--password", password)
    process = ServerProcess(config_path, (c2s_port, direct_tls_port))
    return Deployment(XMPPD_DOMAIN, c2s_port, direct_tls_port, ca_file, dict(PASSWORDS), process)


def running(peer_class, directory, trusted):
    """For a fixture: xmppd and a ``peer_class`` server federating, with
    certificates both trust (``trusted`` true), neither trusts (false), or
    only xmppd trusts (``"xmppd"``); yields the :class:`Interop`, then
    stops both (xmppd must exit cleanly)."""
    peer_class.require()
    map_hosts({XMPPD_DOMAIN: XMPPD_ADDRESS, peer_class.domain: peer_class.address})
    shared = trustme.CA()
    both = trusted is True
    xmppd_ca, peer_ca = (shared, shared) if both else (trustme.CA(), shared)
    trusted_ca_file = None
    if trusted:
        trusted_ca_file = directory / "shared-ca.pem"
        shared.cert_pem.write_to_path(str(trusted_ca_file))
    peer = peer_class(peer_ca, trusted_ca_file if both else None)
    xmppd = None
    try:
        peer.start()  # first: xmppd's free ports are chosen among those left
        peer.register(PEER_USER, PEER_PASSWORD)
        xmppd = prepare_xmppd(directory / "xmppd", xmppd_ca, trusted_ca_file, peer,
                              require_valid=both)
        xmppd.process.start()
        yield Interop(xmppd, peer, Deployment(peer.domain, C2S_PORT, None, peer.ca_file,
                                              {PEER_USER: PEER_PASSWORD}))
    finally:
        try:
            peer.stop()
            if xmppd is not None:
                xmppd.process.check_clean_exit()
        finally:
            peer.remove()


def run_both(interop, body, timeout=40):
    """Run ``await body(xmppd_clients, peer_clients)`` on a new event loop,
    bounded by ``timeout`` seconds; the clients are closed afterwards."""

    async def main():
        xmppd_clients = Clients(interop.xmppd)
        peer_clients = PeerClients(interop.peer_deployment, interop.peer.address)
        try:
            await body(xmppd_clients, peer_clients)
        finally:
            await asyncio.gather(xmppd_clients.close_all(), peer_clients.close_all())

    asyncio.run(asyncio.wait_for(main(), timeout))


async def converse(xmppd_clients, peer_clients):
    """alice@xmppd.test and the peer's user exchange messages, subscribe to
    each other's presence (RFC 6121 §3.1), then see each other's presence
    changes; both rosters end with a mutual subscription."""
    alice = await online(xmppd_clients, "alice", "laptop")
    carol = await online(peer_clients, PEER_USER, "phone")
    alice.send_message(carol.jid, "hello from xmppd")
    received = await carol.next_message(timeout=15)
    got = (str(received["from"]), str(received["body"]))
    assert got == (alice.jid, "hello from xmppd"), got
    carol.send_message(alice.xmpp.boundjid.bare, "hello from the peer")
    received = await alice.next_message(timeout=15)
    got = (str(received["from"]), str(received["body"]))
    assert got == (carol.jid, "hello from the peer"), got
    await subscribe(alice, carol)
    await subscribe(carol, alice)
    for user, contact, status in ((carol, alice, "lunch"), (alice, carol, "meeting")):
        user.xmpp.send_presence(pshow="away", pstatus=status)
        away = await next_of(contact.away, lambda p: str(p["from"]) == user.jid)
        got = (away["show"], away["status"])
        assert got == ("away", status), got
    for user, contact in ((alice, carol), (carol, alice)):
        item = user.xmpp.client_roster[contact.xmpp.boundjid.bare]
        assert item["subscription"] == "both", (user.jid, item["subscription"])
