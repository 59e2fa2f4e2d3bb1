"""Two nodes of a cluster in memory, sharing one database: what one node
keeps in memory of an account (roster, block list, archiving preferences,
avatar hash, disabled and admin marks) follows a change made through the
other, and ending an account's streams on one node ends them on both
(docs/cluster.md)."""

import base64
import hashlib

import pytest
from twisted.internet import defer

from tests.harness import Client, add_user, error_condition, make_server, online, result
from tests.test_cluster_pep import pair
from tests.test_mam import bodies, query
from xmppd.jid import JID
from xmppd.tap import MODULES

ALICE = JID.parse("alice@example.com")
NS_ROSTER = "jabber:iq:roster"
NS_BLOCKING = "urn:xmpp:blocking"
NS_MAM = "urn:xmpp:mam:2"
VCARD, UPDATE = "vcard-temp", "vcard-temp:x:update"
BINVAL = "iVBORw0KGgo="  # a PNG signature
SHA1 = hashlib.sha1(base64.b64decode(BINVAL)).hexdigest()


class Peer:
    """The cluster node's side modules use (``tell``, ``lock``), with the
    other node in memory: what one node tells fires on the other at once,
    as the events channel delivers it; the locks are the two nodes'."""

    def __init__(self, name, other, locks):
        self.node = name
        self.other = other
        self.locks = locks

    def tell(self, event, argument):
        self.other.hooks.notify(event, argument)

    def lock(self, name):
        lock = self.locks.setdefault(name, defer.DeferredLock())
        return lock.acquire().addCallback(lambda lock: lock.release)


@pytest.fixture
def nodes(tmp_path):
    one = make_server(tmp_path, modules=(*MODULES, "mam"))
    two = make_server(tmp_path, modules=(*MODULES, "mam"), store=one.sql)
    locks = {}
    one.cluster, two.cluster = Peer("one", two, locks), Peer("two", one, locks)
    for user in ("alice@example.com", "bob@example.com"):
        add_user(one, user)
    return one, two


def login(server, user="alice@example.com", resource="res"):
    client = Client(server)
    client.login(user, resource)
    return client


def iq(client, type_, payload, id_="q"):
    """Send an iq; its answer (what else came is dropped)."""
    client.send(f"<iq type='{type_}' id='{id_}'>{payload}</iq>")
    [answer] = [e for e in client.take() if e.name == "iq" and e.getAttribute("id") == id_]
    assert answer["type"] == "result", answer.toXml()
    return answer


def closed_with(client):
    [error] = [e for e in client.take() if e.name == "error"]
    assert client.closed
    return error_condition(error)


def contacts(server):
    _, items = result(server.services["roster"].roster(ALICE))
    return [item.jid for item in items]


def test_a_roster_change_on_one_node_is_seen_on_the_other(nodes):
    one, two = nodes
    here, there = login(one, resource="a"), login(two, resource="b")
    iq(there, "get", f"<query xmlns='{NS_ROSTER}'/>")  # node two keeps the roster
    assert contacts(two) == []
    iq(here, "set", f"<query xmlns='{NS_ROSTER}'><item jid='bob@example.com'/></query>")
    assert contacts(two) == ["bob@example.com"]
    iq(here, "set", f"<query xmlns='{NS_ROSTER}'>"
                    "<item jid='bob@example.com' subscription='remove'/></query>")
    assert contacts(two) == []


def test_a_block_on_one_node_holds_on_the_other(nodes):
    one, two = nodes
    here, there = login(one, resource="a"), login(two, resource="b")
    bob = login(two, "bob@example.com")
    chat = "<message to='alice@example.com/b' type='chat'><body>hi</body></message>"
    iq(here, "set", f"<block xmlns='{NS_BLOCKING}'><item jid='bob@example.com'/></block>")
    there.take()  # the push
    bob.send(chat)
    [refused] = bob.take()
    assert error_condition(refused) == "service-unavailable"
    assert there.take() == []
    iq(here, "set", f"<unblock xmlns='{NS_BLOCKING}'><item jid='bob@example.com'/></unblock>")
    there.take()
    bob.send(chat)
    assert bob.take() == []
    assert [str(m.body) for m in there.take() if m.name == "message"] == ["hi"]


def test_archiving_preferences_set_on_one_node_apply_on_the_other(nodes):
    one, two = nodes
    here, there = login(one, resource="a"), login(two, resource="b")

    def default(client):
        return iq(client, "get", f"<prefs xmlns='{NS_MAM}'/>").firstChildElement()["default"]

    assert default(there) == "always"  # node two keeps the preferences
    iq(here, "set", f"<prefs xmlns='{NS_MAM}' default='never'/>")
    assert default(there) == "never"


def archived_after_deletion(one, two, alice):
    """``alice``, a client of alice's, sets archiving to never and bob, on
    node two, writes to her (node two reads her preferences); the account
    is deleted on node one and made again, and bob writes again: what the
    new account's archive holds."""
    bob = online(two, "bob@example.com")
    iq(alice, "set", f"<prefs xmlns='{NS_MAM}' default='never'/>")
    chat = "<message to='alice@example.com' type='chat'><body>{}</body></message>"
    bob.send(chat.format("not kept"))
    result(one.services["accounts"].delete(ALICE))
    add_user(one, "alice@example.com")
    bob.send(chat.format("kept"))
    return bodies(query(online(two, "alice@example.com"))[0])


def test_an_account_deleted_on_one_node_leaves_no_preferences_on_the_other(nodes):
    one, two = nodes
    assert archived_after_deletion(one, two, login(one, resource="a")) == ["kept"]


def test_preferences_of_an_account_bound_on_the_other_node_go_when_it_leaves(tmp_path):
    """With their directories, node two keeps the preferences of alice,
    bound on node one, until she has no session left (account/offline)."""
    one = make_server(tmp_path, modules=(*MODULES, "mam"))
    two = make_server(tmp_path, modules=(*MODULES, "mam"), store=one.sql)
    pair(one, two)
    for user in ("alice@example.com", "bob@example.com"):
        add_user(one, user)
    assert archived_after_deletion(one, two, online(one, "alice@example.com")) == ["kept"]


def test_a_vcard_set_on_one_node_changes_the_hash_in_presence_on_the_other(nodes):
    one, two = nodes
    here = login(one, resource="a")
    there, other = online(two, "alice@example.com", "b"), online(two, "alice@example.com", "other")

    def photo():
        """What ``other`` sees of the photo in the presence ``there`` sends."""
        other.take()
        there.send("<presence/>")
        [presence] = [e for e in other.take() if e.name == "presence"]
        update = next(presence.elements(UPDATE, "x"), None)
        return None if update is None else [str(p) for p in update.elements(UPDATE, "photo")]

    assert photo() is None  # no photo: node two keeps an empty hash
    iq(here, "set", f"<vCard xmlns='{VCARD}'><PHOTO><TYPE>image/png</TYPE>"
                    f"<BINVAL>{BINVAL}</BINVAL></PHOTO></vCard>")
    assert photo() == [SHA1]
    iq(here, "set", f"<vCard xmlns='{VCARD}'><FN>Alice</FN></vCard>")
    assert photo() == [""]  # removed during the session (XEP-0398 §4)


def test_disabling_on_one_node_ends_the_sessions_and_logins_on_the_other(nodes):
    one, two = nodes
    there = login(two, resource="b")
    accounts = one.services["accounts"]

    assert result(accounts.disable(ALICE)) == []  # nothing of alice's on node one
    assert two.services["accounts"].disabled(ALICE)
    assert closed_with(there) == "not-authorized"
    client = Client(two)
    client.starttls()
    client.open()
    assert client.auth_plain("alice@example.com").firstChildElement().name == "account-disabled"

    assert result(accounts.enable(ALICE)) is True
    assert not two.services["accounts"].disabled(ALICE)
    login(two, resource="again")


def test_admin_marks_follow_on_the_other_node(nodes):
    one, two = nodes
    accounts, elsewhere = one.services["accounts"], two.services["accounts"]
    result(accounts.make_admin(ALICE, "invitation"))
    assert elsewhere.is_admin(ALICE, "example.com")
    accounts.forget(ALICE, admin_only=True)  # xmppctl admins --revoke
    assert not elsewhere.is_admin(ALICE, "example.com")
    result(accounts.make_admin(ALICE, "invitation"))
    result(accounts.delete(ALICE))
    assert not elsewhere.is_admin(ALICE, "example.com")


def test_a_password_change_ends_the_streams_of_every_node_but_the_one_kept(nodes):
    one, two = nodes
    asking, other = login(one, resource="asking"), login(one, resource="other")
    there = login(two, resource="b")
    [keep] = [carrier.connection for carrier in one.streams
              if carrier.connection.session is not None
              and carrier.connection.session.jid.resource == "asking"]

    ended = result(one.services["accounts"].set_password(ALICE, "new", keep=keep))

    assert ended == ["alice@example.com/other"]  # what node one ended
    assert closed_with(other) == "reset"
    assert closed_with(there) == "reset"
    assert not asking.closed


def test_ending_one_resource_reaches_the_node_it_is_on(nodes):
    one, two = nodes
    b, c = login(two, resource="b"), login(two, resource="c")
    assert one.negotiation.end_account(JID.parse("alice@example.com/b"), "conflict",
                                       "kicked") == []
    assert closed_with(b) == "conflict"
    assert not c.closed


def test_a_roster_changes_on_one_node_while_the_other_holds_its_lock_waits(nodes):
    one, two = nodes
    alice = login(one)
    release = result(two.cluster.lock("roster:alice@example.com"))
    alice.send(f"<iq type='set' id='add'><query xmlns='{NS_ROSTER}'>"
               "<item jid='carol@example.com'/></query></iq>")
    assert [e for e in alice.take() if e.name == "iq"] == []  # waits for node two
    release()
    answers = [e for e in alice.take() if e.name == "iq" and e.getAttribute("id") == "add"]
    assert [a["type"] for a in answers] == ["result"]
