"""Presence (RFC 6121 §4, §8.5): broadcasts, probes, unavailable presence,
directed presence, priority and the availability events, in memory."""

import pytest

from tests.harness import add_user, Client, error_condition, keep_remote, make_server
from xmppd.core.events import SESSION_AVAILABLE, SESSION_UNAVAILABLE
from xmppd.core.stanzas import make_stanza
from xmppd.storage import RosterItem

MODULES = ("bind", "roster", "presence", "subscription")
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
REMOTE = "dave@remote.example"


def new_server(tmp_path):
    server = make_server(tmp_path, modules=MODULES)
    for user in (ALICE, BOB, CAROL):
        add_user(server, user)
    return server


@pytest.fixture
def server(tmp_path):
    """The server, with what it routes to remote domains kept in ``server.remote``."""
    return keep_remote(new_server(tmp_path))


def subscribe(server, user, contact, subscription):
    local, domain = user.split("@")
    server.sql.set_roster_item(local, domain, RosterItem(jid=contact, subscription=subscription))


def mutual(server, a, b):
    subscribe(server, a, b, "both")
    subscribe(server, b, a, "both")


def login(server, user, resource, presence="<presence/>"):
    client = Client(server)
    client.login(user, resource)
    if presence:
        client.send(presence)
    return client


def drop(client):
    client.transport.loseConnection()
    client.stream.connectionLost(None)


def presences(client):
    return [(p.getAttribute("from"), p.getAttribute("type"))
            for p in client.take() if p.name == "presence"]


def test_initial_presence_makes_the_session_available(server):
    events = []
    server.hooks.add(SESSION_AVAILABLE, lambda s: events.append((s.available, s.priority)))
    alice = login(server, ALICE, "a",
                  "<presence><priority>5</priority><show>away</show></presence>")
    [session] = server.sessions.resources(alice.stream.user)
    assert session.available and session.priority == 5
    assert str(session.presence.show) == "away"
    assert events == [(True, 5)]
    alice.send("<presence><priority>-3</priority></presence>")
    assert session.priority == -3 and len(events) == 1  # an update is not initial presence


@pytest.mark.parametrize("priority", ["128", "-129", "high", "1.5", ""])
def test_invalid_priority_is_bad_request(server, priority):
    alice = login(server, ALICE, "a", presence=None)
    alice.send(f"<presence id='p'><priority>{priority}</priority></presence>")
    [error] = alice.take()
    assert error_condition(error) == "bad-request"
    assert not server.sessions.resources(alice.stream.user)[0].available


def test_default_priority_is_zero(server):
    alice = login(server, ALICE, "a", "<presence><priority>7</priority></presence>")
    alice.send("<presence/>")
    assert server.sessions.resources(alice.stream.user)[0].priority == 0


def test_broadcast_goes_to_subscribers_and_own_resources(server):
    subscribe(server, ALICE, BOB, "from")  # bob sees alice
    subscribe(server, ALICE, CAROL, "to")  # alice sees carol, not the reverse
    bob = login(server, BOB, "b")
    carol = login(server, CAROL, "c")
    other = login(server, ALICE, "other")
    bob.take(), carol.take(), other.take()
    alice = login(server, ALICE, "a", "<presence><status>hi</status></presence>")
    [received] = [p for p in bob.take() if p.name == "presence"]
    assert received["from"] == ALICE + "/a" and str(received.status) == "hi"
    assert (ALICE + "/a", None) not in presences(carol)
    assert (ALICE + "/a", None) in presences(other)
    own = presences(alice)
    assert (ALICE + "/a", None) in own  # one's own presence comes back (§4.2.2)
    assert (ALICE + "/other", None) in own  # and the other resources'


def test_initial_presence_probes_and_gets_contacts_presence(server):
    mutual(server, ALICE, BOB)
    subscribe(server, ALICE, REMOTE, "to")
    bob = login(server, BOB, "b", "<presence><show>dnd</show></presence>")
    alice = login(server, ALICE, "a")
    received = [p for p in alice.take() if p.name == "presence" and p["from"] == BOB + "/b"]
    assert [str(p.show) for p in received] == ["dnd"]
    [probe] = server.remote
    assert (probe["type"], probe["from"], probe["to"]) == ("probe", ALICE, REMOTE)
    assert (ALICE + "/a", None) in presences(bob)


def test_update_sends_no_probes(server):
    subscribe(server, ALICE, REMOTE, "both")
    alice = login(server, ALICE, "a")
    server.remote.clear()
    alice.send("<presence><show>away</show></presence>")
    assert [(p["to"], p.getAttribute("type")) for p in server.remote] == [(REMOTE, None)]


def test_probe_answers(server):
    subscribe(server, ALICE, BOB, "from")
    subscribe(server, ALICE, REMOTE, "to")
    bob = login(server, BOB, "b")
    bob.take()
    server.router.route(make_stanza("presence", to=ALICE, from_=BOB, type_="probe"))
    assert presences(bob) == [(ALICE, "unavailable")]  # alice is offline
    for account in (ALICE, "nobody@example.com"):  # not a subscriber; no such account
        server.router.route(make_stanza("presence", to=account, from_=REMOTE + "/r",
                                        type_="probe"))
    assert [(p["from"], p["to"], p["type"]) for p in server.remote] == [
        (ALICE, REMOTE, "unsubscribed"), ("nobody@example.com", REMOTE, "unsubscribed")]
    login(server, ALICE, "a1", "<presence><status>one</status></presence>")
    login(server, ALICE, "a2", "<presence><status>two</status></presence>")
    bob.take()
    server.router.route(make_stanza("presence", to=ALICE, from_=BOB, type_="probe"))
    answers = [(p["from"], str(p.status)) for p in bob.take()]
    assert sorted(answers) == [(ALICE + "/a1", "one"), (ALICE + "/a2", "two")]


def test_unavailable_from_the_client(server):
    mutual(server, ALICE, BOB)
    events = []
    server.hooks.add(SESSION_UNAVAILABLE,
                     lambda s: events.append((s.available, s.presence["type"])))
    bob = login(server, BOB, "b")
    alice = login(server, ALICE, "a")
    bob.take(), alice.take()
    alice.send("<presence type='unavailable'><status>bye</status></presence>")
    assert presences(bob) == [(ALICE + "/a", "unavailable")]
    assert presences(alice) == [(ALICE + "/a", "unavailable")]
    assert events == [(False, "unavailable")]
    bob.send("<presence><show>chat</show></presence>")
    assert presences(alice) == []  # no longer available: nothing delivered


def test_dropped_connection_is_unavailable(server):
    mutual(server, ALICE, BOB)
    events = []
    server.hooks.add(SESSION_UNAVAILABLE, lambda s: events.append(str(s.jid)))
    bob = login(server, BOB, "b")
    other = login(server, ALICE, "other")
    alice = login(server, ALICE, "a")
    bob.take(), other.take()
    drop(alice)
    assert presences(bob) == [(ALICE + "/a", "unavailable")]
    assert presences(other) == [(ALICE + "/a", "unavailable")]
    assert events == [ALICE + "/a"]


def test_dropped_connection_never_available_sends_nothing(server):
    mutual(server, ALICE, BOB)
    events = []
    server.hooks.add(SESSION_UNAVAILABLE, events.append)
    bob = login(server, BOB, "b")
    bob.take()
    alice = login(server, ALICE, "a", presence=None)
    drop(alice)
    assert presences(bob) == [] and events == []


def test_directed_presence_is_cleaned_up_with_unavailable(server):
    bob = login(server, BOB, "b")
    alice = login(server, ALICE, "a")
    bob.take()
    alice.send(f"<presence to='{BOB}/b'><show>xa</show></presence>")
    alice.send(f"<presence to='{REMOTE}'/>")
    alice.send(f"<presence to='{CAROL}'/>")
    alice.send(f"<presence to='{CAROL}' type='unavailable'/>")
    assert presences(bob) == [(ALICE + "/a", None)]
    server.remote.clear()
    drop(alice)
    assert presences(bob) == [(ALICE + "/a", "unavailable")]
    assert [(p["to"], p["type"]) for p in server.remote] == [(REMOTE, "unavailable")]


def test_directed_presence_to_a_subscriber_gets_one_unavailable(server):
    mutual(server, ALICE, BOB)
    bob = login(server, BOB, "b")
    alice = login(server, ALICE, "a")
    alice.send(f"<presence to='{BOB}/b'/>")
    bob.take()
    alice.send("<presence type='unavailable'/>")
    assert presences(bob) == [(ALICE + "/a", "unavailable")]


def test_directed_presence_before_initial_presence(server):
    bob = login(server, BOB, "b")
    bob.take()
    alice = login(server, ALICE, "a", presence=f"<presence to='{BOB}'/>")
    assert presences(bob) == [(ALICE + "/a", None)]
    drop(alice)
    assert presences(bob) == [(ALICE + "/a", "unavailable")]


def test_presence_to_bare_and_full_jids(server):
    bob1 = login(server, BOB, "b1")
    bob2 = login(server, BOB, "b2")
    idle = login(server, BOB, "idle", presence=None)
    bob1.take(), bob2.take(), idle.take()
    server.router.route(make_stanza("presence", to=BOB, from_=REMOTE + "/x"))
    assert presences(bob1) == presences(bob2) == [(REMOTE + "/x", None)]
    assert idle.take() == []  # only available resources get presence (§8.5.2.1.1)
    server.router.route(make_stanza("presence", to=BOB + "/idle", from_=REMOTE + "/x"))
    assert presences(idle) == [(REMOTE + "/x", None)] and bob1.take() == []
    server.router.route(make_stanza("presence", to=BOB + "/gone", from_=REMOTE + "/x"))
    assert bob1.take() == bob2.take() == []  # §8.5.3.2.3: ignored


def test_presence_to_unknown_user_is_ignored(server):
    alice = login(server, ALICE, "a")
    alice.take()
    alice.send("<presence to='nobody@example.com'/>")
    alice.send("<presence to='nobody@example.com' type='subscribe'/>")
    assert presences(alice) == []


def test_remote_bounce_is_not_answered(tmp_path):
    server = new_server(tmp_path)  # no federation: remote-server-not-found
    subscribe(server, ALICE, REMOTE, "both")
    alice = login(server, ALICE, "a")
    errors = [p for p in alice.take() if p.getAttribute("type") == "error"]
    assert {error_condition(e) for e in errors} == {"remote-server-not-found"}
    assert len(errors) == 2  # the broadcast's and the probe's, nothing more


def test_unknown_presence_type(server):
    alice = login(server, ALICE, "a")
    alice.take()
    alice.send(f"<presence type='bogus' to='{BOB}'/>")
    assert error_condition(alice.take()[0]) == "bad-request"
