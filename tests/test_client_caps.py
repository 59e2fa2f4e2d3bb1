"""Entity capabilities of clients and contacts (XEP-0115), in memory: what
presence is seen, the disco#info queries sent to resolve a ver, their
verification, the cache, timeouts, and what forgets a full JID."""

import pytest

from tests.harness import add_user, Client, keep_remote, make_server
from xmppd.core.stanzas import error_reply, iq_result, make_stanza
from xmppd.core.xmlstream import parse_stanza
from xmppd.modules.caps import NS_CAPS, NS_DISCO_INFO, verification_string
from xmppd.modules import client_caps
from xmppd.modules.client_caps import MAX_LENGTH, QUERY_TIMEOUT
from xmppd.tap import MODULES

ALICE, BOB = "alice@example.com", "bob@example.com"
DAVE = "dave@remote.example/laptop"
NODE = "https://client.example"
FEATURES = (NS_CAPS, NS_DISCO_INFO, "urn:xmpp:avatar:metadata+notify",
            "http://jabber.org/protocol/geoloc+notify")
OTHER_FEATURES = (NS_CAPS, NS_DISCO_INFO, "http://jabber.org/protocol/tune+notify")


def info(features=FEATURES, node=None):
    """A client's disco#info ``<query/>``, serialised."""
    node_attribute = "" if node is None else f" node='{node}'"
    return (f"<query xmlns='{NS_DISCO_INFO}'{node_attribute}>"
            "<identity category='client' type='pc' name='Test client'/>"
            + "".join(f"<feature var='{var}'/>" for var in features) + "</query>")


def ver(features=FEATURES, hash_name="sha-1"):
    return verification_string(parse_stanza(info(features)), hash_name)


def presence(hash_name="sha-1", node=NODE, ver_=None, to=""):
    ver_ = ver(hash_name=hash_name if hash_name else "sha-1") if ver_ is None else ver_
    hash_attribute = f" hash='{hash_name}'" if hash_name else ""
    to_attribute = f" to='{to}'" if to else ""
    return (f"<presence{to_attribute}><c xmlns='{NS_CAPS}'{hash_attribute} node='{node}'"
            f" ver='{ver_}'/></presence>")


@pytest.fixture
def server(tmp_path):
    """alice and bob; example.com takes stanzas from remote domains, and
    what goes to them is kept in ``server.remote``."""
    server = make_server(tmp_path, hosts=(), modules=MODULES,
                         extra='[hosts."example.com"]\ncross_domain_messages = true')
    for user in (ALICE, BOB):
        add_user(server, user)
    keep_remote(server)
    server.notified = []
    tracker(server).listen(lambda jid, features: server.notified.append((jid, features)))
    return server


def tracker(server):
    return server.services["client_caps"]


def connect(server, user=ALICE, resource="res", stanza=None):
    """A client of ``user`` that sent available presence with caps; the
    client and the disco#info queries it received."""
    client = Client(server)
    client.login(user, resource)
    client.send(presence() if stanza is None else stanza)
    return client, queries(client)


def queries(client):
    return [e for e in client.take() if e.name == "iq" and e.getAttribute("type") == "get"]


def answer(client, query, features=FEATURES):
    client.send(f"<iq type='result' id='{query['id']}' to='{query['from']}'>"
                f"{info(features, query.query['node'])}</iq>")


def test_a_clients_caps_are_resolved_by_asking_it(server):
    alice, [query] = connect(server)
    assert (query["from"], query["to"]) == ("example.com", ALICE + "/res")
    assert (query.query.uri, query.query["node"]) == (NS_DISCO_INFO, f"{NODE}#{ver()}")
    assert tracker(server).features(ALICE + "/res") is None
    answer(alice, query)
    assert alice.take() == []  # the answer is claimed: nothing comes back
    assert tracker(server).features(ALICE + "/res") == frozenset(FEATURES)
    assert server.notified == [(ALICE + "/res", frozenset(FEATURES))]


def test_a_failing_listener_does_not_keep_the_others_from_running(server):
    called = []
    tracker(server).listen(lambda jid, features: 1 / 0)
    tracker(server).listen(lambda jid, features: called.append(jid))
    alice, [query] = connect(server)
    answer(alice, query)
    assert called == [ALICE + "/res"]
    assert tracker(server).features(ALICE + "/res") == frozenset(FEATURES)


def test_a_known_ver_is_not_asked_again(server):
    alice, [query] = connect(server)
    answer(alice, query)
    bob, asked = connect(server, BOB)
    assert asked == []
    assert tracker(server).features(BOB + "/res") == frozenset(FEATURES)
    alice.send(presence())  # the same caps again: nothing new
    assert queries(alice) == []
    assert len(server.notified) == 1  # no listener call for a known ver


@pytest.mark.parametrize("hash_name", ["sha-256", "sha-512"])
def test_other_hash_functions(server, hash_name):
    alice, [query] = connect(server, stanza=presence(hash_name))
    assert query.query["node"] == f"{NODE}#{ver(hash_name=hash_name)}"
    answer(alice, query)
    assert connect(server, BOB, stanza=presence(hash_name))[1] == []
    assert tracker(server).features(BOB + "/res") == frozenset(FEATURES)


def test_entities_announcing_a_ver_being_resolved_share_one_query(server):
    alice, [query] = connect(server)
    bob, asked = connect(server, BOB)
    assert asked == []
    answer(alice, query)
    assert server.notified == [(ALICE + "/res", frozenset(FEATURES)),
                               (BOB + "/res", frozenset(FEATURES))]
    assert tracker(server).features(BOB + "/res") == frozenset(FEATURES)


def test_an_answer_that_does_not_match_the_ver_is_not_cached(server):
    alice, [query] = connect(server)
    answer(alice, query, OTHER_FEATURES)
    assert tracker(server).features(ALICE + "/res") == frozenset(OTHER_FEATURES)  # alice's only
    bob, [again] = connect(server, BOB)
    assert again["to"] == BOB + "/res"
    answer(bob, again)
    assert tracker(server).features(BOB + "/res") == frozenset(FEATURES)


def test_an_ill_formed_answer_is_not_cached(server):
    """§5.4: a feature twice makes the answer ill formed, even if it hashes
    to the ver."""
    twice = FEATURES + FEATURES[-1:]
    alice, [query] = connect(server, stanza=presence(ver_=ver(twice)))
    answer(alice, query, twice)
    assert tracker(server).features(ALICE + "/res") == frozenset(FEATURES)
    assert len(connect(server, BOB, stanza=presence(ver_=ver(twice)))[1]) == 1


def test_a_failed_query_passes_to_the_next_entity_waiting(server):
    alice, [query] = connect(server)
    bob, _ = connect(server, BOB)
    alice.send(error_reply(query, "service-unavailable"))
    assert tracker(server).features(ALICE + "/res") is None
    [again] = queries(bob)
    answer(bob, again)
    assert server.notified == [(BOB + "/res", frozenset(FEATURES))]
    alice.send(presence())  # announced again: known now
    assert queries(alice) == []
    assert tracker(server).features(ALICE + "/res") == frozenset(FEATURES)


def test_an_entity_leaving_passes_its_query_on(server):
    alice, _ = connect(server)
    bob, _ = connect(server, BOB)
    alice.lose()
    [again] = queries(bob)
    answer(bob, again)
    assert server.notified == [(BOB + "/res", frozenset(FEATURES))]


def test_legacy_caps_describe_one_entity(server):
    legacy = presence(hash_name=None, ver_="1.0")
    alice, [query] = connect(server, stanza=legacy)
    assert query.query["node"] == f"{NODE}#1.0"
    answer(alice, query)
    assert tracker(server).features(ALICE + "/res") == frozenset(FEATURES)
    assert len(connect(server, BOB, stanza=legacy)[1]) == 1  # not cached: asked again


def test_unknown_hash_function_describes_one_entity(server):
    alice, [query] = connect(server, stanza=presence(hash_name="md5", ver_=ver()))
    answer(alice, query)
    assert tracker(server).features(ALICE + "/res") == frozenset(FEATURES)
    assert len(connect(server, BOB, stanza=presence(hash_name="md5", ver_=ver()))[1]) == 1


def test_an_unanswered_query_times_out(server):
    alice, [query] = connect(server)
    server.clock.advance(QUERY_TIMEOUT)
    answer(alice, query)  # too late: not claimed, and dropped as an iq result
    assert alice.take() == []
    assert tracker(server).features(ALICE + "/res") is None
    assert server.notified == []
    alice.send(presence())  # announced again: asked again
    [again] = queries(alice)
    answer(alice, again)
    assert tracker(server).features(ALICE + "/res") == frozenset(FEATURES)


def test_new_caps_replace_the_query_in_flight(server):
    """One query per full JID: new caps make the old query's answer
    unexpected."""
    alice, [old] = connect(server)
    alice.send(presence(ver_=ver(OTHER_FEATURES)))
    [new] = queries(alice)
    answer(alice, old)
    assert tracker(server).features(ALICE + "/res") is None
    answer(alice, new, OTHER_FEATURES)
    assert tracker(server).features(ALICE + "/res") == frozenset(OTHER_FEATURES)
    assert server.notified == [(ALICE + "/res", frozenset(OTHER_FEATURES))]


def test_only_the_entity_asked_answers(server):
    alice, [query] = connect(server)
    bob, _ = connect(server, BOB, stanza="<presence/>")
    bob.send(f"<iq type='result' id='{query['id']}' to='example.com'>{info()}</iq>")
    assert tracker(server).features(ALICE + "/res") is None
    answer(alice, query)
    assert tracker(server).features(ALICE + "/res") == frozenset(FEATURES)


def test_unavailable_presence_and_the_session_ending_forget(server):
    alice, [query] = connect(server)
    answer(alice, query)
    alice.send("<presence type='unavailable'/>")
    assert tracker(server).features(ALICE + "/res") is None
    bob, _ = connect(server, BOB)
    assert tracker(server).features(BOB + "/res") == frozenset(FEATURES)
    bob.lose()
    assert tracker(server).features(BOB + "/res") is None


def test_directed_presence_is_seen_only_by_a_local_recipient(server):
    alice, _ = connect(server, stanza="<presence/>")
    alice.send(presence(to=DAVE))
    assert queries(alice) == []
    assert [e.name for e in server.remote] == ["presence"]
    alice.send(presence(to=BOB))
    [query] = queries(alice)
    assert query["from"] == "example.com"


def test_queries_in_flight_are_bounded(server, monkeypatch):
    monkeypatch.setattr(client_caps, "MAX_QUERIES", 1)
    alice, [query] = connect(server)
    bob, asked = connect(server, BOB, stanza=presence(ver_=ver(OTHER_FEATURES)))
    assert asked == []
    answer(alice, query)
    bob.send(presence(ver_=ver(OTHER_FEATURES)))  # announced again: asked now
    assert len(queries(bob)) == 1


def test_the_cache_keeps_the_most_recently_used(server, monkeypatch):
    monkeypatch.setattr(client_caps, "CACHE_SIZE", 1)
    alice, [query] = connect(server)
    answer(alice, query)
    bob, [query] = connect(server, BOB, stanza=presence(ver_=ver(OTHER_FEATURES)))
    answer(bob, query, OTHER_FEATURES)
    assert len(connect(server, ALICE, "other")[1]) == 1  # the first ver was dropped


def test_over_long_caps_are_ignored(server):
    alice, asked = connect(server, stanza=presence(ver_="v" * (MAX_LENGTH + 1)))
    assert asked == []


def test_a_remote_contacts_caps(server):
    alice, _ = connect(server, stanza="<presence/>")
    server.router.route(parse_stanza(presence(to=ALICE).replace(
        "<presence", f"<presence from='{DAVE}'", 1)))
    [query] = server.remote
    assert (query["from"], query["to"], query.query["node"]) == (
        "example.com", DAVE, f"{NODE}#{ver()}")
    result = iq_result(query, parse_stanza(info(node=query.query["node"])))
    forged = iq_result(query)
    forged["from"] = "eve@remote.example/laptop"
    server.router.route(forged)
    assert tracker(server).features(DAVE) is None
    server.router.route(result)
    assert tracker(server).features(DAVE) == frozenset(FEATURES)
    assert server.notified == [(DAVE, frozenset(FEATURES))]
    server.router.route(make_stanza("presence", to=ALICE + "/res", from_=DAVE,
                                    type_="unavailable"))
    assert tracker(server).features(DAVE) is None


def test_caps_of_presence_to_a_local_account(server):
    """A contact's presence to an account with no session is seen too, and
    the query comes from the account's domain."""
    server.router.route(parse_stanza(presence(to=BOB).replace(
        "<presence", f"<presence from='{DAVE}'", 1)))
    [query] = server.remote
    assert (query["from"], query["to"]) == ("example.com", DAVE)
    server.router.route(iq_result(query, parse_stanza(info(node=query.query["node"]))))
    assert tracker(server).features(DAVE) == frozenset(FEATURES)


def test_switched_off_for_a_host(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=MODULES,
                         extra='[hosts."example.com"]\ndisabled_modules = ["client_caps"]')
    add_user(server, ALICE)
    alice, asked = connect(server)
    assert asked == []
    assert server.services["client_caps"].features(ALICE + "/res") is None


def test_followers_get_presence_with_caps_and_unavailable(server):
    followed = []
    tracker(server).follow(lambda account, jid, available: followed.append(
        (account.full, jid, available)))
    connect(server, BOB)
    alice, _ = connect(server, ALICE)
    alice.send(f"<presence to='{BOB}'/>")  # no caps: not passed on
    alice.send(presence(to=BOB))
    alice.send(f"<presence to='{BOB}' type='unavailable'/>")
    assert followed == [(BOB, f"{ALICE}/res", True), (BOB, f"{ALICE}/res", False)]


def test_an_occupants_presence_from_its_room_is_not_followed(server):
    followed = []
    tracker(server).follow(lambda account, jid, available: followed.append(jid))
    connect(server, BOB)
    # A room's reflection of an occupant's presence, with the occupant's caps
    reflected = presence(to=f"{BOB}/res").replace(
        "<presence ", "<presence xmlns='jabber:client' from='room@conference.example.com/nick' "
    ).replace("</presence>", "<x xmlns='http://jabber.org/protocol/muc#user'/></presence>")
    server.router.route(parse_stanza(reflected))
    assert followed == []
