"""Anonymous hosts (XEP-0175), in memory: their data routed to a database
in memory, accounts that end with their session, and the limits on
creating them."""

import uuid
from datetime import datetime, timezone

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    Client, ElementCarrier, add_user, error_condition, make_server, reload)
from xmppd.core.sasl import SaslFailure
from xmppd.modules.stream_management import NS_SM
from xmppd.storage import UserNotFound
from xmppd.storage.deferred import AsyncStore
from xmppd.storage.kinds import Appended, ArchiveRecord, PubSubItem, Upload
from xmppd.storage.memory import MemoryRouted
from xmppd.tap import MODULES

GUEST = "guest.example.com"
ANONYMOUS = f'[hosts."{GUEST}"]\nauthentication = "anonymous"\n'
QUIET = "[ping]\nidle_timeout = 0\n"  # no pings while the clock runs
NEW_YEAR = datetime(2026, 1, 1, tzinfo=timezone.utc)

fired = SynchronousTestCase().successResultOf
failed = SynchronousTestCase().failureResultOf


def make(tmp_path, extra=""):
    server = make_server(tmp_path, modules=(*MODULES, "anonymous"),
                         extra=ANONYMOUS + QUIET + extra)
    add_user(server, "alice@example.com")
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


def create(server, address="192.0.2.1"):
    """A stream to the anonymous host from ``address`` and what creating
    its account gives (as the SASL modules ask the service ``anonymous``):
    the Deferred of the username."""
    carrier = ElementCarrier(server)
    carrier.address = address
    carrier.open(GUEST)
    return carrier, server.services["anonymous"].create(carrier.connection,
                                                         str(uuid.uuid4()))


def guest(server, address="192.0.2.1", resource="r"):
    """A new anonymous account authenticated and bound; its carrier and
    bare JID."""
    carrier, d = create(server, address)
    username = fired(d)
    server.negotiation.authenticated(carrier.connection, username)
    session = server.negotiation.bind(carrier.connection, resource)
    carrier.receive("<presence/>")
    carrier.take()
    return carrier, session.jid.bare


def condition(d):
    """The SASL failure condition of a failed creation."""
    return failed(d, SaslFailure).value.condition


def memory(server):
    return server.storage.database


# The storage


def test_only_a_configuration_with_an_anonymous_host_routes(tmp_path, server):
    assert isinstance(server.storage, MemoryRouted) and server.storage.hosts == {GUEST}
    plain = make_server(tmp_path, modules=("bind",))
    assert type(plain.storage) is AsyncStore


def test_each_call_goes_to_the_database_of_its_domain(server):
    accounts, values = server.storage.open("accounts"), server.storage.open("keyval", "vcard")
    for username, domain in (("bob", "example.com"), ("visitor", GUEST)):
        fired(accounts.create(username, domain, {}))
        fired(values.set(username, domain, "k", f"{username}'s"))
    assert server.sql.list_accounts() == [("alice", "example.com"), ("bob", "example.com")]
    assert memory(server).list_accounts() == [("visitor", GUEST)]
    assert server.sql.get_value("bob", "example.com", "vcard", "k") == "bob's"
    assert memory(server).get_value("visitor", GUEST, "vcard", "k") == "visitor's"
    assert server.sql.get_value("visitor", GUEST, "vcard", "k") is None
    assert fired(values.get("visitor", GUEST, "k")) == "visitor's"
    assert fired(accounts.list(GUEST)) == [("visitor", GUEST)]
    assert fired(accounts.list()) == [("alice", "example.com"), ("bob", "example.com"),
                                      ("visitor", GUEST)]


def test_services_follow_the_host_they_belong_to(server):
    server.router.add_service(f"pubsub.{GUEST}", GUEST)
    server.router.add_service("pubsub.example.com", "example.com")
    pubsub = server.storage.open("pubsub", "pubsub")
    for service in (f"pubsub.{GUEST}", f"visitor@{GUEST}", "pubsub.example.com",
                    "alice@example.com"):
        fired(pubsub.create_node(service, "news", {}))
    in_memory, real = memory(server).open("pubsub", "pubsub"), server.sql.open("pubsub", "pubsub")
    assert [node.name for node in in_memory.nodes(f"pubsub.{GUEST}")] == ["news"]
    assert [node.name for node in in_memory.nodes(f"visitor@{GUEST}")] == ["news"]
    assert real.nodes(f"pubsub.{GUEST}") == real.nodes(f"visitor@{GUEST}") == []
    assert [node.name for node in real.nodes("pubsub.example.com")] == ["news"]
    assert in_memory.nodes("alice@example.com") == []


def test_a_batch_is_split_and_its_answers_kept_in_order(server):
    fired(server.storage.open("accounts").create("visitor", GUEST, {}))
    offline = server.storage.open("offline")
    batch = [("visitor", GUEST, "<message>1</message>"),
             ("nobody", "example.com", "<message>2</message>"),
             ("alice", "example.com", "<message>3</message>"),
             ("nobody", GUEST, "<message>4</message>")]
    assert fired(offline.append_many(batch, None)) == [
        Appended.STORED, Appended.NO_ACCOUNT, Appended.STORED, Appended.NO_ACCOUNT]
    assert memory(server).count_offline("visitor", GUEST) == 1
    assert server.sql.count_offline("alice", "example.com") == 1
    assert fired(offline.total()) == 2
    archive = server.storage.open("archive", "mam")
    records = [ArchiveRecord(user, domain, str(id_ << 12), "x@example.org", None, "in", "<m/>")
               for user, domain, id_ in (("alice", "example.com", 7), ("visitor", GUEST, 9),
                                         ("alice", "example.com", 8))]
    assert fired(archive.append_many(records)) == [True, True, True]
    assert fired(archive.last_id()) == str(9 << 12)
    assert memory(server).open("archive", "mam").last_id() == str(9 << 12)
    assert server.sql.open("archive", "mam").last_id() == str(8 << 12)


def test_a_batch_of_one_database_goes_there_whole(server):
    fired(server.storage.open("accounts").create("visitor", GUEST, {}))
    offline = server.storage.open("offline")
    assert fired(offline.append_many([("visitor", GUEST, "<m/>")] * 2, None)) == [
        Appended.STORED] * 2
    assert fired(offline.append_many([("alice", "example.com", "<m/>")], None)) == [
        Appended.STORED]
    assert (memory(server).count_offline("visitor", GUEST),
            server.sql.count_offline("alice", "example.com")) == (2, 1)


def test_calls_naming_no_domain_ask_both_databases(server):
    fired(server.storage.open("accounts").create("visitor", GUEST, {}))
    uploads = server.storage.open("uploads")
    for id_, user, domain in (("a1", "alice", "example.com"), ("v1", "visitor", GUEST)):
        fired(uploads.add(Upload(id_, user, domain, "f.txt", 3, "text/plain", NEW_YEAR)))
    assert [upload.id for upload in memory(server).open("uploads").uploads("visitor", GUEST)] \
        == ["v1"]
    assert (fired(uploads.get("v1")).domain, fired(uploads.get("a1")).domain) == (
        GUEST, "example.com")
    assert fired(uploads.get("none")) is None
    assert fired(uploads.mark_stored("v1")) and not fired(uploads.mark_stored("none"))
    assert fired(uploads.existing(["a1", "v1", "none"])) == {"a1", "v1"}
    assert fired(uploads.delete(["a1", "v1"])) == 2
    assert fired(uploads.existing(["a1", "v1"])) == set()


def test_deleting_an_account_deletes_what_it_stored_in_memory(server):
    accounts = server.storage.open("accounts")
    fired(accounts.create("visitor", GUEST, {}))
    fired(server.storage.open("keyval", "private").set("visitor", GUEST, "k", "v"))
    fired(server.storage.open("pubsub", "pep").create_node(
        f"visitor@{GUEST}", "n", {}, account=("visitor", GUEST)))
    fired(server.storage.open("pubsub", "pep").publish(f"visitor@{GUEST}", "n", PubSubItem(
        "i", f"visitor@{GUEST}", "<x/>", NEW_YEAR)))
    fired(accounts.delete("visitor", GUEST))
    assert memory(server).get_values("visitor", GUEST, "private") == {}
    assert memory(server).open("pubsub", "pep").nodes(f"visitor@{GUEST}") == []
    with pytest.raises(UserNotFound):
        memory(server).get_roster("visitor", GUEST)


# The accounts


def test_an_account_lives_from_its_creation_to_the_end_of_its_session(server):
    carrier, user = guest(server)
    assert memory(server).list_accounts() == [(user.local, GUEST)]
    carrier.receive("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
                    f"<item jid='friend@{GUEST}'/></query></iq>")
    carrier.receive("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>V</FN></vCard></iq>")
    assert [e["type"] for e in carrier.take() if e.name == "iq"] == ["result", "result"]
    assert memory(server).get_roster(user.local, GUEST)[1][0].jid == f"friend@{GUEST}"
    carrier.end()
    assert memory(server).list_accounts() == []
    assert memory(server).get_values(user.local, GUEST, "vcard") == {}
    assert server.sql.list_accounts(GUEST) == []
    assert server.sql.get_values(user.local, GUEST, "vcard") == {}


def test_its_contacts_see_it_go_before_it_is_deleted(server):
    watcher, watcher_jid = guest(server, resource="w")
    leaving, leaving_jid = guest(server, resource="l")
    for carrier, contact in ((watcher, leaving_jid), (leaving, watcher_jid)):
        carrier.receive(f"<presence to='{contact}' type='subscribe'/>")
        carrier.receive(f"<presence to='{contact}' type='subscribed'/>")
    leaving.receive("<presence/>")
    watcher.take()
    leaving.lose()
    presences = [e for e in watcher.take() if e.name == "presence"]
    assert [(p["from"], p.getAttribute("type")) for p in presences] == [
        (f"{leaving_jid}/l", "unavailable")]
    assert memory(server).list_accounts() == [(watcher_jid.local, GUEST)]


def test_a_hibernating_session_keeps_its_account_until_it_ends(server):
    carrier, user = guest(server)
    carrier.receive(f"<enable xmlns='{NS_SM}' resume='true'/>")
    assert carrier.take()[0].name == "enabled"
    carrier.lose()
    [session] = server.sessions.resources(user)
    assert session.hibernating
    server.clock.advance(299)
    assert memory(server).account_exists(user.local, GUEST)
    server.clock.advance(1)  # c2s.resume_timeout: 300 s
    assert not server.sessions.count(user)
    assert memory(server).list_accounts() == []


def test_an_account_that_binds_nothing_in_time_goes_with_its_stream(server):
    carrier, d = create(server)
    username = fired(d)
    server.negotiation.authenticated(carrier.connection, username)
    server.clock.advance(29)
    assert memory(server).account_exists(username, GUEST) and not carrier.closed
    server.clock.advance(1)  # c2s.auth_timeout: 30 s
    assert carrier.error == "connection-timeout"
    assert memory(server).list_accounts() == []


def test_a_bound_account_outlives_the_bind_deadline(server):
    carrier, user = guest(server)
    server.clock.advance(31)
    assert not carrier.closed and memory(server).account_exists(user.local, GUEST)


def test_messages_for_an_account_without_a_session_are_refused_not_kept(server):
    sender, _ = guest(server)
    carrier, gone = guest(server)
    carrier.lose()
    sender.receive(f"<message to='{gone}' id='m1' type='chat'><body>hi</body></message>")
    sender.receive(f"<message to='{gone}' id='m2' type='headline'><body>hi</body></message>")
    errors = sender.take()  # the headline's by the message module: no such account
    assert [(e["id"], e["type"], error_condition(e)) for e in errors] == [
        ("m1", "error", "service-unavailable"), ("m2", "error", "service-unavailable")]
    assert memory(server).count_offline(gone.local, GUEST) == 0


def test_unacknowledged_messages_of_an_ending_session_go_back_to_their_sender(server):
    sender, sender_jid = guest(server)
    carrier, user = guest(server)
    carrier.receive(f"<enable xmlns='{NS_SM}' resume='true'/>")
    carrier.take()
    sender.receive(f"<message to='{user}/r' id='m1' type='chat'><body>hi</body></message>")
    assert [e.name for e in carrier.take()] == ["message"]
    carrier.end()  # closed by the client: no hibernation; the message was not acknowledged
    [error] = sender.take()
    assert (error["id"], error_condition(error)) == ("m1", "service-unavailable")
    assert memory(server).list_accounts() == [(sender_jid.local, GUEST)]


# Limits


def test_an_address_creates_a_burst_then_at_its_rate(tmp_path):
    server = make(tmp_path, "[anonymous]\nmax_per_ip_per_minute = 2\nmax_per_ip_burst = 3\n")
    for _ in range(3):
        fired(create(server, "192.0.2.1")[1])
    assert condition(create(server, "192.0.2.1")[1]) == "temporary-auth-failure"
    fired(create(server, "192.0.2.2")[1])  # another address has its own bucket
    assert len(memory(server).list_accounts(GUEST)) == 4
    server.clock.advance(29)
    assert condition(create(server, "192.0.2.1")[1]) == "temporary-auth-failure"
    server.clock.advance(1)  # one more every 30 s
    fired(create(server, "192.0.2.1")[1])
    assert condition(create(server, "192.0.2.1")[1]) == "temporary-auth-failure"


def test_a_host_has_at_most_max_sessions_anonymous_accounts(tmp_path):
    server = make(tmp_path, "[anonymous]\nmax_sessions = 2\n")
    first, _ = guest(server, "192.0.2.1")
    guest(server, "192.0.2.2")
    carrier, d = create(server, "192.0.2.3")
    assert condition(d) == "temporary-auth-failure"
    assert len(memory(server).list_accounts()) == 2
    first.lose()
    fired(create(server, "192.0.2.3")[1])


def test_a_host_may_set_its_own_limits(tmp_path):
    server = make(tmp_path, f'[hosts."{GUEST}".anonymous]\nmax_sessions = 1\n')
    guest(server)
    assert condition(create(server, "192.0.2.9")[1]) == "temporary-auth-failure"


def test_refused_creations_take_no_token(tmp_path):
    server = make(tmp_path, "[anonymous]\nmax_sessions = 1\nmax_per_ip_burst = 2\n")
    first, _ = guest(server)
    for _ in range(3):
        assert condition(create(server)[1]) == "temporary-auth-failure"
    first.lose()
    fired(create(server)[1])


# Where anonymous logins are taken


def test_a_password_host_takes_none(server):
    accounts = server.services["anonymous"]
    assert accounts.serves(GUEST) and not accounts.serves("example.com")
    carrier = ElementCarrier(server)
    carrier.open("example.com")
    d = accounts.create(carrier.connection, "someone")
    assert condition(d) == "invalid-mechanism"
    assert server.sql.list_accounts() == [("alice", "example.com")]


def test_a_host_made_anonymous_by_a_reload_waits_for_a_restart(tmp_path, server):
    reload(server, tmp_path, extra=ANONYMOUS + QUIET + '[hosts."later.example.com"]\n'
           'authentication = "anonymous"\n')
    accounts = server.services["anonymous"]
    assert accounts.serves(GUEST) and not accounts.serves("later.example.com")
    reload(server, tmp_path, extra=QUIET + f'[hosts."{GUEST}"]\n')
    assert not accounts.serves(GUEST)


def test_an_anonymous_host_talks_to_no_other_domain_by_default(server):
    carrier, _ = guest(server)
    alice = Client(server)
    alice.login("alice@example.com")
    carrier.receive("<message to='alice@example.com/res' id='m1' type='chat'>"
                    "<body>hi</body></message>")
    [error] = carrier.take()
    assert (error["id"], error_condition(error)) == ("m1", "service-unavailable")
    assert alice.take() == []


def test_anonymous_users_talk_to_each_other(server):
    first, first_jid = guest(server)
    second, second_jid = guest(server, "192.0.2.2")
    first.receive(f"<message to='{second_jid}/r' type='chat'><body>hello</body></message>")
    [message] = second.take()
    assert (str(message.body), message["from"]) == ("hello", f"{first_jid}/r")


# Through SASL


def sasl_anonymous(server, address="192.0.2.1"):
    """A client of the anonymous host after its <auth mechanism='ANONYMOUS'/>;
    it and the server's answer."""
    client = Client(server, GUEST, address=address)
    client.starttls()
    client.open()
    client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>")
    return client, client.take()[0]


def test_a_sasl_anonymous_login_binds_a_fresh_account_that_goes_at_logout(server):
    client, answer = sasl_anonymous(server)
    assert answer.name == "success"
    client.open()
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    [bound] = client.take()
    local, _, rest = str(next(bound.elements()).jid).partition("@")
    assert rest.startswith(f"{GUEST}/")
    assert memory(server).list_accounts() == [(local, GUEST)]
    client.send("</stream:stream>")
    assert memory(server).list_accounts() == [] and server.sql.list_accounts(GUEST) == []


def test_a_refused_creation_is_a_sasl_temporary_auth_failure(tmp_path):
    server = make(tmp_path, "[anonymous]\nmax_per_ip_burst = 1\n")
    assert sasl_anonymous(server)[1].name == "success"
    _, answer = sasl_anonymous(server)  # the first failure of the address: not delayed
    assert (answer.name, answer.firstChildElement().name) == ("failure", "temporary-auth-failure")


def test_an_anonymous_account_is_an_account_anonymous_in_disco(server):
    """disco#info of the account says it is anonymous (the Registrar's
    ``account/anonymous`` identity)."""
    carrier, jid = guest(server)
    carrier.receive(f"<iq type='get' id='d' to='{jid}'>"
                    "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [answer] = carrier.take()
    identities = [(i["category"], i["type"]) for i in answer.firstChildElement().elements(
        "http://jabber.org/protocol/disco#info", "identity")]
    assert ("account", "anonymous") in identities
    assert ("account", "registered") not in identities
