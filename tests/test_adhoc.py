"""Ad-hoc commands (XEP-0050, xmppd.modules.adhoc), in memory: discovery
per requester, single and multi-stage execution with actions, prev and
cancel, sessions that expire on the clock or are bounded per account, and
every error of 'Possible Errors'."""

import pytest
from twisted.internet import defer

from tests.harness import Client, add_user, error_condition, make_server
from xmppd.core.stanzas import StanzaError
from xmppd.modules.adhoc import MAX_SESSIONS, NS_COMMANDS, SESSION_TIMEOUT, Ask, Done, Note
from xmppd.wokkel_compat import data_form

NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
MODULES = ("bind", "disco", "adhoc")


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, hosts=("example.com", "other.example"), modules=MODULES)
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    return server


@pytest.fixture
def adhoc(server):
    return server.services["adhoc"]


@pytest.fixture
def alice(server):
    client = Client(server)
    client.login("alice@example.com", "desk")
    return client


def only_alice(requester, domain):
    return requester.bare_str == "alice@example.com"


def everyone(requester, domain):
    return True


def ask(var="name", label="Name", required=True):
    form = data_form.Form("form", title="Question")
    form.addField(data_form.Field("text-single", var=var, label=label, required=required))
    return form


def submitted(**values):
    form = data_form.Form("submit")
    for var, value in values.items():
        form.addField(data_form.Field(var=var, value=value))
    return form.toElement().toXml()


def command(client, node, action=None, sessionid=None, payload="", to="example.com",
            lang=None):
    """Send a command request; the single answer."""
    attributes = f" node='{node}'"
    for name, value in (("action", action), ("sessionid", sessionid), ("xml:lang", lang)):
        if value is not None:
            attributes += f" {name}='{value}'"
    client.send(f"<iq type='set' id='c1' to='{to}'><command xmlns='{NS_COMMANDS}'"
                f"{attributes}>{payload}</command></iq>")
    [answer] = client.take()
    assert answer["id"] == "c1"
    return answer


def result(answer):
    assert answer["type"] == "result", answer.toXml()
    [element] = answer.elements(NS_COMMANDS, "command")
    return element


def status(answer):
    return result(answer)["status"]


def actions(element):
    [found] = element.elements(NS_COMMANDS, "actions")
    return found["execute"], [child.name for child in found.elements()]


def notes(element):
    return [(note["type"], str(note)) for note in element.elements(NS_COMMANDS, "note")]


def form_of(element):
    [x] = element.elements(data_form.NS_X_DATA, "x")
    return data_form.Form.fromElement(x)


def command_error(answer):
    """(defined condition, XEP-0050 condition or None, error type)."""
    assert answer["type"] == "error", answer.toXml()
    [error] = [child for child in answer.elements() if child.name == "error"]
    specific = [child.name for child in error.elements() if child.uri == NS_COMMANDS]
    return error_condition(answer), (specific or [None])[0], error["type"]


def disco(client, ns, node=None, to="example.com"):
    node_attr = "" if node is None else f" node='{node}'"
    client.send(f"<iq type='get' id='d1' to='{to}'><query xmlns='{ns}'{node_attr}/></iq>")
    [answer] = client.take()
    return answer


class Wizard:
    """A command of two forms (a name, then a colour) that records what
    each stage got."""

    def __init__(self):
        self.requests = []

    def __call__(self, request):
        self.requests.append((request.stage, request.action,
                              None if request.form is None else dict(request.form)))
        if request.stage == 0:
            return Ask(ask(), note="step one", final=False)
        if request.stage == 1:
            request.state["name"] = request.form["name"]
            return Ask(ask("colour", "Colour"))
        result = data_form.Form("result")
        result.addField(data_form.Field(var="summary",
                                        value=f"{request.state['name']} likes "
                                              f"{request.form['colour']}"))
        return Done(note=Note("done", "info"), form=result)


# Discovery


def test_hosts_advertise_commands(alice):
    answer = disco(alice, NS_INFO)
    assert NS_COMMANDS in [f["var"] for f in answer.firstChildElement().elements(NS_INFO,
                                                                                  "feature")]


def test_the_command_list_depends_on_the_requester(server, adhoc, alice):
    adhoc.add("hello", "Say hello", lambda request: Done("hello"), everyone)
    adhoc.add("secret", "Secret", lambda request: Done(), only_alice)
    adhoc.add("elsewhere", "Elsewhere", lambda request: Done(), everyone, host="other.example")
    bob = Client(server)
    bob.login("bob@example.com")

    def listed(client):
        answer = disco(client, NS_ITEMS, NS_COMMANDS)
        assert answer["type"] == "result"
        query = answer.firstChildElement()
        assert query["node"] == NS_COMMANDS
        return [(i["jid"], i["node"], i["name"]) for i in query.elements(NS_ITEMS, "item")]

    assert listed(alice) == [("example.com", "hello", "Say hello"),
                             ("example.com", "secret", "Secret")]
    assert listed(bob) == [("example.com", "hello", "Say hello")]
    # Other nodes are still the disco module's.
    assert error_condition(disco(alice, NS_ITEMS, "unknown")) == "item-not-found"


def test_disco_info_of_the_list_and_of_a_command(adhoc, alice):
    adhoc.add("hello", "Say hello", lambda request: Done(), everyone)

    def info(node):
        answer = disco(alice, NS_INFO, node)
        assert answer["type"] == "result", answer.toXml()
        query = answer.firstChildElement()
        assert query["node"] == node
        return ([(i["category"], i["type"], i["name"])
                 for i in query.elements(NS_INFO, "identity")],
                [f["var"] for f in query.elements(NS_INFO, "feature")])

    assert info("hello") == ([("automation", "command-node", "Say hello")],
                             [NS_COMMANDS, data_form.NS_X_DATA])
    assert info(NS_COMMANDS)[0] == [("automation", "command-list", "Commands")]
    assert error_condition(disco(alice, NS_INFO, "nothing")) == "item-not-found"


def test_a_command_is_offered_once(adhoc):
    adhoc.add("hello", "Say hello", lambda request: Done(), everyone)
    with pytest.raises(ValueError):
        adhoc.add("hello", "Again", lambda request: Done(), everyone)


# Execution


def test_a_single_stage_command_completes_at_once(adhoc, alice):
    seen = []

    def run(request):
        seen.append((request.requester.full, request.domain, request.node, request.stage,
                     request.action, request.form))
        return Done(note=[Note("all good"), Note("careful", "warn")])

    adhoc.add("hello", "Say hello", run, everyone)
    element = result(command(alice, "hello", action="execute"))
    assert element["status"] == "completed" and element["node"] == "hello"
    assert element["sessionid"]
    assert element.getAttribute(("http://www.w3.org/XML/1998/namespace", "lang")) == "en"
    assert notes(element) == [("info", "all good"), ("warn", "careful")]
    assert list(element.elements(NS_COMMANDS, "actions")) == []
    assert seen == [("alice@example.com/desk", "example.com", "hello", 0, "execute", None)]


def test_stages_with_next_prev_and_complete(adhoc, alice):
    wizard = Wizard()
    adhoc.add("wizard", "Wizard", wizard, everyone)

    first = result(command(alice, "wizard"))
    sessionid = first["sessionid"]
    assert first["status"] == "executing"
    assert actions(first) == ("next", ["next"])
    assert notes(first) == [("info", "step one")]
    assert [f.var for f in form_of(first).fieldList] == ["name"]

    second = result(command(alice, "wizard", sessionid=sessionid,
                            payload=submitted(name="Ann")))  # execute: the default, next
    assert second["sessionid"] == sessionid and second["status"] == "executing"
    assert actions(second) == ("complete", ["prev", "complete"])
    assert [f.var for f in form_of(second).fieldList] == ["colour"]

    back = result(command(alice, "wizard", action="prev", sessionid=sessionid))
    assert actions(back) == ("next", ["next"])
    assert [f.var for f in form_of(back).fieldList] == ["name"]

    result(command(alice, "wizard", action="next", sessionid=sessionid,
                   payload=submitted(name="Bea")))
    done = result(command(alice, "wizard", action="complete", sessionid=sessionid,
                          payload=submitted(colour="green")))
    assert done["status"] == "completed" and done["sessionid"] == sessionid
    assert form_of(done)["summary"] == "Bea likes green"
    assert [(stage, action) for stage, action, _ in wizard.requests] == [
        (0, "execute"), (1, "next"), (1, "next"), (2, "complete")]
    # Completed: the session is gone.
    assert command_error(command(alice, "wizard", sessionid=sessionid)) == (
        "not-allowed", "session-expired", "cancel")


def test_a_deferred_stage_answers_when_it_fires(adhoc, alice):
    waiting = defer.Deferred()
    adhoc.add("slow", "Slow", lambda request: waiting, everyone)
    alice.send(f"<iq type='set' id='c1' to='example.com'>"
               f"<command xmlns='{NS_COMMANDS}' node='slow'/></iq>")
    assert alice.take() == []
    waiting.callback(Done(note="finally"))
    [answer] = alice.take()
    assert notes(result(answer)) == [("info", "finally")]


def test_cancel_ends_the_session(adhoc, alice):
    adhoc.add("wizard", "Wizard", Wizard(), everyone)
    sessionid = result(command(alice, "wizard"))["sessionid"]
    canceled = result(command(alice, "wizard", action="cancel", sessionid=sessionid))
    assert (canceled["status"], canceled["sessionid"]) == ("canceled", sessionid)
    assert command_error(command(alice, "wizard", sessionid=sessionid,
                                 payload=submitted(name="x")))[1] == "session-expired"
    # Canceling before any session: nothing to end.
    assert status(command(alice, "wizard", action="cancel")) == "canceled"


def test_a_refused_stage_keeps_the_session(adhoc, alice):
    def run(request):
        if request.stage == 0:
            return Ask(ask())
        if request.form["name"] == "bad":
            raise adhoc.bad_payload("not that name")
        return Done(note=request.form["name"])

    adhoc.add("picky", "Picky", run, everyone)
    sessionid = result(command(alice, "picky"))["sessionid"]
    answer = command(alice, "picky", sessionid=sessionid, payload=submitted(name="bad"))
    assert command_error(answer) == ("bad-request", "bad-payload", "modify")
    assert "not that name" in answer.toXml()
    done = result(command(alice, "picky", sessionid=sessionid, payload=submitted(name="good")))
    assert notes(done) == [("info", "good")]


# Sessions


def test_sessions_expire_without_requests(server, adhoc, alice):
    adhoc.add("wizard", "Wizard", Wizard(), everyone)
    sessionid = result(command(alice, "wizard"))["sessionid"]
    server.clock.advance(SESSION_TIMEOUT - 1)
    result(command(alice, "wizard", sessionid=sessionid, payload=submitted(name="Ann")))
    server.clock.advance(SESSION_TIMEOUT - 1)  # each request gives it the whole time again
    result(command(alice, "wizard", action="prev", sessionid=sessionid))
    server.clock.advance(SESSION_TIMEOUT)
    assert command_error(command(alice, "wizard", sessionid=sessionid,
                                 payload=submitted(name="Ann"))) == (
        "not-allowed", "session-expired", "cancel")


def test_an_account_has_a_bounded_number_of_sessions(server, adhoc, alice):
    adhoc.add("wizard", "Wizard", Wizard(), everyone)
    phone = Client(server)
    phone.login("alice@example.com", "phone")
    first = result(command(alice, "wizard"))["sessionid"]
    later = [result(command(phone, "wizard"))["sessionid"] for _ in range(MAX_SESSIONS)]
    assert command_error(command(alice, "wizard", sessionid=first,
                                 payload=submitted(name="x")))[1] == "session-expired"
    assert status(command(phone, "wizard", sessionid=later[0],
                          payload=submitted(name="x"))) == "executing"


def test_a_session_is_its_requesters_alone(server, adhoc, alice):
    adhoc.add("wizard", "Wizard", Wizard(), everyone)
    adhoc.add("other", "Other", Wizard(), everyone)
    sessionid = result(command(alice, "wizard"))["sessionid"]
    phone = Client(server)
    phone.login("alice@example.com", "phone")
    bad_session = ("bad-request", "bad-sessionid", "modify")
    assert command_error(command(phone, "wizard", sessionid=sessionid)) == bad_session
    assert command_error(command(alice, "other", sessionid=sessionid)) == bad_session
    assert command_error(command(alice, "wizard", sessionid="")) == bad_session
    # Still alice's, untouched.
    assert status(command(alice, "wizard", sessionid=sessionid,
                          payload=submitted(name="Ann"))) == "executing"


# Errors


def test_unknown_and_forbidden_commands(server, adhoc, alice):
    adhoc.add("secret", "Secret", lambda request: Done(), only_alice)
    adhoc.add("elsewhere", "Elsewhere", lambda request: Done(), everyone, host="other.example")
    bob = Client(server)
    bob.login("bob@example.com")
    assert error_condition(command(alice, "nothing")) == "item-not-found"
    assert error_condition(command(alice, "elsewhere")) == "item-not-found"
    assert command_error(command(bob, "secret")) == ("forbidden", None, "auth")
    assert status(command(alice, "secret")) == "completed"


def test_losing_the_right_mid_session_is_forbidden(adhoc, alice):
    allowed = {"yes": True}
    adhoc.add("wizard", "Wizard", Wizard(), lambda requester, domain: allowed["yes"])
    sessionid = result(command(alice, "wizard"))["sessionid"]
    allowed["yes"] = False
    assert error_condition(command(alice, "wizard", sessionid=sessionid,
                                   payload=submitted(name="x"))) == "forbidden"
    allowed["yes"] = True
    assert command_error(command(alice, "wizard", sessionid=sessionid))[1] == "session-expired"


def test_actions_the_stage_does_not_offer(adhoc, alice):
    adhoc.add("wizard", "Wizard", Wizard(), everyone)
    bad_action = ("bad-request", "bad-action", "modify")
    assert command_error(command(alice, "wizard", action="complete")) == bad_action
    sessionid = result(command(alice, "wizard"))["sessionid"]
    assert command_error(command(alice, "wizard", action="prev",
                                 sessionid=sessionid)) == bad_action
    assert command_error(command(alice, "wizard", action="complete", sessionid=sessionid,
                                 payload=submitted(name="x"))) == bad_action
    result(command(alice, "wizard", sessionid=sessionid, payload=submitted(name="x")))
    assert command_error(command(alice, "wizard", action="next", sessionid=sessionid,
                                 payload=submitted(colour="red"))) == bad_action
    assert command_error(command(alice, "wizard", action="jump", sessionid=sessionid)) == (
        "bad-request", "malformed-action", "modify")
    # None of these ended the session.
    assert status(command(alice, "wizard", sessionid=sessionid,
                          payload=submitted(colour="red"))) == "completed"


def test_forms_that_lack_a_required_field_or_cannot_be_read(adhoc, alice):
    adhoc.add("wizard", "Wizard", Wizard(), everyone)
    sessionid = result(command(alice, "wizard"))["sessionid"]
    bad_payload = ("bad-request", "bad-payload", "modify")
    missing = command(alice, "wizard", sessionid=sessionid)
    assert command_error(missing) == bad_payload and "required: Name" in missing.toXml()
    assert command_error(command(alice, "wizard", sessionid=sessionid,
                                 payload=submitted(name="  "))) == bad_payload
    unreadable = (f"<x xmlns='{data_form.NS_X_DATA}' type='submit'>"
                  f"<field var='name'><option/></field></x>")
    assert command_error(command(alice, "wizard", sessionid=sessionid,
                                 payload=unreadable)) == bad_payload
    assert status(command(alice, "wizard", sessionid=sessionid,
                          payload=submitted(name="Ann"))) == "executing"


def test_language_tags(adhoc, alice):
    adhoc.add("hello", "Say hello", lambda request: Done(), everyone)
    assert status(command(alice, "hello", lang="de-CH")) == "completed"
    assert command_error(command(alice, "hello", lang="not a tag")) == (
        "bad-request", "bad-locale", "modify")


def test_a_command_without_a_node(alice):
    alice.send(f"<iq type='set' id='c1' to='example.com'><command xmlns='{NS_COMMANDS}'/></iq>")
    [answer] = alice.take()
    assert error_condition(answer) == "bad-request"


def test_a_stanza_error_of_a_stage_is_answered(adhoc, alice):
    def run(request):
        raise StanzaError("not-allowed", "not today")

    adhoc.add("never", "Never", run, everyone)
    assert error_condition(command(alice, "never")) == "not-allowed"
