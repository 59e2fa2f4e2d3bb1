"""Contract of the ``offline`` store (xmppd.storage.kinds.OfflineStore):
messages kept for offline users (RFC 6121 §8.5.2.2.1, XEP-0160)."""

import pytest

from xmppd.storage import UserNotFound
from xmppd.storage.kinds import Appended

from .conftest import KEYS


@pytest.fixture
def offline(store, alice):
    store.open("accounts").create("bob", "example.org", KEYS)
    return store.open("offline")


def test_append_take_count(offline):
    assert offline.take_all("alice", "example.org") == []

    stanzas = [f"<message id='{n}'>☃</message>" for n in range(3)]
    assert [offline.append("alice", "example.org", s, 3) for s in stanzas] == [True] * 3
    assert not offline.append("alice", "example.org", "<message id='x'/>", 3)
    assert offline.append("bob", "example.org", "<message id='b'/>", 3)
    assert offline.count("alice", "example.org") == 3
    assert offline.total() == 4
    assert offline.peek("alice", "example.org") == stanzas
    assert offline.peek("nobody", "example.org") == []
    assert offline.count("alice", "example.org") == 3

    assert offline.take_all("alice", "example.org") == stanzas
    assert offline.count("alice", "example.org") == 0
    assert offline.total() == 1
    assert offline.take_all("alice", "example.org") == []
    assert offline.take_all("bob", "example.org") == ["<message id='b'/>"]

    assert offline.append("alice", "example.org", "<message id='y'/>", 3)
    assert offline.take_all("alice", "example.org") == ["<message id='y'/>"]


def test_append_many_keeps_each_limit(offline):
    offline.append("alice", "example.org", "<message id='old'/>", None)
    messages = [("alice", "example.org", "<message id='a1'/>"),
                ("bob", "example.org", "<message id='b1'/>"),
                ("nobody", "example.org", "<message id='n'/>"),
                ("alice", "example.org", "<message id='a2'/>"),
                ("bob", "example.org", "<message id='b2'/>"),
                ("bob", "example.org", "<message id='b3'/>")]
    assert offline.append_many(messages, 2) == [
        Appended.STORED, Appended.STORED, Appended.NO_ACCOUNT, Appended.FULL,
        Appended.STORED, Appended.FULL]
    assert offline.take_all("alice", "example.org") == [
        "<message id='old'/>", "<message id='a1'/>"]
    assert offline.take_all("bob", "example.org") == [
        "<message id='b1'/>", "<message id='b2'/>"]
    assert offline.append_many([], 2) == []


def test_no_limit(offline):
    stanzas = [("alice", "example.org", f"<message id='{n}'/>") for n in range(5)]
    assert offline.append_many(stanzas, None) == [Appended.STORED] * 5
    assert offline.count("alice", "example.org") == 5


def test_missing_account(offline):
    with pytest.raises(UserNotFound):
        offline.append("carol", "example.org", "<message/>", 10)
    assert offline.count("carol", "example.org") == 0
    assert offline.take_all("carol", "example.org") == []
