"""Reports attached to blocks (XEP-0377), in memory, and ``xmppctl reports``."""

import json

import pytest

from tests.harness import Client, add_user, error_condition, make_server, online, reload
from tests.test_ctl import failure, free_ports, run
from xmppd import config as configuration
from xmppd.storage.sql import SQLStore

NS_BLOCKING = "urn:xmpp:blocking"
NS = "urn:xmpp:reporting:1"
SPAM, ABUSE = "urn:xmpp:reporting:spam", "urn:xmpp:reporting:abuse"
NS_SID = "urn:xmpp:sid:0"
HOSTS = ("example.com", "other.example")


def make(tmp_path, extra="", modules=("bind", "blocking", "spam_reporting")):
    server = make_server(tmp_path, hosts=HOSTS, modules=modules, extra=extra)
    for user in ("alice@example.com", "bob@example.com", "carol@other.example"):
        add_user(server, user)
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


def login(server, user, resource="r"):
    client = Client(server, domain=user.split("@")[1])
    client.login(user, resource)
    return client


@pytest.fixture
def alice(server):
    return login(server, "alice@example.com")


def report(reason=SPAM, body=""):
    reason = "" if reason is None else f" reason='{reason}'"
    return f"<report xmlns='{NS}'{reason}>{body}</report>"


def block(client, *items, id_="b"):
    """Send a block command of ``items`` ((jid, payload) pairs); returns the answer."""
    payload = "".join(f"<item jid='{jid}'>{inner}</item>" for jid, inner in items)
    client.send(f"<iq type='set' id='{id_}'><block xmlns='{NS_BLOCKING}'>{payload}</block></iq>")
    [answer] = [e for e in client.take() if e.getAttribute("id") == id_]
    return answer


def blocklist(client):
    client.send(f"<iq type='get' id='l'><blocklist xmlns='{NS_BLOCKING}'/></iq>")
    [answer] = client.take()
    return sorted(item["jid"] for item in answer.firstChildElement().elements())


def reports(server, domain="example.com"):
    """The reports stored for ``domain``, by id."""
    stored = server.sql.open("hostval", "reports").items(domain)
    return {key: json.loads(value) for key, value in stored.items()}


def test_reporting_and_its_reasons_are_advertised(server):
    assert {NS, SPAM, ABUSE} <= set(server.features_for("example.com"))


def test_a_report_is_recorded_and_the_jid_blocked(server, alice):
    server.clock.advance(1767225600.25)  # 2026-01-01T00:00:00.25Z
    body = ("<text xml:lang='en'>  Never came trouble to my house like this.  </text>"
            f"<stanza-id xmlns='{NS_SID}' by='alice@example.com' id='28482'/>"
            "<third-party/>")
    answer = block(alice, ("Romeo@Montague.example", report(ABUSE, body)))
    assert answer["type"] == "result"
    assert blocklist(alice) == ["romeo@montague.example"]
    [(key, found)] = reports(server).items()
    assert key.isdigit()
    assert found == {
        "reporter": "alice@example.com", "jid": "romeo@montague.example", "reason": ABUSE,
        "text": "Never came trouble to my house like this.", "lang": "en",
        "stanza_ids": [{"id": "28482", "by": "alice@example.com"}],
        "opt_in": ["third-party"], "time": "2026-01-01T00:00:00.250000Z"}


def test_only_items_with_a_report_are_recorded(server, alice):
    answer = block(alice, ("a@x.example", ""), ("b@x.example", report()),
                   ("c@x.example", "<other xmlns='urn:example'/>"))
    assert answer["type"] == "result"
    assert blocklist(alice) == ["a@x.example", "b@x.example", "c@x.example"]
    assert [(r["jid"], r["reason"]) for r in reports(server).values()] == [
        ("b@x.example", SPAM)]


@pytest.mark.parametrize("payload", [
    report(reason=None),
    report(reason="urn:xmpp:reporting:harassment"),
    report(reason=""),
    "<report xmlns='urn:xmpp:reporting:0'><spam/></report>",
])
def test_a_malformed_report_blocks_without_recording(server, alice, payload):
    answer = block(alice, ("spammer@x.example", payload))
    assert answer["type"] == "result"
    assert blocklist(alice) == ["spammer@x.example"]
    assert reports(server) == {}


def test_a_refused_block_records_nothing(server, alice):
    answer = block(alice, ("@bad", report()))
    assert error_condition(answer) == "jid-malformed"
    assert reports(server) == {}


def test_a_report_outside_a_block_is_not_a_report(server, alice):
    alice.send(f"<iq type='set' id='u'><unblock xmlns='{NS_BLOCKING}'>"
               f"<item jid='x@x.example'>{report()}</item></unblock></iq>")
    assert alice.take()[0]["type"] == "result"
    alice.send(f"<message to='bob@example.com'>{report()}</message>")
    assert reports(server) == {}


def test_long_text_and_many_stanza_ids_are_cut(server, alice):
    ids = "".join(f"<stanza-id xmlns='{NS_SID}' by='alice@example.com' id='{n}'/>"
                  for n in range(1, 40))
    too_long = "x" * 300
    body = (f"<text>{'y' * 5000}</text>{ids}"
            f"<stanza-id xmlns='{NS_SID}' id='{too_long}'/><stanza-id xmlns='{NS_SID}'/>")
    block(alice, ("s@x.example", report(SPAM, body)))
    [found] = reports(server).values()
    assert found["text"] == "y" * 2000
    assert [sid["id"] for sid in found["stanza_ids"]] == [str(n) for n in range(1, 21)]


def test_reports_per_reporter_are_capped_per_day(tmp_path):
    server = make(tmp_path, extra="[spam_reporting]\nmax_per_day = 2")
    alice = login(server, "alice@example.com")
    bob = login(server, "bob@example.com")
    for n in range(4):
        assert block(alice, (f"s{n}@x.example", report()))["type"] == "result"
    assert blocklist(alice) == [f"s{n}@x.example" for n in range(4)]  # all blocked
    block(bob, ("s0@x.example", report()))
    recorded = sorted((r["reporter"], r["jid"]) for r in reports(server).values())
    assert recorded == [("alice@example.com", "s0@x.example"),
                        ("alice@example.com", "s1@x.example"),  # the oldest kept
                        ("bob@example.com", "s0@x.example")]
    server.clock.advance(86400)
    block(alice, ("s9@x.example", report()))
    assert len(reports(server)) == 4


def test_reports_are_kept_per_domain_of_the_reporter(server, alice):
    carol = login(server, "carol@other.example")
    block(alice, ("s@x.example", report()))
    block(carol, ("t@x.example", report(ABUSE)))
    assert [r["reporter"] for r in reports(server, "example.com").values()] == [
        "alice@example.com"]
    assert [r["reporter"] for r in reports(server, "other.example").values()] == [
        "carol@other.example"]


def test_a_host_cap_applies_on_reload(tmp_path):
    server = make(tmp_path)
    alice = login(server, "alice@example.com")
    block(alice, ("s1@x.example", report()))
    reload(server, tmp_path, '[hosts."example.com".spam_reporting]\nmax_per_day = 0')
    assert block(alice, ("s2@x.example", report()))["type"] == "result"
    assert blocklist(alice) == ["s1@x.example", "s2@x.example"]
    assert [r["jid"] for r in reports(server).values()] == ["s1@x.example"]


def test_the_reported_messages_are_copied_from_the_archive(tmp_path):
    server = make(tmp_path, modules=("bind", "presence", "message", "mam", "blocking",
                                     "spam_reporting"))
    alice = online(server, "alice@example.com")
    bob = online(server, "bob@example.com")
    add_user(server, "dave@example.com")
    dave = online(server, "dave@example.com")
    ids = {}
    for sender, body in ((bob, "buy now"), (dave, "private chat")):
        sender.send(f"<message to='alice@example.com' type='chat'><body>{body}</body></message>")
        [message] = alice.take()
        ids[body] = next(message.elements(NS_SID, "stanza-id"))["id"]
    sids = "".join(f"<stanza-id xmlns='{NS_SID}' by='alice@example.com' id='{sid}'/>"
                   for sid in (ids["buy now"], ids["private chat"], "999"))
    block(alice, ("bob@example.com", report(SPAM, sids)))
    [found] = reports(server).values()
    # Only the reported JID's messages: not dave's, nor an id the archive lacks.
    [message] = found["messages"]
    assert (message["id"], message["direction"]) == (ids["buy now"], "in")
    assert message["with"].startswith("bob@example.com")
    assert "buy now" in message["xml"] and "private chat" not in json.dumps(found)


def test_messages_are_not_copied_when_turned_off(tmp_path):
    server = make(tmp_path, modules=("bind", "presence", "message", "mam", "blocking",
                                     "spam_reporting"),
                  extra="[spam_reporting]\ninclude_messages = false")
    alice = online(server, "alice@example.com")
    bob = online(server, "bob@example.com")
    bob.send("<message to='alice@example.com' type='chat'><body>buy now</body></message>")
    sid = next(alice.take()[0].elements(NS_SID, "stanza-id"))["id"]
    block(alice, ("bob@example.com",
                  report(SPAM, f"<stanza-id xmlns='{NS_SID}' by='alice@example.com' id='{sid}'/>")))
    [found] = reports(server).values()
    assert "messages" not in found and found["stanza_ids"][0]["id"] == sid


# xmppctl reports


@pytest.fixture
def conf(tmp_path, capsys):
    c2s_port, direct_tls_port = free_ports(2)
    directory = tmp_path / "srv"
    assert run(capsys, "init", directory, "--domain", "example.com", "--c2s-port", c2s_port,
               "--direct-tls-port", direct_tls_port)[0] == 0
    path = directory / "xmppd.toml"
    path.write_text(path.read_text() + '\n[hosts."other.example"]\n')
    return str(path)


@pytest.fixture
def database(conf):
    store = SQLStore(configuration.load(conf).storage.url)
    yield store.open("hostval", "reports")
    store.close()


def stored(database, domain, key, **fields):
    value = {"reporter": f"alice@{domain}", "jid": "spam@bad.example", "reason": SPAM,
             "time": "2026-01-01T00:00:00.000000Z", **fields}
    database.add(domain, key, json.dumps(value))


def test_ctl_lists_reports_of_every_domain_oldest_first(capsys, conf, database):
    stored(database, "example.com", "300", text="bad\x1b[31m\nbot")
    stored(database, "other.example", "20", reason=ABUSE,
           stanza_ids=[{"id": "7", "by": "alice@other.example"}], opt_in=["third-party"],
           messages=[{"id": "7", "with": "spam@bad.example", "direction": "in",
                      "time": "2025-12-31T23:00:00.000000Z", "xml": "<message/>"}])
    status, out, err = run(capsys, "-c", conf, "reports")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        '20  2026-01-01T00:00:00.000000Z  "alice@other.example" reported "spam@bad.example" '
        'for abuse',
        '  stanza ids: "7"',
        "  may be forwarded: third-party",
        "  message 7 in 2025-12-31T23:00:00.000000Z:",
        '    "<message/>"',
        '300  2026-01-01T00:00:00.000000Z  "alice@example.com" reported "spam@bad.example" '
        'for spam',
        '  text: "bad\\u001b[31m\\nbot"',
        "2 reports"]


def test_ctl_lists_one_domain_as_json(capsys, conf, database):
    stored(database, "example.com", "300")
    stored(database, "other.example", "20")
    status, out, _ = run(capsys, "-c", conf, "reports", "Other.Example", "--json")
    assert status == 0
    assert json.loads(out) == [{"id": "20", "domain": "other.example",
                                "reporter": "alice@other.example", "jid": "spam@bad.example",
                                "reason": SPAM, "time": "2026-01-01T00:00:00.000000Z"}]
    assert run(capsys, "-c", conf, "reports", "nowhere.example")[1] == "0 reports\n"


def test_ctl_clears_a_report(capsys, conf, database):
    stored(database, "example.com", "300")
    stored(database, "other.example", "20")
    assert failure(capsys, "-c", conf, "reports", "example.com", "--clear", "20") == (
        "no report '20' of example.com")
    assert run(capsys, "-c", conf, "reports", "--clear", "20")[1] == "deleted report 20\n"
    assert failure(capsys, "-c", conf, "reports", "--clear", "20") == "no report '20'"
    assert list(database.items("example.com")) == ["300"]
    assert database.items("other.example") == {}
