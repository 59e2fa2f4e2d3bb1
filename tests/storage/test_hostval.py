"""Contract of the ``hostval`` store (xmppd.storage.kinds.HostValueStore):
values of a domain, scoped by store name, owned by no account."""

import threading

import pytest

from .conftest import KEYS


@pytest.fixture
def invites(store):
    return store.open("hostval", "invites")


def test_get_set_items_delete(invites):
    assert invites.get("example.org", "a") is None
    assert invites.items("example.org") == {}

    invites.set("example.org", "a", "1")
    invites.set("example.org", "b", "☃")
    invites.set("example.org", "a", "2")
    assert invites.get("example.org", "a") == "2"
    assert invites.items("example.org") == {"a": "2", "b": "☃"}

    assert invites.delete("example.org", "a") is True
    assert invites.delete("example.org", "a") is False
    assert invites.items("example.org") == {"b": "☃"}


def test_add_refuses_an_existing_key(invites):
    assert invites.add("example.org", "token", "first") is True
    assert invites.add("example.org", "token", "second") is False
    assert invites.get("example.org", "token") == "first"
    # The store stays usable after the refused insert.
    assert invites.add("example.org", "other", "x") is True


def test_take_returns_the_value_once(invites):
    invites.set("example.org", "token", "v")
    assert invites.take("example.org", "token") == "v"
    assert invites.take("example.org", "token") is None
    assert invites.get("example.org", "token") is None


def test_take_by_concurrent_callers_gives_one_value(invites):
    invites.set("example.org", "token", "v")
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        invites.take("example.org", "token"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=str) == [None, None, None, "v"]


def test_scoped_by_store_and_domain(store, invites):
    tokens = store.open("hostval", "tokens")
    invites.set("example.org", "k", "invite")
    invites.set("example.net", "k", "other domain")
    tokens.set("example.org", "k", "token")
    invites.set("", "k", "server-wide")
    assert invites.items("example.org") == {"k": "invite"}
    assert invites.items("example.net") == {"k": "other domain"}
    assert tokens.items("example.org") == {"k": "token"}
    assert invites.items("") == {"k": "server-wide"}


def test_not_removed_with_an_account(store, invites):
    store.create_account("alice", "example.org", KEYS)
    invites.set("example.org", "alice", "v")
    store.delete_account("alice", "example.org")
    assert invites.get("example.org", "alice") == "v"
