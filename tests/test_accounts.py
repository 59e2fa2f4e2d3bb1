"""Tests for the ``accounts`` service (xmppd.modules.accounts): accounts
made, changed and deleted on the running server."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server, result
from xmppd.core.scram import DERIVED, check_password, derive_keys
from xmppd.jid import JID
from xmppd.modules.accounts import NotAPasswordHost, PasswordRefused
from xmppd.storage import UserExists, UserNotFound

ALICE = JID.parse("alice@example.com")


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, hosts=(),
                         modules=("bind", "accounts"),
                         extra='[hosts."example.com"]\nadmins = ["boss@example.com"]\n'
                               '[hosts."guest.example.com"]\nauthentication = "anonymous"\n')
    add_user(server, "alice@example.com")
    return server


@pytest.fixture
def accounts(server):
    return server.services["accounts"]


def closed_with(client):
    [error] = [e for e in client.take() if e.name == "error"]
    assert client.closed
    return error_condition(error)


def test_create_then_log_in(server, accounts):
    result(accounts.create(JID.parse("carol@example.com"), "pässword"))
    assert result(accounts.exists(JID.parse("carol@example.com"))) is True
    Client(server).login("carol@example.com", password="pässword")
    assert result(accounts.list("example.com")) == ["alice", "carol"]


def test_create_refuses_taken_names_bad_passwords_and_anonymous_hosts(accounts):
    with pytest.raises(UserExists):
        result(accounts.create(ALICE, "x"))
    with pytest.raises(PasswordRefused):
        result(accounts.create(JID.parse("carol@example.com"), ""))
    with pytest.raises(PasswordRefused):
        result(accounts.create(JID.parse("carol@example.com"), "bell\x07"))
    with pytest.raises(NotAPasswordHost):
        result(accounts.create(JID.parse("carol@guest.example.com"), "x"))
    with pytest.raises(NotAPasswordHost):
        result(accounts.create(JID.parse("carol@elsewhere.example"), "x"))


def test_set_password_ends_the_other_streams_with_reset(server, accounts):
    asking, other = Client(server), Client(server)
    asking.login("alice@example.com", "asking")
    other.login("alice@example.com", "other")

    ended = result(accounts.set_password(ALICE, "new", keep=_stream_of(server, "asking")))

    assert ended == ["alice@example.com/other"]
    assert closed_with(other) == "reset"
    assert not asking.closed
    assert plain(server, "secret") == "failure"
    assert plain(server, "new") == "success"
    with pytest.raises(UserNotFound):
        result(accounts.set_password(JID.parse("nobody@example.com"), "x"))


def plain(server, password):
    """The outcome of a PLAIN login as alice with ``password``."""
    client = Client(server)
    client.starttls()
    client.open()
    return client.auth_plain("alice@example.com", password).name


def _stream_of(server, resource):
    [stream] = [carrier.connection for carrier in server.streams
                if carrier.connection.session is not None
                and carrier.connection.session.jid.resource == resource]
    return stream


def test_delete_removes_the_account_and_ends_its_sessions(server, accounts):
    phone = Client(server)
    phone.login("alice@example.com", "phone")

    assert result(accounts.delete(ALICE)) == ["alice@example.com/phone"]

    assert closed_with(phone) == "not-authorized"
    assert result(accounts.exists(ALICE)) is False
    with pytest.raises(UserNotFound):
        result(accounts.delete(ALICE))


def test_admins_are_those_of_the_host(accounts):
    assert accounts.is_admin(JID.parse("boss@example.com/laptop"), "example.com")
    assert not accounts.is_admin(ALICE, "example.com")
    assert not accounts.is_admin(JID.parse("boss@example.com"), "guest.example.com")


def test_a_disabled_account_cannot_log_in_until_enabled(tmp_path, server, accounts):
    phone = Client(server)
    phone.login("alice@example.com", "phone")

    ended = result(accounts.disable(ALICE, "spam", by=JID.parse("boss@example.com")))

    assert ended == ["alice@example.com/phone"]
    assert closed_with(phone) == "not-authorized"
    assert accounts.disabled(JID.parse("alice@example.com/other"))
    client = Client(server)
    client.starttls()
    client.open()
    answer = client.auth_plain("alice@example.com")
    assert answer.name == "failure"
    assert answer.firstChildElement().name == "account-disabled"
    assert result(accounts.exists(ALICE)) is True
    # Kept in the database: a restarted server refuses the login too.
    restarted = make_server(tmp_path, hosts=(), modules=("bind", "accounts"),
                            extra='[hosts."example.com"]\n', store=server.sql)
    assert restarted.services["accounts"].disabled(ALICE)

    assert result(accounts.enable(ALICE)) is True
    assert result(accounts.enable(ALICE)) is False
    assert plain(server, "secret") == "success"
    with pytest.raises(UserNotFound):
        result(accounts.disable(JID.parse("nobody@example.com")))


def test_deleting_a_disabled_account_forgets_it(server, accounts):
    result(accounts.disable(ALICE))
    result(accounts.delete(ALICE))
    result(accounts.create(ALICE, "secret"))
    assert not accounts.disabled(ALICE)
    assert plain(server, "secret") == "success"


def test_a_plain_login_adds_the_verifiers_an_imported_account_lacks(server):
    """Accounts imported from Prosody or ejabberd have SCRAM-SHA-1 keys
    only: the first PLAIN login derives the others, so SCRAM-SHA-256 works."""
    store = server.sql.open("accounts")
    store.set_credentials("alice", "example.com", {"SHA-1": derive_keys("secret", "SHA-1")})

    assert plain(server, "secret") == "success"

    keys = store.get_credentials("alice", "example.com")
    assert set(keys) == set(DERIVED)
    assert all(check_password("secret", verifier) for verifier in keys.values())


def test_an_account_disabled_while_a_reload_reads_stays_disabled(tmp_path):
    from tests.paused_storage import pausable_server

    server = pausable_server(tmp_path, hosts=(), modules=("bind", "accounts"),
                             extra='[hosts."example.com"]\n')
    add_user(server, "alice@example.com")
    accounts = server.services["accounts"]
    server.runner.pause()
    accounts.load()  # as after a reload: a read of the disabled accounts...
    (read, fn, args, kw), admins = server.runner.calls  # the disabled, then the admins
    server.runner.calls[:] = [admins]
    before = fn(*args, **kw)  # ...made before alice is disabled...
    disabled = accounts.disable(ALICE)
    server.runner.flush()
    result(disabled)
    read.callback(before)  # ...whose answer comes after
    assert accounts.disabled(ALICE)
