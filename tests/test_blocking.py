"""Blocking command (XEP-0191): commands, pushes and enforcement, in memory."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server
from tests.paused_storage import pausable_server
from xmppd.core.events import BARE, FULL, message_event, presence_event
from xmppd.core.stanzas import make_stanza
from xmppd.storage import RosterItem

NS = "urn:xmpp:blocking"
NS_ERRORS = "urn:xmpp:blocking:errors"


@pytest.fixture
def server(tmp_path):
    server = pausable_server(tmp_path, hosts=("example.com", "other.example"),
                             modules=("bind", "ping", "blocking"))
    for user in ("alice@example.com", "bob@example.com", "carol@other.example"):
        add_user(server, user)
    return server


def login(server, user, resource):
    client = Client(server, domain=user.split("@")[1])
    client.login(user, resource)
    return client


@pytest.fixture
def alice(server):
    return login(server, "alice@example.com", "a")


@pytest.fixture
def bob(server):
    return login(server, "bob@example.com", "b")


def command(client, type_, payload, id_="c"):
    """Send a blocking iq; returns (its answer, pushes received before it)."""
    client.send(f"<iq type='{type_}' id='{id_}'>{payload}</iq>")
    received = client.take()
    answer = received.pop()
    assert answer["id"] == id_, answer.toXml()
    return answer, received


def blocklist(client):
    answer, _ = command(client, "get", f"<blocklist xmlns='{NS}'/>", "list")
    assert answer["type"] == "result"
    return [item["jid"] for item in answer.firstChildElement().elements(NS, "item")]


def block(client, *jids):
    items = "".join(f"<item jid='{jid}'/>" for jid in jids)
    answer, pushes = command(client, "set", f"<block xmlns='{NS}'>{items}</block>")
    assert answer["type"] == "result", answer.toXml()
    return pushes


def unblock(client, *jids):
    items = "".join(f"<item jid='{jid}'/>" for jid in jids)
    answer, pushes = command(client, "set", f"<unblock xmlns='{NS}'>{items}</unblock>")
    assert answer["type"] == "result", answer.toXml()
    return pushes


def pushed(push):
    """A push as (command name, [jids])."""
    assert push.name == "iq" and push["type"] == "set"
    element = push.firstChildElement()
    return element.name, [item["jid"] for item in element.elements(NS, "item")]


def chat(sender, to, body="hi", id_="m"):
    sender.send(f"<message to='{to}' type='chat' id='{id_}'><body>{body}</body></message>")


def record(server, event):
    """Stanzas posted as ``event`` from now on (claimed, so not delivered)."""
    seen = []
    server.hooks.add(event, lambda stanza: seen.append(stanza) or True, priority=1000)
    return seen


# The commands


def test_blocking_is_advertised(server):
    assert server.features_for("example.com") == [NS, "urn:xmpp:ping"]


def test_block_list_is_empty_at_first(alice):
    assert blocklist(alice) == []


def test_block_stores_normalised_jids_and_pushes_to_interested_resources(server, alice):
    watcher = login(server, "alice@example.com", "w")
    quiet = login(server, "alice@example.com", "q")
    blocklist(alice)
    blocklist(watcher)
    pushes = block(alice, "Romeo@Montague.net", "iago@shakespeare.lit", "romeo@montague.net")
    assert [pushed(p) for p in pushes] == [
        ("block", ["romeo@montague.net", "iago@shakespeare.lit"])]
    assert pushes[0]["to"] == "alice@example.com/a"
    [push] = watcher.take()
    assert pushed(push) == ("block", ["romeo@montague.net", "iago@shakespeare.lit"])
    assert push["to"] == "alice@example.com/w"
    assert quiet.take() == []
    assert blocklist(quiet) == ["iago@shakespeare.lit", "romeo@montague.net"]


def test_block_list_survives_sessions(server, alice):
    block(alice, "romeo@montague.net")
    alice.transport.loseConnection()
    alice.stream.connectionLost(None)
    assert blocklist(login(server, "alice@example.com", "later")) == ["romeo@montague.net"]


def test_unblock_and_unblock_all(server, alice):
    watcher = login(server, "alice@example.com", "w")
    blocklist(watcher)
    block(alice, "a@x.example", "b@x.example", "c@x.example")
    watcher.take()
    unblock(alice, "b@x.example", "never@blocked.example")
    [push] = watcher.take()
    assert pushed(push) == ("unblock", ["b@x.example", "never@blocked.example"])
    assert blocklist(alice) == ["a@x.example", "c@x.example"]
    unblock(alice)
    [push] = watcher.take()
    assert pushed(push) == ("unblock", [])
    assert blocklist(alice) == []


@pytest.mark.parametrize("payload,condition", [
    (f"<block xmlns='{NS}'/>", "bad-request"),
    (f"<block xmlns='{NS}'><item jid='@bad'/></block>", "jid-malformed"),
    (f"<block xmlns='{NS}'><item/></block>", "jid-malformed"),
    (f"<blocklist xmlns='{NS}'/>", "bad-request"),
])
def test_invalid_commands(alice, payload, condition):
    answer, _ = command(alice, "set", payload)
    assert error_condition(answer) == condition
    assert blocklist(alice) == []


@pytest.mark.parametrize("type_,payload", [
    ("get", f"<blocklist xmlns='{NS}'/>"),
    ("set", f"<block xmlns='{NS}'><item jid='x@y.example'/></block>"),
])
def test_someone_elses_block_list_is_forbidden(alice, bob, type_, payload):
    bob.send(f"<iq type='{type_}' id='x' to='alice@example.com'>{payload}</iq>")
    assert error_condition(bob.take()[0]) == "forbidden"
    assert blocklist(alice) == []


# Enforcement


def test_inbound_message_and_iq_from_blocked_contact_look_offline(alice, bob):
    block(alice, "bob@example.com")
    chat(bob, "alice@example.com")
    chat(bob, "alice@example.com/a", id_="m2")
    bob.send("<iq type='get' id='v' to='alice@example.com/a'><query xmlns='jabber:iq:version'/></iq>")
    answers = bob.take()
    assert [(a["id"], error_condition(a)) for a in answers] == [
        ("m", "service-unavailable"), ("m2", "service-unavailable"), ("v", "service-unavailable")]
    assert not any(list(a.error.elements(NS_ERRORS, "blocked")) for a in answers)
    assert alice.take() == []


def test_inbound_presence_and_iq_result_are_dropped_silently(server, alice, bob):
    to_bare, to_full = record(server, presence_event(BARE)), record(server, presence_event(FULL))
    block(alice, "bob@example.com")
    bob.send("<presence to='alice@example.com' type='subscribe'/>")
    bob.send("<presence to='alice@example.com/a'/>")
    bob.send("<iq type='result' id='r' to='alice@example.com/a'/>")
    assert to_bare == [] and to_full == [] and bob.take() == [] and alice.take() == []


def test_outbound_to_blocked_contact_is_not_acceptable(alice, bob):
    block(alice, "bob@example.com")
    chat(alice, "bob@example.com/b", "can you hear me?")
    [error] = alice.take()
    assert error["type"] == "error" and error["from"] == "bob@example.com/b"
    assert error_condition(error) == "not-acceptable"
    assert error.error["type"] == "cancel"
    assert len(list(error.error.elements(NS_ERRORS, "blocked"))) == 1
    assert str(error.body) == "can you hear me?"
    assert bob.take() == []


def test_outbound_error_to_blocked_contact_is_dropped(alice, bob):
    block(alice, "bob@example.com")
    alice.send("<iq type='error' id='e' to='bob@example.com/b'/>")
    assert alice.take() == [] and bob.take() == []


def test_after_unblock_stanzas_flow_again(alice, bob):
    block(alice, "bob@example.com")
    unblock(alice, "bob@example.com")
    chat(bob, "alice@example.com", "back")
    assert [str(m.body) for m in alice.take()] == ["back"]
    block(alice, "bob@example.com")
    unblock(alice)
    chat(alice, "bob@example.com", "hello")
    assert [str(m.body) for m in bob.take()] == ["hello"]


def test_full_jid_item_blocks_only_that_resource(server, alice, bob):
    other = login(server, "bob@example.com", "other")
    block(alice, "bob@example.com/b")
    chat(bob, "alice@example.com", "from b")
    assert error_condition(bob.take()[0]) == "service-unavailable"
    chat(other, "alice@example.com", "from other")
    assert [str(m.body) for m in alice.take()] == ["from other"]


def test_domain_item_blocks_everyone_there(server, alice):
    carol = login(server, "carol@other.example", "c")
    block(alice, "other.example")
    chat(carol, "alice@example.com")
    assert error_condition(carol.take()[0]) == "service-unavailable"
    chat(alice, "carol@other.example/c")
    assert error_condition(alice.take()[0]) == "not-acceptable"
    assert alice.take() == [] and carol.take() == []


def test_own_resources_and_own_server_are_never_blocked(server, alice):
    other = login(server, "alice@example.com", "other")
    block(alice, "alice@example.com", "example.com")
    chat(other, "alice@example.com/a", "me again")
    assert [str(m.body) for m in alice.take()] == ["me again"]
    alice.send("<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert alice.take()[0]["type"] == "result"


def test_available_presence_broadcast_to_blocked_contact_is_dropped(server, alice):
    seen = record(server, presence_event(BARE))
    block(alice, "bob@example.com")
    for type_ in (None, "unavailable"):
        server.router.route(make_stanza("presence", to="bob@example.com",
                                        from_="alice@example.com/a", type_=type_))
    assert [s.type for s in seen] == ["unavailable"]


def test_disabled_host_is_not_enforced(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=("bind", "blocking"), extra=(
        '[hosts."example.com"]\ndisabled_modules = ["blocking"]'))
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    server.sql.set_value("alice", "example.com", "blocking", "bob@example.com", "")
    alice = login(server, "alice@example.com", "a")
    bob = login(server, "bob@example.com", "b")
    chat(bob, "alice@example.com/a", "through")
    assert [str(m.body) for m in alice.take()] == ["through"]
    answer, _ = command(alice, "get", f"<blocklist xmlns='{NS}'/>")
    assert error_condition(answer) == "service-unavailable"


# Block lists of users who are not online, and the cache


def test_offline_recipient_list_is_read_then_routing_resumes(server, bob):
    server.sql.set_value("alice", "example.com", "blocking", "bob@example.com", "")
    carol = login(server, "carol@other.example", "c")
    delivered = record(server, message_event(BARE))
    runner = server.runner.pause()

    chat(carol, "alice@example.com", "from carol")
    chat(bob, "alice@example.com", "from bob")
    assert delivered == [] and carol.take() == [] and bob.take() == []
    assert {args for _, _, args, _ in runner.calls} == {("alice", "example.com")}  # her list

    runner.flush()
    assert [str(s.element.body) for s in delivered] == ["from carol"]
    assert error_condition(bob.take()[0]) == "service-unavailable"


def test_stanzas_waiting_for_a_list_keep_their_order(server, bob):
    delivered = record(server, message_event(BARE))
    runner = server.runner.pause()
    for n in range(3):
        chat(bob, "alice@example.com", str(n))
    assert delivered == []
    runner.flush()
    assert [str(s.element.body) for s in delivered] == ["0", "1", "2"]
    chat(bob, "alice@example.com", "3")  # not online: read again
    assert len(runner.calls) == 1


def test_online_users_lists_are_in_memory(server, alice, bob):
    block(alice, "carol@other.example")
    runner = server.runner.pause()
    chat(alice, "bob@example.com", "fast")
    chat(bob, "alice@example.com", "path")
    assert runner.calls == []
    assert [str(m.body) for m in bob.take()] == ["fast"]
    assert [str(m.body) for m in alice.take()] == ["path"]


def test_list_is_forgotten_with_the_last_session(server, alice, bob):
    second = login(server, "alice@example.com", "second")
    for client in (alice, second):
        runner = server.runner.pause()
        chat(bob, "alice@example.com", "x")
        assert runner.calls == []  # still online: answered from memory
        runner.flush()
        client.transport.loseConnection()
        client.stream.connectionLost(None)
    runner = server.runner.pause()
    chat(bob, "alice@example.com", "x")
    assert len(runner.calls) == 1


def test_change_during_initial_read_is_not_lost(server, bob):
    alice = Client(server)
    alice.starttls()
    alice.open()
    assert alice.auth_plain("alice@example.com").name == "success"
    alice.open()
    runner = server.runner.pause()
    alice.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               "<resource>a</resource></bind></iq>")
    assert alice.take()[0]["type"] == "result"
    [initial_read] = runner.calls  # the block list, read at bind, still pending
    alice.send(f"<iq type='set' id='b'><block xmlns='{NS}'><item jid='bob@example.com'/>"
               "</block></iq>")
    runner.calls.remove(initial_read)
    runner.flush()  # the block is stored
    initial_read[0].callback({})  # a stale read, from before the block
    runner.flush()  # read again
    assert alice.take()[0]["type"] == "result"
    chat(bob, "alice@example.com")
    assert runner.calls == []
    assert error_condition(bob.take()[0]) == "service-unavailable"


# Presence on block and unblock


def test_block_and_unblock_send_presence_to_contacts_who_see_it(tmp_path):
    server = make_server(tmp_path, hosts=("example.com", "other.example"),
                         modules=("bind", "roster", "presence", "blocking"))
    add_user(server, "alice@example.com")
    for jid, subscription in (("bob@example.com", "from"), ("dave@example.com", "to"),
                              ("carol@other.example", "both")):
        server.sql.set_roster_item("alice", "example.com", RosterItem(jid, subscription=subscription))
    alice = login(server, "alice@example.com", "a")
    login(server, "alice@example.com", "quiet")  # not available: sends nothing
    alice.send("<presence><show>away</show></presence>")
    alice.take()
    seen = record(server, presence_event(BARE))

    block(alice, "bob@example.com", "dave@example.com", "other.example")
    assert sorted((p.sender.full, p.recipient.full, p.type) for p in seen) == [
        ("alice@example.com/a", "bob@example.com", "unavailable"),
        ("alice@example.com/a", "carol@other.example", "unavailable")]

    seen.clear()
    alice.send("<presence><show>dnd</show></presence>")  # broadcast: not to the blocked
    assert [p.recipient.full for p in seen] == []

    unblock(alice, "bob@example.com")
    [presence] = seen
    assert (presence.sender.full, presence.recipient.full) == ("alice@example.com/a", "bob@example.com")
    assert (presence.type, str(presence.element.show)) == (None, "dnd")

    seen.clear()
    unblock(alice)
    assert [(p.recipient.full, str(p.element.show)) for p in seen if p.type is None] == [
        ("carol@other.example", "dnd")]
    # What the contacts whose presence alice receives sent meanwhile was dropped: asked again
    assert sorted(p.recipient.full for p in seen if p.type == "probe") == [
        "carol@other.example", "dave@example.com"]


def test_what_was_stored_before_a_block_is_not_delivered_after_it(tmp_path):
    server = make_server(tmp_path, modules=("bind", "roster", "presence", "subscription",
                                            "message", "offline", "blocking"))
    for user in ("alice@example.com", "bob@example.com", "carol@example.com"):
        add_user(server, user)
    for sender in ("bob@example.com", "carol@example.com"):  # alice is offline
        client = login(server, sender, "x")
        client.send("<presence type='subscribe' to='alice@example.com'/>")
        chat(client, "alice@example.com", body=f"from {sender}")
    alice = login(server, "alice@example.com", "a")
    block(alice, "bob@example.com")
    alice.send("<presence/>")
    received = alice.take()
    requests = [e["from"] for e in received
                if e.name == "presence" and e.getAttribute("type") == "subscribe"]
    bodies = [str(e.body) for e in received if e.name == "message"]
    assert requests == ["carol@example.com"] and bodies == ["from carol@example.com"]


# Other modules told of blocks (the reports of XEP-0377)


def test_block_handlers_get_each_item_once_and_failures_do_not_undo_the_block(server, alice):
    seen = []
    lists = server.services["blocking"]
    lists.on_block(lambda user, items: seen.append(
        (user.full, {jid: [c.name for c in item.elements()] for jid, item in items.items()})))
    lists.on_block(lambda user, items: 1 / 0)
    block(alice, "Romeo@Montague.net", "iago@shakespeare.lit")
    alice.send(f"<iq type='set' id='r'><block xmlns='{NS}'>"
               "<item jid='x@y.example'><report xmlns='urn:example'/></item>"
               "<item jid='X@y.example'><second xmlns='urn:example'/></item></block></iq>")
    assert alice.take()[0]["type"] == "result"
    assert seen == [("alice@example.com", {"romeo@montague.net": [], "iago@shakespeare.lit": []}),
                    ("alice@example.com", {"x@y.example": ["report"]})]
    assert blocklist(alice) == ["iago@shakespeare.lit", "romeo@montague.net", "x@y.example"]


def test_block_handlers_are_not_told_of_refused_blocks_or_unblocks(server, alice):
    seen = []
    server.services["blocking"].on_block(lambda user, items: seen.append(items))
    command(alice, "set", f"<block xmlns='{NS}'><item jid='@bad'/></block>")
    unblock(alice, "x@y.example")
    assert seen == []
