"""Outgoing server streams and the federation service: STARTTLS, SASL
EXTERNAL, dialback as initiating server, queueing, and the bounces of
RFC 6120 §8.3.3 when a link fails, times out, or is not allowed."""

from OpenSSL import SSL
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from tests.harness import Client, add_user, error_condition
from tests.s2s_support import (
    DIALBACK_FEATURES, EMPTY_FEATURES, EXTERNAL_FEATURES, LOCAL, REMOTE,
    REMOTE_PORT, STARTTLS_FEATURES, FakeResolver, accept_outgoing, b64, header, make_federation,
    outgoing_past_tls, refuse_outgoing, stream_error)
from xmppd.core.events import CONFIG_RELOADED
from xmppd.core.stanzas import make_stanza
from xmppd.s2s.dialback import NS_DIALBACK, DialbackError

ALLOW = f'allow = ["{REMOTE}", "*.{REMOTE}"]'


def setup(tmp_path, s2s=ALLOW, valid=(REMOTE,)):
    federation = make_federation(tmp_path, s2s, valid=valid)
    add_user(federation.server, f"alice@{LOCAL}")
    alice = Client(federation.server)
    alice.login(f"alice@{LOCAL}")
    return federation, alice


def chat(client, to=f"bob@{REMOTE}", body="hello", type_="chat"):
    client.send(f"<message to='{to}' type='{type_}' id='m-{body}'><body>{body}</body></message>")


def bodies(elements):
    return [str(e.body) for e in elements if e.name == "message"]


def bounced(client):
    """The (condition, body) of each error the client received."""
    return [(error_condition(e), str(e.body)) for e in client.take() if e["type"] == "error"]


def test_connects_to_the_route_and_opens_a_stream(tmp_path):
    federation, alice = setup(tmp_path)
    chat(alice, body="one")
    (host, port, *_), = federation.reactor.tcpClients
    assert (host, port) == ("127.0.0.1", REMOTE_PORT)
    wire = accept_outgoing(federation)
    raw = wire.transport.value()
    assert b"xmlns='jabber:server'" in raw and b"xmlns:db='jabber:server:dialback'" in raw
    assert wire.take() == []
    our_header, = wire.headers
    assert (our_header["from"], our_header["to"], our_header["version"]) == \
        (LOCAL, REMOTE, "1.0")
    assert not our_header.hasAttribute("id")


def external_succeeds(wire, remote=REMOTE):
    """The peer accepts SASL EXTERNAL; the restarted stream has no more
    features to negotiate (RFC 6120 §6.4.6)."""
    wire.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    wire.restart()
    wire.send(header(to=LOCAL, from_=remote, id_="after-sasl"))
    wire.send(EMPTY_FEATURES)


def test_external_flow(tmp_path):
    federation, alice = setup(tmp_path)
    chat(alice, body="one")
    chat(alice, body="two")
    wire, sent = outgoing_past_tls(federation, EXTERNAL_FEATURES)
    assert [(e.name, e["mechanism"], str(e)) for e in sent] == [("auth", "EXTERNAL", b64(LOCAL))]
    external_succeeds(wire)
    sent = wire.take()
    assert bodies(sent) == ["one", "two"]
    assert sent[0]["from"] == f"alice@{LOCAL}/res" and sent[0]["to"] == f"bob@{REMOTE}"
    assert federation.peers() == {REMOTE}
    assert federation.server.metrics.registry.get_sample_value(
        "xmppd_s2s_streams", {"direction": "outgoing", "peer": REMOTE}) == 1
    # The link is reused.
    chat(alice, body="three")
    assert bodies(wire.take()) == ["three"]
    assert len(federation.reactor.tcpClients) == 1
    assert bounced(alice) == []


def test_dialback_when_the_certificate_is_not_valid(tmp_path):
    federation, alice = setup(tmp_path, valid=())
    chat(alice, body="one")
    wire, sent = outgoing_past_tls(federation, EXTERNAL_FEATURES)
    result, = sent
    expected = federation.keys.make(REMOTE, LOCAL, "after-tls")
    assert (result.name, result["from"], result["to"], str(result)) == \
        ("result", LOCAL, REMOTE, expected)
    # A result for another domain pair is not an answer to ours.
    wire.send(f"<db:result from='other.example' to='{LOCAL}' type='valid'/>")
    assert wire.take() == []
    wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='valid'/>")
    assert bodies(wire.take()) == ["one"]


def test_dialback_when_the_peer_offers_no_external(tmp_path):
    federation, alice = setup(tmp_path, valid=(REMOTE,))
    chat(alice)
    # The feature announces dialback even without the header's declaration.
    _, sent = outgoing_past_tls(federation, DIALBACK_FEATURES, dialback=False)
    assert [e.name for e in sent] == ["result"]


def refuse_external(wire):
    wire.send("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>")


def test_dialback_after_the_peer_refuses_external(tmp_path):
    """The peer offers EXTERNAL but cannot verify our certificate."""
    federation, alice = setup(tmp_path, valid=(REMOTE,))
    chat(alice, body="one")
    wire, sent = outgoing_past_tls(federation, EXTERNAL_FEATURES)
    assert [e.name for e in sent] == ["auth"]
    refuse_external(wire)
    result, = wire.take()
    assert (result.uri, result.name, result["from"], result["to"], str(result)) == \
        (NS_DIALBACK, "result", LOCAL, REMOTE, federation.keys.make(REMOTE, LOCAL, "after-tls"))
    assert not wire.closed
    wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='valid'/>")
    assert bodies(wire.take()) == ["one"]
    assert bounced(alice) == []


def test_refused_external_without_dialback_or_with_valid_certificates_required(tmp_path):
    federation, alice = setup(tmp_path, valid=(REMOTE,))
    chat(alice, body="one")
    wire, _ = outgoing_past_tls(federation, EXTERNAL_FEATURES.replace(
        "<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>", ""),
        dialback=False)
    refuse_external(wire)
    assert wire.take() == [] and wire.closed
    assert bounced(alice) == [("remote-server-not-found", "one")]
    federation, alice = setup(tmp_path / "strict", ALLOW + "\nrequire_valid_certificates = true")
    chat(alice, body="two")
    wire, _ = outgoing_past_tls(federation, EXTERNAL_FEATURES)
    refuse_external(wire)
    assert wire.take() == [] and wire.closed
    assert bounced(alice) == [("remote-server-not-found", "two")]


def test_no_dialback_with_a_peer_that_does_not_support_it(tmp_path):
    federation, alice = setup(tmp_path, valid=())
    chat(alice, body="one")
    wire, sent = outgoing_past_tls(federation, EXTERNAL_FEATURES.replace(
        "<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>", ""),
        dialback=False)
    assert sent == [] and wire.closed
    assert bounced(alice) == [("remote-server-not-found", "one")]


def test_invalid_dialback_bounces_internal_server_error(tmp_path):
    federation, alice = setup(tmp_path, valid=())
    chat(alice, body="one")
    wire, _ = outgoing_past_tls(federation, DIALBACK_FEATURES)
    wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='invalid'/>")
    assert bounced(alice) == [("internal-server-error", "one")]
    assert wire.closed
    assert federation.links == {}


def test_dialback_error_bounces_remote_server_timeout(tmp_path):
    federation, alice = setup(tmp_path, valid=())
    chat(alice, body="one")
    wire, _ = outgoing_past_tls(federation, DIALBACK_FEATURES)
    wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='error'><error type='cancel'>"
              "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>")
    assert bounced(alice) == [("remote-server-timeout", "one")]


def test_require_valid_certificates_has_no_dialback_fallback(tmp_path):
    federation, alice = setup(tmp_path, ALLOW + "\nrequire_valid_certificates = true",
                              valid=())
    chat(alice, body="one")
    wire, sent = outgoing_past_tls(federation, EXTERNAL_FEATURES)
    assert sent == [] and wire.closed
    assert bounced(alice) == [("remote-server-not-found", "one")]


def test_a_peer_without_starttls_is_refused_when_encryption_is_required(tmp_path):
    federation, alice = setup(tmp_path)
    chat(alice, body="one")
    wire = accept_outgoing(federation)
    wire.send(header(to=LOCAL, from_=REMOTE, id_="x"))
    wire.send(DIALBACK_FEATURES)
    assert bounced(alice) == [("remote-server-not-found", "one")]
    assert wire.closed


def test_plaintext_dialback_when_encryption_is_not_required(tmp_path):
    federation, alice = setup(tmp_path, ALLOW + "\nrequire_encryption = false", valid=())
    chat(alice, body="one")
    wire = accept_outgoing(federation)
    wire.send(header(to=LOCAL, from_=REMOTE, id_="plain-id", version=None))
    result, = [e for e in wire.take() if e.name == "result"]
    assert str(result) == federation.keys.make(REMOTE, LOCAL, "plain-id")
    assert wire.transport.tls is None
    wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}' type='valid'/>")
    assert bodies(wire.take()) == ["one"]


def test_connection_refused_bounces_and_the_next_stanza_reconnects(tmp_path):
    federation, alice = setup(tmp_path)
    chat(alice, body="one")
    chat(alice, body="two")
    refuse_outgoing(federation)
    assert bounced(alice) == [("remote-server-not-found", "one"),
                              ("remote-server-not-found", "two")]
    chat(alice, body="three")
    assert len(federation.reactor.tcpClients) == 2


def test_connect_timeout_bounces_remote_server_timeout(tmp_path):
    federation, alice = setup(tmp_path, ALLOW + "\nconnect_timeout = 5")
    chat(alice, body="one")
    wire = accept_outgoing(federation)  # connected, but the peer never answers
    federation.reactor.advance(4.9)
    assert bounced(alice) == []
    federation.reactor.advance(0.1)
    assert bounced(alice) == [("remote-server-timeout", "one")]
    assert wire.closed
    # Nothing is bounced twice when the connection is finally lost.
    wire.stream.connectionLost(None)
    assert bounced(alice) == []


def test_timeout_while_connecting_cancels_the_attempt(tmp_path):
    federation, alice = setup(tmp_path, ALLOW + "\nconnect_timeout = 5")
    chat(alice, body="one")
    federation.reactor.advance(5)
    assert bounced(alice) == [("remote-server-timeout", "one")]
    assert federation.reactor.connectors[0].stoppedConnecting
    assert federation.links == {}


def test_queue_is_bounded(tmp_path):
    federation, alice = setup(tmp_path, ALLOW + "\nmax_queue = 2")
    for body in ("one", "two", "three"):
        chat(alice, body=body)
    assert bounced(alice) == [("resource-constraint", "three")]


def test_errors_are_never_answered_with_errors(tmp_path):
    federation, alice = setup(tmp_path)
    chat(alice, body="oops", type_="error")
    refuse_outgoing(federation)
    assert alice.take() == []


def test_stream_error_from_the_peer_bounces_the_queue(tmp_path):
    federation, alice = setup(tmp_path)
    chat(alice, body="one")
    wire = accept_outgoing(federation)
    wire.send(header(to=LOCAL, from_=REMOTE, id_="x"))
    wire.send("<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
              "</stream:error>")
    assert bounced(alice) == [("remote-server-not-found", "one")]
    assert wire.closed


def test_dropped_connection_bounces_the_queue(tmp_path):
    federation, alice = setup(tmp_path)
    chat(alice, body="one")
    wire = accept_outgoing(federation)
    wire.stream.connectionLost(None)
    assert bounced(alice) == [("remote-server-timeout", "one")]


def test_domain_not_allowed_bounces_without_connecting(tmp_path):
    federation, alice = setup(tmp_path, f'allow = ["*.{REMOTE}"]\ndeny = ["evil.{REMOTE}"]')
    chat(alice, to=f"bob@{REMOTE}", body="not-covered")
    chat(alice, to=f"bob@evil.{REMOTE}", body="denied")
    chat(alice, to="bob@stranger.example", body="stranger")
    assert bounced(alice) == [("service-unavailable", "not-covered"),
                              ("service-unavailable", "denied"),
                              ("service-unavailable", "stranger")]
    assert federation.reactor.tcpClients == [] and federation.links == {}


def test_empty_allowlist_means_no_federation(tmp_path):
    federation, alice = setup(tmp_path, "")
    chat(alice, body="one")
    assert bounced(alice) == [("service-unavailable", "one")]
    assert federation.reactor.tcpClients == []


def test_idle_stream_closes_and_the_next_stanza_reconnects(tmp_path):
    federation, alice = setup(tmp_path, ALLOW + "\nidle_timeout = 60")
    chat(alice, body="one")
    wire, _ = outgoing_past_tls(federation, EXTERNAL_FEATURES)
    external_succeeds(wire)
    assert bodies(wire.take()) == ["one"]
    federation.reactor.advance(30)
    wire.send(" ")  # a whitespace keepalive is traffic
    federation.reactor.advance(59)
    assert not wire.closed
    federation.reactor.advance(1)
    assert wire.closed and federation.links == {}
    chat(alice, body="two")
    assert len(federation.reactor.tcpClients) == 2
    assert bounced(alice) == []


def test_unsolicited_verify_answers_are_ignored(tmp_path):
    federation, alice = setup(tmp_path, valid=())
    chat(alice)
    wire, _ = outgoing_past_tls(federation, DIALBACK_FEATURES)
    wire.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='never-asked' type='valid'/>")
    assert not wire.closed and wire.take() == []


def test_stanzas_from_a_remote_sender_are_never_relayed(tmp_path):
    federation, _ = setup(tmp_path)
    federation.api.route(make_stanza("message", to=f"bob@{REMOTE}", from_="x@third.example"))
    assert federation.reactor.tcpClients == []


def test_reload_applies_a_new_allowlist(tmp_path):
    federation, alice = setup(tmp_path, "")
    chat(alice, body="before")
    assert bounced(alice) == [("service-unavailable", "before")]
    reloaded = make_federation(tmp_path / "new", ALLOW).server.config
    federation.server.hooks.fire(CONFIG_RELOADED, reloaded)
    chat(alice, body="after")
    assert bounced(alice) == []
    assert len(federation.reactor.tcpClients) == 1


def test_stopping_gives_up_connections_being_set_up(tmp_path):
    federation, alice = setup(tmp_path)
    federation.startService()
    chat(alice, body="one")
    federation.stopService()
    assert bounced(alice) == [("remote-server-timeout", "one")]
    assert federation.links == {}
    assert federation.reactor.connectors[0].stoppedConnecting


def test_domain_without_a_server_bounces_at_once(tmp_path):
    zone = {f"_xmpp-server._tcp.none.{REMOTE}": [(0, 0, 0, b"")]}
    federation = make_federation(tmp_path, ALLOW, resolver=FakeResolver(zone))
    add_user(federation.server, f"alice@{LOCAL}")
    alice = Client(federation.server)
    alice.login(f"alice@{LOCAL}")
    chat(alice, to=f"bob@none.{REMOTE}", body="one")
    assert bounced(alice) == [("remote-server-not-found", "one")]
    assert federation.reactor.tcpClients == [] and federation.links == {}
    # Verifying a dialback key from that domain fails the same way.
    failures = []
    federation.verify_key(LOCAL, f"none.{REMOTE}", "id", "key").addErrback(failures.append)
    assert [f.value.condition for f in failures] == ["remote-server-not-found"]


def test_srv_targets_are_tried_in_order(tmp_path):
    zone = {f"_xmpp-server._tcp.srv.{REMOTE}": [(10, 0, 5301, "192.0.2.1"),
                                                (20, 0, 5302, "192.0.2.2")]}
    federation = make_federation(tmp_path, ALLOW, resolver=FakeResolver(zone))
    add_user(federation.server, f"alice@{LOCAL}")
    alice = Client(federation.server)
    alice.login(f"alice@{LOCAL}")
    chat(alice, to=f"bob@srv.{REMOTE}", body="one")
    # (The memory reactor resolves every name to 127.0.0.1: compare ports.)
    assert [c[1] for c in federation.reactor.tcpClients] == [5301]
    refuse_outgoing(federation)
    federation.reactor.advance(1)  # HostnameEndpoint gives up on its next turn
    assert [c[1] for c in federation.reactor.tcpClients] == [5301, 5302]
    assert bounced(alice) == []
    refuse_outgoing(federation)
    federation.reactor.advance(1)
    assert bounced(alice) == [("remote-server-not-found", "one")]


def test_a_stalled_tls_handshake_is_aborted(tmp_path):
    federation, alice = setup(tmp_path, ALLOW + "\nhandshake_timeout = 3")
    chat(alice)
    wire = accept_outgoing(federation)
    wire.stall_tls = True
    wire.send(header(to=LOCAL, from_=REMOTE, id_="before-tls"))
    wire.send("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
              "</stream:features>")
    wire.send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    federation.reactor.advance(3)
    assert wire.transport.disconnected
    wire.stream.connectionLost(None)
    assert bounced(alice) == [("remote-server-not-found", "hello")]


def tls_fails(federation, remote):
    """Accept the last outgoing connection; its TLS handshake fails."""
    wire = accept_outgoing(federation)
    wire.send(header(to=LOCAL, from_=remote, id_="before-tls"))
    wire.send(STARTTLS_FEATURES)
    wire.send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    wire.stream.connectionLost(Failure(SSL.Error([("SSL routines", "", "tlsv1 alert")])))


def test_a_tls_failure_moves_on_to_the_next_srv_target(tmp_path):
    remote = f"srv.{REMOTE}"
    zone = {f"_xmpp-server._tcp.{remote}": [(10, 0, 5301, "192.0.2.1"),
                                            (20, 0, 5302, "192.0.2.2"),
                                            (30, 0, 5303, "192.0.2.3")]}
    federation = make_federation(tmp_path, ALLOW, valid=[remote], resolver=FakeResolver(zone))
    add_user(federation.server, f"alice@{LOCAL}")
    alice = Client(federation.server)
    alice.login(f"alice@{LOCAL}")
    chat(alice, to=f"bob@{remote}", body="one")
    tls_fails(federation, remote)
    assert [c[1] for c in federation.reactor.tcpClients] == [5301, 5302]
    assert bounced(alice) == []
    wire, sent = outgoing_past_tls(federation, EXTERNAL_FEATURES, remote=remote)
    assert [e.name for e in sent] == ["auth"]
    external_succeeds(wire, remote)
    assert bodies(wire.take()) == ["one"]
    assert len(federation.reactor.tcpClients) == 2


def test_a_tls_failure_with_the_last_target_bounces(tmp_path):
    federation, alice = setup(tmp_path)  # one candidate: the pinned route
    chat(alice)
    tls_fails(federation, REMOTE)
    assert bounced(alice) == [("remote-server-not-found", "hello")]


# Output to a peer that does not read is bounded (RFC 6120 §13.12)

SMALL_OUTPUT = ALLOW + "\nmax_output_buffer = 65536"


def test_a_peer_that_does_not_read_is_cut_off_and_a_new_link_follows(tmp_path):
    federation, alice = setup(tmp_path, SMALL_OUTPUT)
    chat(alice, body="one")
    wire, _ = outgoing_past_tls(federation, EXTERNAL_FEATURES)
    external_succeeds(wire)
    assert bodies(wire.take()) == ["one"]
    link = federation.links[LOCAL, REMOTE]
    wire.transport.producer.pauseProducing()  # the peer stopped reading
    for i in range(50):  # each about 1100 bytes (the body twice: it is the id too)
        chat(alice, body=f"{i:02}" + "x" * 500)
    assert not wire.closed  # below the limit, what waits is kept
    with capturedLogs() as events:
        for i in range(50, 70):
            chat(alice, body=f"{i:02}" + "x" * 500)
    assert wire.closed
    assert stream_error(wire.take()) == "policy-violation"  # what waited is dropped
    assert f"s2s to 192.168.1.1:54321 ({LOCAL} -> {REMOTE}): the peer does not read: " \
        "more than 65536 bytes wait, closing" in [formatEvent(e) for e in events]
    # The link failed as any closed one does; the stanzas after it wait for
    # a new one.
    assert link.finished and federation.links[LOCAL, REMOTE] is not link
    assert len(federation.reactor.tcpClients) == 2 and bounced(alice) == []


def test_what_waits_for_a_link_cut_off_bounces(tmp_path):
    """The peer stops reading while our dialback verifications go out on a
    link whose own stanzas wait for its authentication."""
    federation, alice = setup(tmp_path, SMALL_OUTPUT, valid=())
    chat(alice, body="queued")
    wire, sent = outgoing_past_tls(federation, EXTERNAL_FEATURES)
    assert [e.name for e in sent] == ["result"]  # dialback: not ready yet
    wire.transport.producer.pauseProducing()
    link = federation.links[LOCAL, REMOTE]
    failures = []
    for i in range(70):
        link.verify(f"stream-{i}", "k" * 1000).addErrback(
            lambda failure: failures.append(failure.trap(DialbackError)))
    assert wire.closed and stream_error(wire.take()) == "policy-violation"
    assert bounced(alice) == [("remote-server-timeout", "queued")]
    assert failures == [DialbackError] * 70
