"""Invitation tokens, records and URIs (xmppd.invitations: XEP-0401,
XEP-0445, XEP-0379), the ``[invites] expires`` option, and ``xmppctl
invite``, run in-process on a tree made by ``xmppctl init``."""

import hashlib
import json
import re
import time
from datetime import timezone

import pytest

from tests.harness import make_config
from tests.test_ctl import failure, free_ports, run
from xmppd import config as configuration
from xmppd import invitations
from xmppd.storage.sql import SQLStore

DOMAIN = "example.com"
TOKEN = re.compile(r"preauth=([A-Za-z0-9_-]+)")


# Tokens, records, URIs


def test_tokens_are_long_random_and_kept_as_their_hash():
    tokens = {invitations.new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{24}", token) for token in tokens)  # 144 bits
    token = tokens.pop()
    assert invitations.key(token) == hashlib.sha256(token.encode()).hexdigest()


def test_an_operators_invitation_registers_on_the_domain():
    made = invitations.make(DOMAIN, 1_800_000_000, 3600)
    assert made.uri == f"xmpp:example.com?register;preauth={made.token}"
    assert made.url is None
    assert (made.created.timestamp(), made.expires.timestamp()) == (1_800_000_000,
                                                                    1_800_003_600)
    assert made.expires.tzinfo == timezone.utc
    assert made.key == invitations.key(made.token) and made.id == made.key[:12]
    on_web = invitations.presented(made, made.token, "https://example.com:5281/")
    assert on_web.url == f"https://example.com:5281/invite/example.com/{made.token}"


def test_a_users_invitation_adds_them_as_a_contact():
    made = invitations.make(DOMAIN, 0, 60, inviter="jürgen@example.com", ibr=True)
    assert made.uri == f"xmpp:j%C3%BCrgen@example.com?roster;preauth={made.token};ibr=y"
    closed = invitations.make(DOMAIN, 0, 60, inviter="bob@example.com", ibr=False)
    assert closed.uri == f"xmpp:bob@example.com?roster;preauth={closed.token}"


def test_records_are_read_back_and_junk_is_none():
    made = invitations.make(DOMAIN, 1000, 60, inviter="bob@example.com", reusable=True)
    back = invitations.parse(DOMAIN, made.key, made.value())
    assert (back.inviter, back.created, back.expires, back.reusable, back.token) == (
        "bob@example.com", made.created, made.expires, True, None)
    assert not back.expired(1059) and back.expired(1060)
    for junk in ("", "nonsense", "[]", "{}", '{"inviter": null, "created": "x", '
                 '"expires": 1, "reusable": false}',
                 '{"inviter": null, "created": 1e300, "expires": 1, "reusable": false}'):
        assert invitations.parse(DOMAIN, made.key, junk) is None


def test_tokens_and_ids_are_matched_to_keys():
    keys = {invitations.key(token): "" for token in ("one", "two")}
    one = invitations.key("one")
    assert invitations.matching(keys, "one") == one
    assert invitations.matching(keys, one[:12]) == one
    assert invitations.matching(keys, one) == one
    assert invitations.matching(keys, one[:11]) is None  # too short to name one
    assert invitations.matching(keys, "three") is None
    assert invitations.matching(keys, "") is None
    for nothing in (None, "", "x" * 101):
        assert invitations.lookup_key(nothing) is None


@pytest.mark.parametrize("text, seconds", [("3600", 3600), ("90s", 90), ("30m", 1800),
                                           ("12h", 43200), (" 7D ", 604800), ("2w", 1209600),
                                           ("366d", 366 * 86400)])
def test_durations(text, seconds):
    assert invitations.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0d", "7 d", "-1d", "1.5d", "7y", "367d", "99999w",
                                  "9" * 40])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        invitations.duration(text)


def test_the_expires_option_takes_seconds_or_a_duration(tmp_path):
    def expires(value):
        config = make_config(tmp_path, extra=f"[invites]\nexpires = {value}\n")
        return config.options("invites", DOMAIN).expires

    assert make_config(tmp_path).options("invites").expires == 7 * 86400
    assert expires('"2w"') == 1209600.0
    assert expires("3600") == 3600.0
    assert expires("1.5") == 1.5
    for bad in ('"forever"', "0", "-5", "true", str(400 * 86400), '"0d"'):
        with pytest.raises(configuration.ConfigError, match="invites.expires"):
            expires(bad)


# xmppctl invite


@pytest.fixture
def conf(tmp_path, capsys):
    c2s_port, direct_tls_port = free_ports(2)
    directory = tmp_path / "srv"
    assert run(capsys, "init", directory, "--domain", DOMAIN, "--c2s-port", c2s_port,
               "--direct-tls-port", direct_tls_port)[0] == 0
    path = directory / "xmppd.toml"
    path.write_text(path.read_text() + '[hosts."other.example"]\n'
                    '[hosts."guest.example"]\nauthentication = "anonymous"\n')
    assert run(capsys, "-c", path, "adduser", f"alice@{DOMAIN}", "--password", "pw")[0] == 0
    return path


@pytest.fixture
def ctl(capsys, conf):
    return lambda *argv: run(capsys, "-c", conf, "invite", *argv)


@pytest.fixture
def ctl_failure(capsys, conf):
    return lambda *argv: failure(capsys, "-c", conf, "invite", *argv)


def records(conf, domain=DOMAIN):
    store = SQLStore(configuration.load(str(conf)).storage.url)
    try:
        return store.open("hostval", "invites").items(domain)
    finally:
        store.close()


def allow_registration(conf):
    conf.write_text(conf.read_text().replace(
        "[hosts.", '[register]\nallow = true\n[http]\nexternal_url = "https://{host}/"\n'
        "[hosts.", 1))


def test_invite_makes_an_invitation_kept_hashed(ctl, conf):
    before = time.time()
    status, out, err = ctl(DOMAIN)
    assert status == 0
    heading, uri, url = out.splitlines()
    [token] = TOKEN.findall(uri)
    key = invitations.key(token)
    assert uri == f"xmpp:example.com?register;preauth={token}"
    assert heading.startswith(f"invitation {key[:12]} to example.com, single use, expires ")
    assert url == "(no landing page: there is no [http] listener)"
    assert err == ('xmppctl: warning: registration is off on example.com: set '
                   '[hosts."example.com".register] allow = true (or [register]) '
                   'for the invitation to work\n')
    stored = records(conf)
    assert list(stored) == [key] and token not in json.dumps(stored)
    record = json.loads(stored[key])
    assert record["inviter"] is None and record["reusable"] is False
    assert before <= record["created"] <= time.time()
    assert record["expires"] - record["created"] == 7 * 86400


def test_invite_with_registration_and_a_web_listener(ctl, conf):
    allow_registration(conf)
    status, out, err = ctl(DOMAIN, "--reusable", "--expires", "2h")
    assert (status, err) == (0, "")
    heading, uri, url = out.splitlines()
    [token] = TOKEN.findall(uri)
    assert ", reusable, " in heading
    assert url == f"https://example.com/invite/example.com/{token}"
    record = json.loads(records(conf)[invitations.key(token)])
    assert record["reusable"] is True and record["expires"] - record["created"] == 7200


def test_invite_from_a_user(ctl, ctl_failure, conf):
    allow_registration(conf)
    status, out, _ = ctl(DOMAIN, "--inviter", "Alice@example.com")
    assert status == 0
    uri = out.splitlines()[1]
    [token] = TOKEN.findall(uri)
    assert uri == f"xmpp:alice@example.com?roster;preauth={token};ibr=y"
    assert json.loads(records(conf)[invitations.key(token)])["inviter"] == "alice@example.com"
    assert ctl_failure(DOMAIN, "--inviter", "nobody@example.com") == \
        "no account nobody@example.com"
    assert ctl_failure("other.example", "--inviter", "alice@example.com") == \
        "the inviter alice@example.com is not an account of other.example"
    assert ctl_failure(DOMAIN, "--inviter", "alice@example.com/phone").startswith(
        "'alice@example.com/phone' is a full JID")
    assert len(records(conf)) == 1


def test_invite_list_and_revoke(ctl, ctl_failure, conf):
    assert ctl(DOMAIN, "--list")[1] == "no valid invitations on example.com\n"
    first = TOKEN.findall(ctl(DOMAIN)[1])[0]
    second = TOKEN.findall(ctl(DOMAIN, "--reusable", "--inviter", "alice@example.com")[1])[0]
    status, out, _ = ctl(DOMAIN, "--list")
    assert status == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [invitations.key(first)[:12],
                                                   invitations.key(second)[:12]]
    assert lines[0].endswith("  single use  by the operator")
    assert lines[1].endswith("  reusable  by alice@example.com")
    assert first not in out and second not in out

    assert ctl(DOMAIN, f"--revoke={first}")[1] == \
        f"revoked invitation {invitations.key(first)[:12]} on example.com\n"
    assert ctl(DOMAIN, "--revoke", invitations.key(second)[:12])[0] == 0
    assert records(conf) == {}
    assert ctl_failure(DOMAIN, "--revoke", first) == \
        f"no invitation {first!r} on example.com"


def test_invite_list_drops_the_expired(ctl, conf):
    expired = invitations.make(DOMAIN, 1000, 60)
    store = SQLStore(configuration.load(str(conf)).storage.url)
    try:
        store.open("hostval", "invites").add(DOMAIN, expired.key, expired.value())
    finally:
        store.close()
    assert ctl(DOMAIN, "--list")[1] == "no valid invitations on example.com\n"
    assert records(conf) == {}


def test_invite_refuses_what_it_cannot_do(ctl, ctl_failure, capsys, conf):
    assert ctl_failure("nowhere.example") == \
        f"nowhere.example is not a hosted domain with password accounts in {conf}"
    assert ctl_failure("guest.example").startswith("guest.example is not a hosted domain")
    assert ctl_failure(DOMAIN, "--list", "--reusable") == \
        ("--expires, --reusable, --inviter and --admin make an invitation: "
         "not with --list or --revoke")
    for bad in ("0", "forever", "400d"):
        status, _, err = ctl(DOMAIN, "--expires", bad)
        assert status == 2 and "--expires" in err
    status, _, err = ctl(DOMAIN, "--list", "--revoke", "x")
    assert status == 2 and "not allowed with" in err
    assert records(conf) == {}



def test_an_admin_invitation_and_the_admins_command(ctl, ctl_failure, conf, capsys):
    status, out, _ = ctl(DOMAIN, "--admin")
    assert status == 0 and ", single use, for an admin, expires " in out.splitlines()[0]
    [token] = TOKEN.findall(out)
    assert json.loads(records(conf)[invitations.key(token)])["admin"] is True
    assert ctl_failure(DOMAIN, "--admin", "--reusable").startswith("an --admin invitation")
    assert ctl_failure(DOMAIN, "--admin", "--inviter", "alice@example.com").startswith(
        "an --admin invitation")

    admins = SQLStore(configuration.load(str(conf)).storage.url)
    try:
        admins.open("hostval", "admins").set(DOMAIN, "alice", '{"invitation": "0123456789ab"}')
    finally:
        admins.close()
    status, out, _ = run(capsys, "-c", conf, "admins", DOMAIN)
    assert (status, out) == (0, "alice@example.com  (invitation 0123456789ab)\n")
    status, out, err = run(capsys, "-c", conf, "admins", DOMAIN, "--revoke", "alice@example.com")
    assert status == 0 and out == "alice@example.com is no admin of example.com any more\n"
    assert "xmppd is not running" in err
    assert failure(capsys, "-c", conf, "admins", DOMAIN, "--revoke", "alice@example.com") == \
        "alice@example.com is no admin of example.com by invitation"
