"""Presence subscriptions (RFC 6121 §3, Appendix A) and pre-approval (§3.4), in memory.

The state tables of Appendix A are written out below from the RFC and
checked row by row: alice@example.com is the local user, her contact is
remote (contact@remote.example), so what the server routes to the contact
is seen on ``route/remote``.
"""

import pytest

from tests.harness import add_user, Client, error_condition, keep_remote, make_server
from xmppd.core.stanzas import make_stanza
from xmppd.storage import RosterItem

MODULES = ("bind", "roster", "presence", "subscription")
ALICE, BOB, CONTACT = "alice@example.com", "bob@example.com", "contact@remote.example"
NS_ROSTER = "jabber:iq:roster"
REQUESTS = "subscription-requests"

# Appendix A.1: (subscription, pending out, pending in)
STATES = {
    "None": ("none", False, False),
    "None+Out": ("none", True, False),
    "None+In": ("none", False, True),
    "None+Out+In": ("none", True, True),
    "To": ("to", False, False),
    "To+In": ("to", False, True),
    "From": ("from", False, False),
    "From+Out": ("from", True, False),
    "Both": ("both", False, False),
}

# Appendix A.2 (outbound: route?) and A.3 (inbound: deliver?), per stanza type:
# state -> (yes/no, new state).
A2 = {
    "subscribe": """
        None yes None+Out | None+Out yes None+Out | None+In yes None+Out+In
        None+Out+In yes None+Out+In | To yes To | To+In yes To+In
        From yes From+Out | From+Out yes From+Out | Both yes Both""",
    "unsubscribe": """
        None yes None | None+Out yes None | None+In yes None+In
        None+Out+In yes None+In | To yes None | To+In yes None+In
        From yes From | From+Out yes From | Both yes From""",
    "subscribed": """
        None no None | None+Out no None+Out | None+In yes From
        None+Out+In yes From+Out | To no To | To+In yes Both
        From no From | From+Out no From+Out | Both no Both""",
    "unsubscribed": """
        None no None | None+Out no None+Out | None+In yes None
        None+Out+In yes None+Out | To no To | To+In yes To
        From yes None | From+Out yes None+Out | Both yes To""",
}
A3 = {
    "subscribe": """
        None yes None+In | None+Out yes None+Out+In | None+In no None+In
        None+Out+In no None+Out+In | To yes To+In | To+In no To+In
        From no From | From+Out no From+Out | Both no Both""",
    "unsubscribe": """
        None no None | None+Out no None+Out | None+In yes None
        None+Out+In yes None+Out | To no To | To+In yes To
        From yes None | From+Out yes None+Out | Both yes To""",
    "subscribed": """
        None no None | None+Out yes To | None+In no None+In
        None+Out+In yes To+In | To no To | To+In no To+In
        From no From | From+Out yes Both | Both no Both""",
    "unsubscribed": """
        None no None | None+Out yes None | None+In no None+In
        None+Out+In yes None+In | To yes None | To+In yes None+In
        From no From | From+Out yes From | Both yes From""",
}


def rows(table):
    for type_, text in table.items():
        for cell in text.replace("\n", "|").split("|"):
            if cell.strip():
                state, answer, new = cell.split()
                yield type_, state, answer == "yes", new


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, modules=MODULES)
    add_user(server, ALICE)
    add_user(server, BOB)
    return keep_remote(server)


def login(server, user=ALICE, resource="a", available=True, roster=False):
    client = Client(server)
    client.login(user, resource)
    if roster:
        client.send(f"<iq type='get' id='r'><query xmlns='{NS_ROSTER}'/></iq>")
    if available:
        client.send("<presence/>")
    client.take()
    return client


def set_state(server, user, contact, state):
    """Put ``contact`` in the roster of ``user`` in ``state``."""
    subscription, out, pending_in = STATES[state]
    local, domain = user.split("@")
    server.sql.set_roster_item(local, domain, RosterItem(
        jid=contact, subscription=subscription, ask=out, pending_in=pending_in))
    if pending_in:
        request = f"<presence type='subscribe' from='{contact}' to='{user}'/>"
        server.sql.set_value(local, domain, REQUESTS, contact, request)


def state(server, user, contact):
    local, domain = user.split("@")
    item = server.sql.get_roster_item(local, domain, contact)
    requested = server.sql.get_value(local, domain, REQUESTS, contact) is not None
    if item is None:
        return "None+In" if requested else None
    assert item.pending_in == requested
    return next(name for name, value in STATES.items()
                if value == (item.subscription, item.ask, item.pending_in))


def types(elements):
    return [(e.name, e.getAttribute("type")) for e in elements]


@pytest.mark.parametrize("type_,before,routed,after", list(rows(A2)))
def test_outbound_state_table(server, type_, before, routed, after):
    set_state(server, ALICE, CONTACT, before)
    alice = login(server)
    server.remote.clear()
    alice.send(f"<presence type='{type_}' to='{CONTACT}/res'/>")
    sent = [e for e in server.remote if e.getAttribute("type") == type_]
    assert bool(sent) == routed
    if routed:
        assert (sent[0]["from"], sent[0]["to"]) == (ALICE, CONTACT)  # bare JIDs (§3)
    assert state(server, ALICE, CONTACT) == after


@pytest.mark.parametrize("type_,before,delivered,after", list(rows(A3)))
def test_inbound_state_table(server, type_, before, delivered, after):
    set_state(server, ALICE, CONTACT, before)
    alice = login(server)
    server.router.route(make_stanza("presence", to=ALICE + "/a", from_=CONTACT + "/x", type_=type_))
    got = [e for e in alice.take() if e.getAttribute("type") == type_]
    assert bool(got) == delivered
    if delivered:
        assert (got[0]["from"], got[0]["to"]) == (CONTACT, ALICE)
    assert state(server, ALICE, CONTACT) == after


@pytest.mark.parametrize("before", ["From", "From+Out", "Both"])
def test_request_from_a_subscriber_is_answered_by_the_server(server, before):
    set_state(server, ALICE, CONTACT, before)
    alice = login(server)
    server.remote.clear()
    server.router.route(make_stanza("presence", to=ALICE, from_=CONTACT, type_="subscribe"))
    assert alice.take() == []
    subscribed, current = server.remote
    assert (subscribed["type"], subscribed["from"], subscribed["to"]) == (
        "subscribed", ALICE, CONTACT)
    assert current.getAttribute("type") is None and current["from"] == ALICE + "/a"


def test_outbound_subscribe_adds_the_item_and_pushes(server):
    alice = login(server, roster=True)
    alice.send(f"<presence type='subscribe' to='{CONTACT}'/>")
    [push] = [e for e in alice.take() if e.name == "iq"]
    item = push.query.item
    assert (item["jid"], item["subscription"], item["ask"]) == (CONTACT, "none", "subscribe")


def test_approving_a_request_sends_presence_after_subscribed(server):
    set_state(server, ALICE, CONTACT, "None+In")
    alice = login(server)
    server.remote.clear()
    alice.send(f"<presence type='subscribed' to='{CONTACT}'/>")
    assert types(server.remote) == [("presence", "subscribed"), ("presence", None)]
    assert server.remote[1]["from"] == ALICE + "/a"


def test_cancelling_a_subscription_sends_unavailable_first(server):
    set_state(server, ALICE, CONTACT, "Both")
    alice = login(server)
    server.remote.clear()
    alice.send(f"<presence type='unsubscribed' to='{CONTACT}'/>")
    assert types(server.remote) == [("presence", "unavailable"), ("presence", "unsubscribed")]
    assert server.remote[0]["from"] == ALICE + "/a"


def test_unsubscribe_from_a_subscriber_gets_unavailable(server):
    set_state(server, ALICE, CONTACT, "From")
    login(server)
    server.remote.clear()
    server.router.route(make_stanza("presence", to=ALICE, from_=CONTACT, type_="unsubscribe"))
    [unavailable] = server.remote
    assert (unavailable["type"], unavailable["from"], unavailable["to"]) == (
        "unavailable", ALICE + "/a", CONTACT)


def test_request_from_someone_not_in_the_roster_adds_no_item(server):
    alice = login(server, roster=True)
    server.router.route(make_stanza("presence", to=ALICE, from_=CONTACT, type_="subscribe"))
    assert types(alice.take()) == [("presence", "subscribe")]  # and no roster push
    assert server.sql.get_roster(*ALICE.split("@"))[1] == []
    alice.send(f"<presence type='subscribed' to='{CONTACT}'/>")
    assert state(server, ALICE, CONTACT) == "From"


def test_request_to_an_unknown_account_is_ignored(server):
    server.router.route(make_stanza("presence", to="nobody@example.com", from_=CONTACT,
                                    type_="subscribe"))
    assert server.sql.get_values("nobody", "example.com", REQUESTS) == {}
    assert server.remote == []


def test_offline_request_is_delivered_at_each_login_until_answered(server):
    server.router.route(make_stanza("presence", to=ALICE, from_=CONTACT, type_="subscribe"))
    alice = login(server, available=False)
    assert alice.take() == []  # not available yet
    alice.send("<presence/>")
    [request] = [e for e in alice.take() if e.getAttribute("type") == "subscribe"]
    assert (request["from"], request["to"]) == (CONTACT, ALICE)
    alice.transport.loseConnection()
    alice.stream.connectionLost(None)
    again = login(server, resource="b", available=False)
    again.send("<presence/>")
    assert ("presence", "subscribe") in types(again.take())
    again.send(f"<presence type='unsubscribed' to='{CONTACT}'/>")
    third = login(server, resource="c", available=False)
    third.send("<presence/>")
    assert ("presence", "subscribe") not in types(third.take())


def test_second_resource_getting_available_gets_pending_requests(server):
    alice = login(server)
    server.router.route(make_stanza("presence", to=ALICE, from_=CONTACT, type_="subscribe"))
    assert types(alice.take()) == [("presence", "subscribe")]
    other = login(server, resource="b", available=False)
    other.send("<presence/>")
    assert ("presence", "subscribe") in types(other.take())


def test_pre_approval(server):
    features = Client(server)
    features.starttls()
    features.open()
    features.auth_plain(ALICE)
    assert "urn:xmpp:features:pre-approval" in {e.uri for e in features.open().elements()}
    alice = login(server, roster=True)
    alice.send(f"<presence type='subscribed' to='{CONTACT}'/>")
    [push] = [e for e in alice.take() if e.name == "iq"]
    assert push.query.item["approved"] == "true" and push.query.item["subscription"] == "none"
    assert server.remote == []  # a pre-approval is not routed (A.2.3)
    server.router.route(make_stanza("presence", to=ALICE, from_=CONTACT, type_="subscribe"))
    received = alice.take()
    assert ("presence", "subscribe") not in types(received)  # approved by the server
    assert types(server.remote) == [("presence", "subscribed"), ("presence", None)]
    item = server.sql.get_roster_item("alice", "example.com", CONTACT)
    assert (item.subscription, item.approved) == ("from", False)


def test_pre_approval_withdrawn(server):
    login(server)
    alice = login(server, resource="b")
    alice.send(f"<presence type='subscribed' to='{CONTACT}'/>")
    alice.send(f"<presence type='unsubscribed' to='{CONTACT}'/>")
    assert server.sql.get_roster_item("alice", "example.com", CONTACT).approved is False
    server.router.route(make_stanza("presence", to=ALICE, from_=CONTACT, type_="subscribe"))
    assert ("presence", "subscribe") in types(alice.take())
    assert state(server, ALICE, CONTACT) == "None+In"


def test_subscription_to_oneself_is_dropped(server):
    alice = login(server)
    alice.send(f"<presence type='subscribe' to='{ALICE}'/>")
    assert alice.take() == [] and state(server, ALICE, ALICE) is None


def test_full_roster_refuses_a_new_subscription(tmp_path):
    server = make_server(tmp_path, modules=MODULES, extra="[roster]\nmax_items = 1")
    add_user(server, ALICE)
    server.sql.set_roster_item("alice", "example.com", RosterItem(jid="x@example.com"))
    alice = login(server)
    alice.send(f"<presence type='subscribe' to='{CONTACT}' id='s'/>")
    [error] = alice.take()
    assert error["id"] == "s" and error_condition(error) == "not-allowed"


def test_local_handshake(server):
    """alice subscribes to bob and bob to alice, both online."""
    alice, bob = login(server, roster=True), login(server, BOB, "b", roster=True)
    alice.send(f"<presence type='subscribe' to='{BOB}'/>")
    assert ("presence", "subscribe") in types(bob.take())
    bob.send(f"<presence type='subscribed' to='{ALICE}'/>")
    bob.send(f"<presence type='subscribe' to='{ALICE}'/>")
    received = alice.take()
    assert [e["from"] for e in received if e.name == "presence"] == [BOB, BOB + "/b", BOB]
    alice.send(f"<presence type='subscribed' to='{BOB}'/>")
    assert state(server, ALICE, BOB) == "Both" and state(server, BOB, ALICE) == "Both"
    assert ("presence", None) in types(bob.take())  # alice's presence after approval
