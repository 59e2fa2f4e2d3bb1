"""Remote domains a host refuses (``domain_blocklist``), in memory.

Remote servers are faked as in the other routing tests: what they send is
routed with no local origin, what goes to them is seen on ``route/remote``.
"""

import pytest

from tests.harness import add_user, Client, error_condition, keep_remote, make_config, make_server
from xmppd.config import ConfigError, parse
from xmppd.core.stanzas import make_stanza
from xmppd.storage import RosterItem

HOSTS = ("example.com", "other.example")
MODULES = ("bind", "message", "roster", "presence", "subscription", "domain_blocklist")
SERVER_WIDE = '[domain_blocklist]\ndomains = ["Spam.Example", "*.bad.example"]\n'
ALICE, CAROL = "alice@example.com", "carol@other.example"


def make(tmp_path, extra=SERVER_WIDE, hosts=HOSTS):
    server = make_server(tmp_path, hosts=hosts, modules=MODULES, extra=extra)
    for user in (ALICE, "bob@example.com", CAROL):
        add_user(server, user)
    keep_remote(server)
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


def login(server, user=ALICE, available=False):
    client = Client(server, user.split("@")[1])
    client.login(user, "r")
    if available:
        client.send("<presence/>")
    client.take()
    return client


def receive(server, kind, sender, to, type_=None, payload=None):
    """A stanza from a remote server (no local origin)."""
    element = make_stanza(kind, to=to, from_=sender, type_=type_, id_="in")
    if payload is not None:
        element.addElement(payload)
    server.router.route(element)


def answers(server):
    """What went to remote servers since the last call: (type, to, condition)."""
    sent, server.remote[:] = list(server.remote), []
    return [(e.getAttribute("type"), e["to"],
             error_condition(e) if e.getAttribute("type") == "error" else None) for e in sent]


# Inbound, from a blocked domain


@pytest.mark.parametrize("type_", ["chat", "normal", "headline"])
def test_a_message_from_a_blocked_domain_is_answered_service_unavailable(server, type_):
    alice = login(server)
    receive(server, "message", "spammer@spam.example/x", ALICE + "/r", type_, "body")
    assert alice.take() == []
    assert answers(server) == [("error", "spammer@spam.example/x", "service-unavailable")]


@pytest.mark.parametrize("to", [ALICE, ALICE + "/r", "example.com"])
def test_an_iq_request_from_a_blocked_domain_is_answered_service_unavailable(server, to):
    alice = login(server)
    receive(server, "iq", "spammer@spam.example/x", to, "get", "query")
    assert alice.take() == []
    assert answers(server) == [("error", "spammer@spam.example/x", "service-unavailable")]


@pytest.mark.parametrize("kind, type_", [
    ("presence", None), ("presence", "subscribe"), ("presence", "probe"),
    ("message", "groupchat"), ("message", "error"), ("iq", "result"), ("iq", "error"),
])
def test_presence_groupchat_responses_and_errors_are_dropped_without_an_answer(
        server, kind, type_):
    alice = login(server, available=True)
    receive(server, kind, "spammer@spam.example/x", ALICE + "/r", type_)
    assert alice.take() == [] and answers(server) == []


def test_a_refused_subscription_request_is_not_stored(server):
    receive(server, "presence", "spammer@spam.example", ALICE, "subscribe")
    assert server.sql.get_value("alice", "example.com", "subscription-requests",
                                "spammer@spam.example") is None
    alice = login(server, available=False)
    alice.send("<presence/>")
    assert [e for e in alice.take() if e.getAttribute("type") == "subscribe"] == []


def test_other_remote_domains_pass(server):
    alice = login(server)
    receive(server, "message", "friend@fine.example/x", ALICE + "/r", "chat", "body")
    [message] = alice.take()
    assert message["from"] == "friend@fine.example/x"
    assert answers(server) == []


# Outbound, to a blocked domain


def test_what_a_client_sends_to_a_blocked_domain_is_not_allowed(server):
    alice = login(server)
    alice.send("<message to='spammer@spam.example' id='m' type='chat'><body>hi</body></message>")
    alice.send("<iq to='spam.example' type='get' id='q'><ping xmlns='urn:xmpp:ping'/></iq>")
    alice.send("<presence to='spammer@spam.example/x' id='p'/>")
    errors = alice.take()
    assert [(e.name, e["id"], e["type"], error_condition(e)) for e in errors] == [
        ("message", "m", "error", "not-allowed"), ("iq", "q", "error", "not-allowed"),
        ("presence", "p", "error", "not-allowed")]
    assert str(errors[0].error.text) == "spam.example is blocked by this server"
    assert answers(server) == []


def test_a_subscription_request_to_a_blocked_domain_changes_no_roster(server):
    alice = login(server)
    alice.send("<presence to='spammer@spam.example' type='subscribe' id='s'/>")
    [error] = alice.take()
    assert error_condition(error) == "not-allowed"
    assert server.sql.get_roster_item("alice", "example.com", "spammer@spam.example") is None
    assert answers(server) == []


def test_errors_and_results_a_client_sends_there_are_dropped(server):
    alice = login(server)
    alice.send("<iq to='spammer@spam.example/x' type='result' id='r'/>")
    alice.send("<message to='spammer@spam.example/x' type='error' id='e'/>")
    assert alice.take() == [] and answers(server) == []


def test_presence_the_server_sends_for_an_account_is_dropped(server):
    for contact in ("spammer@spam.example", "friend@fine.example"):
        server.sql.set_roster_item("alice", "example.com",
                                   RosterItem(jid=contact, subscription="both"))
    login(server, available=True)  # a broadcast and probes to both contacts
    sent = answers(server)
    assert {to for _, to, _ in sent} == {"friend@fine.example"}
    assert {type_ for type_, _, _ in sent} == {None, "probe"}


# Patterns and lists


@pytest.mark.parametrize("domain, blocked", [
    ("spam.example", True), ("sub.spam.example", False),  # a domain: itself only
    ("x.bad.example", True), ("a.b.bad.example", True),  # *.domain: every subdomain
    ("bad.example", False), ("notbad.example", False),  # but not the domain itself
    ("fine.example", False),
])
def test_patterns(server, domain, blocked):
    alice = login(server)
    alice.send(f"<message to='someone@{domain}' id='m' type='chat'><body>hi</body></message>")
    assert [error_condition(e) for e in alice.take()] == (["not-allowed"] if blocked else [])
    assert [to for _, to, _ in answers(server)] == ([] if blocked else [f"someone@{domain}"])


def test_a_host_list_replaces_the_server_wide_one(tmp_path):
    server = make(tmp_path, hosts=("example.com",), extra=SERVER_WIDE + (
        '[hosts."other.example"]\n[hosts."other.example".domain_blocklist]\n'
        'domains = ["rude.example"]\n'))
    alice, carol = login(server, ALICE), login(server, CAROL)
    for client in (alice, carol):
        for domain in ("spam.example", "rude.example"):
            client.send(f"<message to='x@{domain}' id='{domain}' type='chat'/>")
    assert [e["id"] for e in alice.take()] == ["spam.example"]
    assert [e["id"] for e in carol.take()] == ["rude.example"]
    assert [(to, e) for _, to, e in answers(server)] == [
        ("x@rude.example", None), ("x@spam.example", None)]
    receive(server, "message", "x@rude.example", ALICE + "/r", "chat", "body")
    receive(server, "message", "x@spam.example", CAROL + "/r", "chat", "body")
    assert len(alice.take()) == len(carol.take()) == 1 and answers(server) == []


def test_a_host_with_an_empty_list_refuses_nothing(tmp_path):
    server = make(tmp_path, hosts=("example.com",), extra=SERVER_WIDE + (
        '[hosts."other.example"]\n[hosts."other.example".domain_blocklist]\ndomains = []\n'))
    carol = login(server, CAROL)
    carol.send("<message to='x@spam.example' type='chat'/>")
    assert carol.take() == []
    assert [to for _, to, _ in answers(server)] == ["x@spam.example"]
    receive(server, "message", "x@spam.example", CAROL + "/r", "chat", "body")
    assert len(carol.take()) == 1 and answers(server) == []


def test_nothing_within_one_host_is_refused(tmp_path):
    server = make(tmp_path, hosts=("other.example",), extra=(
        '[hosts."example.com"]\n[hosts."example.com".domain_blocklist]\n'
        'domains = ["example.com", "*.example.com"]\n'))
    server.router.add_service("conference.example.com", "example.com")
    alice, bob = login(server, ALICE), login(server, "bob@example.com")
    alice.send("<message to='bob@example.com/r' type='chat'><body>hi</body></message>")
    alice.send("<iq to='conference.example.com' type='get' id='q'><query xmlns='urn:x'/></iq>")
    assert len(bob.take()) == 1
    [error] = alice.take()  # the service's own answer: nobody serves it here
    assert error_condition(error) == "service-unavailable"
    alice.send("<message to='someone@x.example.com' id='m' type='chat'/>")
    assert [error_condition(e) for e in alice.take()] == ["not-allowed"]


def test_another_hosted_domain_may_be_listed(tmp_path):
    server = make(tmp_path, hosts=("other.example",), extra=(
        '[hosts."example.com"]\n[hosts."example.com".domain_blocklist]\n'
        'domains = ["other.example"]\n'))
    alice, carol = login(server, ALICE), login(server, CAROL)
    alice.send(f"<message to='{CAROL}/r' id='out' type='chat'><body>hi</body></message>")
    carol.send(f"<message to='{ALICE}/r' id='in' type='chat'><body>hi</body></message>")
    assert [(e["id"], error_condition(e)) for e in alice.take()] == [("out", "not-allowed")]
    assert [(e["id"], error_condition(e)) for e in carol.take()] == [
        ("in", "service-unavailable")]


# Configuration


def test_a_reload_applies_new_lists(server, tmp_path):
    alice = login(server)
    server.reconfigure(make_config(tmp_path, HOSTS, '[domain_blocklist]\n'
                                   'domains = ["fine.example"]\n'), server.certificates)
    alice.send("<message to='x@spam.example' type='chat'/>")
    alice.send("<message to='x@fine.example' type='chat'/>")
    assert [error_condition(e) for e in alice.take()] == ["not-allowed"]
    assert [to for _, to, _ in answers(server)] == ["x@spam.example"]
    receive(server, "message", "x@fine.example", ALICE + "/r", "chat", "body")
    assert alice.take() == [] and [t for t, _, _ in answers(server)] == ["error"]
    server.reconfigure(make_config(tmp_path, HOSTS), server.certificates)
    alice.send("<message to='x@fine.example' type='chat'/>")
    assert alice.take() == [] and [to for _, to, _ in answers(server)] == ["x@fine.example"]


def test_patterns_are_normalised(tmp_path):
    config = parse(SERVER_WIDE + '[hosts."example.com"]\n', str(tmp_path / "xmppd.toml"))
    assert config.options("domain_blocklist").domains == ("spam.example", "*.bad.example")


@pytest.mark.parametrize("value, key", [
    ('"spam.example"', "domain_blocklist.domains: expected an array of strings"),
    ('["ok.example", "not a domain"]', "domain_blocklist.domains[1]"),
    ('["*."]', "domain_blocklist.domains[0]"),
])
def test_a_bad_pattern_names_its_key(tmp_path, value, key):
    with pytest.raises(ConfigError) as info:
        parse(f'[domain_blocklist]\ndomains = {value}\n[hosts."example.com"]\n',
              str(tmp_path / "xmppd.toml"))
    assert key in str(info.value)
