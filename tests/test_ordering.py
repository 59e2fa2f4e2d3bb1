"""In-order processing (RFC 6120 §10.1): a stanza that must wait (here, for
the roster to be read) holds back the stanzas sent after it on the same
stream, from a client and from a server."""

from tests.harness import Client, add_user, online
from tests.paused_storage import PausableRunner, pausable_server
from tests.s2s_support import REMOTE, make_federation
from tests.test_s2s_incoming import ALLOW, external
from xmppd.storage import RosterItem

PING = "<iq type='get' id='p1' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>"


def mutual(server, a, b):
    for user, contact in ((a, b), (b, a)):
        local, domain = user.split("@")
        server.sql.set_roster_item(local, domain, RosterItem(jid=contact, subscription="both"))


def test_presence_is_reflected_before_a_later_ping_is_answered(tmp_path):
    server = pausable_server(tmp_path)
    add_user(server, "alice@example.com")
    alice = Client(server)
    alice.login("alice@example.com", "a")
    runner = server.runner.pause()
    alice.send("<presence/>" + PING)  # one read; the roster is not cached yet
    assert alice.take() == []
    runner.flush()
    assert [(e.name, e.getAttribute("type")) for e in alice.take()] == [
        ("presence", None), ("iq", "result")]


def test_a_contact_gets_the_presence_before_a_later_message(tmp_path):
    server = pausable_server(tmp_path)
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    mutual(server, "alice@example.com", "bob@example.com")
    bob = online(server, "bob@example.com", "b")
    alice = Client(server)
    alice.login("alice@example.com", "a")
    runner = server.runner.pause()
    alice.send("<presence/><message to='bob@example.com/b' type='chat'><body>hi</body></message>")
    runner.flush()
    assert [e.name for e in bob.take()] == ["presence", "message"]


def test_a_server_streams_stanzas_are_handled_in_order(tmp_path):
    runner = PausableRunner()
    federation = make_federation(tmp_path, ALLOW, valid=[REMOTE], runner=runner)
    server = federation.server
    server.runner = runner
    for module in ("presence", "subscription", "message"):
        server.load(__import__(f"xmppd.modules.{module}", fromlist=["setup"]))
    add_user(server, "alice@example.com")
    alice = online(server, "alice@example.com", "a")
    wire = external(federation)
    runner = server.runner.pause()
    wire.send(f"<presence from='bob@{REMOTE}' to='alice@example.com' type='subscribe'/>"
              f"<message from='bob@{REMOTE}/x' to='alice@example.com/a' type='chat'>"
              "<body>after</body></message>")
    assert alice.take() == []
    runner.flush()
    assert [(e.name, e.getAttribute("type")) for e in alice.take()] == [
        ("presence", "subscribe"), ("message", "chat")]
