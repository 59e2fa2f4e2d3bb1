"""Service administration over ad-hoc commands (XEP-0133, XEP-0401 §5.1
and §5.4; xmppd.modules.admin_commands), in memory: who sees and may run
them, and the effect of each on accounts, sessions and the configuration.

The ``control`` service (the running server's Controller) is registered
as ``tap.py`` registers it."""

import pytest
from twisted.internet.testing import MemoryReactorClock

from tests.harness import Client, add_user, error_condition, make_server
from xmppd.certs import make_self_signed
from xmppd.control import Controller
from xmppd.modules.adhoc import NS_COMMANDS
from xmppd.modules.admin_commands import NS_ADMIN, NS_INVITATION, RELOAD
from xmppd.wokkel_compat import data_form

NS_ITEMS = "http://jabber.org/protocol/disco#items"
MODULES = ("bind", "presence", "message", "roster", "disco", "adhoc", "admin_commands",
           "register", "invites")
HOSTS = """
[hosts."example.com"]
admins = ["boss@example.com"]
[hosts."other.example"]
admins = ["chief@other.example"]
[hosts."guest.example"]
authentication = "anonymous"
admins = ["boss@example.com"]
"""
ACCOUNT_COMMANDS = ["add-user", "delete-user", "disable-user", "reenable-user",
                    "end-user-session", "change-user-password", "user-stats",
                    "get-registered-users-num", "get-registered-users-list",
                    "get-online-users-num", "get-online-users-list", "announce"]
INVITE = "urn:xmpp:invite#invite"
CREATE_ACCOUNT = "urn:xmpp:invite#create-account"


def admin(name):
    return f"{NS_ADMIN}#{name}"


def start(tmp_path, extra="", control=True):
    server = make_server(tmp_path, hosts=(), modules=MODULES, extra=extra + HOSTS)
    for user in ("boss@example.com", "alice@example.com", "bob@example.com",
                 "chief@other.example", "olga@other.example"):
        add_user(server, user)
    if control:
        server.services["control"] = Controller(server, MemoryReactorClock())
    return server


@pytest.fixture
def server(tmp_path):
    return start(tmp_path)


def login(server, user, resource="res", password="secret"):
    client = Client(server, domain=user.split("@")[1])
    client.login(user, resource, password)
    return client


@pytest.fixture
def boss(server):
    return login(server, "boss@example.com", "desk")


def send(client, node, action=None, sessionid=None, form=None, to="example.com"):
    attributes = f" node='{node}'"
    if action is not None:
        attributes += f" action='{action}'"
    if sessionid is not None:
        attributes += f" sessionid='{sessionid}'"
    payload = "" if form is None else form.toElement().toXml()
    client.send(f"<iq type='set' id='c1' to='{to}'><command xmlns='{NS_COMMANDS}'"
                f"{attributes}>{payload}</command></iq>")
    answers = [e for e in client.take() if e.name == "iq"]
    assert [a["id"] for a in answers] == ["c1"]
    return answers[0]


def command_of(answer):
    assert answer["type"] == "result", answer.toXml()
    return answer.firstChildElement()


def form_of(command):
    [x] = command.elements(data_form.NS_X_DATA, "x")
    return data_form.Form.fromElement(x)


def notes(command):
    return [(note["type"], str(note)) for note in command.elements(NS_COMMANDS, "note")]


def submission(**values):
    """A submitted form of the admin FORM_TYPE; ``password_verify`` stands
    for ``password-verify``."""
    form = data_form.Form("submit", formNamespace=NS_ADMIN)
    for var, value in values.items():
        form.addField(data_form.Field(
            None, var=var.replace("_", "-") if var == "password_verify" else var,
            values=value if isinstance(value, list) else [value]))
    return form


def open_form(client, node, to="example.com"):
    """Execute ``node``: (the sessionid, the form asked)."""
    command = command_of(send(client, node, to=to))
    assert command["status"] == "executing"
    return command["sessionid"], form_of(command)


def run(client, node, to="example.com", **values):
    """Execute ``node``, submit ``values``; the last answer (an iq)."""
    sessionid, _ = open_form(client, node, to)
    return send(client, node, sessionid=sessionid, form=submission(**values), to=to)


def done(answer):
    command = command_of(answer)
    assert command["status"] == "completed", answer.toXml()
    return command


def command_error(answer):
    assert answer["type"] == "error", answer.toXml()
    [error] = [child for child in answer.elements() if child.name == "error"]
    specific = [child.name for child in error.elements() if child.uri == NS_COMMANDS]
    return error_condition(answer), (specific or [None])[0]


def listed(client, to="example.com"):
    client.send(f"<iq type='get' id='d1' to='{to}'>"
                f"<query xmlns='{NS_ITEMS}' node='{NS_COMMANDS}'/></iq>")
    [answer] = client.take()
    return [item["node"] for item in answer.firstChildElement().elements(NS_ITEMS, "item")]


def stream_error(client):
    errors = [e for e in client.take() if e.name == "error"]
    assert client.closed and errors
    return error_condition(errors[0])


def auth(server, user, password="secret"):
    """The outcome of a PLAIN login: "success", or the failure's condition."""
    client = Client(server, domain=user.split("@")[1])
    client.starttls()
    client.open()
    answer = client.auth_plain(user, password)
    return answer.name if answer.name == "success" else answer.firstChildElement().name


# Who sees and runs them


def test_admins_see_the_commands_of_their_host(server, boss):
    assert listed(boss) == [admin(name) for name in ACCOUNT_COMMANDS] + [
        RELOAD, INVITE, CREATE_ACCOUNT]
    # Where boss is no admin, nothing; on an anonymous host no account commands.
    assert listed(boss, "other.example") == []
    assert listed(boss, "guest.example") == [
        admin(name) for name in ("end-user-session", "user-stats", "get-online-users-num",
                                 "get-online-users-list", "announce")] + [RELOAD]


def test_others_see_none_and_are_forbidden(server):
    alice = login(server, "alice@example.com")
    assert listed(alice) == []
    for node in (admin("add-user"), admin("announce"), RELOAD, CREATE_ACCOUNT):
        assert command_error(send(alice, node)) == ("forbidden", None)
    boss = login(server, "boss@example.com")
    assert command_error(send(boss, admin("delete-user"), to="other.example")) == (
        "forbidden", None)


def test_accounts_of_another_host_are_forbidden(server, boss):
    for node, field in (("delete-user", "accountjids"), ("change-user-password", "accountjid"),
                        ("end-user-session", "accountjids")):
        answer = run(boss, admin(node), **{field: "olga@other.example", "password": "x"})
        assert command_error(answer) == ("forbidden", None)
    assert auth(server, "olga@other.example") == "success"


def test_without_the_controller_the_session_commands_are_not_offered(tmp_path):
    server = start(tmp_path, control=False)
    boss = login(server, "boss@example.com")
    assert listed(boss) == [admin(name) for name in (
        "add-user", "delete-user", "disable-user", "reenable-user", "end-user-session",
        "change-user-password", "get-registered-users-num", "get-registered-users-list")] + [
        INVITE, CREATE_ACCOUNT]


# Accounts


def test_add_user_in_two_steps_then_the_user_logs_in(server, boss):
    command = command_of(send(boss, admin("add-user")))
    [execute] = command.elements(NS_COMMANDS, "actions")
    assert execute["execute"] == "complete"
    form = form_of(command)
    assert form.formNamespace == NS_ADMIN
    assert [(f.var, f.fieldType, f.required) for f in form.fieldList] == [
        ("accountjid", "jid-single", True), ("password", "text-private", True),
        ("password-verify", "text-private", False)]

    answer = send(boss, admin("add-user"), sessionid=command["sessionid"], form=submission(
        accountjid="carol@example.com", password="pässword", password_verify="pässword"))

    assert notes(done(answer)) == [("info", "carol@example.com was added")]
    login(server, "carol@example.com", password="pässword")


def test_add_user_refuses_bad_input_and_keeps_the_session(server, boss):
    sessionid, _ = open_form(boss, admin("add-user"))

    def submit(**values):
        return send(boss, admin("add-user"), sessionid=sessionid, form=submission(**values))

    bad_payload = ("bad-request", "bad-payload")
    assert command_error(submit(accountjid="carol@example.com")) == bad_payload
    differ = submit(accountjid="carol@example.com", password="a", password_verify="b")
    assert command_error(differ) == bad_payload and "the passwords differ" in differ.toXml()
    assert command_error(submit(accountjid="carol@@example.com", password="a")) == bad_payload
    assert command_error(submit(accountjid="example.com", password="a")) == bad_payload
    assert command_error(submit(accountjid="carol@example.com",
                                password="pass\u0378word")) == bad_payload
    assert command_error(submit(accountjid="alice@example.com", password="a")) == (
        "conflict", None)
    assert command_error(submit(accountjid="carol@other.example", password="a")) == (
        "forbidden", None)
    done(submit(accountjid="Carol@example.com", password="a"))
    assert auth(server, "carol@example.com", "a") == "success"


def test_delete_user_ends_the_sessions_and_the_account(server, boss):
    alice = login(server, "alice@example.com")
    answer = run(boss, admin("delete-user"),
                 accountjids=["alice@example.com", "nobody@example.com"])
    assert notes(done(answer)) == [("info", "alice@example.com was deleted"),
                                   ("error", "there is no account nobody@example.com")]
    assert stream_error(alice) == "not-authorized"
    assert auth(server, "alice@example.com") == "not-authorized"
    assert auth(server, "bob@example.com") == "success"


def test_disable_then_reenable(server, boss):
    alice = login(server, "alice@example.com")
    answer = run(boss, admin("disable-user"), accountjids=["alice@example.com"])
    assert notes(done(answer)) == [("info", "alice@example.com was disabled (1 session ended)")]
    assert stream_error(alice) == "not-authorized"
    assert auth(server, "alice@example.com") == "account-disabled"

    answer = run(boss, admin("reenable-user"),
                 accountjids=["alice@example.com", "bob@example.com", "nobody@example.com"])
    assert notes(done(answer)) == [("info", "alice@example.com was re-enabled"),
                                   ("info", "bob@example.com was not disabled"),
                                   ("error", "there is no account nobody@example.com")]
    assert auth(server, "alice@example.com") == "success"
    assert notes(done(run(boss, admin("disable-user"), accountjids=["nobody@example.com"]))) \
        == [("error", "there is no account nobody@example.com")]


def test_change_user_password(server, boss):
    alice = login(server, "alice@example.com")
    answer = run(boss, admin("change-user-password"), accountjid="alice@example.com",
                 password="n3w")
    assert notes(done(answer))[0][0] == "info"
    assert stream_error(alice) == "reset"
    assert auth(server, "alice@example.com", "n3w") == "success"
    assert auth(server, "alice@example.com") == "not-authorized"
    missing = run(boss, admin("change-user-password"), accountjid="nobody@example.com",
                  password="x")
    assert notes(done(missing)) == [("error", "there is no account nobody@example.com")]


def test_registered_users(server, boss):
    answer = send(boss, admin("get-registered-users-num"))
    assert form_of(done(answer))["registeredusersnum"] == "3"

    sessionid, form = open_form(boss, admin("get-registered-users-list"))
    assert form.fields["max_items"].fieldType == "list-single"
    answer = send(boss, admin("get-registered-users-list"), sessionid=sessionid,
                  form=submission(max_items="2"))
    command = done(answer)
    assert form_of(command)["registereduserjids"] == ["alice@example.com", "bob@example.com"]
    assert notes(command) == [("info", "the first 2 of 3 are shown")]
    everyone = done(run(boss, admin("get-registered-users-list"), max_items="none"))
    assert form_of(everyone)["registereduserjids"] == [
        "alice@example.com", "bob@example.com", "boss@example.com"]
    assert command_error(run(boss, admin("get-registered-users-list"), max_items="lots")) == (
        "bad-request", "bad-payload")


# Sessions


def test_online_users(server, boss):
    login(server, "alice@example.com", "laptop")
    login(server, "alice@example.com", "phone")
    login(server, "olga@other.example")
    assert form_of(done(send(boss, admin("get-online-users-num"))))["onlineusersnum"] == "2"
    answer = run(boss, admin("get-online-users-list"), max_items="none")
    assert form_of(done(answer))["onlineuserjids"] == ["alice@example.com", "boss@example.com"]


def test_end_user_session(server, boss):
    laptop = login(server, "alice@example.com", "laptop")
    phone = login(server, "alice@example.com", "phone")
    bob = login(server, "bob@example.com")

    one = run(boss, admin("end-user-session"), accountjids=["alice@example.com/phone"])
    assert notes(done(one)) == [("info", "ended alice@example.com/phone")]
    assert stream_error(phone) == "policy-violation" and not laptop.closed
    phone.lose()

    answer = run(boss, admin("end-user-session"),
                 accountjids=["alice@example.com", "carol@example.com"])
    assert notes(done(answer)) == [("info", "ended alice@example.com/laptop"),
                                   ("warn", "carol@example.com has no session")]
    assert stream_error(laptop) == "policy-violation"
    assert not bob.closed
    login(server, "alice@example.com")  # kicked, not banned


def test_announce_reaches_every_session_of_the_host_only(server, boss):
    alice_laptop = login(server, "alice@example.com", "laptop")
    alice_phone = login(server, "alice@example.com", "phone")
    bob = login(server, "bob@example.com")
    olga = login(server, "olga@other.example")

    sessionid, form = open_form(boss, admin("announce"))
    assert form.fields["announcement"].fieldType == "text-multi"
    boss.send(f"<iq type='set' id='c1' to='example.com'><command xmlns='{NS_COMMANDS}' "
              f"node='{admin('announce')}' sessionid='{sessionid}'>"
              f"{submission(announcement=['Going down', 'in 5 minutes']).toElement().toXml()}"
              f"</command></iq>")
    received = boss.take()
    [answer] = [e for e in received if e.name == "iq"]
    assert notes(done(answer)) == [("info", "the announcement was sent to 4 sessions")]
    for client in (alice_laptop, alice_phone, bob):
        [message] = [e for e in client.take() if e.name == "message"]
        assert (message["from"], message["type"]) == ("example.com", "headline")
        [body] = [child for child in message.elements() if child.name == "body"]
        assert str(body) == "Going down\nin 5 minutes"
    assert [e for e in received if e.name == "message"]  # boss is online too
    assert [e for e in olga.take() if e.name == "message"] == []


def test_user_stats(server, boss):
    alice = login(server, "alice@example.com", "laptop")
    login(server, "alice@example.com", "phone")
    alice.send("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
               "<item jid='bob@example.com'/></query></iq>")
    answer = run(boss, admin("user-stats"), accountjid="alice@example.com")
    form = form_of(done(answer))
    assert form["rostersize"] == "1"
    assert sorted(form["onlineresources"]) == ["laptop", "phone"]
    assert form["ipaddresses"] == ["192.168.1.1"]
    missing = run(boss, admin("user-stats"), accountjid="nobody@example.com")
    assert notes(done(missing)) == [("error", "there is no account nobody@example.com")]


# The configuration


def test_reload_applies_the_file_or_keeps_the_running_config(server, boss, tmp_path):
    for domain in ("example.com", "other.example", "guest.example"):
        make_self_signed(domain, str(tmp_path / "certs"))
    config = tmp_path / "xmppd.toml"
    config.write_text(HOSTS.replace('admins = ["boss@example.com"]\n[hosts."other',
                                    'admins = ["boss@example.com", "alice@example.com"]\n'
                                    '[hosts."other'))
    alice = login(server, "alice@example.com")
    assert listed(alice) == []

    command = done(send(boss, RELOAD))

    assert notes(command) == [("info", f"ok: reloaded {config}")]
    assert RELOAD in listed(alice)
    config.write_text("this is not TOML")
    assert notes(done(send(alice, RELOAD)))[0][0] == "error"
    assert RELOAD in listed(alice)


# Invitations (XEP-0401)


def test_users_invite_where_the_host_allows_it(tmp_path):
    server = start(tmp_path, "[admin_commands]\nallow_user_invites = true\n"
                             "[register]\nallow = true\n")
    alice = login(server, "alice@example.com")
    assert listed(alice) == [INVITE]
    command = done(send(alice, INVITE))
    form = form_of(command)
    assert form.formNamespace == NS_INVITATION
    assert form["uri"].startswith("xmpp:alice@example.com?roster;preauth=")
    assert form["uri"].endswith(";ibr=y")
    assert form["expire"].endswith("Z")
    token = form["uri"].split("preauth=")[1].split(";")[0]
    found = []
    server.services["invites"].find("example.com", token).addCallback(found.append)
    assert found[0].inviter == "alice@example.com"
    # Not for accounts of other hosts.
    olga = login(server, "olga@other.example")
    assert command_error(send(olga, INVITE)) == ("forbidden", None)


def test_users_cannot_invite_by_default(server):
    alice = login(server, "alice@example.com")
    assert command_error(send(alice, INVITE)) == ("forbidden", None)


def test_admins_make_account_invitations_where_registration_takes_them(tmp_path, server,
                                                                       boss):
    refused = done(send(boss, CREATE_ACCOUNT))
    assert notes(refused)[0][0] == "error" and "registration is off" in notes(refused)[0][1]

    open_server = start(tmp_path / "open", "[register]\nallow = true\n")
    boss = login(open_server, "boss@example.com")
    form = form_of(done(send(boss, CREATE_ACCOUNT)))
    assert form["uri"].startswith("xmpp:example.com?register;preauth=")
