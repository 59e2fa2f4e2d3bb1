"""Message archive management (XEP-0313) with stanza ids (XEP-0359) and
paging (XEP-0059), in memory."""

import pytest

from tests.harness import (Client, add_user, error_condition, make_server, online, reload,
                           result)
from xmppd.archive import NS_MAM, NS_RSM, NS_SID
from xmppd.jid import JID
from xmppd.storage import StorageError
from xmppd.storage.sql_archive import SQLArchive

NS_FORWARD = "urn:xmpp:forward:0"
NS_X = "jabber:x:data"


def make(tmp_path, extra=""):
    server = make_server(tmp_path, modules=("bind", "presence", "message", "offline", "roster",
                                            "carbons", "mam", "disco", "accounts"), extra=extra)
    for user in ("alice@example.com", "bob@example.com", "carol@example.com"):
        add_user(server, user)
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


@pytest.fixture
def alice(server):
    return online(server, "alice@example.com")


@pytest.fixture
def bob(server):
    return online(server, "bob@example.com")


def chat(sender, to, body, extra=""):
    sender.send(f"<message to='{to}' type='chat' id='{body}'><body>{body}</body>{extra}"
                f"</message>")


def form(**fields):
    values = "".join(
        f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in
                                         (value if isinstance(value, list) else [value]))
        + "</field>" for var, value in fields.items())
    return (f"<x xmlns='{NS_X}' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{NS_MAM}</value></field>{values}</x>")


def query(client, rsm="", flip=False, queryid="q1", **fields):
    """Send a query; (results, fin or error iq)."""
    x = form(**fields) if fields else ""
    rsm = f"<set xmlns='{NS_RSM}'>{rsm}</set>" if rsm else ""
    client.send(f"<iq type='set' id='mam'><query xmlns='{NS_MAM}' queryid='{queryid}'>"
                f"{x}{rsm}{'<flip-page/>' if flip else ''}</query></iq>")
    received = client.take()
    return received[:-1], received[-1]


def bodies(results):
    return [str(forwarded_message(r).body) for r in results]


def forwarded_message(result):
    forwarded = next(next(result.elements(NS_MAM, "result")).elements(NS_FORWARD, "forwarded"))
    return next(forwarded.elements("jabber:client", "message"))


def fin_set(iq):
    fin = next(iq.elements(NS_MAM, "fin"))
    rsm = next(fin.elements(NS_RSM, "set"))
    values = {child.name: str(child) for child in rsm.elements()}
    return fin.getAttribute("complete") == "true", values


def test_both_sides_are_archived_and_the_delivered_message_has_its_id(server, alice, bob):
    chat(alice, "bob@example.com", "hello", "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/>")
    [message] = bob.take()
    [stanza_id] = list(message.elements(NS_SID, "stanza-id"))
    assert stanza_id["by"] == "bob@example.com"
    results, fin = query(bob)
    assert bodies(results) == ["hello"] and fin["type"] == "result"
    [result] = results
    assert next(result.elements(NS_MAM, "result"))["id"] == stanza_id["id"]
    assert result["to"] == "bob@example.com/res" and result["from"] == "bob@example.com"
    assert next(forwarded_message(result).elements(NS_SID, "origin-id"))["id"] == "o1"
    results, _ = query(alice)
    assert bodies(results) == ["hello"]
    # One copy for both archives: a result gives the id, the copy has none.
    assert forwarded_message(results[0]).toXml() == forwarded_message(result).toXml()
    assert not list(forwarded_message(result).elements(NS_SID, "stanza-id"))


def test_forged_stanza_ids_are_removed(server, alice, bob):
    chat(alice, "bob@example.com", "forged",
         "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@example.com' id='fake'/>"
         "<stanza-id xmlns='urn:xmpp:sid:0' by='BOB@Example.COM' id='fake too'/>"
         "<stanza-id xmlns='urn:xmpp:sid:0' by='other.example' id='kept'/>")
    [message] = bob.take()
    ids = {e["by"]: e["id"] for e in message.elements(NS_SID, "stanza-id")}
    assert ids.keys() == {"other.example", "bob@example.com"}
    assert ids["other.example"] == "kept" and ids["bob@example.com"] != "fake"
    [result] = query(bob)[0]
    assert {e["by"]: e["id"] for e in forwarded_message(result).elements(NS_SID, "stanza-id")
            } == {"other.example": "kept"}
    [sent] = query(alice)[0]  # the sender's copy is what she sent
    assert {e["id"] for e in forwarded_message(sent).elements(NS_SID, "stanza-id")} == {
        "fake", "fake too", "kept"}


def test_sent_carbons_carry_the_senders_archive_id_and_the_message_does_not(server, alice, bob):
    other = online(server, "alice@example.com", "other")
    other.send("<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    chat(alice, "bob@example.com", "first")  # her preferences are read, then kept
    for client in (alice, bob, other):
        client.take()
    chat(alice, "bob@example.com", "copied")
    [carbon] = [m for m in other.take() if m.name == "message"]
    sent = next(next(carbon.elements("urn:xmpp:carbons:2", "sent")).elements(
        NS_FORWARD, "forwarded"))
    [mark] = list(next(sent.elements("jabber:client", "message")).elements(NS_SID, "stanza-id"))
    [message] = bob.take()
    assert [e["by"] for e in message.elements(NS_SID, "stanza-id")] == ["bob@example.com"]
    result = query(alice)[0][-1]
    assert (mark["by"], mark["id"]) == (
        "alice@example.com", next(result.elements(NS_MAM, "result"))["id"])
    assert next(forwarded_message(result).elements(NS_SID, "stanza-id"), None) is None


def test_a_message_to_ones_own_account_is_archived_once(server, alice):
    other = online(server, "alice@example.com", "other")
    alice.take()
    for to in ("alice@example.com", "alice@example.com/other"):
        chat(alice, to, f"note to {to}")
    [first, second] = [m for m in other.take() if m.name == "message"]
    alice.take()
    results, _ = query(alice)
    assert bodies(results) == ["note to alice@example.com", "note to alice@example.com/other"]
    archived = [next(r.elements(NS_MAM, "result"))["id"] for r in results]
    assert [next(m.elements(NS_SID, "stanza-id"))["id"] for m in (first, second)] == archived


def test_what_is_not_archived(server, alice, bob):
    alice.send("<message to='bob@example.com' type='chat'>"
               "<active xmlns='http://jabber.org/protocol/chatstates'/></message>")
    chat(alice, "bob@example.com", "secret", "<no-store xmlns='urn:xmpp:hints'/>")
    alice.send("<message to='bob@example.com' type='headline'><body>news</body></message>")
    chat(alice, "bob@example.com", "kept")
    bob.take()
    assert bodies(query(bob)[0]) == ["kept"]


def test_offline_messages_are_archived_with_the_same_id(server, alice):
    chat(alice, "bob@example.com", "while away")
    bob = online(server, "bob@example.com")
    results, _ = query(bob)
    assert bodies(results) == ["while away"]


def test_an_offline_message_carries_its_archive_id(server, alice):
    chat(alice, "bob@example.com", "while away")
    bob = Client(server)
    bob.login("bob@example.com")
    bob.send("<presence/>")
    [message] = [e for e in bob.take() if e.name == "message"]
    [stanza_id] = list(message.elements(NS_SID, "stanza-id"))
    results, _ = query(bob)
    assert next(results[0].elements(NS_MAM, "result"))["id"] == stanza_id["id"]


def test_filter_with_start_end(server, alice, bob):
    chat(alice, "bob@example.com", "one")
    server.clock.advance(60)
    chat(alice, "carol@example.com", "two")
    server.clock.advance(60)
    chat(alice, "bob@example.com", "three")
    assert bodies(query(alice, **{"with": "bob@example.com"})[0]) == ["one", "three"]
    assert bodies(query(alice, start="1970-01-01T00:00:30Z")[0]) == ["two", "three"]
    assert bodies(query(alice, end="1970-01-01T00:01:30Z")[0]) == ["one", "two"]
    assert bodies(query(alice, **{"with": "bob@example.com/res"})[0]) == []  # sent to the bare JID
    bob.take()
    assert bodies(query(bob, **{"with": "alice@example.com/res"})[0]) == ["one", "three"]


def test_paging_forwards_and_backwards(server, alice, bob):
    for i in range(5):
        chat(alice, "bob@example.com", str(i))
    results, fin = query(alice, "<max>2</max>", **{"with": "bob@example.com"})
    complete, rsm = fin_set(fin)
    assert bodies(results) == ["0", "1"] and not complete and rsm["count"] == "5"
    results, fin = query(alice, "<max>0</max>")
    assert results == [] and fin_set(fin)[1] == {"count": "5"}
    results, fin = query(alice, f"<max>2</max><after>{rsm['last']}</after>")
    assert bodies(results) == ["2", "3"]
    results, fin = query(alice, "<max>2</max><before/>")
    complete, rsm = fin_set(fin)
    assert bodies(results) == ["3", "4"] and not complete
    results, fin = query(alice, f"<max>2</max><before>{rsm['first']}</before>")
    assert bodies(results) == ["1", "2"]
    results, fin = query(alice, "<max>10</max><before/>", flip=True)
    complete, rsm = fin_set(fin)
    assert bodies(results) == ["4", "3", "2", "1", "0"] and complete
    # first and last stay in the archive's order (§4.3.4: flipping changes
    # only the order the results are sent in), so paging back goes on
    assert (rsm["last"], rsm["first"]) == tuple(
        next(r.elements(NS_MAM, "result"))["id"] for r in (results[0], results[-1]))
    results, fin = query(alice, "<max>2</max><before/>", flip=True)
    assert bodies(results) == ["4", "3"]
    results, fin = query(alice, f"<max>2</max><before>{fin_set(fin)[1]['first']}</before>",
                         flip=True)
    assert bodies(results) == ["2", "1"]


def test_an_empty_page(server, alice):
    results, fin = query(alice)
    complete, rsm = fin_set(fin)
    assert results == [] and complete and rsm == {}


def test_query_errors(server, alice, bob):
    chat(alice, "bob@example.com", "one")
    _, error = query(alice, "<after>123</after>")
    assert error_condition(error) == "item-not-found"
    _, error = query(alice, "<max>1000</max>")
    assert error_condition(error) == "policy-violation"
    _, error = query(alice, start="yesterday")
    assert error_condition(error) == "bad-request"
    _, error = query(alice, color="blue")  # §4.1.5
    assert error_condition(error) == "feature-not-implemented"
    _, error = query(alice, "<max>1</max><index>3</index>")  # XEP-0059 §2.6
    assert error_condition(error) == "feature-not-implemented"
    bob.take()
    bob.send("<iq type='set' id='x' to='alice@example.com'>"
             f"<query xmlns='{NS_MAM}'/></iq>")
    [error] = bob.take()
    assert error_condition(error) == "forbidden"


def test_extended_filters(server, alice, bob):
    for i in range(4):
        chat(alice, "bob@example.com", str(i))
    ids = [next(r.elements(NS_MAM, "result"))["id"] for r in query(alice)[0]]
    assert bodies(query(alice, **{"after-id": ids[0], "before-id": ids[3]})[0]) == ["1", "2"]
    assert bodies(query(alice, ids=[ids[3], ids[1]])[0]) == ["1", "3"]


def test_the_form_and_the_features(server, alice):
    alice.send(f"<iq type='get' id='f'><query xmlns='{NS_MAM}'/></iq>")
    [answer] = alice.take()
    x = next(next(answer.elements(NS_MAM, "query")).elements(NS_X, "x"))
    assert {f["var"] for f in x.elements(NS_X, "field")} >= {
        "FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"}
    alice.send("<iq type='get' id='d' to='alice@example.com'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [info] = alice.take()
    features = {f["var"] for f in info.query.elements() if f.name == "feature"}
    assert {NS_MAM, NS_MAM + "#extended", NS_SID} <= features


def test_preferences(server, alice, bob):
    alice.send(f"<iq type='set' id='p'><prefs xmlns='{NS_MAM}' default='never'>"
               "<always><jid>carol@example.com</jid></always><never/></prefs></iq>")
    [answer] = alice.take()
    assert answer["type"] == "result"
    chat(alice, "bob@example.com", "not kept")
    chat(alice, "carol@example.com", "kept")
    assert bodies(query(alice)[0]) == ["kept"]
    bob.take()
    assert bodies(query(bob)[0]) == ["not kept"]  # bob's own preferences
    alice.send(f"<iq type='get' id='p'><prefs xmlns='{NS_MAM}'/></iq>")
    [answer] = alice.take()
    prefs = next(answer.elements(NS_MAM, "prefs"))
    assert prefs["default"] == "never"
    assert [str(j) for j in next(prefs.elements(NS_MAM, "always")).elements()] == [
        "carol@example.com"]


def test_an_account_made_again_does_not_inherit_the_deleted_ones_preferences(server, alice,
                                                                               bob):
    alice.send(f"<iq type='set' id='p'><prefs xmlns='{NS_MAM}' default='never'/></iq>")
    assert alice.take()[0]["type"] == "result"
    result(server.services["accounts"].delete(JID.parse("alice@example.com")))
    add_user(server, "alice@example.com")
    chat(bob, "alice@example.com", "kept")  # stored offline, archived by the default
    again = online(server, "alice@example.com")
    again.take()
    assert bodies(query(again)[0]) == ["kept"]


def test_roster_default_archives_contacts_only(tmp_path):
    server = make(tmp_path, "[mam]\ndefault = 'roster'")
    alice = online(server, "alice@example.com")
    alice.send("<iq type='set' id='r'><query xmlns='jabber:iq:roster'>"
               "<item jid='bob@example.com'/></query></iq>")
    alice.take()
    chat(alice, "bob@example.com", "contact")
    chat(alice, "carol@example.com", "stranger")
    assert bodies(query(alice)[0]) == ["contact"]


def test_metadata(server, alice, bob):
    alice.send(f"<iq type='get' id='m'><metadata xmlns='{NS_MAM}'/></iq>")
    [answer] = alice.take()
    assert list(next(answer.elements(NS_MAM, "metadata")).elements()) == []
    chat(alice, "bob@example.com", "one")
    chat(alice, "bob@example.com", "two")
    ids = [next(r.elements(NS_MAM, "result"))["id"] for r in query(alice)[0]]
    alice.send(f"<iq type='get' id='m'><metadata xmlns='{NS_MAM}'/></iq>")
    [answer] = alice.take()
    metadata = next(answer.elements(NS_MAM, "metadata"))
    assert [e["id"] for e in metadata.elements()] == ids


def test_ids_increase_with_the_clock_and_never_go_back(server, alice, bob):
    chat(alice, "bob@example.com", "one")
    server.clock.advance(-10)  # a clock set back
    chat(alice, "bob@example.com", "two")
    bob.take()
    ids = [int(next(r.elements(NS_MAM, "result"))["id"]) for r in query(bob)[0]]
    assert len(ids) == 2 and ids[0] < ids[1]


def test_retention_purges_old_messages_and_keeps_the_quota(tmp_path):
    server = make(tmp_path, "[mam]\nmax_age = 1\nmax_messages = 2\npurge_interval = 600")
    alice, bob = online(server, "alice@example.com"), online(server, "bob@example.com")
    chat(alice, "bob@example.com", "old")
    server.clock.advance(2 * 86400)
    for body in ("a", "b", "c"):
        chat(alice, "bob@example.com", body)
    server.clock.advance(600)  # the purge runs
    bob.take()
    assert bodies(query(alice)[0]) == ["b", "c"]
    assert bodies(query(bob)[0]) == ["b", "c"]


def test_retention_per_host(tmp_path):
    server = make(tmp_path, '[mam]\nmax_age = 0\npurge_interval = 600\n'
                            '[hosts."example.com".mam]\nmax_age = 1\n')
    alice = online(server, "alice@example.com")
    online(server, "bob@example.com")
    chat(alice, "bob@example.com", "old")
    server.clock.advance(2 * 86400)
    chat(alice, "bob@example.com", "new")
    server.clock.advance(600)
    assert bodies(query(alice)[0]) == ["new"]


def test_a_refused_message_is_not_archived_and_leaks_no_id(server, alice, bob):
    alice.send("<message to='bob@example.com/gone' type='normal' id='n1'>"
               "<body>refused</body></message>")
    alice.send("<message to='nobody@example.com' type='chat' id='n2'><body>no one</body>"
               "</message>")
    errors = alice.take()
    assert [e["type"] for e in errors] == ["error", "error"]
    assert [list(e.elements(NS_SID, "stanza-id")) for e in errors] == [[], []]
    assert bodies(query(bob)[0]) == []


def test_a_message_refused_after_archiving_leaves_the_archive(tmp_path):
    server = make(tmp_path, extra="[offline]\nmax_messages = 1\n")
    alice = online(server, "alice@example.com")
    chat(alice, "bob@example.com", "kept")
    chat(alice, "bob@example.com", "refused")  # bob's offline storage is full
    [error] = alice.take()
    assert error["type"] == "error" and error["id"] == "refused"
    assert list(error.elements(NS_SID, "stanza-id")) == []
    bob = online(server, "bob@example.com")
    assert bodies(query(bob)[0]) == ["kept"]
    assert bodies(query(alice)[0]) == ["kept", "refused"]  # she did send it


def test_a_reloaded_default_applies_to_accounts_without_preferences(server, alice, bob,
                                                                     tmp_path):
    chat(alice, "bob@example.com", "kept")
    reload(server, tmp_path, "[mam]\ndefault = 'never'")
    chat(alice, "bob@example.com", "not kept")
    assert bodies(query(alice)[0]) == ["kept"]


def test_a_message_whose_archiving_failed_is_delivered_without_an_id(tmp_path, monkeypatch):
    def failing(self, entries):
        raise StorageError("disk full")

    monkeypatch.setattr(SQLArchive, "append_many", failing)
    server = make(tmp_path)
    alice, bob = online(server, "alice@example.com"), online(server, "bob@example.com")
    chat(alice, "bob@example.com", "hello")
    [message] = bob.take()
    assert str(message.body) == "hello"
    assert list(message.elements(NS_SID, "stanza-id")) == []
