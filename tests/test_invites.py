"""The ``invites`` service and the landing page of invitations (XEP-0401
§5.2, XEP-0379 §3.3), in memory: tokens kept hashed, listed, revoked,
used once or again, and the page rendered by the resource the HTTP
listener serves."""

import hashlib
import json

import pytest
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from tests.harness import add_user, make_server
from xmppd.jid import JID
from xmppd.storage import RosterItem, StorageError

HOSTS = ('[register]\nallow = true\n'
         '[hosts."example.com"]\n'
         '[hosts."other.example"]\n[hosts."other.example".register]\nallow = false\n'
         '[hosts."guest.example"]\nauthentication = "anonymous"\n')
WEB = '[http]\nexternal_url = "https://{host}:5281/"\n'
ALICE = JID.parse("alice@example.com")

fired = SynchronousTestCase().successResultOf
failed = SynchronousTestCase().failureResultOf


class BreakableRunner:
    """Runs storage calls at once, or fails them while ``broken``."""

    broken = False

    def __call__(self, fn, *args, **kw):
        if self.broken:
            return defer.fail(StorageError("the database is down"))
        return defer.maybeDeferred(fn, *args, **kw)


def make(tmp_path, extra=WEB):
    runner = BreakableRunner()
    server = make_server(tmp_path, hosts=(), extra=extra + HOSTS, runner=runner)
    server.runner = runner
    add_user(server, "alice@example.com")
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


@pytest.fixture
def invites(server):
    return server.services["invites"]


def stored(server, domain="example.com"):
    return server.sql.open("hostval", "invites").items(domain)


# The service


def test_an_operator_invitation(server, invites):
    made = fired(invites.create("example.com"))
    assert made.uri == f"xmpp:example.com?register;preauth={made.token}"
    assert made.url == f"https://example.com:5281/invite/example.com/{made.token}"
    assert made.inviter is None and not made.reusable
    assert (made.expires - made.created).total_seconds() == 7 * 86400
    # Only the token's SHA-256 is kept.
    records = stored(server)
    assert list(records) == [hashlib.sha256(made.token.encode()).hexdigest()]
    assert made.token not in json.dumps(records)
    assert json.loads(records[made.key]) == {
        "inviter": None, "created": made.created.timestamp(),
        "expires": made.expires.timestamp(), "reusable": False, "admin": False}


def test_a_users_invitation_says_whether_it_registers(server, invites):
    made = fired(invites.create("example.com", inviter=ALICE, expires=60, reusable=True))
    assert made.uri == f"xmpp:alice@example.com?roster;preauth={made.token};ibr=y"
    assert made.ibr and made.reusable and made.inviter == "alice@example.com"
    add_user(server, "olga@other.example")
    closed = fired(invites.create("other.example", inviter=JID.parse("olga@other.example")))
    # XEP-0401 §5.1: without registration, no ibr=y.
    assert closed.uri == f"xmpp:olga@other.example?roster;preauth={closed.token}"


def test_no_landing_page_without_a_web_listener(tmp_path):
    server = make(tmp_path, extra="")
    made = fired(server.services["invites"].create("example.com"))
    assert made.url is None


def test_invitations_only_to_password_hosts_from_their_accounts(invites):
    for domain, inviter in (("nowhere.example", None), ("guest.example", None),
                            ("example.com", JID.parse("olga@other.example"))):
        failed(invites.create(domain, inviter=inviter)).trap(ValueError)
    failed(invites.create("example.com", expires=400 * 86400)).trap(ValueError)


def test_the_valid_invitations_are_listed_oldest_first_and_the_expired_deleted(server,
                                                                                invites):
    old = fired(invites.create("example.com", expires=100))
    server.clock.advance(10)
    new = fired(invites.create("example.com", inviter=ALICE))
    assert [(i.key, i.token) for i in fired(invites.list("example.com"))] == [
        (old.key, None), (new.key, None)]
    server.clock.advance(100)
    assert [i.key for i in fired(invites.list("example.com"))] == [new.key]
    assert list(stored(server)) == [new.key]
    assert fired(invites.list("other.example")) == []


def test_revoke_by_token_or_id(invites):
    first = fired(invites.create("example.com"))
    second = fired(invites.create("example.com"))
    assert fired(invites.revoke("example.com", first.token)) is True
    assert fired(invites.revoke("example.com", second.id)) is True
    assert fired(invites.list("example.com")) == []
    assert fired(invites.revoke("example.com", first.token)) is False
    assert fired(invites.revoke("example.com", "0123456789ab")) is False


def test_find_knows_only_valid_tokens_of_the_domain(server, invites):
    made = fired(invites.create("example.com", expires=60))
    found = fired(invites.find("example.com", made.token))
    assert (found.key, found.token, found.uri, found.url) == (made.key, made.token, made.uri,
                                                              made.url)
    for domain, token in (("other.example", made.token), ("example.com", made.id),
                          ("example.com", None), ("example.com", ""),
                          ("example.com", made.token + "x"), ("example.com", "x" * 101)):
        assert fired(invites.find(domain, token)) is None
    server.clock.advance(60)
    assert fired(invites.find("example.com", made.token)) is None


def test_a_single_use_invitation_is_used_once_and_may_be_given_back(invites):
    made = fired(invites.create("example.com"))
    found = fired(invites.find("example.com", made.token))
    assert fired(invites.use(found)) is True
    assert fired(invites.use(found)) is False
    assert fired(invites.find("example.com", made.token)) is None
    assert fired(invites.restore(found)) is True
    assert fired(invites.find("example.com", made.token)) is not None


def test_a_reusable_invitation_is_used_until_revoked_and_never_given_back(invites):
    made = fired(invites.create("example.com", reusable=True))
    found = fired(invites.find("example.com", made.token))
    assert [fired(invites.use(found)) for _ in range(3)] == [True] * 3
    assert fired(invites.restore(found)) is False
    fired(invites.revoke("example.com", made.token))
    assert fired(invites.use(found)) is False


def test_an_expired_invitation_presented_in_time_is_still_usable(server, invites):
    made = fired(invites.create("example.com", expires=10))
    found = fired(invites.find("example.com", made.token))
    server.clock.advance(20)
    assert fired(invites.use(found)) is True  # XEP-0445 §4: checked when presented


def test_accepted_adds_nothing_for_an_inviter_gone_or_the_operator(server, invites):
    add_user(server, "carol@example.com")
    carol = JID.parse("carol@example.com")
    by_alice = fired(invites.create("example.com", inviter=ALICE))
    server.sql.delete_account("alice", "example.com")
    fired(invites.accepted(by_alice, carol))
    fired(invites.accepted(fired(invites.create("example.com")), carol))
    assert server.sql.get_roster("carol", "example.com")[1] == []


def test_accepted_makes_both_contacts_and_keeps_their_groups(server, invites):
    add_user(server, "carol@example.com")
    server.sql.set_roster_item("alice", "example.com", RosterItem(
        jid="carol@example.com", name="Carol", ask=True, groups=("Friends",)))
    made = fired(invites.create("example.com", inviter=ALICE))
    fired(invites.accepted(made, JID.parse("carol@example.com")))
    item = server.sql.get_roster_item("alice", "example.com", "carol@example.com")
    assert (item.subscription, item.ask, item.name, item.groups) == (
        "both", False, "Carol", ("Friends",))
    other = server.sql.get_roster_item("carol", "example.com", "alice@example.com")
    assert (other.subscription, other.name) == ("both", None)


# The landing page


def get(server, *segments):
    """GET /invite/SEGMENTS...: (status, headers, body)."""
    page, _ = server.http_resources[("invite",)]
    request = DummyRequest([s.encode() for s in segments])
    body = page.render(request)
    if body is NOT_DONE_YET:
        assert request.finished
        body = b"".join(request.written)
    headers = {name.decode().lower(): values[0].decode()
               for name, values in request.responseHeaders.getAllRawHeaders()}
    return request.responseCode, headers, body.decode()


def test_the_landing_page_of_a_valid_invitation(server, invites):
    made = fired(invites.create("example.com"))
    status, headers, body = get(server, "example.com", made.token)
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert "<title>Invitation to example.com</title>" in body
    assert f'<a href="xmpp:example.com?register;preauth={made.token}">' in body
    assert "Conversations" in body and "Monal" in body
    assert made.expires.strftime("%Y-%m-%d %H:%M UTC") in body
    assert "<script" not in body


def test_the_landing_page_of_a_users_invitation(server, invites):
    made = fired(invites.create("example.com", inviter=ALICE))
    status, _, body = get(server, "example.com", made.token)
    assert status == 200
    assert "alice@example.com invites you to chat" in body
    assert "can create your account on <b>example.com</b>" in body
    add_user(server, "olga@other.example")
    closed = fired(invites.create("other.example", inviter=JID.parse("olga@other.example")))
    _, _, body = get(server, "other.example", closed.token)
    assert "create your account" not in body
    assert f'href="xmpp:olga@other.example?roster;preauth={closed.token}"' in body


def test_the_landing_page_escapes_what_it_shows(server):
    token = "t" * 24
    key = hashlib.sha256(token.encode()).hexdigest()
    server.sql.open("hostval", "invites").add("example.com", key, json.dumps({
        "inviter": "<script>alert(1)</script>\"'&@example.com", "created": 0.0,
        "expires": 4e9, "reusable": False}))
    status, _, body = get(server, "example.com", token)
    assert status == 200
    assert "<script>" not in body and "alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;@example.com" in body


@pytest.mark.parametrize("case", ["unknown", "used", "expired", "revoked", "domain",
                                  "hostless", "short", "long"])
def test_no_landing_page_for_what_is_not_a_valid_invitation(server, invites, case):
    made = fired(invites.create("example.com", expires=60))
    found = fired(invites.find("example.com", made.token))
    segments = ("example.com", made.token)
    if case == "unknown":
        segments = ("example.com", "no-such-token")
    elif case == "used":
        fired(invites.use(found))
    elif case == "expired":
        server.clock.advance(60)
    elif case == "revoked":
        fired(invites.revoke("example.com", made.token))
    elif case == "domain":
        segments = ("other.example", made.token)
    elif case == "hostless":
        segments = ("nowhere.example", made.token)
    elif case == "short":
        segments = ("example.com",)
    else:
        segments = ("example.com", made.token, "more")
    status, headers, body = get(server, *segments)
    assert status == 404
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert "Invitation not found" in body and made.token not in body


def test_the_landing_page_when_storage_fails(server, invites):
    made = fired(invites.create("example.com"))
    server.runner.broken = True
    status, headers, body = get(server, "example.com", made.token)
    assert status == 503
    assert headers["cache-control"] == "no-store"
    assert "Try again later" in body and made.token not in body
