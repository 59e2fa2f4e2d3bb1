"""Closed domains (hosts."X".cross_domain_messages), in memory."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server
from xmppd.core.events import HOST, ROUTE_REMOTE, iq_event
from xmppd.core.stanzas import Stanza, make_stanza
from xmppd.jid import JID

OPEN = "\n".join(f'[hosts."{host}"]\ncross_domain_messages = true'
                 for host in ("open.example", "also-open.example"))


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, hosts=("example.com", "other.example"),
                         modules=("bind", "message", "closed_domain"), extra=OPEN)
    for user in ("alice@example.com", "bob@example.com", "carol@other.example",
                 "olga@open.example", "otto@also-open.example"):
        add_user(server, user)
    return server


@pytest.fixture
def remote_out(server):
    """Stanzas handed to federation."""
    sent = []
    server.hooks.add(ROUTE_REMOTE, lambda stanza: sent.append(stanza) or True)
    return sent


def login(server, user):
    client = Client(server, user.split("@")[1])
    client.login(user, "r")
    return client


def chat(client, to, id_="m1"):
    client.send(f"<message to='{to}/r' id='{id_}' type='chat'><body>hi</body></message>")


@pytest.mark.parametrize("sender,recipient", [
    ("alice@example.com", "carol@other.example"),  # both closed
    ("alice@example.com", "olga@open.example"),  # only the recipient's domain open
    ("olga@open.example", "alice@example.com"),  # only the sender's domain open
])
def test_refused_between_hosted_domains_unless_both_allow(server, sender, recipient):
    a, b = login(server, sender), login(server, recipient)
    chat(a, recipient)
    [error] = a.take()
    assert error["id"] == "m1" and error["from"] == f"{recipient}/r"
    assert error_condition(error) == "service-unavailable"
    assert b.take() == []


def test_presence_and_iq_are_refused_too(server):
    alice, carol = login(server, "alice@example.com"), login(server, "carol@other.example")
    alice.send("<presence to='carol@other.example' type='subscribe'/>")
    alice.send("<iq to='carol@other.example/r' type='get' id='q'><query xmlns='urn:x'/></iq>")
    alice.send("<iq to='other.example' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert [error_condition(e) for e in alice.take()] == ["service-unavailable"] * 3
    assert carol.take() == []


def test_errors_and_results_are_dropped_without_an_answer(server):
    alice, carol = login(server, "alice@example.com"), login(server, "carol@other.example")
    alice.send("<message to='carol@other.example/r' type='error'><body>x</body></message>")
    alice.send("<iq to='carol@other.example/r' type='result' id='r'/>")
    assert alice.take() == [] and carol.take() == []


def test_allowed_when_both_hosted_domains_allow(server):
    olga, otto = login(server, "olga@open.example"), login(server, "otto@also-open.example")
    chat(olga, "otto@also-open.example")
    assert [m["from"] for m in otto.take()] == ["olga@open.example/r"]
    assert olga.take() == []


def test_same_domain_always_passes(server):
    alice, bob = login(server, "alice@example.com"), login(server, "bob@example.com")
    chat(alice, "bob@example.com")
    assert len(bob.take()) == 1 and alice.take() == []


def test_to_a_remote_domain_only_the_local_flag_counts(server, remote_out):
    alice, olga = login(server, "alice@example.com"), login(server, "olga@open.example")
    chat(alice, "someone@remote.example")
    assert error_condition(alice.take()[0]) == "service-unavailable"
    chat(olga, "someone@remote.example")
    assert olga.take() == []
    assert [(str(s.sender), str(s.recipient)) for s in remote_out] == [
        ("olga@open.example/r", "someone@remote.example/r")]


def inbound(server, sender, to, type_="chat"):
    """A stanza as federation hands it over: no local origin."""
    element = make_stanza("message", to=to, from_=sender, type_=type_, id_="in")
    element.addElement("body", content="from afar")
    server.router.dispatch(Stanza(element, JID.parse(sender), JID.parse(to)))


def test_from_a_remote_domain_only_the_local_flag_counts(server, remote_out):
    alice, olga = login(server, "alice@example.com"), login(server, "olga@open.example")
    inbound(server, "someone@remote.example/x", "alice@example.com/r")
    assert alice.take() == []
    [error] = remote_out
    assert str(error.recipient) == "someone@remote.example/x"
    assert error_condition(error.element) == "service-unavailable"
    inbound(server, "someone@remote.example/x", "olga@open.example/r")
    assert [str(m.body) for m in olga.take()] == ["from afar"]


def test_remote_errors_to_a_closed_domain_are_dropped(server, remote_out):
    alice = login(server, "alice@example.com")
    inbound(server, "someone@remote.example/x", "alice@example.com/r", type_="error")
    assert alice.take() == [] and remote_out == []


def test_answers_to_the_server_itself_pass(server, remote_out):
    answers = []
    server.hooks.add(iq_event("result", HOST), lambda stanza: answers.append(stanza) or True)
    alice = login(server, "alice@example.com")
    for to in ("example.com", "alice@example.com/r"):
        element = make_stanza("iq", to=to, from_="push.remote.example", type_="result",
                              id_="publish-1")
        server.router.dispatch(Stanza(element, JID.parse("push.remote.example"),
                                      JID.parse(to)))
    assert [str(answer.recipient) for answer in answers] == ["example.com"]
    assert alice.take() == [] and remote_out == []


@pytest.mark.parametrize("sender", [None, "other.example"])
def test_the_server_itself_passes(server, sender):
    alice = login(server, "alice@example.com")
    element = make_stanza("message", to="alice@example.com/r", from_=sender, type_="headline")
    server.router.dispatch(Stanza(element, None if sender is None else JID.parse(sender),
                                  JID.parse("alice@example.com/r")))
    assert len(alice.take()) == 1


def test_refusal_logged_at_info(server):
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        alice = login(server, "alice@example.com")
        chat(alice, "carol@other.example")
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = [e for e in events if e.get("log_namespace") == "xmppd.modules.closed_domain"]
    assert event["log_level"] == LogLevel.info
    assert formatEvent(event) == (
        "closed domain: message from alice@example.com/r to carol@other.example/r refused")
