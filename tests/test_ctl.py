"""Tests for xmppctl (xmppd.ctl) and xmppd.certs, run in-process on temporary trees."""

import datetime
import hashlib
import hmac
import io
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.python.failure import Failure

from xmppd import config as configuration
from xmppd.certs import make_self_signed
from xmppd.core.scram import HASHES, check_password
from xmppd.core.tls import Certificate
from xmppd.ctl import main
from xmppd.storage.sql import SQLStore

HEAD = SQLStore("sqlite://").schema_status()[1]

DOMAIN = "example.com"


def run(capsys, *argv):
    """Run xmppctl; returns (exit status, stdout, stderr)."""
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def failure(capsys, *argv):
    """Run xmppctl expecting a failure; returns its one stderr message."""
    status, _, err = run(capsys, *argv)
    assert status == 1
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmppctl: "), err
    return lines[0].removeprefix("xmppctl: ")


def free_ports(count):
    """``count`` TCP ports nothing listens on now."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture
def tree(tmp_path, capsys):
    """A directory made by ``xmppctl init``, listening on free ports."""
    directory = tmp_path / "srv"
    c2s_port, direct_tls_port = free_ports(2)
    status, _, _ = run(capsys, "init", directory, "--domain", DOMAIN,
                       "--c2s-port", c2s_port, "--direct-tls-port", direct_tls_port)
    assert status == 0
    return directory


@pytest.fixture
def conf(tree):
    return str(tree / "xmppd.toml")


@pytest.fixture
def ctl(capsys, conf):
    """xmppctl with the configuration of ``tree``: returns (status, stdout, stderr)."""
    return lambda *argv: run(capsys, "-c", conf, *argv)


@pytest.fixture
def ctl_failure(capsys, conf):
    return lambda *argv: failure(capsys, "-c", conf, *argv)


def credentials(conf, username):
    store = SQLStore(configuration.load(conf).storage.url)
    try:
        return store.get_credentials(username, DOMAIN)
    finally:
        store.close()


def assert_password(conf, username, password):
    keys = credentials(conf, username)
    assert set(keys) == set(HASHES)
    assert all(check_password(password, k) for k in keys.values())


def set_storage_url(conf, url):
    path = Path(conf)
    text = path.read_text().replace('url = "sqlite:///xmppd.sqlite"', f'url = "{url}"')
    path.write_text(text)


def check_lines(ctl):
    status, out, err = ctl("check")
    return status, out.splitlines(), err


# init


def test_init_creates_a_working_tree(tmp_path, capsys):
    directory = tmp_path / "srv"
    status, out, err = run(capsys, "init", directory, "--domain", "Example.COM",
                           "--c2s-port", "15222", "--direct-tls-port", "15223")
    assert (status, err) == (0, "")
    conf = str(directory / "xmppd.toml")
    assert f"twistd -n xmppd --config {conf}" in out
    assert f"xmppctl -c {conf} adduser" in out

    config = configuration.load(conf)
    assert list(config.hosts) == [DOMAIN]
    assert config.c2s.listen == ("tcp:15222",)
    assert config.c2s.direct_tls == ("tcp:15223",)
    assert config.storage.url == f"sqlite:///{directory}/xmppd.sqlite"
    assert config.tls.certificates == str(directory / "certs")

    key = directory / "certs" / f"{DOMAIN}.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = Certificate(str(directory / "certs" / f"{DOMAIN}.crt"), str(key))
    assert cert.covers(DOMAIN) and cert.covers(f"conference.{DOMAIN}")
    assert not cert.covers("a.b.example.com")
    cert.context(config.tls.min_version)

    store = SQLStore(config.storage.url)
    try:
        store.check_schema()
    finally:
        store.close()


def test_init_refuses_to_overwrite(tree, capsys):
    config = tree / "xmppd.toml"
    config.write_text("# mine\n")
    message = failure(capsys, "init", tree, "--domain", DOMAIN)
    assert message == f"{config} already exists (use --force to replace it)"
    assert config.read_text() == "# mine\n"


def test_init_force_replaces_and_keeps_accounts(tree, capsys, conf):
    assert run(capsys, "-c", conf, "adduser", f"ann@{DOMAIN}", "--password", "pw")[0] == 0
    old_cert = (tree / "certs" / f"{DOMAIN}.crt").read_bytes()
    status, _, _ = run(capsys, "init", tree, "--domain", DOMAIN, "--force")
    assert status == 0
    assert (tree / "certs" / f"{DOMAIN}.crt").read_bytes() != old_cert
    assert_password(conf, "ann", "pw")


def test_init_refuses_an_existing_certificate(tmp_path, capsys):
    make_self_signed(DOMAIN, str(tmp_path / "srv" / "certs"))
    message = failure(capsys, "init", tmp_path / "srv", "--domain", DOMAIN)
    assert message.endswith(f"{DOMAIN}.crt already exists (use --force to replace it)")
    assert not (tmp_path / "srv" / "xmppd.toml").exists()


def test_init_invalid_domain(tmp_path, capsys):
    assert failure(capsys, "init", tmp_path, "--domain", "bad domain").startswith(
        "invalid domain 'bad domain'")


# Accounts


def test_account_round_trip(ctl, conf):
    assert ctl("adduser", f"Ann@{DOMAIN}", "--password", "first") == (
        0, f"added ann@{DOMAIN}\n", "")
    assert ctl("adduser", f"bob@{DOMAIN}", "--password", "b")[0] == 0
    assert_password(conf, "ann", "first")
    assert not any(check_password("second", k) for k in credentials(conf, "ann").values())

    assert ctl("passwd", f"ann@{DOMAIN}", "--password", "second")[:2] == (
        0, f"changed the password of ann@{DOMAIN}\n")
    assert_password(conf, "ann", "second")
    assert ctl("users") == (0, f"ann@{DOMAIN}\nbob@{DOMAIN}\n", "")
    assert ctl("users", DOMAIN.upper()) == (0, f"ann@{DOMAIN}\nbob@{DOMAIN}\n", "")
    assert ctl("users", "example.org") == (0, "", "")

    assert ctl("deluser", f"ann@{DOMAIN}")[:2] == (0, f"deleted ann@{DOMAIN}\n")
    assert ctl("users") == (0, f"bob@{DOMAIN}\n", "")
    assert credentials(conf, "ann") is None


# Ending the sessions of a changed account


@pytest.fixture
def server(monkeypatch, conf):
    """Stands in for the running server behind the admin socket: records the
    requests (path, command, arguments, ann's credentials at that moment) and
    answers each with ``server.answer``."""

    class Server:
        answer = {"ok": True, "ended": []}
        requests = []

        def ask(self, path, command, **arguments):
            self.requests.append((path, command, arguments, credentials(conf, "ann")))
            return self.answer

    server = Server()
    monkeypatch.setattr("xmppd.ctl.ask", server.ask)
    return server


def test_deluser_ends_the_sessions_after_the_deletion(ctl, conf, server):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "pw")
    server.answer = {"ok": True, "ended": [f"ann@{DOMAIN}/a", f"ann@{DOMAIN}/b"]}
    assert ctl("deluser", f"ANN@{DOMAIN}") == (
        0, f"deleted ann@{DOMAIN}\nended 2 open sessions of ann@{DOMAIN}\n", "")
    path = configuration.load(conf).admin.socket
    assert server.requests == [
        (path, "end-sessions", {"jid": f"ann@{DOMAIN}", "reason": "account-deleted"}, None)]


def test_passwd_ends_the_sessions_after_the_change(ctl, conf, server):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "first")
    server.answer = {"ok": True, "ended": [f"ann@{DOMAIN}/a"]}
    assert ctl("passwd", f"ann@{DOMAIN}", "--password", "second") == (
        0, f"changed the password of ann@{DOMAIN}\nended 1 open session of ann@{DOMAIN}\n", "")
    [(_, command, arguments, keys)] = server.requests
    assert (command, arguments) == ("end-sessions",
                                    {"jid": f"ann@{DOMAIN}", "reason": "password-changed"})
    assert all(check_password("second", k) for k in keys.values())


def test_nothing_to_end_prints_nothing_more(ctl, server):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "pw")
    assert ctl("deluser", f"ann@{DOMAIN}") == (0, f"deleted ann@{DOMAIN}\n", "")


def test_sessions_not_ended_when_the_server_is_not_running(ctl, conf):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "pw")
    path = configuration.load(conf).admin.socket
    assert ctl("deluser", f"ann@{DOMAIN}") == (0, f"deleted ann@{DOMAIN}\n", (
        f"xmppctl: warning: the open sessions of ann@{DOMAIN} (if any) could not be ended: "
        f"xmppd is not running (no answer on {path}: No such file or directory)\n"))
    assert credentials(conf, "ann") is None


def test_sessions_not_ended_when_the_admin_socket_is_off(ctl, conf):
    Path(conf).write_text(Path(conf).read_text().replace('socket = "xmppd.sock"', 'socket = ""'))
    ctl("adduser", f"ann@{DOMAIN}", "--password", "first")
    assert ctl("passwd", f"ann@{DOMAIN}", "--password", "second") == (
        0, f"changed the password of ann@{DOMAIN}\n", (
            f"xmppctl: warning: the open sessions of ann@{DOMAIN} (if any) could not be "
            f"ended: {conf}: admin.socket is off; the running server cannot be reached\n"))
    assert_password(conf, "ann", "second")


def test_sessions_not_ended_when_the_server_refuses(ctl, server):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "pw")
    server.answer = {"ok": False, "error": "unknown command"}
    status, _, err = ctl("deluser", f"ann@{DOMAIN}")
    assert status == 0 and err == (
        f"xmppctl: warning: the open sessions of ann@{DOMAIN} (if any) could not be ended: "
        "the server refused 'end-sessions': unknown command\n")


# sessions and kick


SESSIONS = [
    {"jid": f"alice@{DOMAIN}/laptop", "address": "127.0.0.1:57712", "tls": "TLSv1.3",
     "since": 1767225600.0},
    {"jid": f"bob@{DOMAIN}/phone", "address": "[::1]:40000", "tls": None,
     "since": 1767229261.5},
]


def test_sessions_table(ctl, server):
    server.answer = {"ok": True, "sessions": [dict(s) for s in SESSIONS]}
    assert ctl("sessions") == (0, (
        "JID                       ADDRESS          TLS      SINCE\n"
        "alice@example.com/laptop  127.0.0.1:57712  TLSv1.3  2026-01-01T00:00:00Z\n"
        "bob@example.com/phone     [::1]:40000      -        2026-01-01T01:01:01Z\n"
        "2 sessions\n"), "")
    assert server.requests[0][1:3] == ("sessions", {})


def test_a_hibernating_session_has_no_address(ctl, server):
    server.answer = {"ok": True, "sessions": [
        {"jid": f"alice@{DOMAIN}/phone", "address": None, "tls": None, "since": 1767225600.0}]}
    assert ctl("sessions") == (0, (
        "JID                      ADDRESS      TLS  SINCE\n"
        "alice@example.com/phone  hibernating  -    2026-01-01T00:00:00Z\n"
        "1 session\n"), "")


def test_sessions_json_of_one_domain(ctl, server):
    server.answer = {"ok": True, "sessions": [dict(SESSIONS[1])]}
    status, out, _ = ctl("sessions", "--json", DOMAIN)
    assert status == 0 and json.loads(out) == [
        {"jid": f"bob@{DOMAIN}/phone", "address": "[::1]:40000", "tls": None,
         "since": "2026-01-01T01:01:01Z"}]
    assert server.requests[0][1:3] == ("sessions", {"domain": DOMAIN})


def test_no_sessions(ctl, server):
    server.answer = {"ok": True, "sessions": []}
    assert ctl("sessions") == (0, "JID  ADDRESS  TLS  SINCE\n0 sessions\n", "")


def test_kick(ctl, server):
    server.answer = {"ok": True, "ended": [f"alice@{DOMAIN}/laptop"]}
    assert ctl("kick", f"alice@{DOMAIN}/laptop") == (0, f"ended alice@{DOMAIN}/laptop\n", "")
    assert server.requests[0][1:3] == (
        "end-sessions", {"jid": f"alice@{DOMAIN}/laptop", "reason": "kicked"})


def test_kick_with_nobody_online(ctl_failure, server):
    assert ctl_failure("kick", f"alice@{DOMAIN}") == f"no open session of alice@{DOMAIN}"


def test_kick_refused(ctl_failure, server):
    server.answer = {"ok": False, "error": "invalid JID 'a@b@c': bad"}
    assert ctl_failure("kick", "a@b@c") == (
        "the server refused 'end-sessions': invalid JID 'a@b@c': bad")


def test_kick_when_the_server_is_not_running(ctl_failure, conf):
    path = configuration.load(conf).admin.socket
    assert ctl_failure("kick", f"alice@{DOMAIN}") == (
        f"xmppd is not running (no answer on {path}: No such file or directory)")


def fast_tokens(conf):
    """The FAST tokens (XEP-0484) of the tree's database, as the server
    keeps them, and its clock."""
    from twisted.internet.task import Clock

    from xmppd.modules.fast import Tokens
    from xmppd.storage.deferred import AsyncStore, immediate_runner

    config = configuration.load(conf)
    store = AsyncStore(SQLStore(config.storage.url), immediate_runner)
    return Tokens(store.open("keyval", "fast"), store.open("accounts"), b"k" * 32, Clock(),
                  lambda domain: config.options("fast", domain))


def fired(d):
    results = []
    d.addBoth(results.append)
    return results[0]


def test_kick_tokens_deletes_the_accounts_tokens_and_ends_its_sessions(ctl, conf, server):
    for user in ("ann", "bob"):
        ctl("adduser", f"{user}@{DOMAIN}", "--password", "pw")
    tokens = fast_tokens(conf)
    issued = {(user, agent): fired(tokens.issue(user, DOMAIN, agent, "HT-SHA-256-NONE"))[0]
              for user, agent in (("ann", "phone"), ("ann", "laptop"), ("bob", "phone"))}

    def works(user, agent):
        token = issued[user, agent]
        proof = hmac.new(token.encode(), b"Initiator", hashlib.sha256).digest()
        return not isinstance(fired(tokens.verify(user, DOMAIN, agent, "HT-SHA-256-NONE",
                                                  proof, b"", None)), Failure)

    assert works("ann", "phone") and works("ann", "laptop")
    server.answer = {"ok": True, "ended": [f"ann@{DOMAIN}/phone"]}
    assert ctl("kick", "--tokens", f"ANN@{DOMAIN}") == (0, (
        f"deleted the FAST tokens of 2 clients of ann@{DOMAIN}\n"
        f"ended 1 open session of ann@{DOMAIN}\n"), "")
    assert not works("ann", "phone") and not works("ann", "laptop")
    assert works("bob", "phone")
    assert server.requests[0][1:3] == (
        "end-sessions", {"jid": f"ann@{DOMAIN}", "reason": "kicked"})


def test_kick_tokens_when_the_server_is_not_running(ctl, conf):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "pw")
    fired(fast_tokens(conf).issue("ann", DOMAIN, "phone", "HT-SHA-256-NONE"))
    path = configuration.load(conf).admin.socket
    assert ctl("kick", "--tokens", f"ann@{DOMAIN}") == (
        0, f"deleted the FAST tokens of 1 client of ann@{DOMAIN}\n", (
            f"xmppctl: warning: the open sessions of ann@{DOMAIN} (if any) could not be "
            f"ended: xmppd is not running (no answer on {path}: No such file or directory)\n"))
    store = SQLStore(configuration.load(conf).storage.url)
    try:
        assert store.open("keyval", "fast").get_all("ann", DOMAIN) == {}
    finally:
        store.close()


def test_kick_tokens_needs_an_account(ctl_failure, ctl):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "pw")
    assert ctl_failure("kick", "--tokens", f"bob@{DOMAIN}") == f"user bob@{DOMAIN} does not exist"
    assert ctl_failure("kick", "--tokens", f"ann@{DOMAIN}/phone") == (
        f"'ann@{DOMAIN}/phone' is a full JID: give the bare JID ann@{DOMAIN}")


def test_passwords_are_not_stored(ctl, conf):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "s3cret-pw")
    database = configuration.load(conf).storage.url.removeprefix("sqlite:///")
    assert b"s3cret-pw" not in Path(database).read_bytes()


def test_password_from_stdin(ctl, conf, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin\nignored\n"))
    assert ctl("adduser", f"ann@{DOMAIN}")[0] == 0
    assert_password(conf, "ann", "from stdin")
    monkeypatch.setattr(sys, "stdin", io.StringIO("no newline"))
    assert ctl("passwd", f"ann@{DOMAIN}")[0] == 0
    assert_password(conf, "ann", "no newline")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_password_prompted_twice_at_a_terminal(ctl, ctl_failure, conf, monkeypatch):
    answers = iter(["typed", "typed", "one", "other"])
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert ctl("adduser", f"ann@{DOMAIN}")[0] == 0
    assert_password(conf, "ann", "typed")
    assert ctl_failure("passwd", f"ann@{DOMAIN}") == "the passwords do not match"
    assert_password(conf, "ann", "typed")


@pytest.mark.parametrize("argv, stdin", [
    (["--password", ""], ""),
    ([], "\n"),
    ([], ""),
])
def test_empty_password_refused(ctl_failure, conf, monkeypatch, argv, stdin):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert ctl_failure("adduser", f"ann@{DOMAIN}", *argv) == "empty password refused"
    assert credentials(conf, "ann") is None


def test_password_with_control_characters_refused(ctl_failure, conf):
    message = ctl_failure("adduser", f"ann@{DOMAIN}", "--password", "a\x07b")
    assert message.startswith("password refused:") and "\x07" not in message
    assert credentials(conf, "ann") is None


@pytest.mark.parametrize("command", ["adduser", "passwd", "deluser"])
def test_jid_errors(ctl_failure, conf, command):
    extra = ["--password", "pw"] if command != "deluser" else []
    assert ctl_failure(command, "ann@example.org", *extra) == (
        f"example.org is not a hosted domain in {conf} (hosted: {DOMAIN})")
    assert ctl_failure(command, "a<b@example.com", *extra).startswith(
        "invalid JID 'a<b@example.com': ")
    assert ctl_failure(command, f"ann@{DOMAIN}/phone", *extra) == (
        f"'ann@{DOMAIN}/phone' is a full JID: give the bare JID ann@{DOMAIN}")
    assert ctl_failure(command, DOMAIN, *extra) == (
        f"'{DOMAIN}' is not an account JID: expected user@domain")


def test_existing_user(ctl, ctl_failure, conf):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "first")
    assert ctl_failure("adduser", f"ANN@{DOMAIN}", "--password", "second") == (
        f"user ann@{DOMAIN} already exists")
    assert_password(conf, "ann", "first")


def test_no_accounts_added_on_an_anonymous_host(ctl_failure, conf):
    Path(conf).write_text(Path(conf).read_text()
                          + '\n[hosts."guest.example.com"]\nauthentication = "anonymous"\n')
    assert ctl_failure("adduser", "ann@guest.example.com", "--password", "pw") == (
        "guest.example.com is an anonymous host: its accounts are made at login")


@pytest.mark.parametrize("argv", [["passwd", "--password", "pw"], ["deluser"]])
def test_unknown_user(ctl_failure, argv):
    command, *options = argv
    assert ctl_failure(command, f"nobody@{DOMAIN}", *options) == (
        f"user nobody@{DOMAIN} does not exist")


def test_missing_config(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "none.toml"
    expected = f"{missing}: cannot read: No such file or directory"
    assert failure(capsys, "-c", missing, "users") == expected
    monkeypatch.setenv("XMPPD_CONFIG", str(missing))
    assert failure(capsys, "adduser", f"ann@{DOMAIN}", "--password", "pw") == expected


def test_invalid_config(tmp_path, capsys):
    conf = tmp_path / "xmppd.toml"
    conf.write_text('log_level = "loud"\n[hosts."example.com"]\n')
    assert failure(capsys, "-c", conf, "users") == (
        f'{conf}: log_level: expected one of "debug", "info", "warn", "error", got "loud"')


def test_missing_database(ctl_failure, conf):
    set_storage_url(conf, "sqlite:///elsewhere.sqlite")
    database = Path(conf).parent / "elsewhere.sqlite"
    assert ctl_failure("users") == (
        f"{conf}: storage.url: cannot use the database: the database {database} does not "
        "exist: run 'xmppctl migrate'")
    assert not database.exists()


def test_unreachable_database(ctl_failure, conf, tmp_path):
    set_storage_url(conf, f"sqlite:///{tmp_path}")  # a directory, not a database
    message = ctl_failure("adduser", f"ann@{DOMAIN}", "--password", "pw")
    assert message.startswith(f"{conf}: storage.url: cannot use the database: ")


def test_usage_error(capsys):
    status, out, err = run(capsys, "adduser")
    assert status == 2 and out == ""
    assert err == ("xmppctl: the following arguments are required: JID "
                   "(see 'xmppctl adduser --help')\n")


# migrate


def test_migrate(ctl, conf):
    assert ctl("migrate") == (0, f"schema already current (revision {HEAD})\n", "")
    set_storage_url(conf, "sqlite:///new/db.sqlite")
    assert ctl("migrate") == (0, f"schema migrated from (empty) to {HEAD}\n", "")
    assert ctl("users") == (0, "", "")


# cert


def test_cert_ec_by_default_into_the_configured_directory(ctl, tree):
    status, out, _ = ctl("cert", "Chat.Example.COM")
    cert_path = tree / "certs" / "chat.example.com.crt"
    key_path = tree / "certs" / "chat.example.com.key"
    assert status == 0 and str(cert_path) in out and str(key_path) in out
    cert = Certificate(str(cert_path), str(key_path))
    assert isinstance(cert.x509.public_key(), ec.EllipticCurvePublicKey)
    assert cert.x509.public_key().curve.name == "secp256r1"
    assert cert.names == ["chat.example.com", "*.chat.example.com"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert.context("1.2")


def test_cert_out_and_force(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XMPPD_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "cert", DOMAIN)[0] == 0
    assert (tmp_path / f"{DOMAIN}.key").exists()
    assert failure(capsys, "cert", DOMAIN) == (
        f"./{DOMAIN}.crt already exists (use --force to replace it)")
    assert run(capsys, "cert", DOMAIN, "--out", "sub", "--force")[0] == 0
    assert run(capsys, "cert", DOMAIN, "--force")[0] == 0


def test_cert_rsa_on_request(ctl, tree):
    assert ctl("cert", DOMAIN, "--key", "rsa", "--force")[0] == 0
    cert = Certificate(str(tree / "certs" / f"{DOMAIN}.crt"), str(tree / "certs" / f"{DOMAIN}.key"))
    assert isinstance(cert.x509.public_key(), rsa.RSAPublicKey)


def test_make_self_signed(tmp_path):
    cert_path, key_path = make_self_signed(DOMAIN, str(tmp_path), "rsa")
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
    assert key.key_size == 2048
    assert cert.public_key() == key.public_key()
    assert cert.issuer == cert.subject
    assert cert.signature_hash_algorithm.name == "sha256"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=365)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert now - cert.not_valid_before_utc >= datetime.timedelta(minutes=59)
    extensions = {e.oid: e.value for e in cert.extensions}
    assert extensions[x509.BasicConstraints.oid].ca is False
    usage = extensions[x509.KeyUsage.oid]
    assert usage.digital_signature and usage.key_encipherment
    assert set(extensions[x509.ExtendedKeyUsage.oid]) == {
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH}
    with pytest.raises(FileExistsError):
        make_self_signed(DOMAIN, str(tmp_path))


# check


def write_certificate(stem, names, not_before, not_after):
    """STEM.crt, a certificate for DNS *names*, and its key STEM.key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(map(x509.DNSName, names)), critical=False)
        .sign(key, hashes.SHA256())
    )
    Path(f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def days_from_now(days):
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)


def errors(lines):
    return [line for line in lines if line.startswith("error: ")]


def test_check_ok_on_a_fresh_tree(ctl):
    status, lines, err = check_lines(ctl)
    assert (status, err) == (0, "")
    assert lines and all(line.startswith("ok: ") for line in lines)


def test_check_missing_certificate(ctl, conf, tree):
    os.remove(tree / "certs" / f"{DOMAIN}.crt")
    status, lines, err = check_lines(ctl)
    assert status == 1 and err == "xmppctl: check found 1 error\n"
    assert errors(lines) == [
        f"error: {conf}: tls.certificates: no certificate for {DOMAIN} in {tree / 'certs'} "
        "(expected DOMAIN.crt and DOMAIN.key; 'xmppctl cert DOMAIN' makes a self-signed one)"]


def test_check_mismatched_key(ctl, conf, tree, tmp_path):
    _, other_key = make_self_signed(DOMAIN, str(tmp_path / "other"))
    os.replace(other_key, tree / "certs" / f"{DOMAIN}.key")
    status, lines, _ = check_lines(ctl)
    assert status == 1
    assert errors(lines) == [
        f"error: {conf}: tls.certificates: {tree / 'certs' / DOMAIN}.crt / "
        f"{tree / 'certs' / DOMAIN}.key: key values mismatch"]


def test_check_reports_what_would_stop_the_server(ctl, conf, tree):
    text = Path(conf).read_text()
    c2s_port = int(text.split('listen = ["tcp:')[1].split('"')[0])
    Path(conf).write_text(text.replace('socket = "xmppd.sock"', 'socket = "run/xmppd.sock"'))
    with socket.socket() as taken:
        taken.bind(("", c2s_port))
        taken.listen()
        status, lines, err = check_lines(ctl)
    assert status == 1 and err == "xmppctl: check found 2 errors\n"
    assert errors(lines) == [
        f"error: {conf}: admin.socket: the directory {tree / 'run'} does not exist",
        f"error: {conf}: c2s.listen: cannot listen on tcp:{c2s_port}: address already in use"]


def test_check_a_missing_database_driver_once(ctl, conf):
    set_storage_url(conf, "mysql+nosuchdriver://localhost/xmppd")
    status, lines, _ = check_lines(ctl)
    assert status == 1
    [error] = errors(lines)
    assert error.startswith(f"error: {conf}: storage.url: ")
    assert not any(line.startswith("ok: storage") for line in lines)


def test_check_expired_certificate(ctl, tree):
    stem = tree / "certs" / DOMAIN
    write_certificate(stem, [DOMAIN], days_from_now(-30), days_from_now(-1))
    status, lines, _ = check_lines(ctl)
    assert status == 1
    [error] = errors(lines)
    assert error.startswith(f"error: {DOMAIN}: certificate {stem}.crt expired on ")


def test_check_certificate_expiring_soon(ctl, tree):
    stem = tree / "certs" / DOMAIN
    write_certificate(stem, [DOMAIN], days_from_now(-30), days_from_now(10))
    status, lines, _ = check_lines(ctl)
    assert status == 0
    [warning] = [line for line in lines if not line.startswith("ok: ")]
    assert warning.startswith(f"warning: {DOMAIN}: certificate {stem}.crt expires soon, on ")


def test_check_certificate_not_covering_the_domain(ctl, tree):
    stem = tree / "certs" / DOMAIN
    write_certificate(stem, ["example.org"], days_from_now(-1), days_from_now(90))
    status, lines, _ = check_lines(ctl)
    assert status == 1
    assert errors(lines) == [
        f"error: {DOMAIN}: certificate {stem}.crt does not cover {DOMAIN} (it names example.org)"]


def test_check_outdated_schema(ctl, conf):
    (Path(conf).parent / "empty.sqlite").touch()
    set_storage_url(conf, "sqlite:///empty.sqlite")
    status, lines, _ = check_lines(ctl)
    assert status == 1
    assert "ok: storage: database reachable" in lines
    assert errors(lines) == [
        f"error: {conf}: storage.url: the database schema is at revision (empty), "
        f"this xmppd needs {HEAD}: run 'xmppctl migrate'"]


def test_check_unreachable_database(ctl, conf, tmp_path):
    set_storage_url(conf, f"sqlite:///{tmp_path}")
    status, lines, _ = check_lines(ctl)
    assert status == 1
    [error] = errors(lines)
    assert error.startswith(f"error: {conf}: storage.url: cannot use the database: ")


def test_check_invalid_config(capsys, tmp_path):
    conf = tmp_path / "xmppd.toml"
    conf.write_text("[hosts]\n")
    status, out, err = run(capsys, "-c", conf, "check")
    assert status == 1 and err == "xmppctl: check found 1 error\n"
    assert out == f"error: {conf}: hosts: at least one hosted domain is required\n"


# The console script


def test_version(capsys):
    from xmppd import __version__

    assert run(capsys, "--version") == (0, f"xmppctl (xmppd) {__version__}\n", "")


HEAVY = ("sqlalchemy", "alembic", "twisted", "cryptography", "OpenSSL")


def imported_by(*argv):
    """The top-level packages of HEAVY that ``xmppctl ARGV`` imports, run
    in a new interpreter; and its exit status."""
    code = ("import sys\nfrom xmppd.ctl import main\nstatus = main(sys.argv[1:])\n"
            "print(status, *sorted({m.split('.')[0] for m in sys.modules}))")
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True,
                            text=True, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    status, *modules = result.stdout.splitlines()[-1].split()
    return int(status), sorted(set(modules) & set(HEAVY))


def test_help_and_version_import_no_heavy_library():
    assert imported_by("--help") == (0, [])
    assert imported_by("--version") == (0, [])


def test_admin_socket_commands_import_no_heavy_library(conf):
    # No server runs: the commands fail, having imported what they need.
    for command in (["status"], ["reload"], ["sessions"], ["kick", f"alice@{DOMAIN}"]):
        assert imported_by("-c", conf, *command) == (1, [])


def test_console_script_reports_a_missing_config(tmp_path):
    missing = tmp_path / "none.toml"
    result = subprocess.run(
        [sys.executable, "-m", "xmppd.ctl", "-c", str(missing), "users"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"xmppctl: {missing}: cannot read: No such file or directory\n"


def archive(conf, *dates, user="ann"):
    """Messages archived for ``user`` at midnight UTC of ``dates``
    (distinct ISO dates: the ids carry the time)."""
    from xmppd.storage.kinds import ArchiveRecord, first_archive_id

    store = SQLStore(configuration.load(conf).storage.url)
    try:
        store.open("archive", "mam").append_many([
            ArchiveRecord(user, DOMAIN,
                          str(first_archive_id(datetime.datetime.fromisoformat(
                              date + "T00:00:00+00:00"))),
                          f"bob@{DOMAIN}", None, "in", "<message/>")
            for date in dates])
    finally:
        store.close()


def test_mam_purge_of_one_account_before_a_date(ctl, conf):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "pw")
    archive(conf, "2025-01-01", "2026-06-02")
    assert ctl("mam", "purge", "--before", "2026-06-01", f"ann@{DOMAIN}") == (
        0, f"deleted 1 archived message of ann@{DOMAIN} from before 2026-06-01T00:00:00Z\n", "")
    assert ctl("mam", "purge", f"ann@{DOMAIN}")[1].startswith(
        f"deleted 1 archived message of ann@{DOMAIN} from before ")


def test_mam_purge_applies_the_retention_by_default(ctl, conf):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "pw")
    archive(conf, "2000-01-01", "2040-01-01")
    assert ctl("mam", "purge") == (0, "deleted 1 archived message older than mam.max_age\n", "")


def test_mam_purge_needs_a_limit_when_archives_are_kept_for_ever(capsys, conf):
    with open(conf, "a") as f:
        f.write("\n[mam]\nmax_age = 0\n")
    assert failure(capsys, "-c", conf, "mam", "purge") == (
        f"mam.max_age is 0 in {conf} (archives are kept for ever): give --before DATE or a JID")
    assert "invalid date 'soon'" in run(capsys, "-c", conf, "mam", "purge", "--before",
                                        "soon")[2]


def test_mam_purge_follows_each_hosts_retention(ctl, conf):
    with open(conf, "a") as f:
        f.write('\n[mam]\nmax_age = 0\n[hosts."example.com".mam]\nmax_age = 30\n')
    ctl("adduser", f"ann@{DOMAIN}", "--password", "pw")
    archive(conf, "2000-01-01", "2040-01-01")
    assert ctl("mam", "purge") == (0, "deleted 1 archived message older than mam.max_age\n", "")
