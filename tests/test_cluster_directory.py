"""Tests for xmppd.cluster.directory: this node's sessions and the mirror
of the other nodes' records."""

import json

import pytest
from twisted.words.xish import domish

from xmppd.cluster.directory import ClusterDirectory, RemoteRecord, encode
from xmppd.core.sessions import Session
from xmppd.core.xmlstream import FrameParser
from xmppd.jid import JID

ALICE = JID.parse("alice@example.com")


class FakeCluster:
    """What the directory asks of its node: publishing and forwarding."""

    def __init__(self):
        self.published = []
        self.forwarded = []
        self._parser = FrameParser(65536)

    def publish_set(self, session):
        self.published.append(("set", session.jid.full, json.loads(encode(session))))

    def publish_del(self, session):
        self.published.append(("del", session.jid.full))

    def forward(self, node, jid, element):
        self.forwarded.append((node, jid.full, element.toXml()))

    def forward_close(self, node, jid, condition, text=None):
        self.forwarded.append((node, jid.full, condition))

    def parse(self, xml):
        return self._parser.parse(xml)


def session(resource):
    return Session(ALICE.with_resource(resource), carrier=object(), negotiation=None)


def record(available=True, priority=0, flags=(), presence=""):
    return json.dumps({"a": available, "p": priority, "f": list(flags), "x": presence,
                       "h": False})


@pytest.fixture
def cluster():
    return FakeCluster()


@pytest.fixture
def directory(cluster):
    return ClusterDirectory(cluster)


def test_local_changes_are_published(directory, cluster):
    phone = session("phone")
    directory.add(phone)
    presence = domish.Element(("jabber:client", "presence"))
    presence.addElement("show", content="away")
    directory.set_presence(phone, True, 5, presence)
    directory.set_flag(phone, "carbons")
    assert directory.remove(phone)
    assert not directory.remove(phone)
    assert [entry[0] for entry in cluster.published] == ["set", "set", "set", "del"]
    fields = cluster.published[2][2]
    assert (fields["a"], fields["p"], fields["f"]) == (True, 5, ["carbons"])
    assert fields["x"] == "<presence xmlns='jabber:client'><show>away</show></presence>"


def test_remote_records_are_found_and_counted_apart(directory):
    directory.add(session("phone"))
    directory.mirror_set("b", "alice@example.com/laptop", record(priority=3))
    laptop = directory.get(ALICE.with_resource("laptop"))
    assert isinstance(laptop, RemoteRecord)
    assert (laptop.node, laptop.available, laptop.priority) == ("b", True, 3)
    assert {r.jid.resource for r in directory.resources(ALICE)} == {"phone", "laptop"}
    assert directory.count(ALICE) == 2
    assert directory.here(ALICE) == 1
    assert directory.count() == 1  # this node's sessions
    assert [s.jid.resource for s in directory.all()] == ["phone"]


def test_a_remote_record_sends_and_closes_through_its_node(directory, cluster):
    directory.mirror_set("b", "alice@example.com/laptop", record())
    laptop = directory.get(ALICE.with_resource("laptop"))
    message = domish.Element(("jabber:client", "message"))
    laptop.send(message)
    laptop.close("conflict")
    assert cluster.forwarded == [
        ("b", "alice@example.com/laptop", "<message xmlns='jabber:client'/>"),
        ("b", "alice@example.com/laptop", "conflict")]


def test_the_last_presence_of_a_remote_record_is_parsed_when_asked(directory):
    xml = "<presence xmlns='jabber:client'><priority>1</priority></presence>"
    directory.mirror_set("b", "alice@example.com/laptop", record(presence=xml))
    presence = directory.get(ALICE.with_resource("laptop")).presence
    assert presence.name == "presence" and str(presence.priority) == "1"


def test_a_local_bind_replaces_a_remote_record(directory):
    directory.mirror_set("b", "alice@example.com/phone", record())
    old = directory.add(session("phone"))
    assert isinstance(old, RemoteRecord) and old.node == "b"
    assert directory.count(ALICE) == 1
    # Node b then unbinds it: the local session stays.
    directory.mirror_del("b", "alice@example.com/phone")
    assert isinstance(directory.get(ALICE.with_resource("phone")), Session)


def test_a_record_rebound_on_another_node_is_not_dropped_by_the_first(directory):
    directory.mirror_set("b", "alice@example.com/phone", record())
    directory.mirror_set("c", "alice@example.com/phone", record())
    directory.mirror_del("b", "alice@example.com/phone")
    assert directory.get(ALICE.with_resource("phone")).node == "c"


def test_a_gone_node_takes_its_records_along(directory):
    directory.mirror_set("b", "alice@example.com/laptop", record())
    directory.mirror_set("b", "bob@example.com/x", record())
    directory.mirror_set("c", "alice@example.com/tablet", record())
    gone = directory.mirror_forget("b")
    assert sorted(r.jid.full for r in gone) == ["alice@example.com/laptop",
                                               "bob@example.com/x"]
    assert directory.remote_count() == 1
    assert directory.count(JID.parse("bob@example.com")) == 0


@pytest.mark.parametrize("full, text", [
    ("not a jid@", record()),
    ("alice@example.com/x", "{not json"),
    ("alice@example.com/x", json.dumps({"a": True})),
])
def test_bad_records_are_ignored(directory, full, text):
    directory.mirror_set("b", full, text)
    assert directory.remote_count() == 0


def test_an_account_gone_from_every_other_node_is_announced(cluster):
    gone = []
    directory = ClusterDirectory(cluster, offline=gone.append)
    directory.mirror_set("b", "alice@example.com/laptop", record())
    directory.mirror_set("c", "alice@example.com/tablet", record())
    directory.mirror_del("b", "alice@example.com/laptop")
    assert gone == []  # still on c
    directory.mirror_forget("c")
    assert gone == [ALICE]
    directory.add(session("phone"))
    directory.mirror_set("b", "alice@example.com/laptop", record())
    directory.mirror_del("b", "alice@example.com/laptop")
    assert gone == [ALICE]  # bound here


def test_a_session_unbound_is_not_published_again(directory, cluster):
    phone = session("phone")
    directory.add(phone)
    directory.remove(phone)
    directory.set_presence(phone, False, 0, None)  # its unavailable presence, after
    assert [entry[0] for entry in cluster.published] == ["set", "del"]
