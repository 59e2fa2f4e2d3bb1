"""The router's default delivery (RFC 6120 §10) and the hook API, in memory.

Only the core modules are loaded: presence, message delivery rules and
closed domains change these defaults and have tests of their own."""

import types

import pytest
from twisted.internet import defer
from twisted.words.xish import domish

from tests.harness import Client, add_user, error_condition, make_server
from xmppd.core.events import BARE, FULL, HOST, Hooks, iq_event, message_event
from xmppd.core.stanzas import StanzaError

CORE = ("bind", "legacy_session", "roster", "ping")


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, hosts=("example.com", "other.example"), modules=CORE)
    for user in ("alice@example.com", "bob@example.com", "carol@other.example"):
        add_user(server, user)
    return server


@pytest.fixture
def alice(server):
    client = Client(server)
    client.login("alice@example.com", "a1")
    return client


@pytest.fixture
def bob(server):
    client = Client(server)
    client.login("bob@example.com", "b1")
    return client


def test_message_to_full_jid_is_stamped(alice, bob):
    alice.send("<message to='bob@example.com/b1' from='mallory@evil.example/x' type='chat'>"
               "<body>hi</body></message>")
    [message] = bob.take()
    assert message["from"] == "alice@example.com/a1"
    assert str(message.body) == "hi"


def test_message_to_bare_jid_reaches_every_resource(server, alice, bob):
    bob2 = Client(server)
    bob2.login("bob@example.com", "b2")
    alice.send("<message to='bob@example.com' type='chat'><body>both</body></message>")
    assert [str(m.body) for m in bob.take()] == ["both"]
    assert [str(m.body) for m in bob2.take()] == ["both"]


def test_message_to_unbound_full_jid_falls_back_to_bare(alice, bob):
    alice.send("<message to='bob@example.com/gone' type='chat'><body>x</body></message>")
    [message] = bob.take()
    assert message["to"] == "bob@example.com/gone"


def test_message_to_offline_user(alice):
    alice.send("<message to='nobody@example.com' type='chat' id='m1'><body>x</body></message>")
    [error] = alice.take()
    assert error["type"] == "error" and error["id"] == "m1"
    assert error_condition(error) == "service-unavailable"


def test_headline_to_offline_user_is_dropped(alice):
    alice.send("<message to='nobody@example.com' type='headline'><body>x</body></message>")
    assert alice.take() == []


def test_iq_to_full_jid_is_routed_and_result_returns(alice, bob):
    alice.send("<iq to='bob@example.com/b1' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
    [request] = bob.take()
    assert request["from"] == "alice@example.com/a1"
    bob.send("<iq to='alice@example.com/a1' type='result' id='v1'/>")
    [result] = alice.take()
    assert result["type"] == "result" and result["from"] == "bob@example.com/b1"


def test_iq_to_unbound_full_jid(alice):
    alice.send("<iq to='bob@example.com/none' type='get' id='q'><query xmlns='urn:x'/></iq>")
    assert error_condition(alice.take()[0]) == "service-unavailable"


def test_unhandled_iq_to_server_and_to_account(alice):
    alice.send("<iq to='example.com' type='get' id='1'><query xmlns='urn:unknown'/></iq>")
    alice.send("<iq to='bob@example.com' type='get' id='2'><query xmlns='urn:unknown'/></iq>")
    alice.send("<iq type='set' id='3'><query xmlns='urn:unknown'/></iq>")
    errors = alice.take()
    assert [(e["id"], error_condition(e)) for e in errors] == [
        ("1", "service-unavailable"), ("2", "service-unavailable"), ("3", "service-unavailable")]


def test_iq_responses_are_never_answered(alice):
    alice.send("<iq to='example.com' type='result' id='r'/>")
    alice.send("<iq to='example.com' type='error' id='e'/>")
    assert alice.take() == []


@pytest.mark.parametrize("iq,condition", [
    ("<iq type='get' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>", "bad-request"),
    ("<iq type='bogus' id='1' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>", "bad-request"),
    ("<iq type='get' id='1' to='example.com'/>", "bad-request"),
    ("<iq type='get' id='1' to='example.com'><a xmlns='urn:a'/><b xmlns='urn:b'/></iq>", "bad-request"),
    ("<iq type='get' id='1' to='@@bad'><ping xmlns='urn:xmpp:ping'/></iq>", "jid-malformed"),
])
def test_invalid_iq(alice, iq, condition):
    alice.send(iq)
    assert error_condition(alice.take()[0]) == condition
    assert not alice.closed


def test_ping(alice):
    alice.send("<iq to='example.com' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    [result] = alice.take()
    assert result["type"] == "result" and result["id"] == "p" and result["from"] == "example.com"


def test_remote_domain_without_federation(alice):
    alice.send("<message to='someone@elsewhere.example' id='r'><body>x</body></message>")
    assert error_condition(alice.take()[0]) == "remote-server-not-found"


def test_second_hosted_domain(server, alice):
    carol = Client(server, domain="other.example")
    carol.login("carol@other.example", "c")
    alice.send("<message to='carol@other.example/c' type='chat'><body>x</body></message>")
    assert carol.take()[0]["from"] == "alice@example.com/a1"


def test_unknown_stanza_kind_is_a_stream_error(alice):
    alice.send("<foo xmlns='jabber:client'/>")
    assert error_condition(alice.take()[-1]) == "unsupported-stanza-type"
    assert alice.closed


def test_handler_errors_are_mapped(server, alice):
    def broken(stanza):
        raise RuntimeError("boom")

    def refuses(stanza):
        return defer.fail(StanzaError("forbidden", "no"))

    def setup(api):
        api.handle_iq("get", HOST, "urn:broken", broken)
        api.handle_iq("get", HOST, "urn:refuses", refuses)

    server.load(types.SimpleNamespace(__name__="test", setup=setup))
    alice.send("<iq to='example.com' type='get' id='1'><q xmlns='urn:broken'/></iq>")
    alice.send("<iq to='example.com' type='get' id='2'><q xmlns='urn:refuses'/></iq>")
    first, second = alice.take()
    assert error_condition(first) == "internal-server-error"
    assert error_condition(second) == "forbidden"
    assert "no" in str(second.error.text)


def test_hooks_priority_and_claim():
    hooks = Hooks()
    calls = []
    hooks.add("e", lambda arg: calls.append("low") or True, priority=-1)
    hooks.add("e", lambda arg: calls.append("high"), priority=10)
    hooks.add("e", lambda arg: calls.append("mid") or True)
    assert hooks.fire("e", None) is True
    assert calls == ["high", "mid"]
    assert hooks.fire("unknown", None) is False


def test_event_names_fail_loudly():
    assert iq_event("get", HOST, "urn:xmpp:ping") == "iq-get/host/urn:xmpp:ping"
    assert iq_event("result", FULL) == "iq-result/full"
    assert message_event(BARE) == "message/bare"
    with pytest.raises(ValueError):
        iq_event("get", "hots", "urn:x")
    with pytest.raises(ValueError):
        iq_event("get", HOST)
    with pytest.raises(ValueError):
        message_event("everyone")


def test_error_reply_keeps_payload():
    from xmppd.core.stanzas import error_reply
    iq = domish.Element(("jabber:client", "iq"), attribs={"from": "a@x/r", "to": "x", "id": "1", "type": "get"})
    iq.addElement(("urn:q", "query"))
    reply = error_reply(iq, "item-not-found", "gone")
    assert (reply["to"], reply["from"], reply["type"]) == ("a@x/r", "x", "error")
    assert reply.firstChildElement().uri == "urn:q"
    assert reply.error["type"] == "cancel"


def test_a_waiting_pre_event_handler_holds_the_stanza_then_lets_it_on(server, alice, bob):
    from twisted.internet import defer as _defer

    from xmppd.core.api import ModuleAPI
    from xmppd.core.events import FULL, pre_event
    api = ModuleAPI(server, "test")
    pending, seen = [], []

    def slow_check(stanza):
        d = _defer.Deferred()
        pending.append(d)
        return d

    api.hook(pre_event("message", FULL), slow_check, priority=10)
    api.hook(pre_event("message", FULL), lambda stanza: seen.append(stanza.kind))
    alice.send("<message to='bob@example.com/b1' type='chat'><body>later</body></message>")
    assert bob.take() == [] and seen == []
    pending[0].callback(False)
    assert [str(m.body) for m in bob.take()] == ["later"]
    assert seen == ["message"]


def test_a_waiting_pre_event_handler_can_claim_the_stanza(server, alice, bob):
    from twisted.internet import defer as _defer

    from xmppd.core.api import ModuleAPI
    from xmppd.core.events import FULL, pre_event
    api = ModuleAPI(server, "test")
    pending = []
    api.hook(pre_event("message", FULL), lambda stanza: pending.append(_defer.Deferred())
             or pending[-1], priority=10)
    alice.send("<message to='bob@example.com/b1' type='chat'><body>stopped</body></message>")
    pending[0].callback(True)
    assert bob.take() == []
