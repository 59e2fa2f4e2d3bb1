"""Push notifications (XEP-0357): registrations, what is notified and how,
and the push service's answers.  The push service is a toy app server on
the service domain push.example.com (or a remote domain), hibernation a
toy module keeping the sessions whose connection is lost."""

import json
import types

import pytest

from tests.harness import (ElementCarrier, add_user, error_condition, make_server,
                           online)
from xmppd.core.events import HOST, ROUTE_REMOTE
from xmppd.core.negotiation import SESSION_CARRIER_LOST
from xmppd.core.stanzas import StanzaError, error_reply
from xmppd.jid import JID
from xmppd.modules.push import (MAX_WAIT_ERRORS, NS_PUBLISH_OPTIONS, NS_PUBSUB, NS_PUSH,
                                NS_SUMMARY, OPTIONS, PUBLISH_TIMEOUT)
from xmppd.tap import MODULES
from xmppd.wokkel_compat import data_form

APP = "push.example.com"
REMOTE_APP = "push.remote.example"
ALICE = "alice@example.com"
FORM = ("<x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{NS_PUBLISH_OPTIONS}</value></field>"
        "<field var='secret'><value>eruio234vzxc2kla-91</value></field></x>")
NO_THROTTLE = "[push]\nmin_interval = 0"
INTERVAL = OPTIONS.defaults.min_interval


def module(name, setup):
    return types.SimpleNamespace(__name__=f"tests.{name}", setup=setup)


class AppServer:
    """A push service on APP: records each publish and answers it with a
    result, or with ``error`` when set."""

    def __init__(self):
        self.published = []
        self.error = None

    def setup(self, api):
        api.add_service(APP, "example.com")

        def publish(stanza):
            self.published.append(stanza.element)
            if self.error is not None:
                raise self.error

        api.handle_iq("set", HOST, NS_PUBSUB, publish, host=APP)

    def nodes(self):
        return [notification(iq)[0] for iq in self.published]


class Hibernation:
    """Keeps every session whose connection is lost, and takes what is
    delivered to it (as stream management queues it)."""

    def __init__(self):
        self.queued = []

    def setup(self, api):
        def queue(session, element):
            if session.carrier is None:
                self.queued.append(element)
                return None
            return element

        api.hook(SESSION_CARRIER_LOST, lambda session: True)
        api.streams.add_outbound_filter(queue)


def make(tmp_path, extra=""):
    """A server with push, alice and bob, and the app server on APP;
    example.com takes stanzas from remote domains."""
    server = make_server(tmp_path, hosts=(), modules=MODULES + ("push",), extra=extra + (
        '\n[hosts."example.com"]\ncross_domain_messages = true'))
    for user in (ALICE, "bob@example.com"):
        add_user(server, user)
    app = AppServer()
    server.load(module("app_server", app.setup))
    return server, app


@pytest.fixture
def world(tmp_path):
    return make(tmp_path)


def login(server, user=ALICE, resource="phone"):
    """``user`` connected on ``resource``, available."""
    return online(server, user, resource)


def command(client, name, to="", **attributes):
    """Send <NAME xmlns='urn:xmpp:push:0' .../> (a form as ``form``); the answer."""
    form = attributes.pop("form", "")
    attrs = "".join(f" {key}='{value}'" for key, value in attributes.items())
    to = f" to='{to}'" if to else ""
    client.send(f"<iq type='set' id='c1'{to}><{name} xmlns='{NS_PUSH}'{attrs}>{form}</{name}></iq>")
    [answer] = client.take()
    return answer


def enable(client, node="node-1", jid=APP, form=""):
    answer = command(client, "enable", jid=jid, node=node, form=form)
    assert answer["type"] == "result", answer.toXml()


def chat(sender, body="hi", to=ALICE, type_="chat", payload=None):
    payload = f"<body>{body}</body>" if payload is None else payload
    sender.send(f"<message to='{to}' type='{type_}'>{payload}</message>")


def notification(iq):
    """(node, {summary field: value}, the publish-options form or None) of a publish."""
    pubsub = next(iq.elements(NS_PUBSUB, "pubsub"))
    publish = next(pubsub.elements(NS_PUBSUB, "publish"))
    item = next(publish.elements(NS_PUBSUB, "item"))
    summary = data_form.Form.fromElement(
        next(next(item.elements(NS_PUSH, "notification")).elements(data_form.NS_X_DATA, "x")))
    assert (summary.formType, summary.formNamespace) == ("submit", NS_SUMMARY)
    options = next(pubsub.elements(NS_PUBSUB, "publish-options"), None)
    form = None if options is None else data_form.Form.fromElement(next(options.elements()))
    return publish["node"], summary.getValues(), form


def stored(server):
    """alice's registrations as stored."""
    values = server.sql.open("keyval", "push").get_all("alice", "example.com").values()
    return [json.loads(value) for value in values]


def gone(client):
    """The client closes its stream: its session ends."""
    client.send("</stream:stream>")
    client.lose()


# Registrations (§5, §6)

def test_enable_and_disable_with_and_without_node(world):
    server, app = world
    alice = login(server)
    for jid, node in ((APP, "n1"), (APP, "n2"), ("other.example.com", "n3")):
        enable(alice, node, jid)
    assert command(alice, "disable", jid=APP, node="n1")["type"] == "result"
    assert sorted(r["node"] for r in stored(server)) == ["n2", "n3"]
    assert command(alice, "disable", to=ALICE, jid=APP)["type"] == "result"
    assert [r["jid"] for r in stored(server)] == ["other.example.com"]
    assert command(alice, "disable", jid=APP)["type"] == "result"  # nothing left: no error


def test_registrations_outlive_the_session_that_made_them(world):
    server, app = world
    phone = login(server)
    enable(phone)
    gone(phone)
    laptop = login(server, resource="laptop")
    gone(laptop)
    chat(login(server, "bob@example.com", "laptop"))
    assert app.nodes() == ["node-1"]


def test_enabling_a_pair_again_replaces_its_form(world):
    server, app = world
    alice = login(server)
    enable(alice, form=FORM)
    enable(alice)
    [registration] = stored(server)
    assert (registration["node"], registration["options"]) == ("node-1", None)


def test_the_oldest_registration_goes_beyond_the_limit(tmp_path):
    server, app = make(tmp_path, "[push]\nmax_registrations = 2")
    alice = login(server)
    for node in ("n1", "n2", "n3"):
        enable(alice, node)
        server.clock.advance(1)
    enable(alice, "n2")  # again: now the newest
    enable(alice, "n4")
    gone(alice)
    chat(login(server, "bob@example.com", "laptop"))
    assert sorted(app.nodes()) == ["n2", "n4"]


@pytest.mark.parametrize("name, attributes, condition", [
    ("enable", {"node": "n"}, "bad-request"),
    ("enable", {"jid": APP}, "bad-request"),
    ("enable", {"jid": "a@b@c", "node": "n"}, "jid-malformed"),
    ("enable", {"jid": APP, "node": "n", "form": FORM.replace(NS_PUBLISH_OPTIONS, "urn:x")},
     "bad-request"),
    ("disable", {}, "bad-request"),
    ("subscribe", {"jid": APP}, "bad-request"),
])
def test_bad_requests(world, name, attributes, condition):
    server, _ = world
    answer = command(login(server), name, **attributes)
    assert error_condition(answer) == condition
    assert stored(server) == []


def test_only_the_account_itself_enables_push(world):
    server, _ = world
    bob = login(server, "bob@example.com", "laptop")
    answer = command(bob, "enable", to=ALICE, jid=APP, node="n")
    assert error_condition(answer) == "forbidden" and stored(server) == []


def test_push_is_advertised_on_the_account(world):
    server, _ = world
    alice = login(server)
    features = {}
    for to in (ALICE, "example.com"):
        alice.send(f"<iq type='get' id='d1' to='{to}'>"
                   "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        [info] = alice.take()
        features[to] = {f["var"] for f in info.query.elements() if f.name == "feature"}
    assert NS_PUSH in features[ALICE] and NS_PUSH not in features["example.com"]


# What is notified, and when

def offline_alice(server, **registration):
    """alice, push enabled, then gone; bob, connected."""
    alice = login(server)
    enable(alice, **registration)
    gone(alice)
    return login(server, "bob@example.com", "laptop")


def test_a_message_for_an_account_with_no_session(world):
    server, app = world
    bob = offline_alice(server)
    chat(bob)
    [iq] = app.published
    assert (iq["from"], iq["to"], iq["type"]) == ("example.com", APP, "set")
    node, summary, options = notification(iq)
    assert node == "node-1" and options is None
    # No sender and no body by default (§9).
    assert summary == {"message-count": "1", "pending-subscription-count": "0"}
    assert server.sql.count_offline("alice", "example.com") == 1  # stored all the same


def test_sender_and_body_when_the_options_allow(tmp_path):
    server, app = make(tmp_path, "[push]\ninclude_body = true\ninclude_sender = true")
    chat(offline_alice(server), "Wherefore art thou, Romeo?")
    [iq] = app.published
    assert notification(iq)[1] == {"message-count": "1", "pending-subscription-count": "0",
                                   "last-message-sender": "bob@example.com/laptop",
                                   "last-message-body": "Wherefore art thou, Romeo?"}


def test_the_publish_options_go_with_each_publish(world):
    server, app = world
    chat(offline_alice(server, form=FORM))
    options = notification(app.published[0])[2]
    assert options.formNamespace == NS_PUBLISH_OPTIONS
    assert options.getValues() == {"secret": "eruio234vzxc2kla-91"}


@pytest.mark.parametrize("type_, payload, notified", [
    ("chat", "<active xmlns='http://jabber.org/protocol/chatstates'/>", False),
    ("chat", "<body></body>", False),
    ("headline", "<body>news</body>", False),
    ("normal", "<body>note</body>", True),
    ("chat", "<encrypted xmlns='eu.siacs.conversations.axolotl'><payload>x</payload>"
             "</encrypted>", True),
    ("chat", "<propose xmlns='urn:xmpp:jingle-message:0' id='c'>"
             "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>", True),
])
def test_what_a_message_must_carry(tmp_path, type_, payload, notified):
    server, app = make(tmp_path, NO_THROTTLE)
    chat(offline_alice(server), type_=type_, payload=payload)
    assert len(app.published) == notified


def test_an_error_is_not_notified(tmp_path):
    server, app = make(tmp_path, NO_THROTTLE)
    bob = offline_alice(server)
    bob.send(f"<message to='{ALICE}' type='error'><body>x</body>"
             "<error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
             "</message>")
    assert app.published == []


def test_a_subscription_request_for_an_account_with_no_session(world):
    server, app = world
    bob = offline_alice(server)
    bob.send(f"<presence to='{ALICE}' type='subscribe'/>")
    [iq] = app.published
    assert notification(iq)[1] == {"message-count": "0", "pending-subscription-count": "1"}
    bob.send(f"<presence to='{ALICE}' type='subscribed'/>")  # no request: not notified
    server.clock.advance(INTERVAL)
    assert len(app.published) == 1


def hibernating(server, resources=("phone",)):
    """alice on ``resources``, available, push enabled, then every
    connection lost; the Hibernation and bob."""
    hibernation = Hibernation()
    server.load(module("hibernation", hibernation.setup))
    clients = [login(server, resource=resources[0])]
    enable(clients[0])
    clients += [login(server, resource=resource) for resource in resources[1:]]
    for client in clients:
        client.lose()
    return hibernation, login(server, "bob@example.com", "laptop")


def test_a_message_for_an_account_whose_sessions_all_hibernate(world):
    server, app = world
    hibernation, bob = hibernating(server)
    chat(bob, "while away")
    assert app.nodes() == ["node-1"]
    # Delivered, not held: the next filter got it, and nothing went offline.
    assert [str(e.body) for e in hibernation.queued if e.name == "message"] == ["while away"]
    assert server.sql.count_offline("alice", "example.com") == 0


def test_what_a_resumable_session_did_not_acknowledge_is_notified_as_it_hibernates(world):
    server, app = world
    phone = login(server)
    enable(phone)
    phone.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    phone.take()
    bob = login(server, "bob@example.com", "laptop")
    chat(bob, "not acknowledged")
    assert [str(e.body) for e in phone.take() if e.name == "message"] == ["not acknowledged"]
    assert app.published == []  # connected
    phone.lose()  # the app was suspended before it acknowledged the message
    assert app.nodes() == ["node-1"]
    assert notification(app.published[0])[1]["message-count"] == "1"


def test_one_stanza_for_several_sessions_is_notified_once(tmp_path):
    server, app = make(tmp_path, NO_THROTTLE)
    hibernation, bob = hibernating(server, ("phone", "tablet"))
    chat(bob, "to both")
    assert len([e for e in hibernation.queued if e.name == "message"]) == 2
    assert len(app.published) == 1
    chat(bob, "again")
    assert len(app.published) == 2


def test_nothing_while_a_session_is_connected(world):
    server, app = world
    hibernation, bob = hibernating(server)
    laptop = login(server, resource="laptop")
    chat(bob, "hello")
    chat(bob, "to the phone", to=f"{ALICE}/phone")
    assert str(laptop.take()[0].body) == "hello"
    assert app.published == []


def resume(server, session):
    """A new connection of alice takes the hibernating ``session`` up again
    (as stream management's resumption: no new session is bound)."""
    carrier = ElementCarrier(server)
    carrier.open()
    carrier.receive("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                    "AGFsaWNlAHNlY3JldA==</auth>")
    carrier.take()
    server.negotiation.resume(carrier.connection, session)
    return carrier


def test_a_resumed_session_ends_the_interval(world):
    server, app = world
    _, bob = hibernating(server)
    [session] = server.sessions.resources(JID.parse(ALICE))
    chat(bob, "one")
    carrier = resume(server, session)
    chat(bob, "two")  # delivered on the connection: the interval ends
    carrier.lose()
    chat(bob, "three")  # notified at once
    chat(bob, "four")  # to be summed up at the end of the interval...
    resume(server, session)
    server.clock.advance(INTERVAL)  # ...but alice is back
    assert [notification(iq)[1]["message-count"] for iq in app.published] == ["1", "1"]


def test_notifications_are_throttled_and_summed_up(world):
    server, app = world
    bob = offline_alice(server)
    for body in ("one", "two", "three"):
        chat(bob, body)
    assert len(app.published) == 1
    server.clock.advance(INTERVAL - 1)
    assert len(app.published) == 1
    server.clock.advance(1)
    assert notification(app.published[1])[1]["message-count"] == "2"
    server.clock.advance(INTERVAL)
    assert len(app.published) == 2


def test_a_connection_ends_the_interval(world):
    server, app = world
    bob = offline_alice(server)
    chat(bob, "one")
    chat(bob, "two")  # summed up at the end of the interval...
    gone(login(server))  # ...but alice came and got both
    chat(bob, "three")  # notified at once
    server.clock.advance(2 * INTERVAL)
    assert [notification(iq)[1]["message-count"] for iq in app.published] == ["1", "1"]


# The push service's answers (§7.1)

def test_a_result_keeps_the_registration(world):
    server, app = world
    bob = offline_alice(server)
    chat(bob)
    server.clock.advance(INTERVAL)
    chat(bob)
    assert len(app.published) == 2 and len(stored(server)) == 1


def test_an_error_disables_the_registration(world):
    server, app = world
    bob = offline_alice(server)
    tablet = login(server, resource="tablet")
    enable(tablet, "node-2")
    gone(tablet)
    app.error = StanzaError("item-not-found")
    chat(bob)
    assert sorted(app.nodes()) == ["node-1", "node-2"]
    assert stored(server) == []
    server.clock.advance(INTERVAL)
    chat(bob)
    assert len(app.published) == 2


def test_wait_errors_disable_only_when_they_repeat(tmp_path):
    server, app = make(tmp_path, NO_THROTTLE)
    bob = offline_alice(server)
    app.error = StanzaError("resource-constraint")  # type wait
    for _ in range(MAX_WAIT_ERRORS - 1):
        chat(bob)
    app.error = None
    chat(bob)  # a result: the count starts again
    app.error = StanzaError("resource-constraint")
    for _ in range(MAX_WAIT_ERRORS - 1):
        chat(bob)
    assert len(stored(server)) == 1
    chat(bob)
    assert stored(server) == []
    assert len(app.published) == 2 * MAX_WAIT_ERRORS


class RemoteAppServer:
    """What goes to remote domains, taken instead of federation."""

    def __init__(self):
        self.sent = []

    def setup(self, api):
        api.hook(ROUTE_REMOTE, lambda stanza: self.sent.append(stanza.element) or True)


def test_a_remote_push_service_and_only_its_own_answers(world):
    server, _ = world
    remote = RemoteAppServer()
    server.load(module("remote", remote.setup))
    bob = offline_alice(server, jid=REMOTE_APP)
    chat(bob)
    [iq] = remote.sent
    assert (iq["from"], iq["to"]) == ("example.com", REMOTE_APP)
    forged = error_reply(iq, "not-authorized")
    forged["from"] = "evil.example"
    server.router.route(forged)
    assert len(stored(server)) == 1
    server.router.route(error_reply(iq, "not-authorized"))
    assert stored(server) == []


def test_an_unanswered_publish_is_forgotten(world):
    server, _ = world
    remote = RemoteAppServer()
    server.load(module("remote", remote.setup))
    chat(offline_alice(server, jid=REMOTE_APP))
    [iq] = remote.sent
    server.clock.advance(PUBLISH_TIMEOUT)
    server.router.route(error_reply(iq, "not-authorized"))  # too late: not an answer
    assert len(stored(server)) == 1
