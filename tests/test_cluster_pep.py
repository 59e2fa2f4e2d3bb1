"""Personal eventing in a cluster (XEP-0163, docs/cluster.md), in memory:
two servers on one database as nodes ``a`` and ``b``, each with the
other's sessions in its directory.  An event published on one node reaches
each interested resource once, wherever it is bound, and a remote contact
from the node that received its presence last."""

import pytest
from twisted.internet import defer

from tests import test_client_caps as caps
from tests.harness import Client, add_user, keep_remote, make_server
from tests.test_pep import answer, befriend, events, options_form, owner_iq
from xmppd.cluster.directory import ClusterDirectory, encode
from xmppd.core.events import ACCOUNT_OFFLINE
from xmppd.core.stanzas import iq_result
from xmppd.core.xmlstream import FrameParser, parse_stanza, serialize
from xmppd.pubsub import NS_PUBSUB
from xmppd.storage import RosterItem

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
ERIN = "erin@example.com"  # no subscription yet
DAVE = "dave@remote.example/laptop"
NODE = "urn:xmpp:avatar:metadata"  # wanted by caps.FEATURES
# Another client: another ver, which the node of the publisher never sees.
BOB_FEATURES = (*caps.FEATURES, "http://jabber.org/protocol/tune+notify")
EXTRA = '[hosts."example.com"]\ncross_domain_messages = true'


class Node:
    """A server as a node of a two-node cluster in memory: what the server
    (``server.cluster``) and its :class:`ClusterDirectory` ask of their node,
    done on the other server (``peer``) at once; ``locks``, the
    cluster's, shared with the peer.  An account whose last session on the
    peer ended while none is bound here fires ``account/offline``, as on a
    node of :mod:`xmppd.cluster.node`."""

    def __init__(self, server, name, locks):
        self.server, self.node, self.peer, self.locks = server, name, None, locks
        self.told = []
        self._parser = FrameParser(10**6)
        server.cluster = self
        server.sessions = server.router.sessions = ClusterDirectory(
            self, server.sessions, lambda bare: server.hooks.notify(ACCOUNT_OFFLINE, bare))

    def tell(self, event, argument):
        self.told.append(event)
        self.peer.server.hooks.notify(event, argument)

    def publish_set(self, session):
        self.peer.server.sessions.mirror_set(self.node, session.jid.full, encode(session))

    def publish_del(self, session):
        self.peer.server.sessions.mirror_del(self.node, session.jid.full)

    def forward(self, node, jid, element):
        xml = serialize(element, default="", declared=False)
        self.peer.server.sessions.local.get(jid).send(self.peer.parse(xml))

    def forward_close(self, node, jid, condition, text=None):
        self.peer.server.sessions.local.get(jid).close(condition, text)

    def parse(self, xml):
        return self._parser.parse(xml)

    def lock(self, name):
        lock = self.locks.setdefault(name, defer.DeferredLock())
        return lock.acquire().addCallback(lambda lock: lock.release)


def pair(a, b):
    """Servers ``a`` and ``b`` as the nodes ``a`` and ``b`` of one cluster."""
    locks = {}
    node_a, node_b = Node(a, "a", locks), Node(b, "b", locks)
    node_a.peer, node_b.peer = node_b, node_a


@pytest.fixture
def nodes(tmp_path):
    """Servers ``a`` and ``b``, what they route to remote domains kept."""
    a = keep_remote(make_server(tmp_path, hosts=(), extra=EXTRA))
    b = keep_remote(make_server(tmp_path, hosts=(), extra=EXTRA, store=a.sql))
    pair(a, b)
    for user in (ALICE, BOB, CAROL):
        add_user(a, user)
    befriend(a, ALICE, BOB)
    befriend(a, ALICE, CAROL)
    return a, b


def online(server, user, resource="res", features=caps.FEATURES):
    """A client of ``user`` available with capabilities, its node's query
    for them answered."""
    client = Client(server)
    client.login(user, resource)
    client.send(caps.presence(ver_=caps.ver(features)))
    for query in caps.queries(client):
        caps.answer(client, query, features)
    client.take()
    return client


def publish(client, item_id, **options):
    """Publish item ``item_id`` to NODE; what the client gets is left to take."""
    client.send(f"<iq type='set' id='pub'><pubsub xmlns='{NS_PUBSUB}'><publish node='{NODE}'>"
                f"<item id='{item_id}'><metadata xmlns='{NODE}'/></item></publish>"
                f"{options_form(**options) if options else ''}</pubsub></iq>")


@pytest.mark.parametrize("bob_features", [caps.FEATURES, BOB_FEATURES],
                         ids=["caps-known-on-both", "caps-known-on-b"])
def test_an_event_reaches_each_resource_once_wherever_bound(nodes, bob_features):
    a, b = nodes
    bob = online(b, BOB, features=bob_features)  # before alice: her probe is answered on a
    alice = online(a, ALICE, "one")
    other = online(b, ALICE, "two")
    carol = online(a, CAROL)  # after alice: her presence reaches alice on a
    assert caps.queries(bob) == []  # a does not ask a client of b
    for client in (alice, other, carol):
        client.take()
    assert a.services["client_caps"].features(f"{BOB}/res") is None  # left to b
    publish(alice, "1")
    for client in (alice, other, bob, carol):
        assert events(client) == [("items", NODE, ["1"])], client.stream.user
    assert a.cluster.told == ["pep/notified"] and b.cluster.told == []


def test_retract_purge_and_delete_reach_each_resource_once(nodes):
    a, b = nodes
    alice, other, bob = online(a, ALICE, "one"), online(b, ALICE, "two"), online(b, BOB)
    publish(alice, "x", max_items="5")
    publish(alice, "y", max_items="5")
    for client in (other, bob):
        assert len(events(client)) == 2
    alice.send(f"<iq type='set' id='r'><pubsub xmlns='{NS_PUBSUB}'><retract node='{NODE}'>"
               "<item id='x'/></retract></pubsub></iq>")
    assert answer(alice, "r")["type"] == "result"
    assert owner_iq(alice, "set", f"<purge node='{NODE}'/>")["type"] == "result"
    assert owner_iq(alice, "set", f"<delete node='{NODE}'/>")["type"] == "result"
    for client in (other, bob):
        assert events(client) == [("retract", NODE, ["x"]), ("purge", NODE, []),
                                  ("delete", NODE, [])]


def test_a_contact_on_another_node_is_not_notified_without_a_subscription(nodes):
    a, b = nodes
    add_user(a, "dave@example.com")
    alice, dave = online(a, ALICE), online(b, "dave@example.com")
    publish(alice, "1", access_model="open")
    assert events(dave) == []


def remote_presence(server):
    """DAVE's available presence with caps to alice, received by
    ``server``, which asks DAVE for the features unless it knows them."""
    server.remote.clear()
    server.router.route(parse_stanza(caps.presence(to=ALICE).replace(
        "<presence", f"<presence from='{DAVE}'", 1)))
    for query in server.remote:
        server.router.route(iq_result(query, parse_stanza(caps.info(node=query.query["node"]))))
    server.remote.clear()
    assert server.services["client_caps"].features(DAVE) == frozenset(caps.FEATURES)


def test_a_remote_contact_is_notified_by_the_node_that_received_its_presence_last(nodes):
    a, b = nodes
    a.sql.set_roster_item("alice", "example.com",
                          RosterItem(DAVE.partition("/")[0], subscription="both"))
    alice = online(a, ALICE)
    remote_presence(a)
    remote_presence(b)  # the peer's next connection reached b
    publish(alice, "1")
    assert a.remote == []
    [notification] = b.remote
    assert notification["to"] == DAVE and f"<items node='{NODE}'>" in notification.toXml()


def subscribe(client, to, approver, back):
    """``client`` asks for the presence of ``to``, and ``approver``, a client
    of ``to``, approves it for ``back`` (RFC 6121 §3.1)."""
    client.send(f"<presence type='subscribe' to='{to}'/>")
    approver.send(f"<presence type='subscribed' to='{back}'/>")


@pytest.mark.parametrize("last", ["contact", "account"])
def test_the_last_item_reaches_a_new_contact_on_each_node(nodes, last):
    """Subscriptions both ways, the contact's resource on b approving last
    (its server sends alice the presence of each of its resources, RFC 6121
    §3.1.5) or alice on a (the contact becomes a subscriber, XEP-0163
    §4.3.4): each resource of the contact gets alice's last item once,
    from the node it is bound to."""
    a, b = nodes
    add_user(a, ERIN)
    alice = online(a, ALICE)
    publish(alice, "1")
    one, two = online(a, ERIN, "one"), online(b, ERIN, "two")
    for client in (alice, one, two):
        client.take()
    if last == "contact":
        subscribe(two, ALICE, alice, ERIN)
        subscribe(alice, ERIN, two, ALICE)
    else:
        subscribe(alice, ERIN, two, ALICE)
        subscribe(two, ALICE, alice, ERIN)
    for client in (one, two):
        assert events(client) == [("items", NODE, ["1"])], client.stream.session.jid


def test_one_node_alone_notifies_once(tmp_path):
    server = make_server(tmp_path)
    for user in (ALICE, BOB):
        add_user(server, user)
    befriend(server, ALICE, BOB)
    bob = online(server, BOB)
    alice, other = online(server, ALICE, "one"), online(server, ALICE, "two")
    for client in (bob, other):
        client.take()
    publish(alice, "1")
    for client in (alice, other, bob):
        assert events(client) == [("items", NODE, ["1"])]
