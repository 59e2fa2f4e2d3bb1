"""``xmppctl``: the xmppd administration command.

Account and setup commands work on the configuration file and the database
directly, never through the running server, so they can set a server up
before its first start and manage accounts while it runs.  ``status``,
``reload``, ``sessions`` and ``kick`` talk to the running server through its
admin socket (:mod:`xmppd.admin`), and so do ``deluser``, ``passwd`` and
``kick --tokens`` after the database change, to end the account's open
sessions.  See docs/xmppctl.md.

Every expected failure ends with one line on stderr, ``xmppctl: MESSAGE``,
and a non-zero exit status.  Heavy libraries (SQLAlchemy, cryptography,
Twisted) are imported only by the commands that use them, so ``--help`` and
the admin-socket commands start fast.
"""

import argparse
import datetime
import importlib
import json
import os
import socket
import sys
from contextlib import contextmanager

from xmppd import __version__

DEFAULT_CONFIG = "/etc/xmppd/xmppd.toml"
# Modules with commands of their own: each has add_commands(command), where
# command(name, run, summary) adds a subcommand and returns its parser.
COMMAND_MODULES = (
    "xmppd.portable",  # export, import (XEP-0227)
    "xmppd.reports",  # reports (XEP-0377)
    "xmppd.invitations",  # invite (XEP-0401)
    "xmppd.api_tokens",  # token (HTTP admin API)
)
EXPIRY_WARNING = datetime.timedelta(days=30)

CONFIG_TEMPLATE = """\
# xmppd configuration.  See docs/configuration.md for every key.
log_level = "info"

[storage]
# Relative to this file.
url = "sqlite:///xmppd.sqlite"

[tls]
# DOMAIN.crt and DOMAIN.key for every hosted domain; relative to this file.
certificates = "certs"

[c2s]
listen = [{listen}]
direct_tls = [{direct_tls}]

[admin]
# For "xmppctl status", "reload", "sessions" and "kick"; relative to this file.
socket = "xmppd.sock"

[hosts.{domain}]
"""


class Failure(Exception):
    """An expected failure: its message is printed as ``xmppctl: MESSAGE``."""


def main(argv=None):
    """Run xmppctl with *argv* (default: the command line); return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code
    try:
        args.run(args)
    except Failure as e:
        return _fail(e)
    except OSError as e:
        return _fail(f"{e.filename}: {e.strerror}" if e.filename else str(e))
    except KeyboardInterrupt:
        return _fail("interrupted", status=130)
    return 0


def _fail(message, status=1):
    print(f"xmppctl: {message}", file=sys.stderr)
    return status


class _Parser(argparse.ArgumentParser):
    """Reports usage errors on one line."""

    def error(self, message):
        self.exit(2, f"xmppctl: {message} (see '{self.prog} --help')\n")


def _parser():
    parser = _Parser(prog="xmppctl", description="Administer an xmppd server.")
    parser.add_argument("--version", action="version", version=f"xmppctl (xmppd) {__version__}")
    parser.add_argument(
        "-c", "--config", metavar="FILE",
        default=os.environ.get("XMPPD_CONFIG", DEFAULT_CONFIG),
        help=f"configuration file (default: $XMPPD_CONFIG, else {DEFAULT_CONFIG})")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name, run, summary):
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(run=run)
        return sub

    init = command("init", cmd_init, "create a configuration, certificate and database")
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--domain", required=True, help="the hosted domain")
    init.add_argument("--c2s-port", type=_port, default=5222, metavar="PORT")
    init.add_argument("--direct-tls-port", type=_port, default=5223, metavar="PORT")
    init.add_argument("--force", action="store_true", help="replace existing files")

    for name, run, summary in (("adduser", cmd_adduser, "create an account"),
                               ("passwd", cmd_passwd,
                                "change an account's password and end its sessions")):
        sub = command(name, run, summary)
        sub.add_argument("jid", metavar="JID", help="bare JID, user@domain")
        sub.add_argument("--password", metavar="PW",
                         help="the password (default: prompt, or one line of stdin)")

    command("deluser", cmd_deluser, "delete an account and end its sessions").add_argument(
        "jid", metavar="JID", help="bare JID, user@domain")
    command("users", cmd_users, "list accounts").add_argument(
        "domain", metavar="DOMAIN", nargs="?", help="only this domain's accounts")
    command("migrate", cmd_migrate, "create or upgrade the database schema")

    cert = command("cert", cmd_cert, "make a self-signed certificate")
    cert.add_argument("domain", metavar="DOMAIN")
    cert.add_argument("--out", metavar="DIR",
                      help="output directory (default: tls.certificates of the "
                           "configuration if it exists, else the current directory)")
    cert.add_argument("--key", choices=("ec", "rsa"), default="ec",
                      help="key type: P-256 (the default: the cheapest TLS handshake) "
                           "or RSA 2048 (for very old clients)")
    cert.add_argument("--force", action="store_true", help="replace existing files")

    command("check", cmd_check, "validate the configuration, certificates and database")
    command("status", cmd_status, "show whether the server runs, its uptime and sessions")
    command("reload", cmd_reload, "make the running server re-read its configuration")
    sessions = command("sessions", cmd_sessions, "list the open sessions of the running server")
    sessions.add_argument("domain", metavar="DOMAIN", nargs="?", help="only this domain's")
    sessions.add_argument("--json", action="store_true", help="print JSON")
    kick = command("kick", cmd_kick, "end a session, or every session of an account")
    kick.add_argument("jid", metavar="JID",
                      help="user@domain/resource for one session, user@domain for all")
    kick.add_argument("--tokens", action="store_true",
                      help="also delete the account's FAST tokens (XEP-0484), so that its "
                           "clients must log in with the password again; works whether "
                           "the server runs or not")
    mam = command("mam", None, "message archives (XEP-0313)").add_subparsers(
        title="commands", metavar="COMMAND", required=True)
    purge = mam.add_parser("purge", help="delete archived messages",
                           description="delete archived messages: those before DATE, of JID "
                                       "or of everyone (default: those older than mam.max_age)")
    purge.set_defaults(run=cmd_mam_purge)
    purge.add_argument("--before", metavar="DATE", type=_date,
                       help="an ISO 8601 date or time, UTC unless it says otherwise")
    purge.add_argument("jid", metavar="JID", nargs="?", help="only this account's (user@domain)")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(command)
    return parser


def _date(text):
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {text!r}: expected e.g. 2026-01-31 "
                                         f"or 2026-01-31T12:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _port(text):
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}")
    return port


# Shared steps


def _load_config(path):
    from xmppd import config as configuration

    try:
        return configuration.load(path)
    except configuration.ConfigError as e:
        raise Failure(e) from None


def _account_jid(config, text):
    """The bare JID *text* of an account on a hosted domain."""
    from xmppd.jid import JID, InvalidJID

    try:
        jid = JID.parse(text)
    except InvalidJID as e:
        raise Failure(f"invalid JID {text!r}: {e}") from None
    if jid.local is None:
        raise Failure(f"{text!r} is not an account JID: expected user@domain")
    if jid.resource is not None:
        raise Failure(f"{text!r} is a full JID: give the bare JID {jid.bare_str}")
    if jid.domain not in config.hosts:
        raise Failure(f"{jid.domain} is not a hosted domain in {config.path} "
                      f"(hosted: {', '.join(config.hosts)})")
    return jid


def _domain(text):
    from xmppd.jid import InvalidJID, normalize_domain

    try:
        return normalize_domain(text)
    except InvalidJID as e:
        raise Failure(f"invalid domain {text!r}: {e}") from None


def _read_password(given):
    """*given*, else a password typed twice at a terminal, else one line of stdin."""
    import getpass

    from xmppd.core.scram import prepare_password

    if given is not None:
        password = given
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise Failure("the passwords do not match")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise Failure("empty password refused")
    try:
        prepare_password(password)
    except UnicodeEncodeError as e:
        reason = e.reason.removeprefix("DISALLOWED/")
        raise Failure(f"password refused: it has characters that are not allowed ({reason})")
    return password


def _database_problem(config, error):
    return f"{config.path}: storage.url: cannot use the database: {error}"


def _connect(config, must_exist):
    """The configured database; unless *must_exist* is false, a missing
    SQLite file is an error rather than created."""
    from xmppd.storage import StorageError
    from xmppd.storage.sql import SQLStore

    try:
        return SQLStore(config.storage.url, create=not must_exist)
    except StorageError as e:
        raise Failure(_database_problem(config, e)) from None


@contextmanager
def _store(config, current=True):
    """The configured database, checked to be at the current schema unless
    *current* is false.  Database failures become Failure."""
    from xmppd.storage import SchemaOutdated, StorageError

    store = _connect(config, must_exist=current)
    try:
        if current:
            store.check_schema()
        yield store
    except SchemaOutdated as e:
        raise Failure(f"{config.path}: storage.url: {e}") from None
    except StorageError as e:
        raise Failure(_database_problem(config, e)) from None
    finally:
        store.close()


# Commands


def cmd_init(args):
    import shlex

    from sqlalchemy import make_url

    from xmppd import config as configuration

    path = os.path.join(args.dir, "xmppd.toml")
    if os.path.exists(path) and not args.force:
        raise Failure(f"{path} already exists (use --force to replace it)")
    domain = _domain(args.domain)
    text = CONFIG_TEMPLATE.format(
        listen=_toml_string(f"tcp:{args.c2s_port}"),
        direct_tls=_toml_string(f"tcp:{args.direct_tls_port}"),
        domain=_toml_string(domain),
    )
    try:
        config = configuration.parse(text, path)
    except configuration.ConfigError as e:
        raise Failure(e) from None
    os.makedirs(args.dir, exist_ok=True)
    cert_path, key_path = _make_cert(domain, config.tls.certificates, "ec", args.force)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    with _store(config, current=False) as store:
        _, revision = store.migrate()
    config_arg = shlex.quote(path)
    print(f"created {path}")
    print(f"created {cert_path} and {key_path} (self-signed)")
    print(f"created {make_url(config.storage.url).database} (schema revision {revision})")
    print()
    print("Start the server:")
    print(f"    twistd -n xmppd --config {config_arg}")
    print("Add a user:")
    print(f"    xmppctl -c {config_arg} adduser {shlex.quote('alice@' + domain)}")


def _toml_string(text):
    return json.dumps(text, ensure_ascii=False)


def cmd_adduser(args):
    from xmppd.core.scram import derive_all
    from xmppd.storage import UserExists

    config = _load_config(args.config)
    jid = _account_jid(config, args.jid)
    if config.hosts[jid.domain].authentication == "anonymous":
        raise Failure(f"{jid.domain} is an anonymous host: its accounts are made at login")
    with _store(config) as store:
        if store.account_exists(jid.local, jid.domain):
            raise Failure(f"user {jid.bare_str} already exists")
        keys = derive_all(_read_password(args.password))
        try:
            store.create_account(jid.local, jid.domain, keys)
        except UserExists:
            raise Failure(f"user {jid.bare_str} already exists") from None
    print(f"added {jid.bare_str}")


def cmd_passwd(args):
    from xmppd.core.scram import derive_all
    from xmppd.storage import UserNotFound

    config = _load_config(args.config)
    jid = _account_jid(config, args.jid)
    with _store(config) as store:
        if not store.account_exists(jid.local, jid.domain):
            raise Failure(f"user {jid.bare_str} does not exist")
        keys = derive_all(_read_password(args.password))
        try:
            store.set_credentials(jid.local, jid.domain, keys)
        except UserNotFound:
            raise Failure(f"user {jid.bare_str} does not exist") from None
    print(f"changed the password of {jid.bare_str}")
    _end_sessions(config, jid, "password-changed")


def cmd_deluser(args):
    from xmppd.modules.accounts import MARKS
    from xmppd.storage import UserNotFound

    config = _load_config(args.config)
    jid = _account_jid(config, args.jid)
    with _store(config) as store:
        for name in MARKS:  # disabled, admin by invitation: before the account (see accounts)
            store.open("hostval", name).delete(jid.domain, jid.local)
        try:
            store.delete_account(jid.local, jid.domain)
        except UserNotFound:
            raise Failure(f"user {jid.bare_str} does not exist") from None
    print(f"deleted {jid.bare_str}")
    _end_sessions(config, jid, "account-deleted")


def _end_sessions(config, jid, reason):
    """Have the running server close the account's streams with the stream
    error of *reason* (see xmppd.admin), as their credentials are gone; if it
    cannot be reached, say so on one line and carry on."""
    try:
        ended = _ask_server(config, "end-sessions", jid=jid.bare_str, reason=reason)["ended"]
    except Failure as e:
        print(f"xmppctl: warning: the open sessions of {jid.bare_str} (if any) "
              f"could not be ended: {e}", file=sys.stderr)
        return
    if ended:
        print(f"ended {_count(len(ended), 'open session')} of {jid.bare_str}")


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


def cmd_users(args):
    config = _load_config(args.config)
    domain = None if args.domain is None else _domain(args.domain)
    with _store(config) as store:
        accounts = store.list_accounts(domain)
    for jid in sorted(f"{username}@{domain}" for username, domain in accounts):
        print(jid)


def cmd_mam_purge(args):
    config = _load_config(args.config)
    jid = None if args.jid is None else _account_jid(config, args.jid)
    now = datetime.datetime.now(datetime.timezone.utc)
    if args.before is None and jid is None:
        _purge_by_retention(config, now)
        return
    before = now if args.before is None else args.before
    with _store(config) as store:
        deleted = store.open("archive", "mam").delete_until(
            before=before, username=jid and jid.local, domain=jid and jid.domain)
    whose = f"of {jid.bare_str} " if jid is not None else ""
    print(f"deleted {_count(deleted, 'archived message')} {whose}"
          f"from before {before.astimezone(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}")


def _purge_by_retention(config, now):
    """Each host's archives older than its ``mam.max_age`` days."""
    ages = {host: config.options("mam", host).max_age for host in config.hosts}
    if not any(ages.values()):
        raise Failure(f"mam.max_age is 0 in {config.path} (archives are kept for ever): "
                      f"give --before DATE or a JID")
    deleted = 0
    with _store(config) as store:
        archive = store.open("archive", "mam")
        for host, max_age in ages.items():
            if max_age:
                cut = now - datetime.timedelta(days=max_age)
                for username, domain in store.list_accounts(host):
                    deleted += archive.delete_until(before=cut, username=username,
                                                    domain=domain)
    print(f"deleted {_count(deleted, 'archived message')} older than mam.max_age")


def cmd_migrate(args):
    config = _load_config(args.config)
    with _store(config, current=False) as store:
        before, after = store.migrate()
    if before == after:
        print(f"schema already current (revision {after})")
    else:
        print(f"schema migrated from {before or '(empty)'} to {after}")


def cmd_cert(args):
    domain = _domain(args.domain)
    out = args.out
    if out is None:
        out = _load_config(args.config).tls.certificates if os.path.exists(args.config) else "."
    cert_path, key_path = _make_cert(domain, out, args.key, args.force)
    print(f"certificate: {cert_path}")
    print(f"key:         {key_path}")


def _make_cert(domain, directory, key_type, force):
    from xmppd.certs import make_self_signed

    try:
        return make_self_signed(domain, directory, key_type, force=force)
    except FileExistsError as e:
        raise Failure(f"{e.filename} already exists (use --force to replace it)") from None
    except ValueError as e:
        raise Failure(f"cannot make a certificate for {domain!r}: {e}") from None


def ask(path, command, timeout=10.0, **arguments):
    """Send *command* with *arguments* to the admin socket at *path*; return
    the answer (a dict, see xmppd.admin).  Blocking."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"command": command, **arguments}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def _ask_server(config, command, **arguments):
    """The running server's answer; Failure if it cannot be reached or
    refuses the request."""
    if config.admin.socket is None:
        raise Failure(f"{config.path}: admin.socket is off; the running server cannot be reached")
    try:
        answer = ask(config.admin.socket, command, **arguments)
    except (OSError, ValueError) as e:
        raise Failure(f"xmppd is not running (no answer on {config.admin.socket}: "
                      f"{getattr(e, 'strerror', None) or e})") from None
    if "error" in answer:
        raise Failure(f"the server refused {command!r}: {answer['error']}")
    return answer


def cmd_status(args):
    status = _ask_server(_load_config(args.config), "status")["status"]
    print("running")
    print(f"uptime: {status['uptime']:.0f} s")
    print(f"hosts: {', '.join(status['hosts'])}")
    print(f"connections: {status['connections']}")
    print(f"sessions: {status['sessions']}")
    print(f"s2s peers: {', '.join(status['s2s_peers']) or 'none'}")
    cluster = status.get("cluster")
    if cluster is not None:
        print(f"cluster node: {cluster['node']}")
        for name, node in sorted(cluster["nodes"].items()):
            print(f"  node {name}: pid {node.get('pid')}, {node.get('sessions')} sessions, "
                  f"stream lag {node.get('lag')}")


def cmd_reload(args):
    answer = _ask_server(_load_config(args.config), "reload")
    for line in answer["messages"]:
        print(line)
    if not answer["ok"]:
        raise Failure("the running configuration was kept")


def cmd_sessions(args):
    arguments = {} if args.domain is None else {"domain": args.domain}
    sessions = _ask_server(_load_config(args.config), "sessions", **arguments)["sessions"]
    for session in sessions:
        since = datetime.datetime.fromtimestamp(session["since"], datetime.timezone.utc)
        session["since"] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    if args.json:
        print(json.dumps(sessions, indent=2))
        return
    rows = [("JID", "ADDRESS", "TLS", "SINCE")]
    # A session without an address hibernates: its client may resume it (XEP-0198).
    rows += [(s["jid"], s["address"] or "hibernating", s["tls"] or "-", s["since"])
             for s in sessions]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    print(_count(len(sessions), "session"))


def cmd_kick(args):
    config = _load_config(args.config)
    if args.tokens:
        _revoke_tokens(config, args.jid)
        return
    answer = _ask_server(config, "end-sessions", jid=args.jid, reason="kicked")
    if not answer["ended"]:
        raise Failure(f"no open session of {args.jid}")
    for jid in answer["ended"]:
        print(f"ended {jid}")


def _revoke_tokens(config, text):
    """Delete the FAST tokens of account *text* from the database, then
    end its sessions if the server runs."""
    jid = _account_jid(config, text)
    with _store(config) as store:
        if not store.account_exists(jid.local, jid.domain):
            raise Failure(f"user {jid.bare_str} does not exist")
        tokens = store.open("keyval", "fast")
        clients = len(tokens.get_all(jid.local, jid.domain))
        tokens.delete_all(jid.local, jid.domain)
    print(f"deleted the FAST tokens of {_count(clients, 'client')} of {jid.bare_str}")
    _end_sessions(config, jid, "kicked")


def cmd_check(args):
    errors = 0
    for level, message in _findings(args.config):
        print(f"{level}: {message}")
        errors += level == "error"
    if errors:
        raise Failure(f"check found {errors} error{'s' if errors > 1 else ''}")


def _findings(path):
    """(level, message) pairs, level being "ok", "warning" or "error": the
    problems that would stop the server starting (xmppd.preflight), then
    what it does not check: certificate expiry and names, and whether the
    database is reachable and at the current schema."""
    from xmppd import config as configuration
    from xmppd import preflight

    try:
        config = configuration.load(path)
    except configuration.ConfigError as e:
        yield "error", str(e)
        return
    yield "ok", f"{config.path}: configuration valid"
    problems = preflight.problems(config)
    for problem in problems:
        yield "error", problem
    for host in config.hosts:
        yield from _certificate_findings(config, host)
    if not any(p.startswith(f"{config.path}: storage.url:") for p in problems):
        yield from _storage_findings(config)


def _certificate_findings(config, host):
    """Findings on the certificate of *host*, if it loads (a missing or
    unusable one is a preflight problem)."""
    from xmppd.core.tls import CertificateError, CertificateStore

    try:
        store = CertificateStore(config.tls.certificates, [host], config.tls.min_version)
    except CertificateError:
        return
    cert = store.certificates.get(host)
    if cert is None:
        return
    yield "ok", f"{host}: certificate {cert.cert_path} matches its key {cert.key_path}"
    yield _expiry_finding(host, cert)
    if cert.covers(host):
        yield "ok", f"{host}: certificate covers {host}"
    else:
        yield "error", (f"{host}: certificate {cert.cert_path} does not cover {host} "
                        f"(it names {', '.join(cert.names) or 'nothing'})")


def _expiry_finding(host, cert):
    now = datetime.datetime.now(datetime.timezone.utc)
    until = cert.not_after.strftime("%Y-%m-%d %H:%M UTC")
    if cert.expired(now):
        return "error", f"{host}: certificate {cert.cert_path} expired on {until}"
    if cert.not_after - now < EXPIRY_WARNING:
        return "warning", f"{host}: certificate {cert.cert_path} expires soon, on {until}"
    return "ok", f"{host}: certificate valid until {until}"


def _storage_findings(config):
    from xmppd.storage import SchemaOutdated, StorageError

    try:
        store = _connect(config, must_exist=True)
    except Failure as e:
        yield "error", str(e)
        return
    try:
        store.ping()
        yield "ok", "storage: database reachable"
        store.check_schema()
        yield "ok", "storage: schema current"
    except SchemaOutdated as e:
        yield "error", f"{config.path}: storage.url: {e}"
    except StorageError as e:
        yield "error", _database_problem(config, e)
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
