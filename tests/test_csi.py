"""Client State Indication (XEP-0352), in memory: what an inactive session
holds back, what goes out at once, and in which order."""

import types

import pytest

from tests.harness import Client, add_user, error_condition, make_server, online, reload
from xmppd.core.negotiation import SESSION_CARRIER_LOST
from xmppd.core.xmlstream import parse_stanza
from xmppd.jid import JID
from xmppd.modules.csi import superseding_key
from xmppd.modules.stream_management import NAME as SM, NS_SM
from xmppd.storage import RosterItem
from xmppd.tap import MODULES

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
INACTIVE = "<inactive xmlns='urn:xmpp:csi:0'/>"
ACTIVE = "<active xmlns='urn:xmpp:csi:0'/>"
CHATSTATES = "http://jabber.org/protocol/chatstates"
CARBONS = "urn:xmpp:carbons:2"


@pytest.fixture
def server(tmp_path):
    """Alice, with Bob and Carol as contacts (subscriptions both ways)."""
    server = make_server(tmp_path, modules=MODULES + ("csi",))
    for user in (ALICE, BOB, CAROL):
        add_user(server, user)
    for contact in (BOB, CAROL):
        for user, other in ((ALICE, contact), (contact, ALICE)):
            local, domain = user.split("@")
            server.sql.set_roster_item(local, domain, RosterItem(jid=other, subscription="both"))
    return server


@pytest.fixture
def clients(server):
    """Bob and Carol online, then Alice, inactive."""
    bob, carol = online(server, BOB), online(server, CAROL)
    alice = online(server, ALICE)
    alice.send(INACTIVE)
    assert alice.take() == []  # no reply (§4.2)
    bob.take(), carol.take()
    return alice, bob, carol


def status(client, text):
    client.send(f"<presence><status>{text}</status></presence>")


def chat_state(client, state, to=ALICE + "/res"):
    client.send(f"<message to='{to}' type='chat'><{state} xmlns='{CHATSTATES}'/></message>")


def message(client, body, to=ALICE + "/res"):
    client.send(f"<message to='{to}' type='chat'><body>{body}</body></message>")


def seen(client):
    """What ``client`` received, as (kind, sender's localpart, what)."""
    return [describe(element) for element in client.take()]


def describe(element):
    sender = element.getAttribute("from", "").split("@")[0]
    for child in element.elements():
        if child.name == "status":
            return element.name, sender, str(child)
        if child.name == "body":
            return element.name, sender, str(child)
        if child.uri == CHATSTATES:
            return element.name, sender, child.name
    return element.name, sender, element.getAttribute("type")


def metric(server, name, labels=None):
    return server.metrics.registry.get_sample_value(f"xmppd_csi_{name}_total", labels) or 0


def session_of(server, client):
    [session] = server.sessions.resources(client.stream.user)
    return session


def module(setup):
    toy = types.ModuleType("tests.toy")
    toy.setup = setup
    return toy


# Discovery (§4.1) and indicating state (§4.2)


def test_the_feature_is_offered_after_authentication_only(server):
    client = Client(server)
    client.starttls()
    before = client.open()
    client.auth_plain(ALICE)
    after = client.open()
    assert ("urn:xmpp:csi:0", "csi") not in {(f.uri, f.name) for f in before.elements()}
    assert ("urn:xmpp:csi:0", "csi") in {(f.uri, f.name) for f in after.elements()}


def test_state_before_binding_is_not_claimed(server):
    client = Client(server)
    client.starttls()
    client.open()
    client.auth_plain(ALICE)
    client.open()
    client.send(INACTIVE)
    assert error_condition(client.take()[-1]) == "not-authorized" and client.closed


def test_a_session_that_never_went_inactive_is_unaffected(server):
    bob, alice = online(server, BOB), online(server, ALICE)
    bob.take()
    status(bob, "away")
    chat_state(bob, "composing")
    assert seen(alice) == [("presence", "bob", "away"), ("message", "bob", "composing")]
    assert "csi" not in session_of(server, alice).state
    assert metric(server, "held") == 0


# Holding back (§3.2)


def test_inactive_holds_presence_and_chat_states(server, clients):
    alice, bob, carol = clients
    status(bob, "away")
    chat_state(carol, "composing")
    bob.send("<presence type='unavailable'/>")
    assert alice.take() == []
    assert metric(server, "held") == 3


def test_the_newest_presence_per_contact_and_chat_state_per_conversation_go(server, clients):
    alice, bob, carol = clients
    bob_phone = online(server, BOB, "phone")
    alice.take()  # held: Bob's phone coming online
    status(bob, "one")
    status(carol, "away")
    chat_state(carol, "composing")
    status(bob, "two")
    status(bob_phone, "on the phone")
    chat_state(carol, "paused")
    alice.send(ACTIVE)
    assert seen(alice) == [("presence", "carol", "away"), ("presence", "bob", "two"),
                           ("presence", "bob", "on the phone"), ("message", "carol", "paused")]
    assert metric(server, "held") == 7 and metric(server, "dropped") == 3


def test_active_flushes_what_is_held_before_the_next_element(server, clients):
    """§5.1: the stanzas held go out before the answer to a later ping."""
    alice, bob, carol = clients
    status(bob, "away")
    chat_state(carol, "composing")
    alice.send(ACTIVE + "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert seen(alice) == [("presence", "bob", "away"), ("message", "carol", "composing"),
                           ("iq", "", "result")]
    assert "csi" not in session_of(server, alice).state
    status(bob, "back")
    assert seen(alice) == [("presence", "bob", "back")]
    assert metric(server, "flushes", {"reason": "active"}) == 1


def test_repeated_states_are_claimed(server, clients):
    alice, bob, _ = clients
    alice.send(INACTIVE)
    status(bob, "away")
    assert alice.take() == []
    alice.send(ACTIVE + ACTIVE)
    assert seen(alice) == [("presence", "bob", "away")] and not alice.closed


IMPORTANT = [
    ("<message to='alice@example.com/res' type='chat'><body>hi</body></message>",
     [("message", "carol", "hi")]),
    ("<message to='alice@example.com/res' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'/>"
     "</message>", [("message", "carol", "chat")]),
    ("<message to='alice@example.com/res'><received xmlns='urn:xmpp:receipts' id='1'/>"
     "</message>", [("message", "carol", None)]),
    # RFC 6121 §3.2.3: Carol's unavailable presence (held), then the unsubscription.
    ("<presence to='alice@example.com' type='unsubscribed'/>",
     [("presence", "carol", "unavailable"), ("presence", "carol", "unsubscribed")]),
    ("<iq to='alice@example.com/res' type='get' id='v'><query xmlns='jabber:iq:version'/></iq>",
     [("iq", "carol", "get")]),
]


@pytest.mark.parametrize("xml, expected", IMPORTANT)
def test_an_important_stanza_goes_at_once_after_what_is_held(server, clients, xml, expected):
    alice, bob, carol = clients
    status(bob, "away")
    chat_state(carol, "composing")
    carol.send(xml)
    assert seen(alice) == [("presence", "bob", "away"), ("message", "carol", "composing"),
                           *expected]
    assert "csi" in session_of(server, alice).state  # still inactive
    status(bob, "busy")
    assert alice.take() == []
    assert metric(server, "flushes", {"reason": "important"}) == 1


def test_carbons_of_chat_states_are_held(server, clients):
    alice, bob, _ = clients
    desktop = online(server, ALICE, "desktop")
    for client in (alice, desktop):
        client.send(f"<iq type='set' id='c'><enable xmlns='{CARBONS}'/></iq>")
    assert [e.name for e in desktop.take()] == ["iq"]
    assert alice.take()[-1].name == "iq"  # the answer was important
    chat_state(bob, "composing", to=ALICE + "/desktop")
    chat_state(bob, "paused", to=ALICE + "/desktop")
    assert alice.take() == []
    message(bob, "hi", to=ALICE + "/desktop")
    carbons = alice.take()
    assert [describe(carried(c)) for c in carbons] == [("message", "bob", "paused"),
                                                       ("message", "bob", "hi")]


def carried(carbon):
    [received] = carbon.elements(CARBONS, "received")
    return next(next(received.elements()).elements())


@pytest.mark.parametrize("xml, held", [
    ("<presence from='b@x/r'/>", True),
    ("<presence from='b@x/r' type='unavailable'/>", True),
    ("<presence from='b@x/r' type='subscribe'/>", False),
    ("<presence from='b@x/r' type='error'/>", False),
    (f"<message from='b@x/r' type='chat'><active xmlns='{CHATSTATES}'/>"
     "<no-store xmlns='urn:xmpp:hints'/><thread>t</thread></message>", True),
    (f"<message from='b@x/r' type='groupchat'><composing xmlns='{CHATSTATES}'/></message>", True),
    (f"<message from='b@x/r' type='chat'><active xmlns='{CHATSTATES}'/><body>hi</body>"
     "</message>", False),
    (f"<message from='b@x/r' type='error'><active xmlns='{CHATSTATES}'/></message>", False),
    ("<message from='b@x/r' type='headline'><event xmlns='http://jabber.org/protocol/pubsub"
     "#event'/></message>", False),
    ("<message from='b@x/r'/>", False),
    ("<iq from='b@x/r' type='result' id='1'/>", False),
])
def test_what_is_held_back(xml, held):
    assert (superseding_key(parse_stanza(xml)) is not None) == held


def test_chat_states_of_other_threads_do_not_supersede():
    def key(thread):
        return superseding_key(parse_stanza(
            f"<message from='b@x/r' to='a@x/r' type='chat'><thread>{thread}</thread>"
            f"<composing xmlns='{CHATSTATES}'/></message>"))
    assert key("one") == key("one") != key("two")


# The bound


def test_past_max_held_what_is_held_goes_out(server, clients, tmp_path):
    alice, bob, carol = clients
    reload(server, tmp_path, "[csi]\nmax_held = 3")
    status(bob, "one")
    status(bob, "two")  # supersedes: still one held
    chat_state(carol, "composing")
    assert alice.take() == []
    status(carol, "away")
    assert seen(alice) == [("presence", "bob", "two"), ("message", "carol", "composing"),
                           ("presence", "carol", "away")]
    status(bob, "three")
    assert alice.take() == []  # still inactive
    assert metric(server, "flushes", {"reason": "full"}) == 1


# The end of the stream (§5.2, XEP-0198)


def test_a_lost_carrier_flushes_through_later_filters_and_ends_inactivity(server):
    kept, counted = [], []

    def hibernation(api):
        """A toy stream management: keeps sessions whose carrier is lost;
        its filter (priority 0, after CSI's) sees what is sent to Alice."""
        def count(session, element):
            if session.jid.local == "alice":
                counted.append((session.carrier is None, describe(element)))
            return element

        api.hook(SESSION_CARRIER_LOST, lambda session: kept.append(session) or True)
        api.streams.add_outbound_filter(count)

    server.load(module(hibernation))
    bob, alice = online(server, BOB), online(server, ALICE)
    bob.take()
    alice.send(INACTIVE)
    counted.clear()
    status(bob, "away")
    chat_state(bob, "composing")
    assert counted == []
    alice.lose()
    [session] = kept
    assert session.carrier is None and "csi" not in session.state
    assert counted == [(True, ("presence", "bob", "away")),
                       (True, ("message", "bob", "composing"))]
    status(bob, "back")  # a hibernating session holds nothing back
    assert counted[-1] == (True, ("presence", "bob", "back"))
    assert metric(server, "flushes", {"reason": "carrier-lost"}) == 1


def test_stream_management_counts_what_goes_out_and_resumes_an_active_stream(server):
    """XEP-0198 counts a held stanza when it goes out; a stream that breaks
    flushes into its queue, and the resumed stream begins active (§5.2)."""
    bob, alice = online(server, BOB), online(server, ALICE)
    bob.take()
    alice.send(f"<enable xmlns='{NS_SM}' resume='true'/>" + INACTIVE)
    [enabled] = alice.take()
    status(bob, "away")
    chat_state(bob, "composing")
    assert alice.take() == [] and session_of(server, alice).state[SM].sent == 0
    alice.lose()
    resumed = resume(server, enabled['id'])
    assert seen(resumed) == [("resumed", "", None), ("presence", "bob", "away"),
                             ("message", "bob", "composing"), ("r", "", None)]
    status(bob, "back")
    assert seen(resumed) == [("presence", "bob", "back")]


def resume(server, previd):
    """A new stream of Alice's that resumes session ``previd`` with h=0."""
    resumed = Client(server)
    resumed.starttls()
    resumed.open()
    resumed.auth_plain(ALICE)
    resumed.open()
    resumed.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
    return resumed


def test_a_stream_that_takes_over_an_inactive_session_begins_active(server):
    """Resumed while the old stream is still there (XEP-0198 §5, the old one
    closed with conflict): the new stream begins active (XEP-0352 §4.2), and
    what was held goes after <resumed/>, counted by stream management."""
    bob, alice = online(server, BOB), online(server, ALICE)
    bob.take()
    alice.send(f"<enable xmlns='{NS_SM}' resume='true'/>" + INACTIVE)
    [enabled] = alice.take()
    status(bob, "away")
    assert alice.take() == []
    resumed = resume(server, enabled['id'])
    assert seen(resumed) == [("resumed", "", None), ("presence", "bob", "away"),
                             ("r", "", None)]
    assert session_of(server, resumed).state[SM].sent == 1
    status(bob, "back")
    assert seen(resumed) == [("presence", "bob", "back")]

def test_an_unbound_session_drops_its_state(server, clients):
    alice, bob, _ = clients
    old = session_of(server, alice)
    status(bob, "away")
    again = Client(server)
    again.login(ALICE, "res")  # replaces the inactive session (conflict)
    assert error_condition(alice.take()[-1]) == "conflict"
    assert old.unbound and "csi" not in old.state
    assert "csi" not in server.sessions.get(JID.parse(ALICE + "/res")).state
