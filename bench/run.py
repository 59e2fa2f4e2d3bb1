"""Benchmark runner: xmppd, Prosody and ejabberd side by side.

    python bench/run.py                      # xmppd alone, 3 runs, medians
    python bench/run.py --compare-prosody    # xmppd and Prosody, alternating
    python bench/run.py --servers xmppd,prosody,ejabberd
    python bench/run.py --quick              # a ~1 minute smoke run

Everything lives in a temporary directory that is removed at the end: one
self-signed certificate (ECDSA P-256, used by every server), an xmppd
configuration and SQLite database, a Prosody configuration and data
directory, an ejabberd configuration with its Mnesia spool.  The servers
get the same accounts and rosters (bench/accounts.py, fast paths).  Each
server is pinned to CPU 0 and the load generator (this process and its
workers) to CPU 1; the second node of ``xmppd-cluster2`` shares CPU 1 with
the generator, and its accounts log in to both nodes in turn.

Every run starts a fresh server, runs the login, messages, presence, pep and
muc phases of bench/loadgen.py and stops it; runs alternate between the servers
(xmppd, Prosody, ejabberd, xmppd, ...).  The memory phase needs its own fresh server
and runs once per server (``--memory-runs``).  The medians over the runs
are printed at the end, as JSON lines and as a table.  See bench/README.md.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import accounts, loadgen

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOMAIN = "bench.test"
SERVER_CPU, GENERATOR_CPU = 0, 1
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# File descriptors for the server: 100k sessions and more, as far as this
# process's hard limit allows (raising it needs CAP_SYS_RESOURCE).
_HARD_FDS = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
FD_LIMIT = 120000 if _HARD_FDS == resource.RLIM_INFINITY else min(120000, _HARD_FDS)
CPUS = os.sched_getaffinity(0)  # before the runner pins itself

XMPPD_CONFIG = """\
log_level = "{log_level}"

[storage]
url = "{storage_url}"

[tls]
certificates = "{certificates}"
min_version = "1.2"

[c2s]
listen = ["tcp:{port}:interface=127.0.0.1:backlog=1024"]
direct_tls = []

[admin]
socket = ""

[http]
# WebSocket (RFC 7395) for the ws_messages phase.
listen = ["ssl:{http_port}:interface=127.0.0.1"]

[limits]
# One generator address opens every connection: the per-IP and total
# connection limits (authenticated or not) must allow 10k sessions and
# more; the per-connection byte and stanza rates must not slow down the
# message phase.  No login fails, so the authentication throttle never acts.
max_connections = {fd_limit}
max_connections_per_ip = {fd_limit}
max_unauthenticated = {fd_limit}
max_unauthenticated_per_ip = {fd_limit}
c2s_read_rate = 100000000
c2s_read_burst = 100000000
c2s_stanza_rate = 100000000
c2s_stanza_burst = 100000000

# Group chat (muc, a standard module) with no limit on groupchat messages
# per occupant (default 5 per second, bursts of 20: it would throttle the
# muc phase's closed-loop senders).
[muc]
message_rate = 100000.0
message_burst = 100000

[hosts."{domain}"]
"""

PROSODY_CONFIG = """\
-- Prosody for the benchmark: only what xmppd also does, nothing that limits.
{settings}
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ {log_level} = "{dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ {http_port} }}
https_interfaces = {{ "127.0.0.1" }}
https_ssl = {{ certificate = "{dir}/{domain}.crt"; key = "{dir}/{domain}.key" }}
network_settings = {{ tcp_backlog = 1024 }}
c2s_require_encryption = true
authentication = "internal_hashed"
storage = "internal"
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "version"; "time";
    "lastactivity"; "carbons"; "vcard_legacy"; "private"; "blocklist"; "pep"; "websocket";
    "bosh";{modules}
}}
modules_disabled = {{ "s2s"; "s2s_auth_certs" }}
certificates = "{dir}"
ssl = {{ certificate = "{dir}/{domain}.crt"; key = "{dir}/{domain}.key" }}
VirtualHost "{domain}"

-- Group chat, as xmppd's: a new room is locked until its owner configures
-- it, anyone may create rooms; no mod_muc_limits (a message rate).
Component "conference.{domain}" "muc"
    muc_room_locking = true
    restrict_room_creation = false
"""

EJABBERD_CONFIG = """\
# ejabberd for the benchmark: the modules of Prosody's configuration.
loglevel: {log_level}
log_rotate_count: 0
hosts:
  - "{domain}"
certfiles:
  - "{pem}"
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
    backlog: 1024
  -
    port: {http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    tls: true
    backlog: 1024
    request_handlers:
      /xmpp-websocket: ejabberd_http_ws
      /http-bind: mod_bosh
auth_method: internal
auth_password_format: scram
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_version: {{}}
  mod_time: {{}}
  mod_last: {{}}
  mod_carboncopy: {{}}
  mod_vcard: {{}}
  mod_private: {{}}
  mod_privacy: {{}}
  mod_blocking: {{}}
  mod_caps: {{}}
  mod_pubsub:
    plugins:
      - "flat"
      - "pep"
  mod_offline: {{}}
  mod_bosh: {{}}
  mod_muc:
    access_create: all
    max_user_conferences: 1000
  mod_admin_extra: {{}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu):
    """A preexec_fn: run on ``cpu`` (if the machine has it) with enough fds."""
    def prepare():
        if cpu in CPUS:
            os.sched_setaffinity(0, {cpu})
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    return prepare


def copy_certificate(certificate, directory):
    """The benchmark's certificate and key into ``directory`` (made if
    needed), named after the domain; the directory."""
    directory.mkdir(exist_ok=True)
    for suffix in (".crt", ".key"):
        shutil.copy(certificate.with_suffix(suffix), directory / f"{DOMAIN}{suffix}")
    return directory


def wait_listening(process, port, log):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"run.py: the server exited with {process.returncode}; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"run.py: the server did not listen on port {port}; see {log}")


class Server:
    """A server run from a directory of its own; subclasses say how."""

    name = None
    unsupported = ()  # phases the server cannot run
    sasl2 = True  # whether it can run the login phase with --sasl2
    nodes = 1  # processes, each with a c2s and an HTTPS port of its own

    def __init__(self, directory, certificate, log_level):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = [free_port() for _ in range(self.nodes)]
        self.http_ports = [free_port() for _ in range(self.nodes)]  # HTTPS: WebSocket
        self.port, self.http_port = self.ports[0], self.http_ports[0]
        self.log = self.dir / "console.log"
        self.log_level = log_level
        self.process = None
        self.configure(certificate)

    def start(self):
        """Start it; the pids whose CPU time and memory the phases measure."""
        self.process = self.launch(self.command(), SERVER_CPU, self.log)
        wait_listening(self.process, self.port, self.log)
        return [self.process.pid]

    def launch(self, command, cpu, log):
        """``command`` run from the server's directory on ``cpu``, its
        output appended to ``log``."""
        with open(log, "ab") as out:
            return subprocess.Popen(command, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, preexec_fn=pinned(cpu))

    def close(self):
        """After the last run: remove what the server kept outside its directory."""

    def stop(self):
        terminate(self.process)


def terminate(*processes):
    """SIGTERM to those of ``processes`` still running; SIGKILL to any that
    has not ended ``STOP_TIMEOUT`` seconds later."""
    running = [p for p in processes if p is not None and p.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Xmppd(Server):
    name = "xmppd"
    host = ""  # more settings of the host's table
    storage_url = "sqlite:///xmppd.sqlite"

    def configure(self, certificate):
        """A configuration per node (``xmppd.toml`` for one), then the schema."""
        certificates = copy_certificate(certificate, self.dir / "certs")
        self.configs = [self.dir / ("xmppd.toml" if self.nodes == 1 else f"xmppd-{n + 1}.toml")
                        for n in range(self.nodes)]
        for node, config in enumerate(self.configs):
            config.write_text(XMPPD_CONFIG.format(
                log_level=self.log_level, certificates=certificates, port=self.ports[node],
                http_port=self.http_ports[node], fd_limit=FD_LIMIT, domain=DOMAIN,
                storage_url=self.storage_url) + self.host + self.node_settings(node))
        self.config = self.configs[0]
        subprocess.run([sys.executable, str(BIN / "xmppctl"), "-c", str(self.config), "migrate"],
                       check=True, stdout=subprocess.DEVNULL)

    def create_accounts(self, localparts, password, roster_users, roster_size, rosters=None):
        accounts.xmppd_create_sql(self.config, DOMAIN, localparts, password,
                                  roster_users, roster_size, rosters)

    def node_settings(self, node):
        """More TOML for node ``node``'s configuration (from 0)."""
        return ""

    def command(self, node=0):
        return [sys.executable, str(BIN / "twistd"), "-n", "--pidfile=", "xmppd",
                "--config", str(self.configs[node])]

    def version(self):
        import xmppd
        return xmppd.__version__


class Prosody(Server):
    """Prosody from its Debian package, from a private configuration, on
    its own port, as the ``prosody`` user (never the system service)."""

    name = "prosody"
    user = "prosody"
    unsupported = ("fast_login",)  # Debian's Prosody 0.12 has no SASL2 nor FAST
    sasl2 = False
    # Lua lines of the global section; gc is Prosody 0.12's default:
    # incremental, threshold 105%, speed 500.
    settings = ""
    modules = ""  # more of modules_enabled

    @staticmethod
    def check_installed():
        """Prosody's version, told by ``prosodyctl about`` (``prosody
        --version`` would start a server)."""
        if shutil.which("prosodyctl") is None:
            raise SystemExit("run.py: --compare-prosody needs Prosody: "
                             "apt-get install prosody lua-unbound")
        about = subprocess.run(["prosodyctl", "about"], capture_output=True, text=True)
        for line in about.stdout.splitlines():
            if line.startswith("Prosody "):
                return line.split()[1]
        raise SystemExit(f"run.py: 'prosodyctl about' failed: {about.stdout}{about.stderr}")

    def configure(self, certificate):
        copy_certificate(certificate, self.dir)
        (self.dir / "data").mkdir()
        level = {"warn": "warn", "error": "error", "debug": "debug"}.get(self.log_level, "info")
        self.config = self.dir / "prosody.cfg.lua"
        self.config.write_text(PROSODY_CONFIG.format(
            settings=self.settings, modules=self.modules, dir=self.dir, port=self.port,
            http_port=self.http_port, log_level=level, domain=DOMAIN))
        self._version = self.check_installed()

    def create_accounts(self, localparts, password, roster_users, roster_size, rosters=None):
        accounts.prosody_create_files(self.dir / "data", DOMAIN, localparts, password,
                                      roster_users, roster_size, rosters)
        shutil.chown(self.dir, self.user, self.user)
        for path in self.dir.rglob("*"):
            shutil.chown(path, self.user, self.user)

    def command(self):
        return ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups",
                "prosody", "-F", "--config", str(self.config)]

    def version(self):
        return self._version


class Ejabberd(Server):
    """ejabberd from its Debian package (``ejabberdctl foreground``), from a
    private configuration (``--config-dir``: its own node name, cookie,
    distribution port, Mnesia spool and logs in its directory; loopback
    only), as the ``ejabberd`` user (never the system service), with one
    Erlang scheduler: it is pinned to one CPU like the others.  The modules
    are those of Prosody's configuration above; no traffic shaper, no
    limits.  Accounts come from a XEP-0227 file (``import_piefxis``)."""

    name = "ejabberd"
    user = "ejabberd"
    unsupported = ("fast_login",)  # Debian's ejabberd 23.01 has no SASL2 nor FAST
    sasl2 = False

    def configure(self, certificate):
        if shutil.which("ejabberdctl", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            raise SystemExit("run.py: ejabberd is not installed: apt-get install ejabberd")
        pem = self.dir / f"{DOMAIN}.pem"
        pem.write_bytes(certificate.with_suffix(".key").read_bytes()
                        + certificate.with_suffix(".crt").read_bytes())
        pem.chmod(0o600)
        for directory in ("spool", "logs"):
            (self.dir / directory).mkdir()
        level = {"warn": "warning", "error": "error", "debug": "debug"}.get(self.log_level,
                                                                            "info")
        (self.dir / "ejabberd.yml").write_text(EJABBERD_CONFIG.format(
            log_level=level, domain=DOMAIN, pem=pem, port=self.port, http_port=self.http_port))
        (self.dir / "ejabberdctl.cfg").write_text(
            f"ERLANG_NODE=bench-{os.getpid()}-{self.port}@localhost\n"
            f"ERL_DIST_PORT={free_port()}\nINET_DIST_INTERFACE=127.0.0.1\n"
            f'ERL_OPTIONS="-setcookie {os.urandom(16).hex()} +S 1:1 +SDcpu 1:1"\n'
            f"ERL_MAX_PORTS={FD_LIMIT}\n"
            f"SPOOL_DIR={self.dir / 'spool'}\nLOGS_DIR={self.dir / 'logs'}\n")
        (self.dir / "inetrc").write_text('{lookup, ["file"]}.\n{resolv_conf, ""}.\n')
        self._own()
        self._version = self._package_version()
        self.beam = None

    def _own(self):
        for path in (self.dir, *self.dir.rglob("*")):
            shutil.chown(path, self.user, self.user)

    @staticmethod
    def _package_version():
        found = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "ejabberd"],
                               capture_output=True, text=True)
        return found.stdout.strip() or "?"

    def ctl(self, *args):
        return ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups",
                "env", f"HOME={self.dir}", "ejabberdctl", "--config-dir", str(self.dir), *args]

    def create_accounts(self, localparts, password, roster_users, roster_size, rosters=None):
        users = self.dir / "users.xml"
        accounts.ejabberd_piefxis_file(users, DOMAIN, localparts, password, roster_users,
                                       roster_size, rosters)
        self._own()
        self.start()
        try:
            subprocess.run(self.ctl("import_piefxis", str(users)), check=True,
                           stdout=subprocess.DEVNULL, cwd=self.dir)
        finally:
            self.stop()

    def command(self):
        return self.ctl("foreground")

    def start(self):
        """Start it; the pid of the Erlang VM (``ejabberdctl`` runs it as a
        child of a shell), whose CPU time and memory the phases measure."""
        super().start()
        self.beam = _descendant(self.process.pid, "beam.smp")
        return [self.beam]

    def stop(self):
        """SIGTERM to the VM, which stops ejabberd cleanly (OTP 19 and later)."""
        if self.process is not None and self.process.poll() is None and self.beam:
            try:
                os.kill(self.beam, signal.SIGTERM)
                self.process.wait(STOP_TIMEOUT)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        super().stop()

    def version(self):
        return self._version


def _descendant(pid, name):
    """The pid of the process called ``name`` below ``pid``."""
    children = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit():
            command, rest = stat.split("(", 1)[1].rsplit(")", 1)
            children.setdefault(int(rest.split()[1]), []).append((int(entry.name), command))
    queue = [pid]
    while queue:
        for child, command in children.get(queue.pop(), ()):
            if command == name:
                return child
            queue.append(child)
    raise SystemExit(f"run.py: no {name} process below {pid}")


class ProsodyGenerationalGC(Prosody):
    """Prosody with Lua 5.4's generational garbage collector instead of its
    default incremental one, which dominates its cost per message here."""

    name = "prosody-gengc"
    settings = 'gc = { mode = "generational" }'


class XmppdArchiving(Xmppd):
    """xmppd with its message archive (XEP-0313) enabled for the host,
    whether or not it is a standard module."""

    name = "xmppd-mam"
    host = 'modules_enabled = ["mam"]\n'


class XmppdWithoutArchive(Xmppd):
    """xmppd with its message archive switched off for the host."""

    name = "xmppd-nomam"
    host = 'disabled_modules = ["mam"]\n'


class XmppdPostgres(Xmppd):
    """xmppd storing in PostgreSQL: a database of its own, made before the
    first run and dropped after the last, on the server of
    ``XMPPD_BENCH_POSTGRES_URL`` (a SQLAlchemy URL)."""

    name = "xmppd-pg"

    def configure(self, certificate):
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        server = os.environ.get("XMPPD_BENCH_POSTGRES_URL")
        if not server:
            raise SystemExit(f"run.py: {self.name} needs XMPPD_BENCH_POSTGRES_URL")
        self._admin = create_engine(server, isolation_level="AUTOCOMMIT")
        self._database = f"xmppd_bench_{os.getpid()}_{self.port}"
        with self._admin.connect() as db:
            db.execute(text(f'CREATE DATABASE "{self._database}"'))
        url = make_url(server).set(database=self._database)
        self.storage_url = url.render_as_string(hide_password=False)
        super().configure(certificate)

    def close(self):
        from sqlalchemy import text

        with self._admin.connect() as db:
            db.execute(text(f'DROP DATABASE IF EXISTS "{self._database}"'))
        self._admin.dispose()


class XmppdArchivingPostgres(XmppdPostgres, XmppdArchiving):
    """``xmppd-mam`` storing in PostgreSQL, as ``xmppd-pg`` does."""

    name = "xmppd-mam-pg"


class XmppdCluster(XmppdPostgres):
    """``xmppd-pg`` as a cluster of ``nodes`` (docs/cluster.md): the same
    database, ``[cluster]`` on the Redis of ``XMPPD_BENCH_REDIS_URL`` under
    a key prefix of its own (its keys deleted after the last run), each
    node with ports of its own; node 1 is pinned to the server's CPU, node
    2 to the generator's."""

    name = "xmppd-cluster1"
    node_cpus = (SERVER_CPU, GENERATOR_CPU)

    def configure(self, certificate):
        self.redis = os.environ.get("XMPPD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        self.prefix = f"xmppd-bench-{os.getpid()}-{self.port}"
        self.processes = []
        super().configure(certificate)

    def node_settings(self, node):
        return (f'\n[cluster]\nredis = "{self.redis}"\nnode = "node{node + 1}"\n'
                f'prefix = "{self.prefix}"\n')

    def start(self):
        """Start the nodes one after the other; their pids."""
        self.processes = []
        for node, cpu in enumerate(self.node_cpus[:self.nodes]):
            log = self.dir / f"node{node + 1}.log"
            self.processes.append(self.launch(self.command(node), cpu, log))
            wait_listening(self.processes[-1], self.ports[node], log)
        self.process = self.processes[0]
        return [process.pid for process in self.processes]

    def stop(self):
        terminate(*self.processes)

    def close(self):
        import redis

        client = redis.Redis.from_url(self.redis)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
            super().close()


class XmppdTwoNodes(XmppdCluster):
    """``xmppd-cluster1`` with two nodes."""

    name = "xmppd-cluster2"
    nodes = 2


class ProsodyArchiving(Prosody):
    """Prosody with mod_mam archiving every one-to-one message, as
    ``xmppd-mam`` does, in its internal storage (Debian's Prosody has no
    LuaDBI for mod_storage_sql)."""

    name = "prosody-mam"
    settings = "default_archive_policy = true"
    modules = ' "mam";'


class Floor(Server):
    """bench/login_floor.py: canned answers over xmppd's transport and TLS,
    the floor under a login (logins only)."""

    name = "floor"
    unsupported = tuple(phase for phase in loadgen.PHASES if phase not in ("login", "fast_login"))

    def configure(self, certificate):
        self.certificates = copy_certificate(certificate, self.dir / "certs")

    def create_accounts(self, localparts, password, roster_users, roster_size, rosters=None):
        self.password = password

    def command(self):
        return [sys.executable, str(REPO / "bench" / "login_floor.py"), "--port", str(self.port),
                "--certificates", str(self.certificates), "--domain", DOMAIN,
                "--password", self.password]

    def version(self):
        return "-"


KINDS = {"xmppd": Xmppd, "xmppd-mam": XmppdArchiving, "xmppd-nomam": XmppdWithoutArchive,
         "xmppd-mam-pg": XmppdArchivingPostgres, "xmppd-pg": XmppdPostgres,
         "xmppd-cluster1": XmppdCluster, "xmppd-cluster2": XmppdTwoNodes,
         "prosody": Prosody, "prosody-gengc": ProsodyGenerationalGC,
         "prosody-mam": ProsodyArchiving, "ejabberd": Ejabberd, "floor": Floor}


# Results


def median_records(records):
    """Per (server, phase, sessions): the median of every numeric field."""
    groups = {}
    for record in records:
        key = (record["server"], record["phase"], record.get("sessions"))
        groups.setdefault(key, []).append(record)
    medians = []
    for (server, phase, _), group in groups.items():
        median = {"server": server, "phase": phase, "median_of": len(group)}
        for field, value in group[0].items():
            values = [r.get(field) for r in group]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                median[field] = round(statistics.median(values), 2)
            elif field == "gen_cpu_pct":
                median[field] = [round(statistics.median(x), 1) for x in zip(*values)]
        medians.append(median)
    return medians


def comparison(medians, servers):
    """A table: one row per phase (and session count) and metric, one
    column per server."""
    found = {(m["server"], m["phase"], m.get("sessions")): m for m in medians}
    rows = []
    for phase, columns in loadgen.COLUMNS.items():
        for sessions in sorted({m.get("sessions") for m in medians if m["phase"] == phase},
                               key=lambda count: count or 0):
            label = f"{phase} @{sessions}" if sessions else phase
            for column in (*columns, "gen_cpu_pct"):
                cells = [loadgen.cell(found.get((server, phase, sessions), {}).get(column))
                         for server in servers]
                if column != "sessions" and any(cell != "-" for cell in cells):
                    rows.append((label, column, *cells))
    header = ("phase", "metric", *servers)
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths))
                     for row in (header, *rows))


# Command line


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare-prosody", action="store_true",
                   help="also benchmark Prosody (Debian package prosody)")
    p.add_argument("--servers", help="comma-separated servers to run instead: xmppd, "
                   "xmppd-mam and xmppd-nomam (with and without its message archive), "
                   "xmppd-pg and xmppd-mam-pg (storing, archiving in PostgreSQL at "
                   "$XMPPD_BENCH_POSTGRES_URL), xmppd-cluster1 and xmppd-cluster2 (xmppd-pg as "
                   "one and two cluster nodes, Redis at $XMPPD_BENCH_REDIS_URL, default "
                   "redis://127.0.0.1:6379/0), "
                   "prosody, prosody-gengc (Prosody with generational garbage collection), "
                   "prosody-mam (Prosody archiving messages), ejabberd, "
                   "floor (bench/login_floor.py: logins only)")
    p.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    p.add_argument("--runs", type=int, help="runs per server (default 3, quick 1)")
    p.add_argument("--memory-runs", type=int, default=1, help="memory phase runs per server")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"),
                   help="log level of both servers (logs go to files)")
    p.add_argument("--output", help="also write every record as JSON lines to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--profile", metavar="DIR",
                   help="sample xmppd with py-spy during its runs; flat profiles go to DIR")
    p.add_argument("--py-spy", default=shutil.which("py-spy"), help="the py-spy program")
    p.add_argument("--generator-args", default="",
                   help="extra bench/loadgen.py options, e.g. '--workers 2 --mechanism "
                        "SCRAM-SHA-1' (--phases selects phases, memory included)")
    return p


QUICK = ["--logins", "200", "--seconds", "3", "--pairs", "50", "--presence-users", "50",
         "--roster-size", "10", "--pep-contacts", "50", "--pep-items", "50",
         "--muc-occupants", "50", "--idle-sessions", "1000"]
DEFAULT = ["--seconds", "10"]


def main(argv=None):
    args = parser().parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    generator = loadgen.parse_args(["--domain", DOMAIN, *(QUICK if args.quick else DEFAULT),
                                    *args.generator_args.split()])
    loadgen.raise_fd_limit()
    signal.signal(signal.SIGTERM, _interrupted)
    if {SERVER_CPU, GENERATOR_CPU} <= CPUS:
        os.sched_setaffinity(0, {GENERATOR_CPU})
    else:
        print("run.py: one CPU only: server and generator share it", file=sys.stderr)
    names = (args.servers.split(",") if args.servers
             else ["xmppd"] + (["prosody"] if args.compare_prosody else []))
    kinds = [KINDS[name] for name in names]
    if args.profile and not args.py_spy:
        raise SystemExit("run.py: --profile needs py-spy (pip install py-spy), see --py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="xmppd-bench-"))
    workdir.chmod(0o755)  # the prosody user reads its directory below it
    servers, records = [], []
    output = open(args.output, "w") if args.output else None
    try:
        certificate = _certificate(workdir)
        servers = [kind(workdir / kind.name, certificate, args.log_level) for kind in kinds]
        localparts = accounts.names(generator.pattern, loadgen.accounts_needed(generator))
        for server in servers:
            started = time.monotonic()
            server.create_accounts(localparts, generator.password, generator.presence_users,
                                   generator.roster_size, loadgen.rosters(generator))
            print(f"# {server.name} {server.version()}: {len(localparts)} accounts in "
                  f"{time.monotonic() - started:.1f} s", file=sys.stderr)
        timed = [p for p in generator.phases if p != "memory"]
        plan = [(server, phases) for _ in range(runs) for server in servers
                if (phases := [p for p in timed if p not in server.unsupported
                               and not (p == "login" and generator.sasl2 and not server.sasl2)])]
        if "memory" in generator.phases:
            plan += [(server, ["memory"]) for _ in range(args.memory_runs) for server in servers]
        for number, (server, phases) in enumerate(plan, 1):
            print(f"# run {number}/{len(plan)}: {server.name} {','.join(phases)}",
                  file=sys.stderr)
            profile = None
            if args.profile and isinstance(server, (Xmppd, Floor)):
                profile = Path(args.profile) / f"{server.name}-{number}-{'-'.join(phases)}.txt"
            for record in _run(server, generator, phases, profile, args.py_spy):
                records.append(record)
                if output:
                    output.write(json.dumps(record) + "\n")
        medians = median_records(records)
        for median in medians:
            print(json.dumps(median))
            if output:
                output.write(json.dumps(median) + "\n")
        print(f"\nMedians of {runs} run(s) per server:", file=sys.stderr)
        print(comparison(medians, [s.name for s in servers]), file=sys.stderr)
    finally:
        for server in servers:
            server.stop()
            server.close()
        if output:
            output.close()
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(not r.get("lost") for r in records) else 1


def _interrupted(signum, frame):
    raise KeyboardInterrupt  # stop the servers and clean up on the way out


def _certificate(workdir):
    from xmppd.certs import make_self_signed
    cert, _ = make_self_signed(DOMAIN, workdir / "certificate")
    return Path(cert)


def _run(server, generator, phases, profile=None, py_spy=None):
    """Start ``server``, run ``phases`` against it (each account on one of
    its nodes' ports in turn), stop it; the records.  With ``profile``,
    py-spy samples the server (its first node) meanwhile and
    bench/profile.py summarises the samples in that file."""
    pids = server.start()
    sampler = None
    if profile:
        profile.parent.mkdir(parents=True, exist_ok=True)
        raw = profile.with_suffix(".folded")
        sampler = subprocess.Popen([py_spy, "record", "--pid", str(pids[0]), "--rate", "100",
                                    "--format", "raw", "--output", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    try:
        args = argparse.Namespace(**vars(generator))
        args.phases, args.port, args.server_pid, args.label = (phases, server.ports, pids,
                                                               server.name)
        args.ws_port = server.http_ports
        args.ca_file = str(_cert_path(server))
        records = loadgen.Benchmark(args).run(phases)
        print(loadgen.table(records), file=sys.stderr)
        return records
    finally:
        server.stop()
        if sampler is not None:
            sampler.wait(STOP_TIMEOUT)
            from bench.profile import summarise
            profile.write_text(summarise(raw.read_text()))


def _cert_path(server):
    return server.dir.parent / "certificate" / f"{DOMAIN}.crt"


if __name__ == "__main__":
    sys.exit(main())
