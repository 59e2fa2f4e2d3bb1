"""Bearer tokens of the HTTP admin API (xmppd.api_tokens): the records,
and ``xmppctl token create``, ``list`` and ``revoke`` on a database."""

import base64
import hashlib
import json

import pytest

from xmppd import api_tokens
from xmppd.ctl import main
from xmppd.storage.sql import SQLStore

CONFIG = """\
[storage]
url = "sqlite:///xmppd.sqlite"

[hosts."example.com"]
[hosts."example.net"]
"""


@pytest.fixture
def conf(tmp_path, capsys):
    path = tmp_path / "xmppd.toml"
    path.write_text(CONFIG)
    assert main(["-c", str(path), "migrate"]) == 0
    capsys.readouterr()
    return path


@pytest.fixture
def ctl(conf, capsys):
    """xmppctl on ``conf``: (exit status, stdout, stderr)."""
    def run(*argv):
        status = main(["-c", str(conf), *argv])
        out, err = capsys.readouterr()
        return status, out, err
    return run


def stored(conf):
    store = SQLStore(f"sqlite:///{conf.parent / 'xmppd.sqlite'}")
    try:
        return store.open("hostval", api_tokens.STORE).items(api_tokens.SERVER)
    finally:
        store.close()


def test_a_token_is_256_random_bits_and_its_record_round_trips():
    secret, token = api_tokens.make(["users", "stats"], ["example.com"], 1000.0, 60, "job")
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert secret != api_tokens.make(["users"], None, 0)[0]
    assert token.key == hashlib.sha256(secret.encode()).hexdigest()
    assert token.id == token.key[:12]
    assert api_tokens.parse(token.key, token.value()) == token
    assert token.covers("example.com") and not token.covers("example.net")
    assert not token.expired(1059.9) and token.expired(1060.0)
    forever = api_tokens.make(["users"], None, 0)[1]
    assert forever.covers("anything.example") and not forever.expired(10.0 ** 10)


@pytest.mark.parametrize("value", ["", "[]", "{}", '{"scopes": 5, "domains": null, '
                                   '"created": 0, "expires": null}',
                                   '{"scopes": [], "domains": null, "created": 0, '
                                   '"expires": null, "label": 7}'])
def test_records_that_are_not_tokens_are_none(value):
    assert api_tokens.parse("k" * 64, value) is None


def test_create_prints_the_token_once_and_stores_its_hash(conf, ctl):
    status, out, err = ctl("token", "create", "--scope", "users,sessions", "--domain",
                           "Example.COM", "--expires", "30d", "--label", "provisioning")
    assert status == 0
    secret = out.strip()
    assert out == secret + "\n" and len(secret) == 43
    key = hashlib.sha256(secret.encode()).hexdigest()
    assert err.startswith(f"token {key[:12]}: sessions,users on example.com, made ")
    records = stored(conf)
    assert list(records) == [key] and secret not in records[key]
    record = json.loads(records[key])
    assert record["scopes"] == ["sessions", "users"]
    assert record["domains"] == ["example.com"]
    assert record["expires"] - record["created"] == 30 * 86400
    assert record["label"] == "provisioning"


def test_create_without_domains_or_expiry(conf, ctl):
    secret = ctl("token", "create", "--scope", "stats")[1].strip()
    token = api_tokens.parse(*next(iter(stored(conf).items())))
    assert token.key == hashlib.sha256(secret.encode()).hexdigest()
    assert (token.domains, token.expires, token.label) == (None, None, None)


@pytest.mark.parametrize("arguments,message", [
    (["--scope", "users,root"], "unknown scope 'root'"),
    (["--scope", "stats", "--expires", "soon"], "not a duration"),
    (["--scope", "stats", "--expires", "0"], "not a duration"),
    (["--scope", "stats", "--expires", "1000w"], "at most 10 years"),
])
def test_create_refuses_bad_arguments(ctl, arguments, message):
    status, out, err = ctl("token", "create", *arguments)
    assert status == 2 and out == "" and message in err


def test_create_refuses_domains_not_hosted(conf, ctl):
    status, _, err = ctl("token", "create", "--scope", "stats", "--domain", "example.org")
    assert status == 1 and err.startswith("xmppctl: example.org is not a hosted domain")
    assert stored(conf) == {}


def test_list_shows_what_tokens_allow_never_the_tokens(conf, ctl):
    first = ctl("token", "create", "--scope", "stats", "--label", "grafana\x1b[2J")[1].strip()
    second = ctl("token", "create", "--scope", "users", "--domain", "example.net")[1].strip()
    status, out, _ = ctl("token", "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[-1] == "2 tokens"
    assert lines[0].startswith(hashlib.sha256(first.encode()).hexdigest()[:12] + "  stats on "
                               "every host, made ")
    assert lines[0].endswith('expires never, "grafana\\u001b[2J"')
    assert "users on example.net" in lines[1]
    assert first not in out and second not in out
    listed = json.loads(ctl("token", "list", "--json")[1])
    assert [(t["scopes"], t["domains"], t["expires"], t["expired"]) for t in listed] == [
        (["stats"], None, None, False), (["users"], ["example.net"], None, False)]


def test_revoke_by_id_or_token(conf, ctl):
    secret = ctl("token", "create", "--scope", "stats")[1].strip()
    other = ctl("token", "create", "--scope", "stats")[1].strip()
    token_id = hashlib.sha256(secret.encode()).hexdigest()[:12]
    assert ctl("token", "revoke", token_id)[1] == f"revoked token {token_id}\n"
    assert list(stored(conf)) == [hashlib.sha256(other.encode()).hexdigest()]
    status, _, err = ctl("token", "revoke", token_id)
    assert (status, err) == (1, f"xmppctl: no token '{token_id}'\n")
    assert ctl("token", "revoke", "--", other)[0] == 0  # (a token may start with -)
    assert stored(conf) == {}
