"""In-band registration (XEP-0077) with invitation tokens (XEP-0445), and
in-band password changes and account removal, in memory: the ``register``
module over the harness's client streams, the per-address limit on the
injected clock."""

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import Client, add_user, error_condition, make_server
from tests.paused_storage import pausable_server
from xmppd.jid import JID
from xmppd.storage import RosterItem
from xmppd.wokkel_compat import data_form

NS_REGISTER = "jabber:iq:register"
NS_ROSTER = "jabber:iq:roster"
NS_PARS = "urn:xmpp:pars:0"
NS_INFO = "http://jabber.org/protocol/disco#info"
FEATURES = {"http://jabber.org/features/iq-register", "urn:xmpp:ibr-token:0", "urn:xmpp:invite"}
CLOSED = "closed.example"
PASSWORD = "correct horse battery"
QUIET = "[ping]\nidle_timeout = 0\n"  # no pings while the clock runs
HOSTS = (f'[hosts."example.com"]\n[hosts."{CLOSED}"]\n'
         f'[hosts."{CLOSED}".register]\nallow = false\n')

fired = SynchronousTestCase().successResultOf


def config(**register):
    lines = "".join(f"{key} = {value}\n" for key, value in
                    {"allow": "true", **register}.items())
    return QUIET + "[register]\n" + lines + HOSTS


def make(tmp_path, **register):
    server = make_server(tmp_path, hosts=(), extra=config(**register))
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


def stream(server, domain="example.com", address="192.0.2.1"):
    """A client stream after STARTTLS, not authenticated: the client and
    the stream features it was offered."""
    client = Client(server, domain, address=address)
    client.starttls()
    return client, client.open()


def ask(client, xml):
    """Send one iq; the one answer."""
    client.send(xml)
    [answer] = client.take()
    return answer


def simple(username, password, id_="r1", to=None):
    to = "" if to is None else f" to='{to}'"
    fields = "".join(f"<{name}>{value}</{name}>" for name, value in
                     (("username", username), ("password", password)) if value is not None)
    return f"<iq type='set' id='{id_}'{to}><query xmlns='{NS_REGISTER}'>{fields}</query></iq>"


def form(form_type=NS_REGISTER, id_="r1", to=None, **fields):
    to = "" if to is None else f" to='{to}'"
    values = "".join(f"<field var='{name}'><value>{value}</value></field>"
                     for name, value in fields.items())
    return (f"<iq type='set' id='{id_}'{to}><query xmlns='{NS_REGISTER}'>"
            f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{form_type}</value></field>{values}</x></query></iq>")


def preauth(token, id_="p1"):
    return f"<iq type='set' id='{id_}'><preauth xmlns='{NS_PARS}' token='{token}'/></iq>"


def refused(answer, condition, *secrets):
    """``answer`` is an error of ``condition`` that carries nothing of the
    request back (§3.3), and none of ``secrets``; the error element."""
    assert answer["type"] == "error", answer.toXml()
    assert error_condition(answer) == condition, answer.toXml()
    assert [child.name for child in answer.elements()] == ["error"]
    for secret in secrets:
        assert secret not in answer.toXml()
    return next(answer.elements())


def text_of(error):
    return "".join(str(c) for c in error.elements() if c.name == "text")


def register(server, username, password=PASSWORD, address="192.0.2.1", token=None):
    """Register on a new stream; the answer."""
    client, _ = stream(server, address=address)
    if token is not None:
        assert ask(client, preauth(token))["type"] == "result"
    return ask(client, simple(username, password))


def can_log_in(server, user, password=PASSWORD):
    client, _ = stream(server, JID.parse(user).domain)
    return client.auth_plain(user, password).name == "success"


def exists(server, user):
    return server.sql.account_exists(*user.split("@"))


def invite(server, **options):
    return fired(server.services["invites"].create("example.com", **options))


# Stream features and discovery (§8, §10; XEP-0445 §3)


def test_features_are_offered_where_registration_is_allowed_and_before_login(server):
    _, features = stream(server)
    assert {f.uri for f in features.elements() if f.name == "register"} == FEATURES
    _, closed = stream(server, CLOSED)
    assert not [f for f in closed.elements() if f.name == "register"]
    client = Client(server)
    client.starttls()
    client.open()
    assert client.auth_plain("alice@example.com").name == "success"
    assert not [f for f in client.open().elements() if f.name == "register"]


def test_disco_info_advertises_jabber_iq_register(server):
    client = Client(server)
    client.login("alice@example.com")
    answer = ask(client, f"<iq type='get' id='d' to='example.com'><query xmlns='{NS_INFO}'/></iq>")
    assert NS_REGISTER in {f["var"] for f in answer.firstChildElement().elements(NS_INFO,
                                                                               "feature")}


def test_no_feature_before_tls(server):
    client = Client(server)
    features = client.open()
    assert not [f for f in features.elements() if f.name == "register"]


# Registration (§3.1)


def test_the_fields_come_simple_and_as_a_form(server):
    client, _ = stream(server)
    answer = ask(client, f"<iq type='get' id='g'><query xmlns='{NS_REGISTER}'/></iq>")
    assert answer["type"] == "result"
    query = answer.firstChildElement()
    assert [c.name for c in query.elements()] == ["instructions", "username", "password", "x"]
    fields = data_form.Form.fromElement(next(query.elements("jabber:x:data", "x")))
    assert fields.formNamespace == NS_REGISTER
    assert {name: (f.fieldType, f.required) for name, f in fields.fields.items()} == {
        "username": ("text-single", True), "password": ("text-private", True)}


def test_a_registered_account_logs_in(server):
    client, _ = stream(server)
    assert ask(client, simple("Carol", PASSWORD))["type"] == "result"
    assert exists(server, "carol@example.com")
    # §3.1.1: one registration per stream; then the client authenticates.
    refused(ask(client, simple("dave", PASSWORD, "r2")), "not-acceptable", PASSWORD)
    assert client.auth_plain("carol@example.com", PASSWORD).name == "success"
    client.open()
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert client.take()[0]["type"] == "result"


def test_registration_with_the_form(server):
    client, _ = stream(server)
    answer = ask(client, form(username="carol", password=PASSWORD, to="example.com"))
    assert answer["type"] == "result"
    assert can_log_in(server, "carol@example.com")


def test_a_taken_username_is_a_conflict(server):
    answer = register(server, "Alice", "another long password")
    refused(answer, "conflict", "another long password")
    assert can_log_in(server, "alice@example.com", "secret")


@pytest.mark.parametrize("username", ["", "   ", "x@y", "bad/name", "with space", "a:b",
                                      "quote'", "x" * 1024])
def test_invalid_usernames_are_not_acceptable(server, username):
    refused(register(server, username), "not-acceptable", PASSWORD)
    assert sorted(name for name, _ in server.sql.list_accounts("example.com")) == [
        "alice", "bob"]


def test_a_missing_username_or_password_is_not_acceptable(server):
    client, _ = stream(server)
    refused(ask(client, simple(None, PASSWORD)), "not-acceptable", PASSWORD)
    refused(ask(client, simple("carol", None)), "not-acceptable")
    refused(ask(client, simple("carol", "")), "not-acceptable")
    assert not exists(server, "carol@example.com")


def test_short_and_refused_passwords_are_not_acceptable(tmp_path):
    server = make(tmp_path, min_password_length=12)
    client, _ = stream(server)
    error = refused(ask(client, simple("carol", "elevenchars")), "not-acceptable", "elevenchars")
    assert "at least 12 characters" in text_of(error)
    # OpaqueString (RFC 8265 §4.2) refuses control characters such as TAB.
    refused(ask(client, simple("carol", "tab\there and there")), "not-acceptable", "tab\there")
    assert not exists(server, "carol@example.com")
    assert ask(client, simple("carol", "twelve chars"))["type"] == "result"


def test_malformed_requests_are_bad_requests(server):
    client, _ = stream(server)
    refused(ask(client, form(form_type="urn:other", username="carol", password=PASSWORD)),
            "bad-request", PASSWORD)
    refused(ask(client, f"<iq type='set' id='x'><query xmlns='{NS_REGISTER}'>"
                        f"<x xmlns='jabber:x:data' type='form'/></query></iq>"), "bad-request")
    refused(ask(client, f"<iq type='get'><query xmlns='{NS_REGISTER}'/></iq>"), "bad-request")
    refused(ask(client, f"<iq type='get' id='t'><preauth xmlns='{NS_PARS}' token='x'/></iq>"),
            "bad-request")
    assert not exists(server, "carol@example.com")
    assert not client.closed


def test_other_iqs_before_authentication_still_end_the_stream(server):
    client, _ = stream(server)
    client.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    [error] = client.take()
    assert error_condition(error) == "not-authorized" and client.closed


def test_a_closed_host_refuses_registration(server):
    client, _ = stream(server, CLOSED)
    refused(ask(client, f"<iq type='get' id='g'><query xmlns='{NS_REGISTER}'/></iq>"),
            "service-unavailable")
    refused(ask(client, simple("carol", PASSWORD)), "service-unavailable", PASSWORD)
    refused(ask(client, preauth("anything")), "service-unavailable")
    assert not exists(server, f"carol@{CLOSED}")
    open_client, _ = stream(server)
    refused(ask(open_client, simple("carol", PASSWORD, to=CLOSED)), "service-unavailable")


def test_registration_is_off_by_default(tmp_path):
    server = make_server(tmp_path, extra=QUIET)
    client, features = stream(server)
    assert not [f for f in features.elements() if f.name == "register"]
    refused(ask(client, simple("carol", PASSWORD)), "service-unavailable", PASSWORD)


# The limit per address


def test_registrations_from_one_address_are_limited(tmp_path):
    server = make(tmp_path, max_per_ip_per_hour=2, max_per_ip_burst=2)
    assert register(server, "u1")["type"] == "result"
    assert register(server, "u2")["type"] == "result"
    error = refused(register(server, "u3"), "policy-violation", PASSWORD)
    assert error["type"] == "wait"
    assert not exists(server, "u3@example.com")
    # A conflict or a bad password costs nothing; another address has its own bucket.
    refused(register(server, "alice"), "conflict")
    assert register(server, "u3", address="198.51.100.7")["type"] == "result"
    server.clock.advance(1800)  # two an hour: one more
    assert register(server, "u4")["type"] == "result"
    refused(register(server, "u5"), "policy-violation")


# Invitations (XEP-0445)


def test_invite_only_needs_a_token(tmp_path):
    server = make(tmp_path, invite_only="true")
    client, _ = stream(server)
    query = ask(client, f"<iq type='get' id='g'><query xmlns='{NS_REGISTER}'/></iq>") \
        .firstChildElement()
    # §6: the token is a field of the form only, so the simple fields go.
    assert [c.name for c in query.elements()] == ["instructions", "x"]
    fields = data_form.Form.fromElement(next(query.elements("jabber:x:data", "x"))).fields
    assert fields["token"].required
    refused(ask(client, simple("carol", PASSWORD)), "not-allowed", PASSWORD)
    assert not exists(server, "carol@example.com")

    made = invite(server)
    assert ask(client, preauth(made.token))["type"] == "result"
    query = ask(client, f"<iq type='get' id='g2'><query xmlns='{NS_REGISTER}'/></iq>") \
        .firstChildElement()
    assert "token" not in data_form.Form.fromElement(
        next(query.elements("jabber:x:data", "x"))).fields
    assert ask(client, simple("carol", PASSWORD))["type"] == "result"
    assert can_log_in(server, "carol@example.com")


def test_the_token_may_be_a_field_of_the_form(tmp_path):
    server = make(tmp_path, invite_only="true")
    made = invite(server)
    client, _ = stream(server)
    refused(ask(client, form(username="carol", password=PASSWORD, token="wrong")),
            "item-not-found", PASSWORD, "wrong")
    assert ask(client, form(username="carol", password=PASSWORD, token=made.token,
                            id_="r2"))["type"] == "result"
    assert exists(server, "carol@example.com")
    assert fired(server.services["invites"].find("example.com", made.token)) is None


def test_preauth_good_bad_expired_and_used(server):
    client, _ = stream(server)
    made = invite(server, expires=10)
    assert ask(client, preauth(made.token))["type"] == "result"
    other, _ = stream(server)
    refused(ask(other, preauth("not-a-token")), "item-not-found")
    refused(ask(other, preauth("")), "item-not-found")
    refused(ask(other, f"<iq type='set' id='n'><preauth xmlns='{NS_PARS}'/></iq>"),
            "item-not-found")
    refused(ask(other, preauth("x" * 5000)), "item-not-found")
    # Expiry is checked when the token is given, not again (XEP-0445 §4).
    server.clock.advance(11)
    refused(ask(other, preauth(made.token)), "item-not-found")
    assert ask(client, simple("carol", PASSWORD))["type"] == "result"
    assert exists(server, "carol@example.com")
    # Used: a single-use token is gone.
    later = invite(server)
    assert register(server, "dave", token=later.token)["type"] == "result"
    third, _ = stream(server)
    refused(ask(third, preauth(later.token)), "item-not-found")


def test_a_single_use_token_registers_one_account_a_reusable_one_several(server):
    once, again = invite(server), invite(server, reusable=True)
    assert register(server, "one", token=once.token)["type"] == "result"
    client, _ = stream(server, address="198.51.100.1")
    refused(ask(client, preauth(once.token)), "item-not-found")
    for number, address in enumerate(("198.51.100.2", "198.51.100.3")):
        assert register(server, f"many{number}", token=again.token,
                        address=address)["type"] == "result"
    assert exists(server, "many0@example.com") and exists(server, "many1@example.com")


def test_an_admin_invitation_makes_an_admin_until_the_account_goes(server):
    accounts = server.services["accounts"]
    boss = JID.parse("boss@example.com")
    made = invite(server, admin=True)
    assert register(server, "boss", token=made.token)["type"] == "result"
    assert accounts.is_admin(boss, "example.com")
    assert not accounts.is_admin(boss, CLOSED)
    assert not accounts.is_admin(JID.parse("boss@" + CLOSED), "example.com")
    fired(accounts.delete(boss))
    assert register(server, "boss", address="198.51.100.9")["type"] == "result"
    assert not accounts.is_admin(boss, "example.com")
    refusals = []
    server.services["invites"].create("example.com", admin=True, reusable=True).addErrback(
        refusals.append)
    assert refusals[0].check(ValueError)


def test_a_revoked_token_does_not_register(server):
    made = invite(server)
    client, _ = stream(server)
    assert ask(client, preauth(made.token))["type"] == "result"
    assert fired(server.services["invites"].revoke("example.com", made.token))
    refused(ask(client, simple("carol", PASSWORD)), "item-not-found", PASSWORD)
    assert not exists(server, "carol@example.com")
    # The stream forgot the token: on an open host it may register without.
    assert ask(client, simple("carol", PASSWORD, "r2"))["type"] == "result"


def test_a_token_is_given_back_when_the_registration_fails(tmp_path):
    server = make(tmp_path, invite_only="true")
    made = invite(server)
    client, _ = stream(server)
    assert ask(client, preauth(made.token))["type"] == "result"
    refused(ask(client, simple("carol", "tab\tis not allowed")), "not-acceptable")
    assert fired(server.services["invites"].find("example.com", made.token)) is not None
    assert ask(client, simple("carol", PASSWORD, "r2"))["type"] == "result"
    assert fired(server.services["invites"].find("example.com", made.token)) is None


def test_one_token_used_at_once_registers_one_account(tmp_path):
    server = pausable_server(tmp_path, hosts=(), extra=config(invite_only="true"))
    made = invite(server)
    first, _ = stream(server, address="198.51.100.1")
    second, _ = stream(server, address="198.51.100.2")
    for client in (first, second):
        assert ask(client, preauth(made.token))["type"] == "result"
    server.runner.pause()
    first.send(simple("first", PASSWORD))
    second.send(simple("second", PASSWORD))
    assert first.take() == [] and second.take() == []  # both under way
    server.runner.resume()
    answers = {name: client.take() for name, client in (("first", first), ("second", second))}
    assert sorted(a["type"] for [a] in answers.values()) == ["error", "result"]
    [winner] = [name for name, [a] in answers.items() if a["type"] == "result"]
    [loser] = [name for name in answers if name != winner]
    refused(answers[loser][0], "item-not-found", PASSWORD)
    assert exists(server, f"{winner}@example.com")
    assert not exists(server, f"{loser}@example.com")


def test_a_users_invitation_makes_the_new_account_its_contact(server):
    alice = Client(server)
    alice.login("alice@example.com", "desk")
    alice.send(f"<iq type='get' id='roster'><query xmlns='{NS_ROSTER}'/></iq>")
    alice.take()
    made = invite(server, inviter=JID.parse("alice@example.com"))
    assert made.uri == f"xmpp:alice@example.com?roster;preauth={made.token};ibr=y"

    assert register(server, "carol", token=made.token)["type"] == "result"

    [push] = alice.take()  # XEP-0401 §5.5: the inviter learns of it at once
    item = push.firstChildElement().firstChildElement()
    assert (push["type"], item["jid"], item["subscription"]) == ("set", "carol@example.com",
                                                                 "both")
    assert item.getAttribute("name") is None and item.getAttribute("ask") is None
    carol = Client(server)
    carol.login("carol@example.com", "phone", password=PASSWORD)
    carol.send(f"<iq type='get' id='roster'><query xmlns='{NS_ROSTER}'/></iq>")
    [roster] = carol.take()
    [item] = roster.firstChildElement().elements()
    assert (item["jid"], item["subscription"]) == ("alice@example.com", "both")
    # Subscribed both ways: presence goes each way.
    alice.send("<presence/>")
    alice.take()
    carol.send("<presence/>")
    assert "carol@example.com/phone" in [p.getAttribute("from") for p in alice.take()
                                         if p.name == "presence"]
    assert "alice@example.com/desk" in [p.getAttribute("from") for p in carol.take()
                                        if p.name == "presence"]


# Password change (§3.3)


def logged_in(server, user, resource):
    client = Client(server)
    client.login(user, resource)
    return client


def test_a_password_change_resets_the_other_streams(server):
    asking = logged_in(server, "alice@example.com", "asking")
    other = logged_in(server, "alice@example.com", "other")
    answer = ask(asking, simple("alice", "a brand new password", to="example.com"))
    assert answer["type"] == "result"
    [error] = other.take()
    assert error_condition(error) == "reset" and other.closed
    assert not asking.closed
    assert not can_log_in(server, "alice@example.com", "secret")
    assert can_log_in(server, "alice@example.com", "a brand new password")


def test_a_password_change_with_the_form_and_without_username(server):
    client = logged_in(server, "alice@example.com", "r")
    assert ask(client, form(form_type=f"{NS_REGISTER}:changepassword",
                            username="alice@example.com", old_password="secret",
                            password="form password 1"))["type"] == "result"
    assert can_log_in(server, "alice@example.com", "form password 1")
    assert ask(client, f"<iq type='set' id='c'><query xmlns='{NS_REGISTER}'>"
                       f"<password>bare password 2</password></query></iq>")["type"] == "result"
    assert can_log_in(server, "alice@example.com", "bare password 2")


def test_a_refused_password_change_keeps_the_password(tmp_path):
    server = make(tmp_path, allow="false")  # password changes need no registration
    client = logged_in(server, "alice@example.com", "r")
    refused(ask(client, simple("bob", "bobs new password")), "not-allowed", "bobs new")
    refused(ask(client, simple("alice", None)), "bad-request")
    refused(ask(client, simple("alice", "")), "bad-request")
    refused(ask(client, simple("alice", "shrt1")), "not-acceptable", "shrt1")
    refused(ask(client, simple("alice", "tab\tpassword")), "not-acceptable", "tab\t")
    # To another account: not the server's to answer for it, and nothing echoed.
    refused(ask(client, simple("alice", "sent to bob", to="bob@example.com")),
            "service-unavailable", "sent to bob")
    assert can_log_in(server, "alice@example.com", "secret")
    assert can_log_in(server, "bob@example.com", "secret")


def test_an_account_learns_it_is_registered(server):
    client = logged_in(server, "alice@example.com", "r")
    answer = ask(client, f"<iq type='get' id='g'><query xmlns='{NS_REGISTER}'/></iq>")
    query = answer.firstChildElement()
    assert [c.name for c in query.elements()] == ["registered", "instructions", "username"]
    assert str(next(query.elements(NS_REGISTER, "username"))) == "alice"


# Cancellation (§3.2)


def test_remove_cancels_subscriptions_deletes_the_account_and_closes_its_streams(server):
    add_user(server, "carol@example.com")
    server.sql.set_roster_item("alice", "example.com", RosterItem(
        jid="bob@example.com", subscription="both"))
    server.sql.set_roster_item("bob", "example.com", RosterItem(
        jid="alice@example.com", subscription="both"))
    server.sql.set_roster_item("carol", "example.com", RosterItem(
        jid="alice@example.com", ask=True))
    server.sql.set_value("alice", "example.com", "subscription-requests", "carol@example.com",
                         "<presence type='subscribe' from='carol@example.com'/>")
    bob = logged_in(server, "bob@example.com", "b")
    bob.send(f"<iq type='get' id='roster'><query xmlns='{NS_ROSTER}'/></iq>")
    bob.send("<presence/>")
    carol = logged_in(server, "carol@example.com", "c")
    carol.send(f"<iq type='get' id='roster'><query xmlns='{NS_ROSTER}'/></iq>")
    carol.send("<presence/>")
    asking = logged_in(server, "alice@example.com", "asking")
    asking.send("<presence/>")
    other = logged_in(server, "alice@example.com", "other")
    bob.take(), carol.take(), asking.take()

    asking.send(f"<iq type='set' id='unreg'><query xmlns='{NS_REGISTER}'><remove/></query></iq>")

    *_, result, error = asking.take()  # §3.2: the result, then the stream error
    assert (result.name, result["type"], result["id"]) == ("iq", "result", "unreg")
    assert error_condition(error) == "not-authorized" and asking.closed
    assert error_condition(other.take()[0]) == "not-authorized" and other.closed
    received = bob.take()
    presences = [p.getAttribute("type") for p in received if p.name == "presence"]
    assert {"unsubscribe", "unsubscribed", "unavailable"} <= set(presences)
    [push] = [iq for iq in received if iq.name == "iq"][-1:]
    assert push.firstChildElement().firstChildElement()["subscription"] == "none"
    assert [p.getAttribute("type") for p in carol.take() if p.name == "presence"] == [
        "unsubscribed"]
    assert not exists(server, "alice@example.com")
    assert not can_log_in(server, "alice@example.com", "secret")
    assert server.sql.get_values("alice", "example.com", "subscription-requests") == {}


def test_remove_must_be_alone(server):
    client = logged_in(server, "alice@example.com", "r")
    refused(ask(client, f"<iq type='set' id='u'><query xmlns='{NS_REGISTER}'><remove/>"
                        f"<password>{PASSWORD}</password></query></iq>"), "bad-request", PASSWORD)
    assert exists(server, "alice@example.com") and not client.closed
