"""Private XML storage (XEP-0049), in memory."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server, reload
from xmppd.jid import JID

NS = "jabber:iq:private"
PREFS = "<prefs xmlns='urn:example:prefs'><nick>Hamlet</nick></prefs>"
BOOKMARKS = ("<storage xmlns='storage:bookmarks'>"
             "<conference jid='room@muc.example.com' autojoin='true'/></storage>")


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, modules=("bind", "private"),
                         extra="[private]\nmax_size = 1024")
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    return server


def login(server, user="alice@example.com", resource="r"):
    client = Client(server)
    client.login(user, resource)
    return client


def private(client, type_, children, to=None):
    to_attr = "" if to is None else f" to='{to}'"
    client.send(f"<iq type='{type_}' id='p'{to_attr}><query xmlns='{NS}'>{children}</query></iq>")
    [answer] = client.take()
    assert answer["id"] == "p"
    return answer


def stored(answer):
    """The query's children as (namespace, name, XML) triples."""
    assert answer["type"] == "result", answer.toXml()
    query = answer.firstChildElement()
    assert (query.uri, query.name) == (NS, "query")
    return [(child.uri, child.name, child.toXml()) for child in query.elements()]


def test_private_storage_is_advertised(server):
    assert server.features_for("example.com") == [NS]


def test_get_of_a_namespace_never_stored_returns_the_empty_element(server):
    alice = login(server)
    assert stored(private(alice, "get", "<prefs xmlns='urn:example:prefs'/>")) == [
        ("urn:example:prefs", "prefs", "<prefs xmlns='urn:example:prefs'/>")]


def test_set_then_get_from_another_session(server):
    assert private(login(server, resource="a"), "set", PREFS)["type"] == "result"
    [(uri, name, xml)] = stored(private(login(server, resource="b"), "get",
                                        "<prefs xmlns='urn:example:prefs'/>"))
    assert (uri, name) == ("urn:example:prefs", "prefs")
    assert "<nick>Hamlet</nick>" in xml


def test_each_element_is_stored_apart_and_replaced_whole(server):
    alice = login(server)
    private(alice, "set", PREFS + BOOKMARKS)
    private(alice, "set", "<prefs xmlns='urn:example:prefs'><nick>Ophelia</nick></prefs>")
    [(_, _, prefs)] = stored(private(alice, "get", "<prefs xmlns='urn:example:prefs'/>"))
    assert "Ophelia" in prefs and "Hamlet" not in prefs
    [(uri, name, bookmarks)] = stored(private(alice, "get", "<storage xmlns='storage:bookmarks'/>"))
    assert (uri, name) == ("storage:bookmarks", "storage")
    assert "room@muc.example.com" in bookmarks


def test_data_is_per_account(server):
    private(login(server), "set", PREFS)
    bob = login(server, "bob@example.com")
    assert stored(private(bob, "get", "<prefs xmlns='urn:example:prefs'/>")) == [
        ("urn:example:prefs", "prefs", "<prefs xmlns='urn:example:prefs'/>")]


@pytest.mark.parametrize("type_", ["get", "set"])
def test_someone_elses_data_is_forbidden(server, type_):
    private(login(server), "set", PREFS)
    bob = login(server, "bob@example.com")
    answer = private(bob, type_, PREFS, to="alice@example.com")
    assert error_condition(answer) == "forbidden"
    assert "Hamlet" not in answer.toXml().split("<error")[1]


@pytest.mark.parametrize("child", [
    "<query xmlns='jabber:iq:roster'/>",
    "<x xmlns='jabber:x:data'/>",
    "<vCard xmlns='vcard-temp'><FN>Hamlet</FN></vCard>",
    "<p xmlns='http://jabber.org/protocol/disco#info'/>",
    "<nons/>",
])
@pytest.mark.parametrize("type_", ["get", "set"])
def test_reserved_namespaces_are_not_acceptable(server, type_, child):
    assert error_condition(private(login(server), type_, child)) == "not-acceptable"


@pytest.mark.parametrize("type_", ["get", "set"])
def test_an_empty_query_is_not_acceptable(server, type_):
    assert error_condition(private(login(server), type_, "")) == "not-acceptable"


def test_a_get_names_one_namespace(server):
    answer = private(login(server), "get", "<a xmlns='urn:a'/><b xmlns='urn:b'/>")
    assert error_condition(answer) == "bad-request"


def test_too_large_item_is_refused_and_nothing_of_the_set_stored(server):
    alice = login(server)
    big = f"<big xmlns='urn:example:big'>{'x' * 1000}</big>"
    assert error_condition(private(alice, "set", PREFS + big)) == "not-acceptable"
    assert stored(private(alice, "get", "<prefs xmlns='urn:example:prefs'/>")) == [
        ("urn:example:prefs", "prefs", "<prefs xmlns='urn:example:prefs'/>")]


def test_max_size_follows_a_reload(server, tmp_path):
    alice = login(server)
    big = f"<big xmlns='urn:example:big'>{'x' * 1500}</big>"
    assert error_condition(private(alice, "set", big)) == "not-acceptable"
    reload(server, tmp_path, "[private]\nmax_size = 4096")
    assert private(alice, "set", big)["type"] == "result"


def test_the_service_tells_listeners_but_the_writer(server):
    service = server.services["private"]
    seen, told_writer = [], []

    def writer(account, element):
        told_writer.append(element.name)

    service.listen(lambda account, element: seen.append((account.full, element.name)))
    service.listen(writer)
    alice = login(server)
    private(alice, "set", PREFS + BOOKMARKS)
    assert seen == [("alice@example.com", "prefs"), ("alice@example.com", "storage")]
    assert told_writer == ["prefs", "storage"]
    account = JID.parse("alice@example.com")
    prefs = service.get(account, "urn:example:prefs", "prefs").result
    assert str(prefs.nick) == "Hamlet"
    prefs.nick.children[:] = ["Ophelia"]
    service.set(account, prefs, writer=writer)
    assert seen[-1] == ("alice@example.com", "prefs") and len(seen) == 3
    assert told_writer == ["prefs", "storage"]
    assert "Ophelia" in stored(private(alice, "get", "<prefs xmlns='urn:example:prefs'/>"))[0][2]
    assert service.get(account, "urn:example:none", "x").result is None
