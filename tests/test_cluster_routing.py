"""Routing in a cluster, in memory: stanzas for a service another node
serves (group chat) or for a component connected to another node go to
that node; what it routes here is served here."""

import pytest

from tests.harness import Client, add_user, make_server, online
from xmppd.cluster.directory import ClusterDirectory
from xmppd.core.events import ACCOUNT_OFFLINE, SESSION_LOST
from xmppd.core.xmlstream import parse_stanza
from xmppd.jid import JID
from xmppd.storage import RosterItem

ROOM = "room@conference.example.com"


class OtherNodes:
    """The cluster node's side the router uses, with the other nodes'
    services and components as a test sets them."""

    node = "a"

    def __init__(self):
        self.placement = {}
        self.components = {}
        self.routed = []
        self.published = []

    def owner(self, domain):
        return self.placement.get(domain)

    def component_node(self, domain):
        return self.components.get(domain)

    def route_to(self, node, stanza):
        self.routed.append((node, stanza.element.toXml()))

    def publish_component(self, domain, connected):
        self.published.append((domain, connected))


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path)
    server.router.add_component("gw.example.com", "example.com")
    add_user(server, "alice@example.com")
    server.router.cluster = OtherNodes()
    return server


def enter(client):
    client.send(f"<presence to='{ROOM}/alice'><x xmlns='http://jabber.org/protocol/muc'/>"
                "</presence>")


def test_group_chat_served_by_another_node_is_routed_there(server):
    server.router.cluster.placement["conference.example.com"] = "b"
    alice = Client(server)
    alice.login("alice@example.com")
    enter(alice)
    assert alice.take() == []  # nothing answered here
    [(node, xml)] = server.router.cluster.routed
    assert node == "b" and f"to='{ROOM}/alice'" in xml and "from='alice@example.com/res'" in xml


def test_group_chat_served_here_is_answered_here(server):
    alice = Client(server)
    alice.login("alice@example.com")
    enter(alice)
    assert any(e.name == "presence" for e in alice.take())
    assert server.router.cluster.routed == []


def test_what_another_node_routes_here_is_served_even_if_it_moved_since(server):
    server.router.cluster.placement["conference.example.com"] = "b"
    alice = Client(server)
    alice.login("alice@example.com")
    presence = parse_stanza(f"<presence xmlns='jabber:client' to='{ROOM}/alice' "
                            "from='alice@example.com/res'>"
                            "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
    server.router.routed(presence)
    assert any(e.name == "presence" for e in alice.take())  # the room answered
    assert server.router.cluster.routed == []


def test_a_component_connected_to_another_node_is_reached_there(server):
    server.router.cluster.components["gw.example.com"] = "c"
    alice = Client(server)
    alice.login("alice@example.com")
    alice.send("<message to='user@gw.example.com' type='chat'><body>hi</body></message>")
    assert alice.take() == []
    assert [node for node, _ in server.router.cluster.routed] == ["c"]
    assert not server.router.attach("gw.example.com", object())  # connected elsewhere


def test_a_component_connecting_here_is_published(server):
    stream = object()
    assert server.router.attach("gw.example.com", stream)
    server.router.detach("gw.example.com", stream)
    assert server.router.cluster.published == [("gw.example.com", True),
                                               ("gw.example.com", False)]


def test_a_placed_service_starts_when_its_node_takes_it(tmp_path):
    server = make_server(tmp_path)
    started = []
    server.router.place("svc.example.com", started.append)
    assert started == ["svc.example.com"]  # no cluster: at once
    server.router.cluster = OtherNodes()
    server.router.place("other.example.com", started.append)
    assert started == ["svc.example.com"]  # the cluster node calls it


class LostRecord:
    """A session of a node that died, as the reaper sees it."""

    def __init__(self, jid, available):
        self.jid = JID.parse(jid)
        self.available = available


def test_contacts_of_a_lost_session_get_unavailable_presence(server):
    add_user(server, "bob@example.com")
    server.sql.set_roster_item("alice", "example.com",
                               RosterItem(jid="bob@example.com", subscription="both"))
    bob = online(server, "bob@example.com")
    server.hooks.notify(SESSION_LOST, LostRecord("alice@example.com/gone", available=False))
    assert bob.take() == []
    server.hooks.notify(SESSION_LOST, LostRecord("alice@example.com/gone", available=True))
    got = bob.take()
    assert any(e.name == "presence" and e.getAttribute("type") == "unavailable"
               and e["from"] == "alice@example.com/gone" for e in got), [e.toXml() for e in got]


def test_a_block_list_of_an_account_bound_elsewhere_is_kept_until_it_leaves(tmp_path):
    server = make_server(tmp_path)
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    directory = ClusterDirectory(Quiet(), server.sessions,
                                 lambda bare: server.hooks.notify(ACCOUNT_OFFLINE, bare))
    server.sessions = server.router.sessions = directory
    directory.mirror_set("b", "alice@example.com/laptop",
                         '{"a":true,"p":0,"f":[],"x":"","h":false}')
    lists = server.services["blocking"]
    bob = online(server, "bob@example.com")
    bob.send("<message to='alice@example.com/laptop' type='chat'><body>hi</body></message>")
    assert ALICE_BARE in lists._online  # read once, then kept
    directory.mirror_del("b", "alice@example.com/laptop")
    assert ALICE_BARE not in lists._online


ALICE_BARE = JID.parse("alice@example.com")


class Quiet:
    """A cluster node that publishes nothing and forwards nowhere."""

    def publish_set(self, session):
        pass

    def publish_del(self, session):
        pass

    def forward(self, node, jid, element):
        pass
