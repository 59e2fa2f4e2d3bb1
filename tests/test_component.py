"""External components (XEP-0114) over in-memory transports: the handshake,
what is refused, routing to and from the component's domain, and the
component's place in its host (closed domain, disco, ping, federation)."""

import hashlib

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

from tests.harness import Client, add_user, error_condition, make_config, make_server
from tests.s2s_support import REMOTE, accept_outgoing, make_federation
from tests.test_s2s_incoming import ALLOW
from tests.test_service_domain import echo_module
from xmppd.core.component import NS_COMPONENT, Components
from xmppd.core.xmlstream import StreamParser
from xmppd.errors import StartupError

GATEWAY = "gw.example.com"
SECRET = "s3cret-of-the-gateway"
COMPONENTS = f'[components."{GATEWAY}"]\nsecret = "{SECRET}"\n'
HOSTS = ("example.com", "other.example")


class Component:
    """The component's end of one connection: raw XML in, what xmppd wrote
    parsed back."""

    def __init__(self, components, address="127.0.0.1"):
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", address, 40000))
        self.stream = components.factory().buildProtocol(None)
        self.stream.makeConnection(self.transport)
        self.header = None
        self.received = []
        self._parser = StreamParser(self._on_header, self.received.append, lambda: None,
                                    10**7, content_namespaces=(NS_COMPONENT,))

    def _on_header(self, header):
        self.header = header

    def send(self, data):
        self.stream.dataReceived(data.encode() if isinstance(data, str) else data)

    def take(self):
        self._parser.feed(self.transport.value())
        self.transport.clear()
        received, self.received[:] = list(self.received), []
        return received

    def open(self, domain=GATEWAY):
        self.send(f"<stream:stream xmlns='{NS_COMPONENT}' "
                  f"xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>")
        return self.take()

    def handshake(self, secret=SECRET):
        digest = hashlib.sha1((self.header["id"] + secret).encode()).hexdigest()
        self.send(f"<handshake>{digest}</handshake>")
        return self.take()

    def connect(self):
        assert self.open() == []
        [reply] = self.handshake()
        assert (reply.name, str(reply), list(reply.elements())) == ("handshake", "", [])
        return self

    @property
    def closed(self):
        return self.transport.disconnecting


def stream_error(elements):
    [error] = [e for e in elements if e.name == "error"]
    return error_condition(error)


def component_server(tmp_path, extra=COMPONENTS):
    server = make_server(tmp_path, hosts=HOSTS, extra=extra)
    for user in ("alice@example.com", "carol@other.example"):
        add_user(server, user)
    return server, Components(server)


@pytest.fixture
def setup(tmp_path):
    return component_server(tmp_path)


def login(server, user="alice@example.com"):
    client = Client(server, domain=user.split("@")[1])
    client.login(user, "r")
    client.send("<presence/>")
    client.take()
    return client


def sample(server, name, **labels):
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


# The handshake (§3)


def test_handshake(setup):
    server, components = setup
    component = Component(components)
    component.open()
    header = component.header
    assert (header["from"], header.defaultUri) == (GATEWAY, "jabber:client")
    assert header.getAttribute("id")
    [reply] = component.handshake()
    assert reply.name == "handshake" and str(reply) == ""
    assert server.router.attached(GATEWAY) is component.stream
    assert sample(server, "xmppd_component_connected", component=GATEWAY) == 1


def test_the_header_is_in_the_component_namespace(setup):
    _, components = setup
    component = Component(components)
    component.send(f"<stream:stream xmlns='{NS_COMPONENT}' "
                   f"xmlns:stream='http://etherx.jabber.org/streams' to='{GATEWAY}'>")
    assert f"xmlns='{NS_COMPONENT}'".encode() in component.transport.value()
    assert f"from='{GATEWAY}'".encode() in component.transport.value()


def test_the_digest_may_be_upper_case(setup):
    server, components = setup
    component = Component(components)
    component.open()
    digest = hashlib.sha1((component.header["id"] + SECRET).encode()).hexdigest().upper()
    component.send(f"<handshake>{digest}</handshake>")
    assert [e.name for e in component.take()] == ["handshake"]
    assert server.router.attached(GATEWAY) is component.stream


def test_a_wrong_secret_is_not_authorized(setup):
    server, components = setup
    component = Component(components)
    component.open()
    assert stream_error(component.handshake("guess")) == "not-authorized"
    assert component.closed
    assert server.router.attached(GATEWAY) is None


def test_an_unknown_domain_is_host_unknown(setup):
    _, components = setup
    component = Component(components)
    assert stream_error(component.open("nowhere.example.com")) == "host-unknown"
    assert component.closed


def test_a_hosted_domain_is_no_component(setup):
    _, components = setup
    assert stream_error(Component(components).open("example.com")) == "host-unknown"


def test_a_second_connection_is_a_conflict_and_the_first_stays(setup):
    server, components = setup
    first = Component(components).connect()
    second = Component(components)
    second.open()
    assert stream_error(second.handshake()) == "conflict"
    assert second.closed and not first.closed
    assert server.router.attached(GATEWAY) is first.stream
    alice = login(server)
    alice.send(f"<message to='{GATEWAY}' type='chat'><body>still you</body></message>")
    [message] = first.take()
    assert str(message.body) == "still you"


def test_the_domain_is_free_again_once_the_component_is_gone(setup):
    server, components = setup
    first = Component(components).connect()
    first.stream.connectionLost(None)
    assert server.router.attached(GATEWAY) is None
    second = Component(components).connect()
    assert server.router.attached(GATEWAY) is second.stream


# Hostile input


def test_a_stanza_before_the_handshake_is_not_authorized(setup):
    server, components = setup
    component = Component(components)
    component.open()
    component.send("<message to='alice@example.com' from='gw.example.com'><body>x</body>"
                   "</message>")
    assert stream_error(component.take()) == "not-authorized"
    assert server.router.attached(GATEWAY) is None


def test_a_handshake_timeout(setup):
    server, components = setup
    component = Component(components)
    component.open()
    server.clock.advance(server.config.components.auth_timeout - 0.1)
    assert not component.closed
    server.clock.advance(0.2)
    assert stream_error(component.take()) == "connection-timeout"
    component.stream.connectionLost(None)
    assert components.connections.unauthenticated.total == 0


def test_the_handshake_timer_stops_with_the_handshake(setup):
    server, components = setup
    component = Component(components).connect()
    server.clock.advance(server.config.components.auth_timeout * 10)
    assert not component.closed


@pytest.mark.parametrize("data, condition", [
    ("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
     f"to='{GATEWAY}'>", "invalid-namespace"),
    ("this is not XML", "not-well-formed"),
    (f"<stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='http://etherx.jabber.org/streams' "
     f"to='{GATEWAY}'><!DOCTYPE x>", "restricted-xml"),
], ids=["server-namespace", "garbage", "doctype"])
def test_malformed_streams(setup, data, condition):
    _, components = setup
    component = Component(components)
    component.send(data)
    assert stream_error(component.take()) == condition
    assert component.closed
    Component(components).connect()  # the server goes on


def test_an_oversized_stanza(tmp_path):
    server, components = component_server(
        tmp_path, "[components]\nmax_stanza_size = 10000\n" + COMPONENTS)
    component = Component(components).connect()
    component.send("<message to='alice@example.com'><body>" + "x" * 20000)
    assert stream_error(component.take()) == "policy-violation"
    assert server.router.attached(GATEWAY) is None


def test_unauthenticated_connections_are_limited(tmp_path):
    _, components = component_server(
        tmp_path, "[limits]\ns2s_max_unauthenticated_per_ip = 2\n" + COMPONENTS)
    waiting = [Component(components), Component(components)]
    third = Component(components)
    assert stream_error(third.take()) == "policy-violation"
    waiting[0].connect()  # authenticated: no longer counted
    Component(components).open()
    assert components.connections.unauthenticated.total == 2


def test_the_component_may_end_with_a_stream_error(setup):
    server, components = setup
    component = Component(components).connect()
    component.send("<stream:error><undefined-condition "
                   "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>")
    assert component.closed
    assert server.router.attached(GATEWAY) is None


# Stanzas from the component


def test_a_message_from_a_user_of_the_component_reaches_a_host_account(setup):
    server, components = setup
    alice = login(server)
    component = Component(components).connect()
    component.send(f"<message from='bot@{GATEWAY}/x' to='alice@example.com' type='chat'>"
                   "<body>hello</body></message>")
    [message] = alice.take()
    assert (message["from"], str(message.body)) == (f"bot@{GATEWAY}/x", "hello")
    assert sample(server, "xmppd_component_stanzas_received_total", component=GATEWAY) == 1


def test_a_stanza_without_from_is_from_the_domain(setup):
    server, components = setup
    alice = login(server)
    component = Component(components).connect()
    component.send("<message to='alice@example.com' type='chat'><body>hi</body></message>")
    [message] = alice.take()
    assert message["from"] == GATEWAY


@pytest.mark.parametrize("sender", [
    "alice@example.com", "example.com", f"sub.{GATEWAY}", "evil.example", "@@bad"])
def test_a_from_outside_the_domain_is_invalid_from(setup, sender):
    server, components = setup
    alice = login(server)
    component = Component(components).connect()
    component.send(f"<message from='{sender}' to='alice@example.com' type='chat'>"
                   "<body>spoof</body></message>")
    assert stream_error(component.take()) == "invalid-from"
    assert alice.take() == []
    assert server.router.attached(GATEWAY) is None


@pytest.mark.parametrize("to, condition", [
    ("", "bad-request"), (None, "bad-request"), ("@@bad", "jid-malformed")])
def test_a_missing_or_invalid_to(setup, to, condition):
    _, components = setup
    component = Component(components).connect()
    address = "" if to is None else f" to='{to}'"
    component.send(f"<iq type='get' id='q1' from='{GATEWAY}'{address}>"
                   "<ping xmlns='urn:xmpp:ping'/></iq>")
    [error] = component.take()
    assert (error["type"], error["id"], error_condition(error)) == ("error", "q1", condition)
    assert not component.closed


def test_an_iq_without_an_id_is_a_bad_request(setup):
    _, components = setup
    component = Component(components).connect()
    component.send(f"<iq type='get' from='{GATEWAY}' to='example.com'>"
                   "<ping xmlns='urn:xmpp:ping'/></iq>")
    [error] = component.take()
    assert error_condition(error) == "bad-request"


def test_the_component_pings_its_host(setup):
    _, components = setup
    component = Component(components).connect()
    component.send(f"<iq type='get' id='p1' from='{GATEWAY}' to='example.com'>"
                   "<ping xmlns='urn:xmpp:ping'/></iq>")
    [result] = component.take()
    assert (result["type"], result["id"], result["from"], result["to"]) == \
        ("result", "p1", "example.com", GATEWAY)


def test_other_stream_elements_are_refused(setup):
    _, components = setup
    component = Component(components).connect()
    component.send("<handshake>again</handshake>")
    assert stream_error(component.take()) == "unsupported-stanza-type"


# Stanzas to the component


def test_an_iq_from_a_user_and_its_answer(setup):
    server, components = setup
    alice = login(server)
    component = Component(components).connect()
    alice.send(f"<iq type='get' id='v1' to='{GATEWAY}'>"
               "<query xmlns='jabber:iq:version'/></iq>")
    [request] = component.take()
    assert (request["from"], request["to"], request["id"]) == \
        ("alice@example.com/r", GATEWAY, "v1")
    component.send(f"<iq type='result' id='v1' from='{GATEWAY}' to='alice@example.com/r'>"
                   "<query xmlns='jabber:iq:version'><name>gw</name></query></iq>")
    [result] = alice.take()
    assert (result["type"], result["from"]) == ("result", GATEWAY)
    assert sample(server, "xmppd_component_stanzas_sent_total", component=GATEWAY) == 1


@pytest.mark.parametrize("to", [f"bot@{GATEWAY}", f"bot@{GATEWAY}/x", f"{GATEWAY}/x"])
def test_the_component_gets_its_jids(setup, to):
    server, components = setup
    alice = login(server)
    component = Component(components).connect()
    alice.send(f"<presence to='{to}'/>")  # directed presence
    alice.send(f"<message to='{to}' type='chat'><body>x</body></message>")
    received = component.take()
    assert [(e.name, e["to"]) for e in received] == [("presence", to), ("message", to)]


def test_while_disconnected_iqs_and_messages_bounce(setup):
    server, components = setup
    alice = login(server)
    alice.send(f"<iq type='get' id='v1' to='{GATEWAY}'><query xmlns='jabber:iq:version'/></iq>")
    alice.send(f"<message to='bot@{GATEWAY}' type='chat' id='m1'><body>x</body></message>")
    alice.send(f"<message to='bot@{GATEWAY}' type='headline'><body>x</body></message>")
    alice.send(f"<presence to='bot@{GATEWAY}' type='subscribe'/>")
    replies = alice.take()
    assert [(e.name, e["id"], error_condition(e)) for e in replies] == [
        ("iq", "v1", "service-unavailable"), ("message", "m1", "service-unavailable")]


def test_after_the_component_leaves_its_stanzas_bounce(setup):
    server, components = setup
    alice = login(server)
    component = Component(components).connect()
    component.send("</stream:stream>")
    assert component.closed
    alice.send(f"<iq type='get' id='v2' to='{GATEWAY}'><query xmlns='jabber:iq:version'/></iq>")
    [error] = alice.take()
    assert error_condition(error) == "service-unavailable"
    assert sample(server, "xmppd_component_connected", component=GATEWAY) == 0


# The component in its host


def test_the_host_owns_the_component(setup):
    server, _ = setup
    assert server.router.owner(GATEWAY) == "example.com"
    assert server.router.owner(f"sub.{GATEWAY}") is None


def test_closed_domains_hold_between_the_component_and_another_host(setup):
    server, components = setup
    carol = login(server, "carol@other.example")
    component = Component(components).connect()
    component.send(f"<message from='bot@{GATEWAY}' to='carol@other.example' type='chat' "
                   "id='c1'><body>x</body></message>")
    [error] = component.take()
    assert (error["id"], error_condition(error)) == ("c1", "service-unavailable")
    assert carol.take() == []
    carol.send(f"<message to='bot@{GATEWAY}' type='chat' id='c2'><body>x</body></message>")
    assert component.take() == []
    assert error_condition(carol.take()[0]) == "service-unavailable"


def test_the_host_lists_its_components_in_disco_items(setup):
    server, _ = setup
    alice = login(server)
    alice.send("<iq type='get' id='d1' to='example.com'>"
               "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    [result] = alice.take()
    jids = [item["jid"] for item in result.query.elements()]
    assert GATEWAY in jids


def test_an_explicit_host(tmp_path):
    server, _ = component_server(
        tmp_path, '[components."bridge.elsewhere.net"]\nsecret = "x"\nhost = "other.example"\n')
    assert server.router.owner("bridge.elsewhere.net") == "other.example"


def test_a_component_on_a_service_domain_cannot_start(tmp_path):
    server = make_server(tmp_path, hosts=HOSTS,
                         extra='[components."echo.example.com"]\nsecret = "x"\n')
    server.load(echo_module("echo.example.com", "example.com"))
    with pytest.raises(StartupError, match='components."echo.example.com": .*already served'):
        Components(server)


def test_stanzas_to_remote_domains_leave_from_the_component_domain(tmp_path):
    federation = make_federation(tmp_path, ALLOW + "\n" + COMPONENTS)
    components = Components(federation.server)
    component = Component(components).connect()
    component.send(f"<message from='bot@{GATEWAY}' to='bob@{REMOTE}' type='chat'>"
                   "<body>far</body></message>")
    link = federation.links[GATEWAY, REMOTE]
    assert [str(s.element.body) for s in link._queue] == ["far"]
    peer = accept_outgoing(federation)
    peer.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              f"xmlns:stream='http://etherx.jabber.org/streams' to='{GATEWAY}' "
              f"from='{REMOTE}' id='x' version='1.0'>")
    peer.take()
    assert (peer.headers[0]["from"], peer.headers[0]["to"]) == (GATEWAY, REMOTE)


def test_stanzas_to_peers_not_allowed_bounce(tmp_path):
    federation = make_federation(tmp_path, COMPONENTS)  # no peer allowed
    component = Component(Components(federation.server)).connect()
    component.send(f"<message from='bot@{GATEWAY}' to='bob@{REMOTE}' type='chat' id='r1'>"
                   "<body>far</body></message>")
    [error] = component.take()
    assert (error["id"], error_condition(error)) == ("r1", "service-unavailable")
    assert federation.links == {}


# Secrets


def test_a_reload_applies_a_new_secret_to_new_connections(setup, tmp_path):
    server, components = setup
    first = Component(components).connect()
    server.reconfigure(make_config(tmp_path, HOSTS, COMPONENTS.replace(SECRET, "new-secret")),
                       server.certificates)
    assert not first.closed
    first.stream.connectionLost(None)
    old = Component(components)
    old.open()
    assert stream_error(old.handshake()) == "not-authorized"
    new = Component(components)
    new.open()
    assert [e.name for e in new.handshake("new-secret")] == ["handshake"]


def test_a_reload_adding_a_component_says_it_needs_a_restart(setup, tmp_path):
    server, components = setup
    with capturedLogs() as events:
        server.reconfigure(make_config(tmp_path, HOSTS, COMPONENTS + '[components."b.example.com"]'
                                                                     '\nsecret = "y"\n'),
                           server.certificates)
    assert any("b.example.com" in formatEvent(e) and "restart" in formatEvent(e)
               for e in events)
    assert stream_error(Component(components).open("b.example.com")) == "host-unknown"


def test_no_secret_in_logs_or_reprs(setup):
    server, components = setup
    with capturedLogs() as events:
        Component(components).connect()
        wrong = Component(components)
        wrong.open()
        wrong.handshake(SECRET + "x")
    lines = [formatEvent(e) for e in events]
    assert any("not-authorized" in line for line in lines)
    assert not any(SECRET in line for line in lines)
    assert SECRET not in repr(server.config)
