"""Rate limits on subscription requests from strangers (``stranger_limits``),
in memory, on the server's injected clock.

Remote senders are faked as in tests/test_subscription.py: their requests
are routed with no local origin, and what goes back to them is seen on
``route/remote``.  A request that passes is kept by the ``subscription``
module (and delivered to the account's available resources); one over a
limit is neither kept, delivered, notified nor answered.
"""

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from tests.harness import add_user, Client, keep_remote, make_config, make_server
from xmppd.core.stanzas import make_stanza
from xmppd.modules.stranger_limits import OPTIONS
from xmppd.storage import RosterItem

MODULES = ("bind", "roster", "presence", "subscription", "push", "stranger_limits")
LIMITS = "[stranger_limits]\nper_sender = 3\nper_domain = 5\n"
USERS = [f"user{n}@example.com" for n in range(10)]
ALICE = USERS[0]
PUSH_SERVICE = "push.remote.example"
HOUR = 3600


def make(tmp_path, extra=LIMITS, hosts=("example.com", "other.example")):
    server = make_server(tmp_path, hosts=hosts, modules=MODULES, extra=extra)
    for user in USERS + ["carol@other.example", "dan@other.example"]:
        add_user(server, user)
    keep_remote(server)
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


def request(server, sender, to=ALICE):
    """A subscription request from remote ``sender`` to ``to``."""
    server.router.route(make_stanza("presence", to=to, from_=sender, type_="subscribe"))


def spam(server, sender, users):
    """A request from ``sender`` to each of ``users``; the accounts that kept one."""
    for user in users:
        request(server, sender, user)
    return [user for user in users if sender in kept(server, user)]


def kept(server, user=ALICE):
    """The senders of the requests kept for ``user``."""
    local, domain = user.split("@")
    return sorted(server.sql.get_values(local, domain, "subscription-requests"))


def login(server, user):
    client = Client(server, user.split("@")[1])
    client.login(user, "r")
    client.send("<presence/>")
    client.take()
    return client


def test_the_defaults():
    assert (OPTIONS.defaults.per_sender, OPTIONS.defaults.per_domain) == (10, 100)


def test_a_sender_over_its_hourly_limit_is_dropped_without_an_answer(server):
    alice = login(server, ALICE)
    assert spam(server, "spammer@far.example", USERS[1:5]) == USERS[1:4]
    request(server, "spammer@far.example/bot", ALICE + "/r")  # to a full JID: counted too
    assert alice.take() == [] and kept(server) == []
    assert server.remote == []  # neither an error nor "unsubscribed"


def test_the_sender_bucket_refills_with_the_clock(server):
    assert spam(server, "spammer@far.example", USERS[:4]) == USERS[:3]
    server.clock.advance(HOUR / 3 - 10)
    assert spam(server, "spammer@far.example", USERS[3:4]) == []
    server.clock.advance(20)  # a third of the hour: one request more
    assert spam(server, "spammer@far.example", USERS[3:5]) == USERS[3:4]
    server.clock.advance(10 * HOUR)  # never more than the hourly number saved up
    assert spam(server, "spammer@far.example", USERS[4:9]) == USERS[4:7]


def test_a_remote_domain_over_its_hourly_limit_is_dropped(server):
    for n in range(7):
        request(server, f"bot{n}@far.example")
    request(server, "someone@near.example")
    assert kept(server) == [f"bot{n}@far.example" for n in range(5)] + ["someone@near.example"]
    server.clock.advance(HOUR / 5 + 1)
    request(server, "bot5@far.example")
    request(server, "bot6@far.example")
    assert "bot5@far.example" in kept(server) and "bot6@far.example" not in kept(server)


def test_a_sender_over_its_limit_does_not_use_up_its_domain(server):
    assert spam(server, "spammer@far.example", USERS[1:]) == USERS[1:4]
    for n in range(5):
        request(server, f"friend{n}@far.example")
    # the domain's 5 less the spammer's 3 that passed: its 6 others took none
    assert kept(server) == ["friend0@far.example", "friend1@far.example"]


def test_only_subscription_requests_are_counted(server):
    login(server, ALICE)
    for type_ in (None, "unavailable", "probe", "subscribed", "unsubscribe", "unsubscribed"):
        for _ in range(5):
            server.router.route(make_stanza("presence", to=ALICE, from_="spammer@far.example",
                                            type_=type_))
    assert spam(server, "spammer@far.example", USERS[1:4]) == USERS[1:4]


def test_roster_contacts_are_never_counted(server):
    server.sql.set_roster_item("user0", "example.com", RosterItem(jid="pal@far.example"))
    server.sql.set_roster_item("user1", "example.com",
                               RosterItem(jid="pal@far.example", subscription="from"))
    for _ in range(10):
        request(server, "pal@far.example", USERS[0])
        request(server, "pal@far.example", USERS[1])
    assert kept(server, USERS[0]) == ["pal@far.example"]
    # user1's subscriber is answered "subscribed" each time (RFC 6121 §3.1.3)
    assert [e["type"] for e in server.remote if e.name == "presence"].count("subscribed") == 10
    assert spam(server, "pal@far.example", USERS[2:5]) == USERS[2:5]  # its bucket is full


def test_local_senders_have_a_sender_limit_but_no_domain_limit(server):
    carol = Client(server, "other.example")
    carol.login("carol@other.example", "r")
    for user in USERS[:4]:
        carol.send(f"<presence to='{user}' type='subscribe'/>")
    assert [user for user in USERS[:4] if kept(server, user)] == USERS[:3]
    for n in range(7):  # more than per_domain, from a hosted domain
        request(server, f"x{n}@other.example")
    assert kept(server) == ["carol@other.example"] + [f"x{n}@other.example" for n in range(7)]


def test_zero_turns_a_limit_off(tmp_path):
    server = make(tmp_path, "[stranger_limits]\nper_sender = 0\nper_domain = 0\n")
    assert spam(server, "spammer@far.example", USERS) == USERS
    for n in range(150):
        request(server, f"bot{n}@far.example")
    assert len(kept(server)) == 151


def test_limits_per_host(tmp_path):
    server = make(tmp_path, LIMITS + '[hosts."other.example"]\n'
                  '[hosts."other.example".stranger_limits]\nper_sender = 1\n',
                  hosts=("example.com",))
    assert spam(server, "spammer@far.example", ["carol@other.example", "dan@other.example"]) == [
        "carol@other.example"]
    # each host has its own buckets, and its own limits
    assert spam(server, "spammer@far.example", USERS[:4]) == USERS[:3]


def test_a_reload_applies_new_limits(server, tmp_path):
    hosts = ("example.com", "other.example")
    assert spam(server, "spammer@far.example", USERS[:4]) == USERS[:3]
    server.reconfigure(make_config(tmp_path, hosts, "[stranger_limits]\nper_sender = 0\n"
                                   "per_domain = 0\n"), server.certificates)
    assert spam(server, "spammer@far.example", USERS[4:]) == USERS[4:]
    server.reconfigure(make_config(tmp_path, hosts, "[stranger_limits]\nper_sender = 1\n"),
                       server.certificates)
    assert spam(server, "other@near.example", USERS[:3]) == USERS[:1]


def test_a_dropped_request_is_not_pushed(tmp_path):
    server = make(tmp_path, LIMITS + "[push]\nmin_interval = 0\n")
    alice = login(server, ALICE)
    alice.send(f"<iq type='set' id='e'><enable xmlns='urn:xmpp:push:0' jid='{PUSH_SERVICE}' "
               "node='n'/></iq>")
    assert [e["type"] for e in alice.take()] == ["result"]
    alice.send("</stream:stream>")
    alice.lose()
    spam(server, "spammer@far.example", USERS[1:4])
    server.remote.clear()
    request(server, "spammer@far.example")
    assert server.remote == [] and kept(server) == []
    request(server, "someone@far.example")
    assert [(e.name, e["to"]) for e in server.remote] == [("iq", PUSH_SERVICE)]


def test_the_first_refusal_of_a_bucket_in_an_hour_is_logged(server):
    logged = []

    def observe(event):
        if event.get("log_namespace") == "xmppd.modules.stranger_limits":
            logged.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        spam(server, "spammer@far.example", USERS[:6])  # user3 is the first refused
        server.clock.advance(HOUR - 1)
        assert spam(server, "spammer@far.example", USERS[6:9]) == USERS[6:8]
        assert len(logged) == 1  # refused again within the hour: not logged again
        server.clock.advance(2)
        assert spam(server, "spammer@far.example", USERS[9:]) == USERS[9:]
        request(server, "spammer@far.example", USERS[1])
    finally:
        globalLogPublisher.removeObserver(observe)
    assert logged == [
        "subscription requests to example.com from the sender spammer@far.example are over "
        "the hourly limit: dropped (first: spammer@far.example to user3@example.com)",
        "subscription requests to example.com from the sender spammer@far.example are over "
        "the hourly limit: dropped (first: spammer@far.example to user1@example.com)"]
