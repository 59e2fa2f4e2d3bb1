"""``AsyncStore``: the typed stores with Deferred-returning methods, built
from their interfaces, each call in its lane."""

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from xmppd.storage import RosterFull, RosterItem, UserExists
from xmppd.storage.deferred import AsyncStore, current_lane, immediate_runner
from xmppd.storage.kinds import BULK, INTERACTIVE, KINDS, methods

from .conftest import KEYS


def result_of(deferred):
    results = []
    deferred.addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


@pytest.fixture
def database(store):
    return AsyncStore(store, immediate_runner)


def test_typed_stores(database):
    accounts, roster = database.open("accounts"), database.open("roster")
    assert result_of(accounts.create("alice", "example.org", KEYS)) is None
    assert result_of(accounts.get_credentials("alice", "example.org")) == KEYS
    with pytest.raises(UserExists):
        result_of(accounts.create("alice", "example.org", KEYS))
    assert result_of(roster.set_item("alice", "example.org", RosterItem("b@c"))) == 1
    with pytest.raises(RosterFull):
        result_of(roster.set_item("alice", "example.org", RosterItem("d@c"), 1))
    vcard = database.open("keyval", "vcard")
    result_of(vcard.set_many("alice", "example.org", {"": "<vCard/>"}))
    assert result_of(database.open("keyval", "other").get_all("alice", "example.org")) == {}
    assert result_of(vcard.get_all("alice", "example.org")) == {"": "<vCard/>"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_only_the_interface_is_reachable(database, kind):
    store = database.open(kind, "name")
    assert {name for name in vars(store) if name != "kind"} == set(methods(kind))


def test_unknown_kind(database):
    with pytest.raises(ValueError, match="unknown store kind"):
        database.open("blobs")


def test_calls_are_named_and_run_in_their_lane(store):
    calls = []

    def runner(fn, *args, **kw):
        calls.append((fn.__name__, current_lane.get()))
        return defer.succeed(fn(*args, **kw))

    database = AsyncStore(store, runner)
    database.open("accounts").create("alice", "example.org", KEYS)
    database.open("accounts").get_credentials("alice", "example.org")
    database.open("offline").append_many([("alice", "example.org", "<message/>")], 10)
    database.open("offline").take_all("alice", "example.org")
    assert calls == [("accounts_create", INTERACTIVE),
                     ("accounts_get_credentials", INTERACTIVE),
                     ("offline_append_many", BULK), ("offline_take_all", INTERACTIVE)]
    assert current_lane.get() == INTERACTIVE
