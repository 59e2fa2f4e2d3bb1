"""``xmppctl export`` and ``xmppctl import`` (XEP-0227), in-process on
temporary trees made by ``xmppctl init``."""

import base64
import stat
from datetime import datetime, timezone

import pytest

from tests.test_ctl import failure, free_ports, run
from xmppd import config as configuration
from xmppd.core.scram import HASHES, check_password, derive_keys
from xmppd.core.xmlstream import parse_stanza
from xmppd.pubsub.config import PEP_DEFAULTS
from xmppd.storage import RosterItem
from xmppd.storage.kinds import ArchiveRecord, PubSubItem, first_archive_id
from xmppd.storage.sql import SQLStore

DOMAIN = "example.com"
PIE = "urn:xmpp:pie:0"


def make_tree(directory, capsys):
    c2s_port, direct_tls_port = free_ports(2)
    status, _, _ = run(capsys, "init", directory, "--domain", DOMAIN,
                       "--c2s-port", c2s_port, "--direct-tls-port", direct_tls_port)
    assert status == 0
    return str(directory / "xmppd.toml")


@pytest.fixture
def conf(tmp_path, capsys):
    return make_tree(tmp_path / "srv", capsys)


@pytest.fixture
def ctl(capsys, conf):
    return lambda *argv: run(capsys, "-c", conf, *argv)


@pytest.fixture
def store(conf):
    database = SQLStore(configuration.load(conf).storage.url)
    yield database
    database.close()


def pie(users, host=DOMAIN):
    return (f"<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='{PIE}'>"
            f"<host jid='{host}'>{users}</host></server-data>")


def write(tmp_path, text, name="data.xml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def sha1_credentials(password, salt=b"0123456789abcdef", iterations=4096, encode=None):
    keys = derive_keys(password, "SHA-1", salt, iterations)
    encode = encode or (lambda value: base64.b64encode(value).decode())
    return (f"<scram-credentials xmlns='{PIE}#scram' mechanism='SCRAM-SHA-1'>"
            f"<iter-count>{iterations}</iter-count><salt>{encode(keys.salt)}</salt>"
            f"<server-key>{encode(keys.server_key)}</server-key>"
            f"<stored-key>{encode(keys.stored_key)}</stored-key></scram-credentials>")


ROSTER = ("<query xmlns='jabber:iq:roster' version='3'>"
          "<item jid='romeo@montague.net' name='Romeo' subscription='both'>"
          "<group>Friends</group><group>Family</group></item>"
          "<item jid='nurse@capulet.com' subscription='none' ask='subscribe'/>"
          "<item jid='tybalt@capulet.com' subscription='to'/></query>")


def populate(store, user="ann"):
    """Everything xmppd keeps of an account that XEP-0227 carries."""
    store.set_roster_item(user, DOMAIN, RosterItem("romeo@montague.net", "Romeo", "both",
                                                   groups=("Family", "Friends")))
    store.set_roster_item(user, DOMAIN, RosterItem("nurse@capulet.com", None, "none", ask=True))
    store.set_roster_item(user, DOMAIN, RosterItem("tybalt@capulet.com", None, "to",
                                                   pending_in=True))
    store.set_value(user, DOMAIN, "subscription-requests", "tybalt@capulet.com",
                    f"<presence from='tybalt@capulet.com' to='{user}@{DOMAIN}' type='subscribe'/>")
    store.set_value(user, DOMAIN, "vcard", "", "<vCard xmlns='vcard-temp'><FN>Ann</FN></vCard>")
    store.set_value(user, DOMAIN, "private", "exodus:prefs exodus",
                    "<exodus xmlns='exodus:prefs'><nick>A</nick></exodus>")
    store.open("offline").append(user, DOMAIN, "<message xmlns='jabber:client' "
                                 f"from='bob@{DOMAIN}/x' to='{user}@{DOMAIN}' type='chat'>"
                                 "<body>while you were away</body></message>", None)
    pep = store.open("pubsub", "pep")
    service = f"{user}@{DOMAIN}"
    pep.create_node(service, "http://jabber.org/protocol/nick",
                    {**PEP_DEFAULTS, "pubsub#access_model": "open"}, account=(user, DOMAIN))
    pep.publish(service, "http://jabber.org/protocol/nick", PubSubItem(
        "current", service, "<nick xmlns='http://jabber.org/protocol/nick'>Annie</nick>",
        datetime.now(timezone.utc)))
    moment = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    store.open("archive", "mam").append_many([ArchiveRecord(
        user, DOMAIN, str(first_archive_id(moment) | 7), f"bob@{DOMAIN}/x", "m1", "in",
        f"<message xmlns='jabber:client' from='bob@{DOMAIN}/x' to='{user}@{DOMAIN}' "
        "type='chat' id='m1'><body>archived</body></message>")])


def snapshot(store, user="ann"):
    """What an account holds, comparable across databases."""
    pep = store.open("pubsub", "pep")
    service = f"{user}@{DOMAIN}"
    page = store.open("archive", "mam").find(user, DOMAIN)
    return {
        "credentials": store.get_credentials(user, DOMAIN),
        "roster": store.get_roster(user, DOMAIN)[1],
        "requests": store.get_values(user, DOMAIN, "subscription-requests").keys(),
        "vcard": store.get_values(user, DOMAIN, "vcard"),
        "private": store.get_values(user, DOMAIN, "private"),
        "offline": store.count_offline(user, DOMAIN),
        "nodes": [(node.name, node.config) for node in pep.nodes(service)],
        "items": [(i.id, i.payload) for i in pep.get_items(service,
                                                           "http://jabber.org/protocol/nick")],
        "archive": [(m.timestamp, m.direction, m.with_jid, m.stanza_id, m.xml)
                    for m in page.items],
    }


def test_round_trip(ctl, conf, store, tmp_path, capsys):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "ann-secret")
    populate(store)
    exported = tmp_path / "export.xml"
    status, out, err = ctl("export", exported)
    assert (status, err) == (0, "")
    assert out == (f"exported 1 account to {exported}, 3 roster items, 1 vCard, "
                   "1 private XML element, 1 offline message, 1 PEP item, 1 PEP node, "
                   "1 archived message\n")
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    text = exported.read_text()
    assert "ann-secret" not in text and "password" not in text
    assert store.count_offline("ann", DOMAIN) == 1  # exporting leaves them

    other = make_tree(tmp_path / "other", capsys)
    status, out, err = run(capsys, "-c", other, "import", exported)
    assert status == 0, err
    assert f"created ann@{DOMAIN}: " in out
    assert "accounts: 1 created, 0 updated, 0 unchanged, 0 skipped" in out
    imported = SQLStore(configuration.load(other).storage.url)
    try:
        assert snapshot(imported) == snapshot(store)
        assert set(imported.get_credentials("ann", DOMAIN)) == set(HASHES)
    finally:
        imported.close()


def test_import_is_idempotent(ctl, store, tmp_path):
    path = write(tmp_path, pie(
        f"<user name='ann'>{sha1_credentials('pw')}{ROSTER}"
        "<offline-messages><message xmlns='jabber:client' from='bob@example.com' "
        "to='ann@example.com'><body>hi</body></message></offline-messages>"
        f"<archive xmlns='{PIE}#mam'><result xmlns='urn:xmpp:mam:2' id='x1'>"
        "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' "
        "stamp='2024-05-01T10:00:00Z'/><message xmlns='jabber:client' to='bob@example.com' "
        "from='ann@example.com/phone' type='chat'><body>sent</body></message>"
        "</forwarded></result></archive></user>"))
    status, out, _ = ctl("import", path)
    assert status == 0
    assert ("created ann@example.com: 3 roster items, 1 offline message, "
            "1 archived message\n") in out
    version = store.get_roster("ann", DOMAIN)[0]
    for _ in range(2):
        status, out, _ = ctl("import", path)
        assert (status, out) == (0, "unchanged ann@example.com\n"
                                    "accounts: 0 created, 0 updated, 1 unchanged, 0 skipped\n")
    assert store.get_roster("ann", DOMAIN)[0] == version
    assert store.count_offline("ann", DOMAIN) == 1
    [message] = store.open("archive", "mam").find("ann", DOMAIN).items
    assert (message.direction, message.with_jid) == ("out", "bob@example.com")


def test_messages_archived_in_one_second_are_all_imported(ctl, store, tmp_path):
    """Prosody stamps its archive to the second: the ids of messages of one
    second still differ, and a second import still adds nothing."""
    results = "".join(
        f"<result xmlns='urn:xmpp:mam:2' id='x{n}'><forwarded xmlns='urn:xmpp:forward:0'>"
        "<delay xmlns='urn:xmpp:delay' stamp='2024-05-01T10:00:00Z'/>"
        "<message xmlns='jabber:client' to='bob@example.com' from='ann@example.com/phone' "
        f"type='chat'><body>message {n}</body></message></forwarded></result>"
        for n in range(200))
    path = write(tmp_path, pie(f"<user name='ann'>{sha1_credentials('pw')}"
                               f"<archive xmlns='{PIE}#mam'>{results}</archive></user>"))
    for _ in range(2):
        assert ctl("import", path)[0] == 0
    page = store.open("archive", "mam").find("ann", DOMAIN, limit=500)
    assert sorted(m.xml.split("<body>")[1] for m in page.items) == sorted(
        f"message {n}</body></message>" for n in range(200))


def test_existing_account_keeps_its_password_and_gets_the_data(ctl, store, tmp_path):
    ctl("adduser", f"ann@{DOMAIN}", "--password", "new-password")
    path = write(tmp_path, pie(f"<user name='ann' password='old'>{ROSTER}</user>"))
    status, out, _ = ctl("import", path)
    assert "updated ann@example.com: 3 roster items" in out
    assert check_password("new-password", store.get_credentials("ann", DOMAIN)["SHA-256"])
    assert [item.jid for item in store.get_roster("ann", DOMAIN)[1]] == [
        "nurse@capulet.com", "romeo@montague.net", "tybalt@capulet.com"]


def test_plaintext_password_is_hashed(ctl, store, tmp_path):
    path = write(tmp_path, pie("<user name='ann' password='s3crEt'/>"))
    status, _, err = ctl("import", path)
    assert (status, err) == (0, "")
    keys = store.get_credentials("ann", DOMAIN)
    assert set(keys) == set(HASHES)
    assert all(check_password("s3crEt", key) for key in keys.values())


def test_scram_credentials_as_prosody_and_ejabberd_write_them(ctl, store, tmp_path):
    def twice(value):  # as ejabberd 23.01 writes them
        return base64.b64encode(base64.b64encode(value)).decode()

    path = write(tmp_path, pie(
        f"<user name='prosody'>{sha1_credentials('pw-1')}"
        "<presence type='subscribe' from='Romeo@Montague.net'/>"  # Prosody: in PIE's namespace
        f"<query xmlns='jabber:iq:roster'><item jid='romeo@montague.net' subscription='to'/>"
        f"</query></user><user name='ejabberd'>{sha1_credentials('pw-2', encode=twice)}</user>"))
    status, _, err = ctl("import", path)
    assert status == 0
    assert "SCRAM-SHA-1 keys only" in err
    assert check_password("pw-1", store.get_credentials("prosody", DOMAIN)["SHA-1"])
    assert set(store.get_credentials("ejabberd", DOMAIN)) == {"SHA-1"}
    assert check_password("pw-2", store.get_credentials("ejabberd", DOMAIN)["SHA-1"])
    item = store.get_roster_item("prosody", DOMAIN, "romeo@montague.net")
    assert (item.subscription, item.pending_in) == ("to", True)
    request = store.get_value("prosody", DOMAIN, "subscription-requests", "romeo@montague.net")
    presence = parse_stanza(request)
    assert (presence.uri, presence["type"], presence["to"]) == (
        "jabber:client", "subscribe", f"prosody@{DOMAIN}")


def test_skipped_items_are_reported(ctl, conf, store, tmp_path):
    with open(conf, "a") as f:
        f.write('\n[hosts."guest.example.com"]\nauthentication = "anonymous"\n')
    users = (f"<user name='ann'>{sha1_credentials('pw')}<query xmlns='jabber:iq:privacy'/>"
             "<query xmlns='jabber:iq:roster'><item jid='@bad' subscription='both'/>"
             "<item jid='ok@example.org' subscription='sideways'/></query>"
             "<unknown xmlns='urn:example'/>"
             f"<scram-credentials xmlns='{PIE}#scram' mechanism='SCRAM-MD5'/></user>"
             "<user name='no credentials'/><user name='bad@name' password='pw'/>")
    text = pie(users) + "".join(
        f"<host jid='{host}'><user name='x' password='pw'/></host>"
        for host in ("elsewhere.org", "guest.example.com"))
    path = write(tmp_path, text.replace("</server-data>", "") + "<extra/></server-data>")
    status, out, _ = ctl("import", path)
    assert status == 0
    lines = out.splitlines()
    for expected in (
            "skipped ann@example.com: <query xmlns='jabber:iq:privacy'/>: privacy lists "
            "(XEP-0016) are not imported: xmppd blocks with XEP-0191",
            "skipped ann@example.com: <unknown xmlns='urn:example'/>: unknown element",
            "skipped ann@example.com: roster item 'ok@example.org': subscription 'sideways'",
            "skipped ann@example.com: <scram-credentials mechanism='SCRAM-MD5'/>: "
            "unsupported mechanism",
            f"skipped x@elsewhere.org: elsewhere.org is not hosted in {conf}",
            "skipped x@guest.example.com: guest.example.com is an anonymous host",
            f"skipped {path}: <extra xmlns='{PIE}'/> in <server-data/>: unknown element",
            "created ann@example.com",
            "accounts: 1 created, 0 updated, 0 unchanged, 4 skipped"):
        assert expected in lines, (expected, lines)
    assert any(line.startswith("skipped ann@example.com: roster item '@bad': invalid JID")
               for line in lines)
    for user in ("bad@name", "no credentials"):
        assert any(line.startswith(f"skipped {user}@example.com: invalid JID") for line in lines)
    assert store.list_accounts() == [("ann", DOMAIN)]


def test_a_user_without_credentials_is_not_created(ctl, store, tmp_path):
    path = write(tmp_path, pie("<user name='ann'><vCard xmlns='vcard-temp'/></user>"))
    status, out, _ = ctl("import", path)
    assert "skipped ann@example.com: no password or SCRAM credentials to log in with" in out
    assert store.list_accounts() == []


BOMB = ("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>"
        f"<server-data xmlns='{PIE}'><host jid='{DOMAIN}'><user name='ann' password='pw'>"
        "<vCard xmlns='vcard-temp'><FN>&lol2;</FN></vCard></user></host></server-data>")


@pytest.mark.parametrize("text, message", [
    ("this is not XML", "not well-formed XML: syntax error: line 1, column 0"),
    ("", "not well-formed XML: no element found: line 1, column 0"),
    (f"<server-data xmlns='{PIE}'><host jid='{DOMAIN}'><user name='ann' password='pw'/>"
     "</host>", "not well-formed XML: no element found: line 1, column"),
    ("<server-data xmlns='urn:example'/>",
     "not XEP-0227 data: the root element is <server-data xmlns='urn:example'/>, "
     f"expected <server-data xmlns='{PIE}'/>"),
    (BOMB, "a DTD or entity declaration is not allowed (restricted XML, as in XMPP)"),
    (pie("<user name='ann' password='pw'/>").encode("utf-16").decode("latin-1"),
     "not UTF-8 XML (XEP-0227 files are UTF-8)"),
])
def test_bad_files_fail_with_nothing_written(capsys, conf, store, tmp_path, text, message):
    path = tmp_path / "bad.xml"
    path.write_bytes(text.encode("latin-1"))
    assert failure(capsys, "-c", conf, "import", path).startswith(f"{path}: {message}")
    assert store.list_accounts() == []


def test_a_bad_second_file_fails_before_the_first_is_imported(capsys, conf, store, tmp_path):
    good = write(tmp_path, pie("<user name='ann' password='pw'/>"), "good.xml")
    bad = write(tmp_path, "<oops", "bad.xml")
    assert failure(capsys, "-c", conf, "import", good, bad).startswith(f"{bad}: not well-formed")
    assert store.list_accounts() == []


def test_a_missing_file(capsys, conf, tmp_path):
    missing = tmp_path / "none.xml"
    assert failure(capsys, "-c", conf, "import", missing) == (
        f"{missing}: cannot read: No such file or directory")


def test_xinclude_as_ejabberd_writes_it(ctl, store, tmp_path):
    (tmp_path / "hosts").mkdir()
    write(tmp_path, f"<host xmlns='{PIE}' xmlns:xi='http://www.w3.org/2001/XInclude' "
                    f"jid='{DOMAIN}'><user name='ann' password='pw'/>"
                    "<xi:include href='../outside.xml'/></host>", "hosts/example.xml")
    write(tmp_path, pie("<user name='eve' password='pw'/>"), "outside.xml")
    main = write(tmp_path / "hosts", f"<server-data xmlns='{PIE}' "
                 "xmlns:xi='http://www.w3.org/2001/XInclude'>"
                 "<xi:include href='example.xml'/><xi:include href='/etc/passwd'/>"
                 "</server-data>", "main.xml")
    status, out, _ = ctl("import", main)
    assert status == 0
    assert "created ann@example.com" in out.splitlines()
    assert f"skipped {main}: <xi:include href='/etc/passwd'/>: not a relative reference " \
           f"to a file under {tmp_path / 'hosts'}" in out
    assert "<xi:include href='../outside.xml'/>: not a relative reference" in out
    assert store.list_accounts() == [("ann", DOMAIN)]


def test_an_include_loop_fails(capsys, conf, tmp_path):
    path = write(tmp_path, f"<server-data xmlns='{PIE}' xmlns:xi="
                           "'http://www.w3.org/2001/XInclude'><xi:include href='data.xml'/>"
                           "</server-data>")
    assert failure(capsys, "-c", conf, "import", path).endswith("data.xml includes itself")


def test_dry_run_writes_nothing(ctl, store, tmp_path):
    path = write(tmp_path, pie(f"<user name='ann' password='pw'>{ROSTER}</user>"))
    status, out, _ = ctl("import", "--dry-run", path)
    assert status == 0
    assert out.splitlines()[-2:] == [
        "dry run, nothing written: accounts: 1 created, 0 updated, 0 unchanged, 0 skipped",
        "dry run, nothing written: 3 roster items"]
    assert store.list_accounts() == []


def test_export_of_one_domain_reads_back(ctl, conf, store, tmp_path):
    with open(conf, "a") as f:
        f.write('\n[hosts."other.org"]\n')
    ctl("adduser", f"ann@{DOMAIN}", "--password", "pw")
    ctl("adduser", "bob@other.org", "--password", "pw")
    exported = tmp_path / "one.xml"
    assert ctl("export", "--domain", "OTHER.org", exported) == (
        0, f"exported 1 account to {exported}\n", "")
    text = exported.read_text()
    assert "<host jid='other.org'>" in text and DOMAIN not in text
    assert ctl("import", exported)[1].splitlines()[0] == "unchanged bob@other.org"


def test_export_to_an_unwritable_place(capsys, conf, tmp_path):
    target = tmp_path / "missing" / "x.xml"
    assert failure(capsys, "-c", conf, "export", target).startswith(f"{target}")
