"""A service domain in the delivery table: a trivial module serving
``echo.example.com``, reached from a local account, never seen by the
account modules, and inside its host's closed domain."""

import types

from tests.harness import Client, add_user, error_condition, make_server
from xmppd.core.events import BARE, HOST, message_event
from xmppd.core.stanzas import make_stanza

ECHO = "echo.example.com"


def echo_setup(api):
    """Answer every message with a body to the service (and its bare JIDs)
    with the same body, from the address it was sent to."""
    api.add_service(ECHO, "example.com")

    def echo(stanza):
        reply = make_stanza("message", to=stanza.sender.full, from_=stanza.recipient.full,
                            type_="chat")
        reply.addElement("body", content=str(stanza.element.body))
        return api.route(reply)

    for target in (HOST, BARE):
        api.hook(message_event(target), echo, host=ECHO)


ECHO_MODULE = types.SimpleNamespace(__name__="tests.echo", setup=echo_setup)


def echo_server(tmp_path):
    server = make_server(tmp_path, hosts=("example.com", "other.example"))
    server.load(ECHO_MODULE)
    for user in ("alice@example.com", "carol@other.example"):
        add_user(server, user)
    return server


def client(server, user):
    c = Client(server, domain=user.split("@")[1])
    c.login(user, "r")
    return c


def chat(client, to, body="ping"):
    client.send(f"<message to='{to}' id='m1' type='chat'><body>{body}</body></message>")
    return client.take()


def test_a_local_account_reaches_the_service_and_its_bare_jids(tmp_path):
    alice = client(echo_server(tmp_path), "alice@example.com")
    for to in (ECHO, f"room@{ECHO}"):
        [reply] = chat(alice, to, "hello")
        assert (reply["from"], str(reply.body)) == (to, "hello")


def test_unclaimed_stanzas_get_service_unavailable_and_are_never_stored(tmp_path):
    server = echo_server(tmp_path)
    alice = client(server, "alice@example.com")
    [error] = chat(alice, f"room@{ECHO}/nick")  # echo serves no full JIDs
    assert error_condition(error) == "service-unavailable"
    assert server.sql.count_offline("room", ECHO) == 0
    alice.send(f"<iq type='get' id='d1' to='{ECHO}'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [answer] = alice.take()  # the host's disco module does not answer for the service
    assert error_condition(answer) == "service-unavailable"


def test_the_service_is_inside_its_hosts_closed_domain(tmp_path):
    carol = client(echo_server(tmp_path), "carol@other.example")
    [error] = chat(carol, ECHO)
    assert error_condition(error) == "service-unavailable"


def test_account_modules_hooked_globally_do_not_run_for_the_service(tmp_path):
    server = echo_server(tmp_path)
    seen = []
    server.hooks.add(message_event(BARE), lambda stanza: seen.append(stanza) and False, 100)
    alice = client(server, "alice@example.com")
    chat(alice, f"room@{ECHO}")
    chat(alice, "alice@example.com")
    assert [str(s.recipient) for s in seen] == ["alice@example.com"]
