"""Contract of the ``keyval`` store (xmppd.storage.kinds.KeyValueStore),
scoped by store name."""

import pytest

from xmppd.storage import StorageError, UserNotFound

from .conftest import KEYS


@pytest.fixture
def private(store, alice):
    return store.open("keyval", "private")


def test_get_set_delete(private):
    assert private.get("alice", "example.org", "urn:a") is None
    assert private.get_all("alice", "example.org") == {}

    private.set("alice", "example.org", "urn:a", "<a xmlns='urn:a'/>")
    private.set("alice", "example.org", "urn:b", "<b ☃/>")
    private.set("alice", "example.org", "urn:a", "<a xmlns='urn:a'>2</a>")
    assert private.get("alice", "example.org", "urn:a") == "<a xmlns='urn:a'>2</a>"
    assert private.get_all("alice", "example.org") == {
        "urn:a": "<a xmlns='urn:a'>2</a>", "urn:b": "<b ☃/>"}

    private.delete("alice", "example.org", "urn:a")
    private.delete("alice", "example.org", "urn:missing")
    assert private.get("alice", "example.org", "urn:a") is None
    assert private.get_all("alice", "example.org") == {"urn:b": "<b ☃/>"}

    private.delete_all("alice", "example.org")
    assert private.get_all("alice", "example.org") == {}


def test_set_many(private):
    private.set("alice", "example.org", "gone", "1")
    private.set("alice", "example.org", "kept", "2")
    private.set_many("alice", "example.org", {"gone": None, "kept": "3", "new": "4"})
    assert private.get_all("alice", "example.org") == {"kept": "3", "new": "4"}


def test_set_many_writes_all_or_nothing(private):
    private.set("alice", "example.org", "a", "before")
    with pytest.raises((StorageError, UnicodeError)):
        # The third value cannot be encoded for the database.
        private.set_many("alice", "example.org", {"a": "after", "b": "new", "c": "\ud800"})
    assert private.get_all("alice", "example.org") == {"a": "before"}


def test_scoped_per_name_and_account(store, alice):
    store.open("accounts").create("alice", "example.net", KEYS)
    blocking, last = store.open("keyval", "blocking"), store.open("keyval", "last")
    blocking.set("alice", "example.org", "eve@example.com", "")
    last.set("alice", "example.org", "eve@example.com", "status")
    blocking.set("alice", "example.net", "mallory@example.com", "")

    assert blocking.get_all("alice", "example.org") == {"eve@example.com": ""}
    assert last.get("alice", "example.org", "eve@example.com") == "status"
    assert blocking.get("alice", "example.net", "eve@example.com") is None

    blocking.delete_all("alice", "example.org")
    assert blocking.get_all("alice", "example.org") == {}
    assert last.get_all("alice", "example.org") == {"eve@example.com": "status"}
    assert blocking.get_all("alice", "example.net") == {"mallory@example.com": ""}


def test_missing_account(store):
    vcard = store.open("keyval", "vcard")
    assert vcard.get("alice", "example.org", "") is None
    assert vcard.get_all("alice", "example.org") == {}
    vcard.delete("alice", "example.org", "")
    vcard.delete_all("alice", "example.org")
    with pytest.raises(UserNotFound):
        vcard.set("alice", "example.org", "", "<vCard/>")
    with pytest.raises(UserNotFound):
        vcard.set_many("alice", "example.org", {"": None})


@pytest.mark.parametrize("name", [None, "", "x" * 65])
def test_needs_a_name(store, name):
    with pytest.raises(ValueError):
        store.open("keyval", name)
