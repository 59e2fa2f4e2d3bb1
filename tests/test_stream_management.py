"""Stream management (XEP-0198), in memory: counters, requests, bounds,
hibernation, resumption and what happens to unacknowledged stanzas."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server, reload
from xmppd.core.xmlstream import parse_stanza
from xmppd.control import Controller
from xmppd.core.events import SESSION_RESUMED
from xmppd.jid import JID
from xmppd.modules.stream_management import MASK, NAME, NS_SM, SM_ABANDON

ENABLE = f"<enable xmlns='{NS_SM}' resume='true'/>"
R = f"<r xmlns='{NS_SM}'/>"


def a(h):
    return f"<a xmlns='{NS_SM}' h='{h}'/>"


def make(tmp_path, extra="", hosts=("example.com",)):
    server = make_server(tmp_path, hosts, modules=("bind", "presence", "message", "offline",
                                                   "stream_management", "ping"), extra=extra)
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path, "[ping]\nidle_timeout = 0")  # no pings while the clock runs


@pytest.fixture
def bob(server):
    client = Client(server)
    client.login("bob@example.com", "bob")
    return client


def managed(server, resource="res", enable=ENABLE):
    """alice@example.com/RESOURCE logged in with stream management on;
    the client and its <enabled/>."""
    client = Client(server)
    client.login("alice@example.com", resource)
    client.send(enable)
    [enabled] = client.take()
    assert (enabled.uri, enabled.name) == (NS_SM, "enabled")
    return client, enabled


def chat(sender, body, to="alice@example.com/res", type_="chat"):
    sender.send(f"<message to='{to}' type='{type_}'><body>{body}</body></message>")


def bodies(elements):
    return [str(e.body) for e in elements if e.name == "message"]


def names(elements):
    return [e.name for e in elements]


def resume(server, previd, h, user="alice@example.com"):
    """A new connection authenticated as ``user`` that sends <resume/>;
    the client and what it got."""
    client = Client(server)
    client.starttls()
    client.open()
    assert client.auth_plain(user).name == "success"
    client.open()
    client.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{h}'/>")
    return client, client.take()


def failure(element):
    """The condition of a <failed/>."""
    assert (element.uri, element.name) == (NS_SM, "failed"), element.toXml()
    [condition] = element.elements()
    return condition.name


def session_of(server, jid="alice@example.com/res"):
    return server.sessions.get(JID.parse(jid))


def test_offered_after_authentication_only(server):
    client = Client(server)
    client.starttls()
    features = client.open()
    assert (NS_SM, "sm") not in {(f.uri, f.name) for f in features.elements()}
    client.auth_plain("alice@example.com")
    features = client.open()
    assert (NS_SM, "sm") in {(f.uri, f.name) for f in features.elements()}


def test_enable_before_binding_or_twice_fails(server):
    client = Client(server)
    client.starttls()
    client.open()
    client.auth_plain("alice@example.com")
    client.open()
    client.send(ENABLE)
    [failed] = client.take()
    assert failure(failed) == "unexpected-request"
    assert not client.closed
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    client.take()
    client.send(ENABLE)
    assert client.take()[0].name == "enabled"
    client.send(ENABLE)
    [failed] = client.take()
    assert failure(failed) == "unexpected-request"


def test_enabled_says_resumable_with_the_timeout(server):
    _, enabled = managed(server)
    assert enabled["resume"] == "true" and enabled["max"] == "300"
    assert len(enabled["id"]) > 20
    _, enabled = managed(server, "two", f"<enable xmlns='{NS_SM}' resume='true' max='60'/>")
    assert enabled["max"] == "60"
    _, enabled = managed(server, "three", f"<enable xmlns='{NS_SM}'/>")
    assert not enabled.hasAttribute("id") and not enabled.hasAttribute("resume")


def test_no_resumption_when_the_timeout_is_zero(tmp_path):
    server = make(tmp_path, "[c2s]\nresume_timeout = 0")
    _, enabled = managed(server)
    assert not enabled.hasAttribute("resume")


def test_r_is_answered_with_the_stanzas_handled(server, bob):
    alice, _ = managed(server)
    alice.send(R)
    [answer] = alice.take()
    assert (answer.uri, answer.name, answer["h"]) == (NS_SM, "a", "0")
    alice.send("<presence/>")
    alice.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    chat(alice, "hi", to="bob@example.com")
    alice.take()
    alice.send(R)
    [answer] = alice.take()
    assert (answer.name, answer["h"]) == ("a", "3")


def test_the_server_asks_after_five_stanzas_or_five_seconds(server, bob):
    alice, _ = managed(server)
    chat(bob, "one")
    server.clock.advance(4.9)
    assert names(alice.take()) == ["message"]
    server.clock.advance(0.1)
    assert names(alice.take()) == ["r"]
    for i in range(2, 6):
        chat(bob, str(i))
    assert names(alice.take()) == ["message"] * 4  # one <r/> out already
    alice.send(a(5))
    for i in range(6, 11):
        chat(bob, str(i))
    server.clock.advance(0)
    assert names(alice.take()) == ["message"] * 5 + ["r"]
    alice.send(a(10))
    assert not session_of(server).state[NAME].unacked
    server.clock.advance(60)
    assert alice.take() == []


def test_counters_wrap_at_two_to_the_32(server, bob):
    alice, _ = managed(server)
    state = session_of(server).state[NAME]
    state.sent = state.handled = MASK
    chat(bob, "a")
    chat(bob, "b")
    alice.take()
    assert state.sent == 1
    alice.send(a(1))
    assert not state.unacked and not alice.closed
    alice.send("<presence/>")
    alice.take()
    alice.send(R)
    assert alice.take()[0]["h"] == "0"


def test_an_ack_that_is_not_a_count_ends_the_stream(server):
    alice, _ = managed(server)
    alice.send(a("many"))
    assert alice.closed and error_condition(alice.take()[-1]) == "bad-format"


def test_an_ack_of_more_than_was_sent_ends_the_stream(server, bob):
    alice, _ = managed(server)
    chat(bob, "a")
    alice.send(a(2))
    assert alice.closed and error_condition(alice.take()[-1]) == "undefined-condition"


def test_a_lost_connection_hibernates_and_resumes_with_what_was_not_acknowledged(server, bob):
    alice, enabled = managed(server)
    alice.send("<presence/>")
    alice.send(a(1))  # its presence, reflected
    chat(bob, "one")
    chat(bob, "two")
    alice.send(a(2))
    alice.take()
    bob.take()
    alice.lose()
    session = session_of(server)
    assert session is not None and session.hibernating  # still bound
    for body in ("three", "four"):
        chat(bob, body)
    assert bob.take() == []  # no unavailable presence, no error

    resumed = []
    server.hooks.add(SESSION_RESUMED, resumed.append)
    new, got = resume(server, enabled["id"], 2)
    assert (got[0].name, got[0]["h"], got[0]["previd"]) == ("resumed", "1", enabled["id"])
    assert bodies(got) == ["two", "three", "four"]
    assert got[-1].name == "r"
    assert session.carrier is new.stream and session_of(server) is session
    assert resumed == [session] and not session.hibernating
    chat(bob, "five")
    assert bodies(new.take()) == ["five"]
    new.send(a(6))
    assert len(session.state[NAME].unacked) == 0


def test_resuming_while_the_old_connection_is_up_replaces_it(server, bob):
    alice, enabled = managed(server)
    chat(bob, "one")
    new, got = resume(server, enabled["id"], 0)
    assert bodies(got) == ["one"]
    assert alice.closed and error_condition(alice.take()[-1]) == "conflict"
    alice.lose()
    assert session_of(server).carrier is new.stream
    chat(bob, "two")
    assert bodies(new.take()) == ["two"]


def test_a_resume_with_an_unknown_id_fails_and_the_client_binds(server):
    managed(server)
    client, got = resume(server, "nope", 0)
    assert failure(got[0]) == "item-not-found"
    assert not got[0].hasAttribute("h")
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert client.take()[0]["type"] == "result"


def test_another_account_cannot_resume_a_session(server):
    alice, enabled = managed(server)
    alice.lose()
    _, got = resume(server, enabled["id"], 0, user="bob@example.com")
    assert failure(got[0]) == "item-not-found"
    assert session_of(server).carrier is None  # still hibernating for alice


def test_resume_needs_authentication_and_no_session(server):
    _, enabled = managed(server)
    client = Client(server)
    client.starttls()
    client.open()
    client.send(f"<resume xmlns='{NS_SM}' previd='{enabled['id']}' h='0'/>")
    [failed] = client.take()
    assert failure(failed) == "unexpected-request"


def test_an_expired_session_stores_its_messages_offline(server, bob):
    alice, enabled = managed(server)
    alice.send("<presence/>")
    alice.take()
    bob.send("<presence/>")  # bob is not alice's contact: only the account matters
    bob.take()
    alice.lose()
    for i in range(20):
        chat(bob, str(i))
    server.clock.advance(299)
    assert session_of(server) is not None
    server.clock.advance(1)
    assert session_of(server) is None
    assert bob.take() == []  # stored, not bounced
    assert server.sql.count_offline("alice", "example.com") == 20

    _, got = resume(server, enabled["id"], 0)
    assert failure(got[0]) == "item-not-found" and got[0]["h"] == "1"

    again = Client(server)
    again.login("alice@example.com")
    again.send("<presence/>")
    assert bodies(again.take()) == [str(i) for i in range(20)]


def test_an_expired_session_answers_iq_requests_and_drops_the_rest(server, bob):
    alice, _ = managed(server)
    alice.lose()
    bob.send("<iq type='get' to='alice@example.com/res' id='v'>"
             "<query xmlns='jabber:iq:version'/></iq>")
    bob.send("<message to='alice@example.com/res' type='chat'>"
             "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    bob.send("<message to='alice@example.com/res' type='headline'><body>h</body></message>")
    server.clock.advance(300)
    [error] = bob.take()
    assert (error.name, error["id"], error_condition(error)) == ("iq", "v",
                                                                 "service-unavailable")
    assert server.sql.count_offline("alice", "example.com") == 0


def test_unacknowledged_archive_results_are_dropped_not_stored(server, bob):
    alice, _ = managed(server)
    server.router.route(parse_stanza(
        "<message xmlns='jabber:client' from='alice@example.com' to='alice@example.com/res'>"
        "<result xmlns='urn:xmpp:mam:2' queryid='q' id='1'><forwarded xmlns='urn:xmpp:forward:0'>"
        "<message xmlns='jabber:client' from='bob@example.com/bob' type='chat'><body>old</body>"
        "</message></forwarded></result></message>"))
    chat(bob, "new")
    assert names(alice.take()) == ["message", "message"]  # neither acknowledged
    alice.lose()
    server.clock.advance(300)
    assert server.sql.count_offline("alice", "example.com") == 1  # "new" only: the client
    # asks the archive again for its results


def test_unacknowledged_messages_of_a_closed_stream_go_offline(server, bob):
    alice, _ = managed(server)
    chat(bob, "seen")
    chat(bob, "unsure")
    alice.send(a(1))
    alice.send("</stream:stream>")
    assert session_of(server) is None
    assert server.sql.count_offline("alice", "example.com") == 1


def test_without_resumption_a_lost_connection_unbinds(server, bob):
    alice, _ = managed(server, enable=f"<enable xmlns='{NS_SM}'/>")
    chat(bob, "unsure")
    alice.lose()
    assert session_of(server) is None
    assert server.sql.count_offline("alice", "example.com") == 1


def test_a_client_that_never_acknowledges_is_cut_off(tmp_path):
    server = make(tmp_path, "[stream_management]\nmax_queue = 10")
    bob = Client(server)
    bob.login("bob@example.com", "bob")
    alice, _ = managed(server)
    for i in range(11):
        chat(bob, str(i))
    assert alice.closed and error_condition(alice.take()[-1]) == "policy-violation"
    alice.lose()
    assert session_of(server) is None
    assert server.sql.count_offline("alice", "example.com") == 11


def test_a_hibernating_session_past_its_bound_ends(tmp_path):
    server = make(tmp_path, "[stream_management]\nmax_queue_total = 5")
    bob = Client(server)
    bob.login("bob@example.com", "bob")
    alice, _ = managed(server)
    alice.lose()
    for i in range(6):
        chat(bob, str(i))
    assert session_of(server) is None
    assert server.sql.count_offline("alice", "example.com") == 6


def test_the_state_survives_a_reload(server, bob, tmp_path):
    alice, enabled = managed(server)
    alice.lose()
    chat(bob, "kept")
    reload(server, tmp_path)
    _, got = resume(server, enabled["id"], 0)
    assert got[0].name == "resumed" and bodies(got) == ["kept"]


def test_a_hibernating_session_is_not_pinged_away(tmp_path):
    server = make(tmp_path, "[ping]\nidle_timeout = 10\ntimeout = 5\n"
                            "[c2s]\nresume_timeout = 100")
    alice, enabled = managed(server)
    alice.lose()
    server.clock.advance(99)
    assert session_of(server) is not None
    _, got = resume(server, enabled["id"], 0)
    assert got[0].name == "resumed"


def test_a_shutdown_ends_hibernating_sessions_and_keeps_their_messages(server, bob):
    alice, _ = managed(server)
    alice.lose()
    chat(bob, "before the restart")
    Controller(server, server.clock).stopService()
    assert session_of(server) is None
    assert server.sql.count_offline("alice", "example.com") == 1
    assert error_condition(bob.take()[-1]) == "system-shutdown"


def test_a_ping_timeout_hibernates_a_resumable_session(tmp_path):
    server = make(tmp_path, "[ping]\nidle_timeout = 10\ntimeout = 5")
    alice, enabled = managed(server)
    server.clock.advance(10)
    assert [e.name for e in alice.take()] == ["iq"]  # the ping
    server.clock.advance(5)
    assert alice.closed and error_condition(alice.take()[-1]) == "connection-timeout"
    assert session_of(server).carrier is None
    _, got = resume(server, enabled["id"], 0)
    assert got[0].name == "resumed" and [e.name for e in got[1:]] == ["iq", "r"]


def test_a_host_may_switch_it_off(tmp_path):
    server = make(tmp_path, '[hosts."example.com"]\ndisabled_modules = ["stream_management"]',
                  hosts=())
    client = Client(server)
    client.starttls()
    client.open()
    client.auth_plain("alice@example.com")
    features = client.open()
    assert (NS_SM, "sm") not in {(f.uri, f.name) for f in features.elements()}
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    client.take()
    client.send(ENABLE)
    assert failure(client.take()[0]) == "unexpected-request"


def test_ending_an_account_unbinds_its_hibernating_session(server, bob):
    """A deleted account's resumable session is not kept for a client that
    could no longer authenticate to resume it; what it was not sent is
    stored offline (the account still exists here) rather than lost."""
    alice, enabled = managed(server)
    alice.lose()
    assert session_of(server).hibernating
    chat(bob, "while away")

    ended = server.negotiation.end_account(
        JID.parse("alice@example.com"), "not-authorized", "the account was deleted")

    assert ended == ["alice@example.com/res"]
    assert session_of(server) is None
    assert server.sql.count_offline("alice", "example.com") == 1
    again, answers = resume(server, enabled.getAttribute("id"), 0)
    assert failure(answers[0]) == "item-not-found"


class Told:
    """A cluster node stand-in: what this node tells the others."""

    node = "a"

    def __init__(self):
        self.told = []

    def tell(self, event, argument):
        self.told.append((event, argument))


def test_a_resume_of_another_nodes_session_tells_that_node(server):
    server.cluster = Told()
    client, got = resume(server, "b.ABCDEF", 0)
    assert failure(got[0]) == "item-not-found"
    assert server.cluster.told == [(SM_ABANDON, "alice@example.com b.ABCDEF")]
    resume(server, "nope", 0)  # no node named: nothing told
    assert len(server.cluster.told) == 1


def test_a_hibernating_session_another_node_could_not_resume_ends_here(server, bob):
    alice, enabled = managed(server)
    alice.send("<presence/>")
    alice.take()
    alice.lose()
    chat(bob, "kept")
    server.hooks.notify(SM_ABANDON, f"bob@example.com {enabled['id']}")  # not alice's
    assert session_of(server).hibernating
    server.hooks.notify(SM_ABANDON, f"alice@example.com {enabled['id']}")
    assert session_of(server) is None
    later = Client(server)
    later.login("alice@example.com", "new")
    later.send("<presence/>")
    assert bodies(later.take()) == ["kept"]  # offline, not lost
