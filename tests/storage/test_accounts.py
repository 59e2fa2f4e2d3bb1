"""Contract of the ``accounts`` store (xmppd.storage.kinds.AccountStore)."""

import pytest

from xmppd.storage import ScramKeys, UserExists, UserNotFound

from .conftest import KEYS


@pytest.fixture
def accounts(store):
    return store.open("accounts")


def test_create_exists_delete(accounts):
    assert not accounts.exists("alice", "example.org")
    assert accounts.get_credentials("alice", "example.org") is None

    accounts.create("alice", "example.org", KEYS)
    assert accounts.exists("alice", "example.org")
    assert not accounts.exists("alice", "example.net")
    with pytest.raises(UserExists):
        accounts.create("alice", "example.org", KEYS)

    accounts.delete("alice", "example.org")
    assert not accounts.exists("alice", "example.org")
    with pytest.raises(UserNotFound):
        accounts.delete("alice", "example.org")
    with pytest.raises(UserNotFound):
        accounts.set_credentials("alice", "example.org", KEYS)


def test_credentials(accounts):
    accounts.create("alice", "example.org", KEYS)
    assert accounts.get_credentials("alice", "example.org") == KEYS

    new_keys = {"SHA-256": ScramKeys(b"new salt", 20000, b"\x04" * 32, b"\x05" * 32)}
    accounts.set_credentials("alice", "example.org", new_keys)
    assert accounts.get_credentials("alice", "example.org") == new_keys

    with pytest.raises(ValueError):
        accounts.set_credentials("alice", "example.org", {"MD5": KEYS["SHA-1"]})
    assert accounts.get_credentials("alice", "example.org") == new_keys


def test_add_credentials_only_to_unchanged_keys(accounts):
    sha1 = {"SHA-1": KEYS["SHA-1"]}
    sha256 = {"SHA-256": ScramKeys(b"salt", 4096, b"\x04" * 32, b"\x05" * 32)}
    assert not accounts.add_credentials("alice", "example.org", sha256, sha1)  # no account
    accounts.create("alice", "example.org", sha1)

    # The password changed since ``current`` was read: nothing added.
    assert not accounts.add_credentials("alice", "example.org", sha256, {})
    assert accounts.add_credentials("alice", "example.org", sha256, sha1)
    assert accounts.get_credentials("alice", "example.org") == {**sha1, **sha256}
    # A hash it has is not replaced.
    assert not accounts.add_credentials("alice", "example.org", sha256, {**sha1, **sha256})
    assert accounts.get_credentials("alice", "example.org") == {**sha1, **sha256}


def test_credentials_of_one_account_only(accounts):
    """An account without verifiers has none (not None: it exists); each
    account gets its own, by username and domain."""
    accounts.create("alice", "example.org", {})
    assert accounts.get_credentials("alice", "example.org") == {}
    other = {"SHA-256": ScramKeys(b"other salt", 4096, b"\x06" * 32, b"\x07" * 32)}
    accounts.create("alice", "example.net", other)
    accounts.create("bob", "example.org", KEYS)
    assert accounts.get_credentials("alice", "example.net") == other
    assert accounts.get_credentials("bob", "example.org") == KEYS
    assert accounts.get_credentials("alice", "example.org") == {}
    assert accounts.get_credentials("bob", "example.net") is None


def test_list(accounts):
    for user in [("zoe", "a.example"), ("bob", "b.example"), ("amy", "a.example")]:
        accounts.create(*user, KEYS)
    assert accounts.list() == [("amy", "a.example"), ("bob", "b.example"), ("zoe", "a.example")]
    assert accounts.list("a.example") == [("amy", "a.example"), ("zoe", "a.example")]
    assert accounts.list("c.example") == []


def test_shared_by_every_module(store):
    store.open("accounts", "one").create("alice", "example.org", KEYS)
    assert store.open("accounts", "other").exists("alice", "example.org")
