"""A service domain in the delivery table: a trivial module serving
``echo.example.com``, reached from a local account, never seen by the
account modules, and inside its host's closed domain."""

import types

from tests.harness import Client, add_user, error_condition, make_server
from tests.paused_storage import pausable_server
from tests.s2s_support import (
    DIALBACK_FEATURES, EMPTY_FEATURES, EXTERNAL_FEATURES, REMOTE, STARTTLS_FEATURES,
    accept_outgoing, header, incoming, make_federation, outgoing_past_tls, stream_error)
from tests.test_s2s_incoming import (
    ALLOW, NS_SASL, NS_TLS, b64, encrypted, external, feature_names)
from xmppd.core.events import BARE, HOST, message_event
from xmppd.core.stanzas import make_stanza
from xmppd.s2s.dialback import NS_DIALBACK_FEATURE
from xmppd.tap import MODULES

ECHO = "echo.example.com"


def echo_module(domain, host):
    """A module serving ``domain`` for ``host``: it answers every message
    with a body to the service (and its bare JIDs) with the same body, from
    the address it was sent to."""

    def setup(api):
        api.add_service(domain, host)

        def echo(stanza):
            reply = make_stanza("message", to=stanza.sender.full,
                                from_=stanza.recipient.full, type_="chat")
            reply.addElement("body", content=str(stanza.element.body))
            return api.route(reply)

        for target in (HOST, BARE):
            api.hook(message_event(target), echo, host=domain)

    return types.SimpleNamespace(__name__="tests.echo", setup=setup)


ECHO_MODULE = echo_module(ECHO, "example.com")


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


def test_stanzas_to_the_service_read_no_account_data(tmp_path):
    """The account policies (blocking...) never look up a service's JIDs:
    with storage held, the echo still answers at once.  (The message
    archive, left out, keeps the sender's copy: storage of the sender's.)"""
    server = pausable_server(tmp_path, hosts=("example.com", "other.example"),
                             modules=tuple(name for name in MODULES if name != "mam"))
    server.load(ECHO_MODULE)
    add_user(server, "alice@example.com")
    alice = client(server, "alice@example.com")
    server.runner.pause()
    [reply] = chat(alice, f"room@{ECHO}", "fast")
    assert str(reply.body) == "fast" and server.runner.calls == []


def test_unclaimed_stanzas_get_service_unavailable_and_are_never_stored(tmp_path):
    server = echo_server(tmp_path)
    add_user(server, f"room@{ECHO}")  # so that offline storage would keep it, if asked
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


# Over s2s (RFC 6120 §4.7.1, §8.1.1.1; XEP-0178; XEP-0220 §2.6)

def echo_federation(tmp_path, valid=(REMOTE,)):
    federation = make_federation(tmp_path, ALLOW, valid=valid)
    federation.server.load(ECHO_MODULE)
    return federation


def test_a_remote_domain_reaches_the_service_over_s2s(tmp_path):
    federation = make_federation(tmp_path, ALLOW, valid=[REMOTE])
    federation.server.load(ECHO_MODULE)
    wire, _ = encrypted(federation, to=ECHO)
    wire.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{b64(REMOTE)}</auth>")
    assert wire.take_one().name == "success"
    wire.restart()
    wire.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              f"xmlns:stream='http://etherx.jabber.org/streams' to='{ECHO}' "
              f"from='{REMOTE}' version='1.0'>")
    wire.take()
    wire.send(f"<message from='bob@{REMOTE}/x' to='{ECHO}' type='chat'><body>far</body></message>")
    link = federation.links[ECHO, REMOTE]
    assert [(s.element["from"], str(s.element.body)) for s in link._queue] == [(ECHO, "far")]


def test_the_service_reply_leaves_on_a_link_from_the_service_domain(tmp_path):
    federation = echo_federation(tmp_path)
    wire = external(federation)  # to the hosted domain; the stanza goes to the service
    wire.send(f"<message from='bob@{REMOTE}/x' to='room@{ECHO}' type='chat'>"
              "<body>out</body></message>")
    peer = accept_outgoing(federation)
    peer.send(header(to=ECHO, from_=REMOTE, id_="before-tls"))
    peer.send(STARTTLS_FEATURES)
    assert [e.name for e in peer.take()] == ["starttls"]
    ours = peer.headers[0]
    assert (ours["from"], ours["to"]) == (ECHO, REMOTE)
    peer.send(f"<proceed xmlns='{NS_TLS}'/>")
    assert peer.transport.tls == f"client-tls-{ECHO}-{REMOTE}"
    peer.restart()
    peer.send(header(to=ECHO, from_=REMOTE, id_="after-tls"))
    peer.send(EXTERNAL_FEATURES)
    [auth] = peer.take()
    assert (auth.name, str(auth)) == ("auth", b64(ECHO))
    peer.send(f"<success xmlns='{NS_SASL}'/>")
    peer.restart()
    peer.send(header(to=ECHO, from_=REMOTE, id_="after-sasl"))
    peer.send(EMPTY_FEATURES)
    [reply] = peer.take()
    assert (reply["from"], reply["to"], str(reply.body)) == \
        (f"room@{ECHO}", f"bob@{REMOTE}/x", "out")


def test_dialback_to_the_service_domain(tmp_path):
    federation = echo_federation(tmp_path, valid=())
    wire, features = encrypted(federation, to=ECHO)
    assert (NS_DIALBACK_FEATURE, "dialback") in feature_names(features)
    stream_id = wire.stream.stream_id
    wire.send(f"<db:result from='{REMOTE}' to='{ECHO}'>the-key</db:result>")
    # The key is checked through a stream from the service domain itself.
    authoritative, sent = outgoing_past_tls(federation, DIALBACK_FEATURES, local=ECHO)
    verify = next(e for e in sent if e.name == "verify")
    assert (verify["from"], verify["to"], verify["id"]) == (ECHO, REMOTE, stream_id)
    authoritative.send(f"<db:verify from='{REMOTE}' to='{ECHO}' id='{stream_id}' "
                       "type='valid'/>")
    result = wire.take_one()
    assert (result["from"], result["to"], result["type"]) == (ECHO, REMOTE, "valid")
    # As authoritative server, the service domain's keys are ours.
    key = federation.keys.make(REMOTE, ECHO, "their-id")
    wire.send(f"<db:verify from='{REMOTE}' to='{ECHO}' id='their-id'>{key}</db:verify>")
    assert wire.take_one()["type"] == "valid"


def test_a_removed_service_is_an_unknown_host(tmp_path):
    federation = echo_federation(tmp_path)
    federation.server.router.remove_service(ECHO)
    wire = incoming(federation)
    wire.send(header(to=ECHO, from_=REMOTE))
    assert stream_error(wire.take()) == "host-unknown"
