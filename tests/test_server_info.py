"""Software version (XEP-0092), entity time (XEP-0202) and last activity
(XEP-0012), in memory with the injected clock."""

import platform

import pytest

import xmppd
from tests.harness import Client, add_user, error_condition, make_config, make_server
from xmppd.core.events import CONFIG_RELOADED, SESSION_AVAILABLE, SESSION_UNAVAILABLE
from xmppd.core.stanzas import make_stanza
from xmppd.jid import JID
from xmppd.storage import RosterItem

NS_VERSION = "jabber:iq:version"
NS_TIME = "urn:xmpp:time"
NS_LAST = "jabber:iq:last"
NS_INFO = "http://jabber.org/protocol/disco#info"
MODULES = ("bind", "roster", "disco", "version", "time", "last")


def make(tmp_path, extra=""):
    server = make_server(tmp_path, modules=MODULES, extra=extra)
    for user in ("alice@example.com", "bob@example.com", "carol@example.com"):
        add_user(server, user)
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


def login(server, user="alice@example.com", resource="res"):
    client = Client(server)
    client.login(user, resource)
    return client


def ask(client, ns, to="example.com", name="query"):
    client.send(f"<iq type='get' id='q' to='{to}'><{name} xmlns='{ns}'/></iq>")
    [answer] = client.take()
    assert answer["id"] == "q"
    return answer


def payload(answer):
    assert answer["type"] == "result", answer.toXml()
    return answer.firstChildElement()


def children(element):
    return {child.name: str(child) for child in element.elements()}


def disco_features(client):
    query = payload(ask(client, NS_INFO))
    return [f["var"] for f in query.elements(NS_INFO, "feature")]


# Software version


def test_version_without_os_by_default(server):
    client = login(server)
    assert children(payload(ask(client, NS_VERSION))) == {
        "name": "xmppd", "version": xmppd.__version__}
    assert NS_VERSION in disco_features(client)


def test_version_with_os(tmp_path):
    client = login(make(tmp_path, "[version]\nshow_os = true"))
    answer = children(payload(ask(client, NS_VERSION)))
    assert answer["os"] == f"{platform.system()} {platform.release()}".strip()
    assert answer["name"] == "xmppd"


def test_show_os_follows_a_reloaded_config(tmp_path, server):
    client = login(server)
    server.config = make_config(tmp_path, extra="[version]\nshow_os = true")
    server.hooks.fire(CONFIG_RELOADED, server.config)
    assert "os" in children(payload(ask(client, NS_VERSION)))


def test_hidden_version(tmp_path):
    client = login(make(tmp_path, "[version]\nhidden = true\nshow_os = true"))
    assert error_condition(ask(client, NS_VERSION)) == "service-unavailable"
    assert NS_VERSION not in disco_features(client)


# Entity time


def test_time_from_the_server_clock(server):
    server.clock.advance(1700000000.75)
    answer = payload(ask(login(server), NS_TIME, name="time"))
    assert answer.uri == NS_TIME and answer.name == "time"
    assert children(answer) == {"tzo": "+00:00", "utc": "2023-11-14T22:13:20Z"}


def test_time_disabled_for_a_host(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=MODULES,
                         extra='[hosts."example.com"]\ndisabled_modules = ["time"]')
    add_user(server, "alice@example.com")
    client = login(server)
    assert error_condition(ask(client, NS_TIME, name="time")) == "service-unavailable"
    assert NS_TIME not in disco_features(client)


# Last activity: the server's uptime


def test_server_uptime(server):
    server.clock.advance(3600.9)
    client = login(server)
    query = payload(ask(client, NS_LAST))
    assert query["seconds"] == "3600" and str(query) == ""
    server.clock.advance(60)
    assert payload(ask(client, NS_LAST))["seconds"] == "3660"


# Last activity: an account's last logout


def session_of(server, full_jid):
    return server.sessions.get(JID.parse(full_jid))


def go_available(server, full_jid):
    """What the presence module does on initial presence."""
    session = session_of(server, full_jid)
    session.available = True
    server.hooks.fire(SESSION_AVAILABLE, session)


def go_unavailable(server, full_jid, status=None):
    """What the presence module does on unavailable presence."""
    session = session_of(server, full_jid)
    session.available = False
    presence = make_stanza("presence", type_="unavailable")
    if status is not None:
        presence.addElement("status", content=status)
    session.presence = presence
    server.hooks.fire(SESSION_UNAVAILABLE, session)


def subscribe(server, user, contact, subscription):
    local, domain = user.split("@")
    server.sql.set_roster_item(local, domain, RosterItem(jid=contact, subscription=subscription))


@pytest.fixture
def bob(server):
    subscribe(server, "alice@example.com", "bob@example.com", "from")
    return login(server, "bob@example.com", "b")


def test_online_user_has_zero_seconds(server, bob):
    login(server, "alice@example.com", "a")
    go_available(server, "alice@example.com/a")
    query = payload(ask(bob, NS_LAST, "alice@example.com"))
    assert query["seconds"] == "0" and str(query) == ""


def test_seconds_since_the_last_available_resource_went_away(server, bob):
    login(server, "alice@example.com", "a")
    login(server, "alice@example.com", "b")
    go_available(server, "alice@example.com/a")
    go_available(server, "alice@example.com/b")
    server.clock.advance(100)
    go_unavailable(server, "alice@example.com/a", "first one")
    assert payload(ask(bob, NS_LAST, "alice@example.com"))["seconds"] == "0"
    server.clock.advance(50)
    go_unavailable(server, "alice@example.com/b", "Heading Home")
    server.clock.advance(903)
    query = payload(ask(bob, NS_LAST, "alice@example.com"))
    assert query["seconds"] == "903" and str(query) == "Heading Home"
    assert server.sql.get_value("alice", "example.com", "last", "logout") == "150 Heading Home"


def test_logout_without_status(server, bob):
    login(server, "alice@example.com", "a")
    go_available(server, "alice@example.com/a")
    go_unavailable(server, "alice@example.com/a")
    server.clock.advance(5)
    query = payload(ask(bob, NS_LAST, "alice@example.com"))
    assert query["seconds"] == "5" and str(query) == ""


def test_account_may_ask_about_itself(server):
    login(server, "alice@example.com", "a")
    go_available(server, "alice@example.com/a")
    go_unavailable(server, "alice@example.com/a", "bye")
    server.clock.advance(7)
    query = payload(ask(login(server, "alice@example.com", "other"), NS_LAST, "alice@example.com"))
    assert query["seconds"] == "7" and str(query) == "bye"


@pytest.mark.parametrize("subscription", [None, "none", "to"])
def test_forbidden_without_a_subscription(server, subscription):
    if subscription is not None:
        subscribe(server, "alice@example.com", "carol@example.com", subscription)
    login(server, "alice@example.com", "a")
    go_available(server, "alice@example.com/a")
    answer = ask(login(server, "carol@example.com"), NS_LAST, "alice@example.com")
    assert answer["type"] == "error" and error_condition(answer) == "forbidden"


def test_unknown_account(bob):
    assert error_condition(ask(bob, NS_LAST, "nobody@example.com")) == "service-unavailable"


def test_never_logged_out(server, bob):
    assert error_condition(ask(bob, NS_LAST, "alice@example.com")) == "item-not-found"


def test_full_jid_is_left_to_the_client(server, bob):
    alice = login(server, "alice@example.com", "a")
    bob.send(f"<iq type='get' id='f' to='alice@example.com/a'><query xmlns='{NS_LAST}'/></iq>")
    [forwarded] = alice.take()
    assert forwarded["id"] == "f" and forwarded["from"] == "bob@example.com/b"
    assert bob.take() == []


def test_not_recorded_where_last_is_disabled(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=MODULES,
                         extra='[hosts."example.com"]\ndisabled_modules = ["last"]')
    add_user(server, "alice@example.com")
    login(server, "alice@example.com", "a")
    go_available(server, "alice@example.com/a")
    go_unavailable(server, "alice@example.com/a")
    assert server.sql.get_value("alice", "example.com", "last", "logout") is None
