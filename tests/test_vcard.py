"""vcard-temp (XEP-0054) storage and retrieval, in memory."""

import pytest

from tests.harness import Client, add_user, error_condition, make_server, reload
from xmppd.jid import JID

NS = "vcard-temp"
VCARD = (f"<vCard xmlns='{NS}'><FN>Alice</FN><NICKNAME>al</NICKNAME>"
         "<PHOTO><TYPE>image/png</TYPE><BINVAL>iVBORw0KGgo=</BINVAL></PHOTO></vCard>")


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, modules=("bind", "vcard"),
                         extra="[vcard]\nmax_size = 1024")
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    return server


def login(server, user, resource="r"):
    client = Client(server)
    client.login(user, resource)
    return client


def request(client, type_, payload, to=None):
    to_attr = "" if to is None else f" to='{to}'"
    client.send(f"<iq type='{type_}' id='v'{to_attr}>{payload}</iq>")
    [answer] = client.take()
    assert answer["id"] == "v"
    return answer


def fields(vcard):
    return {child.name: str(child) for child in vcard.elements() if child.name != "PHOTO"}


def test_vcard_temp_is_advertised(server):
    assert server.features_for("example.com") == [NS]


def test_own_vcard_is_empty_until_set(server):
    alice = login(server, "alice@example.com")
    result = request(alice, "get", f"<vCard xmlns='{NS}'/>")
    assert result["type"] == "result"
    vcard = result.firstChildElement()
    assert (vcard.uri, vcard.name, list(vcard.elements())) == (NS, "vCard", [])


def test_set_then_get_own_vcard_with_photo(server):
    alice = login(server, "alice@example.com")
    assert request(alice, "set", VCARD)["type"] == "result"
    for to in (None, "alice@example.com"):
        vcard = request(alice, "get", f"<vCard xmlns='{NS}'/>", to).firstChildElement()
        assert (vcard.uri, vcard.name) == (NS, "vCard")
        assert fields(vcard) == {"FN": "Alice", "NICKNAME": "al"}
        assert str(vcard.PHOTO.BINVAL) == "iVBORw0KGgo=" and vcard.PHOTO.uri == NS


def test_set_replaces_the_whole_vcard(server):
    alice = login(server, "alice@example.com")
    request(alice, "set", VCARD)
    request(alice, "set", f"<vCard xmlns='{NS}'><FN>A. Liddell</FN></vCard>")
    vcard = request(alice, "get", f"<vCard xmlns='{NS}'/>").firstChildElement()
    assert fields(vcard) == {"FN": "A. Liddell"} and vcard.PHOTO is None


def test_others_vcard_is_answered_by_the_server(server):
    alice = login(server, "alice@example.com")
    bob = login(server, "bob@example.com")
    request(alice, "set", VCARD)
    result = request(bob, "get", f"<vCard xmlns='{NS}'/>", "alice@example.com")
    assert result["type"] == "result" and result["from"] == "alice@example.com"
    assert fields(result.firstChildElement()) == {"FN": "Alice", "NICKNAME": "al"}
    assert alice.take() == []  # not forwarded to the account's resources


@pytest.mark.parametrize("to", ["bob@example.com", "nobody@example.com"])
def test_others_missing_vcard_and_unknown_account_look_alike(server, to):
    alice = login(server, "alice@example.com")
    error = request(alice, "get", f"<vCard xmlns='{NS}'/>", to)
    assert error["type"] == "error" and error_condition(error) == "service-unavailable"


def test_setting_someone_elses_vcard_is_forbidden(server):
    alice = login(server, "alice@example.com")
    bob = login(server, "bob@example.com")
    error = request(bob, "set", VCARD, "alice@example.com")
    assert error_condition(error) == "forbidden"
    vcard = request(alice, "get", f"<vCard xmlns='{NS}'/>").firstChildElement()
    assert list(vcard.elements()) == []


def test_too_large_vcard_is_not_acceptable(server):
    alice = login(server, "alice@example.com")
    request(alice, "set", VCARD)
    big = f"<vCard xmlns='{NS}'><DESC>{'x' * 1000}</DESC></vCard>"
    error = request(alice, "set", big)
    assert error_condition(error) == "not-acceptable"
    vcard = request(alice, "get", f"<vCard xmlns='{NS}'/>").firstChildElement()
    assert fields(vcard) == {"FN": "Alice", "NICKNAME": "al"}


def test_wrong_element_is_a_bad_request(server):
    alice = login(server, "alice@example.com")
    assert error_condition(request(alice, "set", f"<card xmlns='{NS}'/>")) == "bad-request"


def test_disabled_host_does_not_answer(tmp_path):
    server = make_server(tmp_path, modules=("bind", "vcard"),
                         extra='[hosts."example.com"]\ndisabled_modules = ["vcard"]',
                         hosts=())
    add_user(server, "alice@example.com")
    alice = login(server, "alice@example.com")
    assert error_condition(request(alice, "get", f"<vCard xmlns='{NS}'/>")) == "service-unavailable"
    assert server.features_for("example.com") == []


def test_max_size_follows_a_reload(server, tmp_path):
    alice = login(server, "alice@example.com")
    big = f"<vCard xmlns='{NS}'><DESC>{'x' * 1500}</DESC></vCard>"
    assert error_condition(request(alice, "set", big)) == "not-acceptable"
    reload(server, tmp_path, "[vcard]\nmax_size = 4096")
    assert request(alice, "set", big)["type"] == "result"


def test_the_service_tells_listeners_but_the_writer(server):
    service = server.services["vcard"]
    seen = []

    def listener(account, vcard):
        seen.append((account.full, fields(vcard)))

    service.listen(listener)
    alice = login(server, "alice@example.com")
    request(alice, "set", VCARD)
    assert seen == [("alice@example.com", {"FN": "Alice", "NICKNAME": "al"})]
    account = JID.parse("alice@example.com")
    vcard = service.get(account).result
    assert fields(vcard) == {"FN": "Alice", "NICKNAME": "al"}
    vcard.FN.children[:] = ["A. Liddell"]
    service.set(account, vcard, writer=listener)
    assert len(seen) == 1
    result = request(alice, "get", f"<vCard xmlns='{NS}'/>").firstChildElement()
    assert fields(result)["FN"] == "A. Liddell"
    assert service.get(JID.parse("bob@example.com")).result is None
