"""The session directory as an interface: the modules deliver to, and read
the routing fields of, a record that is not a session of this process (as
a session on another node of a cluster will be)."""

from tests.harness import Client, add_user, make_server
from xmppd.core.sessions import NO_FLAGS
from xmppd.jid import JID
from xmppd.storage import RosterItem


class ElsewhereRecord:
    """A session bound elsewhere: only the record fields and ``send``."""

    def __init__(self, jid, available=True, priority=0, flags=NO_FLAGS):
        self.jid = JID.parse(jid)
        self.available, self.priority, self.flags = available, priority, flags
        self.presence = None
        self.sent = []

    def send(self, element):
        self.sent.append(element)

    def close(self, condition, text=None):
        self.sent.append(condition)


def server_with_elsewhere(tmp_path, **record):
    server = make_server(tmp_path)
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    elsewhere = ElsewhereRecord("bob@example.com/far", **record)
    server.sessions.add(elsewhere)
    return server, elsewhere


def login(server, user, resource):
    client = Client(server)
    client.login(user, resource)
    return client


def test_a_message_to_the_bare_jid_reaches_a_record_of_another_node(tmp_path):
    server, elsewhere = server_with_elsewhere(tmp_path, priority=5)
    alice = login(server, "alice@example.com", "a")
    alice.send("<message to='bob@example.com' type='chat'><body>hi</body></message>")
    assert [str(m.body) for m in elsewhere.sent] == ["hi"]


def test_presence_goes_to_a_subscribed_record_elsewhere(tmp_path):
    server, elsewhere = server_with_elsewhere(tmp_path)
    server.sql.set_roster_item("alice", "example.com",
                               RosterItem(jid="bob@example.com", subscription="both"))
    alice = login(server, "alice@example.com", "a")
    alice.send("<presence/>")
    assert [(e.name, e.getAttribute("from")) for e in elsewhere.sent] == [
        ("presence", "alice@example.com/a")]


def test_flags_are_set_through_the_directory_and_read_from_records(tmp_path):
    server, elsewhere = server_with_elsewhere(tmp_path, flags=frozenset({"carbons"}))
    bob = login(server, "bob@example.com", "near")
    bob.send("<presence/>")
    bob.take()
    bob.send("<message to='alice@example.com' type='chat'><body>copy me</body></message>")
    [carbon] = [e for e in elsewhere.sent if e.name == "message"]
    assert carbon.firstChildElement().name == "sent"
    near = server.sessions.get(JID.parse("bob@example.com/near"))
    server.sessions.set_flag(near, "roster")
    assert near.flags == {"roster"}
    server.sessions.set_flag(near, "roster", False)
    assert near.flags == NO_FLAGS
