"""Service discovery (XEP-0030), in memory: the server's identity and
features per host, its items, and the answers on an account's behalf under
the access rules of §8."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server
from xmppd.jid import JID
from xmppd.storage import RosterItem

NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
MODULES = ("bind", "roster", "disco", "caps", "ping", "version", "time", "last")
EVERY_FEATURE = sorted([NS_INFO, NS_ITEMS, "http://jabber.org/protocol/caps", "urn:xmpp:ping",
                        "jabber:iq:version", "urn:xmpp:time", "jabber:iq:last"])
HOSTS = """
[hosts."example.com"]
[hosts."quiet.example"]
disabled_modules = ["version", "time"]
[hosts."nodisco.example"]
disabled_modules = ["disco"]
"""


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=MODULES, extra=HOSTS)
    for user in ("alice@example.com", "bob@example.com", "carol@example.com",
                 "dave@quiet.example", "erin@nodisco.example"):
        add_user(server, user)
    return server


def login(server, user, resource="res"):
    client = Client(server, domain=user.split("@")[1])
    client.login(user, resource)
    return client


def disco(client, ns, to, node=None):
    """Send a disco request; the single answer."""
    node_attr = "" if node is None else f" node='{node}'"
    client.send(f"<iq type='get' id='d1' to='{to}'><query xmlns='{ns}'{node_attr}/></iq>")
    [answer] = client.take()
    assert answer["id"] == "d1"
    return answer


def result_query(answer):
    assert answer["type"] == "result", answer.toXml()
    return answer.firstChildElement()


def identities(query):
    return [(i["category"], i["type"], i.getAttribute("name"))
            for i in query.elements(NS_INFO, "identity")]


def features(query):
    return [f["var"] for f in query.elements(NS_INFO, "feature")]


def items(query):
    return [(i["jid"], i.getAttribute("name")) for i in query.elements(NS_ITEMS, "item")]


def subscribe(server, user, contact, subscription):
    local, domain = user.split("@")
    server.sql.set_roster_item(local, domain, RosterItem(jid=contact, subscription=subscription))


# The server


def test_server_info_lists_identity_and_exactly_the_enabled_features(server):
    query = result_query(disco(login(server, "alice@example.com"), NS_INFO, "example.com"))
    assert identities(query) == [("server", "im", "xmppd")]
    assert features(query) == EVERY_FEATURE
    assert query.getAttribute("node") is None


def test_features_of_disabled_modules_disappear(server):
    query = result_query(disco(login(server, "dave@quiet.example"), NS_INFO, "quiet.example"))
    assert features(query) == [f for f in EVERY_FEATURE
                               if f not in ("jabber:iq:version", "urn:xmpp:time")]


def test_other_hosted_domain_answers_with_its_own_features(server):
    query = result_query(disco(login(server, "alice@example.com"), NS_INFO, "quiet.example"))
    assert "jabber:iq:version" not in features(query) and "urn:xmpp:ping" in features(query)


def test_disco_disabled_for_a_host(server):
    client = login(server, "erin@nodisco.example")
    for ns in (NS_INFO, NS_ITEMS):
        assert error_condition(disco(client, ns, "nodisco.example")) == "service-unavailable"


def test_unknown_node_is_item_not_found(server):
    client = login(server, "alice@example.com")
    for ns in (NS_INFO, NS_ITEMS):
        answer = disco(client, ns, "example.com", node="no-such-node")
        assert answer["type"] == "error" and error_condition(answer) == "item-not-found"


def test_server_items_are_empty_until_a_module_adds_some(server):
    client = login(server, "alice@example.com")
    assert items(result_query(disco(client, NS_ITEMS, "example.com"))) == []
    service = server.services["disco"]
    service.add_item("example.com", "conference.example.com", "Chatrooms")
    service.add_item("example.com", "upload.example.com")
    assert items(result_query(disco(client, NS_ITEMS, "example.com"))) == [
        ("conference.example.com", "Chatrooms"), ("upload.example.com", None)]
    assert items(result_query(disco(client, NS_ITEMS, "quiet.example"))) == []


def test_module_answers_its_own_node(server):
    def handler(domain, node):
        return server.services["disco"].info(domain, node) if node == "special" else None

    server.services["disco"].add_node(handler)
    alice = login(server, "alice@example.com")
    query = result_query(disco(alice, NS_INFO, "example.com", "special"))
    assert query["node"] == "special" and features(query) == EVERY_FEATURE


# Accounts (§3.1, §4.1, §8)


def test_account_info_for_the_account_itself(server):
    query = result_query(disco(login(server, "alice@example.com"), NS_INFO, "alice@example.com"))
    assert identities(query) == [("account", "registered", None)]
    assert features(query) == [NS_INFO, NS_ITEMS]


@pytest.mark.parametrize("subscription", ["from", "both"])
def test_account_info_for_a_subscriber(server, subscription):
    subscribe(server, "alice@example.com", "bob@example.com", subscription)
    query = result_query(disco(login(server, "bob@example.com"), NS_INFO, "alice@example.com"))
    assert identities(query) == [("account", "registered", None)]


@pytest.mark.parametrize("subscription", [None, "none", "to"])
def test_account_info_refused_without_a_subscription(server, subscription):
    if subscription is not None:
        subscribe(server, "alice@example.com", "bob@example.com", subscription)
    answer = disco(login(server, "bob@example.com"), NS_INFO, "alice@example.com")
    assert answer["type"] == "error" and error_condition(answer) == "service-unavailable"


def test_unknown_account_info_is_service_unavailable(server):
    answer = disco(login(server, "alice@example.com"), NS_INFO, "nobody@example.com")
    assert error_condition(answer) == "service-unavailable"


def test_account_info_with_a_node(server):
    answer = disco(login(server, "alice@example.com"), NS_INFO, "alice@example.com", "x")
    assert error_condition(answer) == "item-not-found"
    answer = disco(login(server, "bob@example.com"), NS_INFO, "alice@example.com", "x")
    assert error_condition(answer) == "service-unavailable"


def test_account_items(server):
    subscribe(server, "alice@example.com", "bob@example.com", "both")
    alice1 = login(server, "alice@example.com", "one")
    alice2 = login(server, "alice@example.com", "two")
    server.sessions.get(JID.parse("alice@example.com/two")).available = True
    own = result_query(disco(alice1, NS_ITEMS, "alice@example.com"))
    assert items(own) == [("alice@example.com/one", None), ("alice@example.com/two", None)]
    bob = login(server, "bob@example.com")
    seen_by_bob = result_query(disco(bob, NS_ITEMS, "alice@example.com"))
    assert items(seen_by_bob) == [("alice@example.com/two", None)]
    assert alice2.take() == []


def test_account_items_are_empty_for_strangers_and_unknown_accounts(server):
    login(server, "alice@example.com").take()
    server.sessions.get(JID.parse("alice@example.com/res")).available = True
    carol = login(server, "carol@example.com")
    for to in ("alice@example.com", "nobody@example.com"):
        for node in (None, "x"):
            query = result_query(disco(carol, NS_ITEMS, to, node))
            assert items(query) == [] and query.getAttribute("node") == node


# Extended information forms (XEP-0128)


def test_modules_add_extended_forms_to_the_server_info(server):
    from xmppd.modules.caps import verification_string
    from xmppd.wokkel_compat import data_form

    def contact(domain):
        if domain != "example.com":
            return None
        form = data_form.Form("result", formNamespace="http://jabber.org/network/serverinfo")
        form.addField(data_form.Field("list-multi", var="admin-addresses",
                                      values=["xmpp:admin@example.com"]))
        return form

    service = server.services["disco"]
    before = verification_string(service.info("example.com"))
    service.add_form(contact)
    service.add_form(lambda domain: None)
    alice = login(server, "alice@example.com")
    query = result_query(disco(alice, NS_INFO, "example.com"))
    [form] = [data_form.Form.fromElement(x) for x in query.elements(data_form.NS_X_DATA, "x")]
    assert form.formType == "result"
    assert form.formNamespace == "http://jabber.org/network/serverinfo"
    assert form.fields["admin-addresses"].values == ["xmpp:admin@example.com"]
    assert features(query) == EVERY_FEATURE  # the features stay as they were
    # Entity capabilities hash the form too (XEP-0115 §5.4).
    assert verification_string(service.info("example.com")) != before
    quiet = result_query(disco(alice, NS_INFO, "quiet.example"))
    assert list(quiet.elements(data_form.NS_X_DATA, "x")) == []
