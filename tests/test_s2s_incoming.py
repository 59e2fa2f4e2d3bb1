"""Incoming server streams: STARTTLS, SASL EXTERNAL (XEP-0178), dialback
as receiving and authoritative server (XEP-0220 §2.2), the allowlist and
the checks on stanzas from peers (RFC 6120 §4.9.3, §8)."""

import pytest
from OpenSSL import SSL
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from tests.harness import Client, add_user, error_condition
from tests.s2s_support import (
    DIALBACK_FEATURES, LOCAL, REMOTE, b64, header, incoming, make_federation,
    outgoing_past_tls, stream_error)
from xmppd.s2s.dialback import NS_DIALBACK, NS_DIALBACK_FEATURE

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
ALLOW = f'allow = ["{REMOTE}", "*.{REMOTE}"]'


def feature_names(features):
    return sorted((c.uri, c.name) for c in features.elements())


def encrypted(federation, remote=REMOTE, to=LOCAL):
    """An incoming stream from ``remote`` after STARTTLS; returns the wire
    and the features offered on the encrypted stream."""
    wire = incoming(federation)
    wire.send(header(to=to, from_=remote))
    features = wire.take_one()
    assert (NS_TLS, "starttls") in feature_names(features)
    wire.send(f"<starttls xmlns='{NS_TLS}'/>")
    assert wire.take_one().name == "proceed"
    assert wire.transport.tls == f"server-tls-{to}"
    wire.restart()
    wire.send(header(to=to, from_=remote))
    return wire, wire.take_one()


def external(federation, remote=REMOTE):
    """An incoming stream authenticated with SASL EXTERNAL."""
    wire, features = encrypted(federation, remote)
    wire.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{b64(remote)}</auth>")
    assert wire.take_one().name == "success"
    wire.restart()
    wire.send(header(to=LOCAL, from_=remote))
    assert feature_names(wire.take_one()) == []
    return wire


def message(from_, to, body="hi"):
    return f"<message from='{from_}' to='{to}' type='chat'><body>{body}</body></message>"


def test_header_features_and_required_starttls(tmp_path):
    federation = make_federation(tmp_path, ALLOW)
    wire = incoming(federation)
    wire.send(header(to=LOCAL, from_=REMOTE))
    features = wire.take_one()
    our_header = wire.headers[0]
    assert (our_header["from"], our_header["to"], our_header["version"]) == \
        (LOCAL, REMOTE, "1.0")
    assert our_header["id"] == wire.stream.stream_id
    starttls = next(features.elements(NS_TLS, "starttls"))
    assert next(starttls.elements()).name == "required"
    assert feature_names(features) == [(NS_TLS, "starttls")]
    # Dialback before TLS is refused when encryption is required.
    wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>key</db:result>")
    assert stream_error(wire.take()) == "policy-violation"
    assert wire.closed


def test_sasl_external_with_a_valid_certificate(tmp_path):
    federation = make_federation(tmp_path, ALLOW, valid=[REMOTE])
    add_user(federation.server, f"alice@{LOCAL}")
    alice = Client(federation.server)
    alice.login(f"alice@{LOCAL}")
    wire, features = encrypted(federation)
    assert feature_names(features) == [(NS_SASL, "mechanisms"),
                                       (NS_DIALBACK_FEATURE, "dialback")]
    mechanisms = next(features.elements(NS_SASL, "mechanisms"))
    assert [str(m) for m in mechanisms.elements()] == ["EXTERNAL"]
    wire.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{b64(REMOTE)}</auth>")
    assert wire.take_one().name == "success"
    wire.restart()
    wire.send(header(to=LOCAL, from_=REMOTE))
    assert feature_names(wire.take_one()) == []
    assert federation.peers() == {REMOTE}
    assert federation.server.metrics.registry.get_sample_value(
        "xmppd_s2s_streams", {"direction": "incoming", "peer": REMOTE}) == 1
    wire.send(message(f"bob@{REMOTE}/phone", f"alice@{LOCAL}/res", "hello alice"))
    received = alice.take()
    assert [(m["from"], str(m.body)) for m in received] == [(f"bob@{REMOTE}/phone",
                                                            "hello alice")]


def test_external_with_an_empty_authzid_uses_the_stream_from(tmp_path):
    federation = make_federation(tmp_path, ALLOW, valid=[REMOTE])
    wire, _ = encrypted(federation)
    wire.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'/>")
    assert wire.take_one().name == "challenge"
    wire.send(f"<response xmlns='{NS_SASL}'>=</response>")
    assert wire.take_one().name == "success"
    assert wire.stream.authenticated == {REMOTE: "SASL EXTERNAL"}


def test_external_for_another_domain_is_refused(tmp_path):
    federation = make_federation(tmp_path, ALLOW, valid=[REMOTE, f"chat.{REMOTE}"])
    wire, _ = encrypted(federation)
    wire.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{b64('chat.' + REMOTE)}</auth>")
    failure = wire.take()[0]
    assert (failure.name, next(failure.elements()).name) == ("failure", "invalid-authzid")
    assert wire.closed and wire.stream.authenticated == {}


def test_no_external_without_a_valid_certificate(tmp_path):
    federation = make_federation(tmp_path, ALLOW, valid=[])
    wire, features = encrypted(federation)
    assert feature_names(features) == [(NS_DIALBACK_FEATURE, "dialback")]
    wire.send(f"<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{b64(REMOTE)}</auth>")
    assert stream_error(wire.take()) == "not-authorized"


def test_stanzas_before_authentication_are_refused(tmp_path):
    federation = make_federation(tmp_path, ALLOW)
    wire, _ = encrypted(federation)
    wire.send(message(f"bob@{REMOTE}", f"alice@{LOCAL}"))
    assert stream_error(wire.take()) == "not-authorized"


def test_stanza_checks(tmp_path):
    federation = make_federation(tmp_path, ALLOW, valid=[REMOTE], hosts=(LOCAL, "other.com"))
    cases = [
        (message(f"bob@chat.{REMOTE}", f"alice@{LOCAL}"), "invalid-from"),
        (message("bob@@bad", f"alice@{LOCAL}"), "invalid-from"),
        (message(f"bob@{REMOTE}", "alice@elsewhere.example"), "host-unknown"),
        (f"<message to='alice@{LOCAL}'><body>x</body></message>", "improper-addressing"),
        (f"<iq from='{REMOTE}' to='{LOCAL}' type='get' id='1'><ping xmlns='urn:xmpp:ping'/>"
         f"<ping xmlns='urn:xmpp:ping'/></iq>", None),
    ]
    for stanza, condition in cases:
        wire = external(federation)
        wire.send(stanza)
        if condition is not None:
            assert stream_error(wire.take()) == condition, stanza
        else:
            assert not wire.closed
    # A stanza to another hosted domain is accepted on the same stream.
    wire = external(federation)
    wire.send(message(f"bob@{REMOTE}", "nobody@other.com"))
    assert not wire.closed


def test_bad_iq_is_answered_through_the_router(tmp_path):
    federation = make_federation(tmp_path, ALLOW, valid=[REMOTE])
    wire = external(federation)
    wire.send(f"<iq from='bob@{REMOTE}/x' to='{LOCAL}' type='get'>"
              f"<ping xmlns='urn:xmpp:ping'/></iq>")
    assert not wire.closed
    link = federation.links[LOCAL, REMOTE]
    assert [error_condition(s.element) for s in link._queue] == ["bad-request"]


def test_domains_not_allowed_are_refused(tmp_path):
    federation = make_federation(tmp_path, f'allow = ["{REMOTE}"]\ndeny = ["evil.{REMOTE}"]')
    for remote in ("stranger.example", f"evil.{REMOTE}"):
        wire = incoming(federation)
        wire.send(header(to=LOCAL, from_=remote))
        assert stream_error(wire.take()) == "policy-violation"
        assert wire.closed
    wire = incoming(federation)
    wire.send(header(to="not-hosted.example", from_=REMOTE))
    assert stream_error(wire.take()) == "host-unknown"


@pytest.mark.parametrize("data, condition", [
    (header(to="not-hosted.example", from_=REMOTE), "host-unknown"),
    (header(to=LOCAL, from_=REMOTE).replace("jabber:server'", "jabber:component:accept'"),
     "invalid-namespace"),
    (bytes.fromhex("160301020001000001fc0303") + bytes(32), "unsupported-encoding"),
], ids=["unknown-host", "bad-header", "tls-client-hello"])
def test_early_stream_error_header_names_the_default_host(tmp_path, data, condition):
    """RFC 6120 §4.7.1, §4.9.1.2: a header with 'from' before the error."""
    federation = make_federation(tmp_path, ALLOW, hosts=(LOCAL, f"other.{LOCAL}"))
    wire = incoming(federation)
    wire.send(data)
    assert stream_error(wire.take()) == condition
    assert wire.headers[0]["from"] == LOCAL


def test_empty_allowlist_refuses_every_peer(tmp_path):
    federation = make_federation(tmp_path, "")
    wire = incoming(federation)
    wire.send(header(to=LOCAL, from_=REMOTE))
    assert stream_error(wire.take()) == "policy-violation"


def test_dialback_from_a_domain_not_allowed_is_refused(tmp_path):
    federation = make_federation(tmp_path, ALLOW)
    wire, _ = encrypted(federation, remote=None)
    wire.send(f"<db:result from='stranger.example' to='{LOCAL}'>key</db:result>")
    assert stream_error(wire.take()) == "policy-violation"
    assert federation.reactor.tcpClients == []


def test_dialback_is_verified_with_the_authoritative_server(tmp_path):
    federation = make_federation(tmp_path, ALLOW)
    add_user(federation.server, f"alice@{LOCAL}")
    alice = Client(federation.server)
    alice.login(f"alice@{LOCAL}")
    wire, _ = encrypted(federation)
    stream_id = wire.stream.stream_id
    wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>the-key</db:result>")
    assert wire.take() == []
    # We dial back: an outgoing stream to remote.example carries the
    # verification once it is past TLS, next to our own dialback request.
    authoritative, sent = outgoing_past_tls(federation, DIALBACK_FEATURES)
    assert [e.name for e in sent] == ["result", "verify"]
    verify = sent[1]
    assert (verify.uri, verify["from"], verify["to"], verify["id"], str(verify)) == \
        (NS_DIALBACK, LOCAL, REMOTE, stream_id, "the-key")
    authoritative.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='{stream_id}' "
                       "type='valid'/>")
    result = wire.take_one()
    assert (result.name, result["from"], result["to"], result["type"]) == \
        ("result", LOCAL, REMOTE, "valid")
    wire.send(message(f"bob@{REMOTE}/x", f"alice@{LOCAL}/res"))
    assert [m.name for m in alice.take()] == ["message"]


def test_invalid_dialback_key_closes_the_stream(tmp_path):
    federation = make_federation(tmp_path, ALLOW)
    wire, _ = encrypted(federation)
    stream_id = wire.stream.stream_id
    wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>forged</db:result>")
    authoritative, _ = outgoing_past_tls(federation, DIALBACK_FEATURES)
    # An answer for another stream id is not ours: ignored.
    authoritative.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='other' type='valid'/>")
    assert wire.take() == []
    authoritative.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='{stream_id}' "
                       "type='invalid'/>")
    assert wire.take_one()["type"] == "invalid"
    assert wire.closed
    assert wire.stream.authenticated == {}


def test_dialback_answers_errors_when_the_authoritative_server_fails(tmp_path):
    federation = make_federation(tmp_path, ALLOW)
    wire, _ = encrypted(federation)
    wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>key</db:result>")
    federation.reactor.advance(federation.config.connect_timeout)
    result = wire.take_one()
    assert (result["type"], result["from"], result["to"]) == ("error", LOCAL, REMOTE)
    assert error_condition(result) == "remote-server-timeout"
    assert not wire.closed  # a dialback error is not a stream error


def test_dialback_to_a_domain_not_hosted_is_a_dialback_error(tmp_path):
    federation = make_federation(tmp_path, ALLOW)
    wire, _ = encrypted(federation)
    wire.send(f"<db:result from='{REMOTE}' to='nothere.example'>key</db:result>")
    result = wire.take_one()
    assert (result["type"], result["from"], result["to"]) == ("error", "nothere.example",
                                                              REMOTE)
    assert error_condition(result) == "item-not-found"
    assert not wire.closed


def test_several_sender_domains_on_one_stream(tmp_path):
    # XEP-0220 §2.6: multiplexing; a valid certificate spares the dial back.
    federation = make_federation(tmp_path, ALLOW, valid=[REMOTE, f"chat.{REMOTE}"])
    wire, _ = encrypted(federation)
    for domain in (REMOTE, f"chat.{REMOTE}"):
        wire.send(f"<db:result from='{domain}' to='{LOCAL}'>key</db:result>")
        assert wire.take_one()["type"] == "valid"
    assert set(wire.stream.authenticated) == {REMOTE, f"chat.{REMOTE}"}
    assert federation.reactor.tcpClients == []
    wire.send(message(f"room@chat.{REMOTE}/nick", f"alice@{LOCAL}"))
    wire.send(message(f"bob@{REMOTE}", f"alice@{LOCAL}"))
    assert not wire.closed
    wire.send(message(f"x@muc.{REMOTE}", f"alice@{LOCAL}"))
    assert stream_error(wire.take()) == "invalid-from"


def test_verify_requests_are_answered_with_our_secret(tmp_path):
    federation = make_federation(tmp_path, ALLOW)
    key = federation.keys.make(REMOTE, LOCAL, "their-id")
    wire, _ = encrypted(federation)
    wire.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='their-id'>{key}</db:verify>")
    answer = wire.take_one()
    assert (answer["type"], answer["from"], answer["to"], answer["id"]) == \
        ("valid", LOCAL, REMOTE, "their-id")
    wire.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='other-id'>{key}</db:verify>")
    assert wire.take_one()["type"] == "invalid"
    wire.send(f"<db:verify from='{REMOTE}' to='nothere.example' id='x'>{key}</db:verify>")
    answer = wire.take_one()
    assert answer["type"] == "error" and error_condition(answer) == "item-not-found"
    assert not wire.closed


def test_require_valid_certificates(tmp_path):
    settings = ALLOW + "\nrequire_valid_certificates = true"
    federation = make_federation(tmp_path, settings, valid=[REMOTE])
    _, features = encrypted(federation)
    assert feature_names(features) == [(NS_SASL, "mechanisms")]
    wire, refusal = encrypted(federation, remote=f"chat.{REMOTE}")
    assert stream_error([refusal]) == "policy-violation"
    assert wire.closed


def test_plaintext_dialback_when_encryption_is_not_required(tmp_path):
    settings = ALLOW + "\nrequire_encryption = false"
    federation = make_federation(tmp_path, settings)
    wire = incoming(federation)
    # A pre-1.0 peer: no version, no features, straight to dialback.
    wire.send(header(to=LOCAL, from_=REMOTE, version=None))
    assert wire.take() == []
    wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>key</db:result>")
    assert len(federation.reactor.tcpClients) == 1
    wire2 = incoming(federation)
    wire2.send(header(to=LOCAL, from_=REMOTE))
    features = wire2.take_one()
    assert feature_names(features) == [(NS_TLS, "starttls"), (NS_DIALBACK_FEATURE, "dialback")]
    assert next(features.elements(NS_TLS, "starttls")).firstChildElement() is None


def test_whitespace_keepalives_and_idle_timeout(tmp_path):
    federation = make_federation(tmp_path, ALLOW + "\nidle_timeout = 60", valid=[REMOTE])
    wire = external(federation)
    for _ in range(3):
        federation.reactor.advance(50)
        wire.send(" ")
    assert not wire.closed
    federation.reactor.advance(60)
    assert wire.take() == [] and wire.ended and wire.closed
    assert federation.peers() == {REMOTE}  # until the connection is really lost
    wire.stream.connectionLost(None)
    assert federation.peers() == set()


def test_incoming_connections_are_limited_per_address(tmp_path):
    federation = make_federation(tmp_path, ALLOW + "\n[limits]\nmax_connections_per_ip = 1\n")
    first = incoming(federation)
    second = incoming(federation)
    assert second.closed and stream_error(second.take()) == "policy-violation"
    assert not first.closed
    registry = federation.server.metrics.registry
    assert registry.get_sample_value("xmppd_connections", {"kind": "s2s_in"}) == 1
    first.stream.connectionLost(None)
    assert registry.get_sample_value("xmppd_connections", {"kind": "s2s_in"}) == 0
    assert not incoming(federation).closed


def test_incoming_reads_are_throttled(tmp_path):
    federation = make_federation(
        tmp_path, ALLOW + "\n[limits]\ns2s_read_rate = 1024\ns2s_read_burst = 10000\n")
    wire = incoming(federation)
    wire.send(" " * 12000)
    assert wire.transport.producerState == "paused"
    federation.reactor.advance(3)
    assert wire.transport.producerState == "producing"


def test_log_lines_write_the_address_and_the_tls_failure(tmp_path):
    federation = make_federation(tmp_path, ALLOW)
    with capturedLogs() as events:
        wire = incoming(federation)
        wire.send(header(to=LOCAL, from_=REMOTE))
        wire.stream.connectionLost(Failure(SSL.Error([("SSL routines", "", "http request")])))
    lines = [formatEvent(event) for event in events]
    assert lines[0] == "s2s incoming connection from 192.168.1.1:54321"
    assert f"s2s from 192.168.1.1:54321 ({REMOTE} -> {LOCAL}): TLS failure: http request" \
        in lines


# Hostile load: unauthenticated streams are bounded (RFC 6120 §13.12)

def test_an_unauthenticated_stream_is_closed_after_the_negotiation_timeout(tmp_path):
    federation = make_federation(tmp_path, ALLOW + "\nnegotiation_timeout = 30")
    with capturedLogs() as events:
        wire = incoming(federation)
        wire.send(header(to=LOCAL, from_=REMOTE))
        for _ in range(5):  # whitespace is traffic, not authentication
            federation.reactor.advance(5)
            wire.send(" ")
        assert not wire.closed
        federation.reactor.advance(5)
    assert stream_error(wire.take()) == "connection-timeout"
    assert wire.closed and not wire.transport.disconnected
    assert f"s2s from 192.168.1.1:54321 ({REMOTE} -> {LOCAL}): not authenticated within " \
        "30 s, closing" in [formatEvent(e) for e in events]
    # The peer does not read: the connection is aborted.
    federation.reactor.advance(federation.config.handshake_timeout)
    assert wire.transport.disconnected


def test_a_close_that_finishes_is_not_aborted(tmp_path):
    federation = make_federation(tmp_path, ALLOW + "\nnegotiation_timeout = 30")
    wire = incoming(federation)
    federation.reactor.advance(30)
    assert wire.closed
    wire.stream.connectionLost(None)
    federation.reactor.advance(federation.config.handshake_timeout)
    assert not wire.transport.disconnected
    assert federation.reactor.getDelayedCalls() == []


@pytest.mark.parametrize("authenticate", ["external", "dialback"])
def test_authentication_stops_the_negotiation_timeout(tmp_path, authenticate):
    federation = make_federation(tmp_path, ALLOW + "\nnegotiation_timeout = 30",
                                 valid=[REMOTE])
    if authenticate == "external":
        wire = external(federation)
    else:
        wire, _ = encrypted(federation)
        wire.send(f"<db:result from='{REMOTE}' to='{LOCAL}'>key</db:result>")
        assert wire.take_one()["type"] == "valid"
    federation.reactor.advance(60)
    assert not wire.closed


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
def test_a_stalled_tls_handshake_is_aborted(tmp_path, direct_tls):
    federation = make_federation(tmp_path, ALLOW + "\nhandshake_timeout = 5")
    wire = incoming(federation, direct_tls)
    wire.stall_tls = True
    if not direct_tls:
        wire.send(header(to=LOCAL, from_=REMOTE))
        wire.send(f"<starttls xmlns='{NS_TLS}'/>")
    with capturedLogs() as events:
        federation.reactor.advance(5)
    assert wire.transport.disconnected
    assert any("TLS handshake not finished within 5 s, aborting" in formatEvent(e)
               for e in events)


def test_a_finished_tls_handshake_is_not_aborted(tmp_path):
    federation = make_federation(tmp_path, ALLOW + "\nhandshake_timeout = 5")
    wire, _ = encrypted(federation)
    federation.reactor.advance(5)
    assert not wire.closed and not wire.transport.disconnected


def test_unauthenticated_streams_are_limited_per_address(tmp_path):
    federation = make_federation(
        tmp_path, ALLOW + "\n[limits]\ns2s_max_unauthenticated_per_ip = 2\n", valid=[REMOTE])
    with capturedLogs() as events:
        first, second, third = (incoming(federation) for _ in range(3))
    assert not first.closed and not second.closed
    assert stream_error(third.take()) == "policy-violation" and third.closed
    assert "s2s refused a stream from 192.168.1.1:54321: too many unauthenticated streams " \
        "(policy-violation)" in [formatEvent(e) for e in events]
    third.stream.connectionLost(None)
    assert federation.connections.unauthenticated.count("192.168.1.1") == 2
    first.stream.connectionLost(None)  # one goes: the next is admitted
    authenticated = external(federation)
    assert not authenticated.closed
    assert federation.connections.unauthenticated.count("192.168.1.1") == 1  # second only
    assert not incoming(federation).closed


def test_unauthenticated_streams_are_limited_in_all(tmp_path):
    federation = make_federation(
        tmp_path, ALLOW + "\n[limits]\nmax_unauthenticated = 1\n", valid=[REMOTE])
    first, second = incoming(federation), incoming(federation)
    assert not first.closed
    assert stream_error(second.take()) == "resource-constraint" and second.closed


def test_a_stream_used_only_for_dialback_verification_is_timed_out(tmp_path):
    federation = make_federation(tmp_path, ALLOW + "\nnegotiation_timeout = 30")
    key = federation.keys.make(REMOTE, LOCAL, "their-id")
    wire, _ = encrypted(federation)
    wire.send(f"<db:verify from='{REMOTE}' to='{LOCAL}' id='their-id'>{key}</db:verify>")
    assert wire.take_one()["type"] == "valid"
    federation.reactor.advance(30)
    assert stream_error(wire.take()) == "connection-timeout"


def test_a_peer_that_does_not_read_is_cut_off(tmp_path):
    """Dialback verification requests whose answers the peer never reads
    (RFC 6120 §13.12)."""
    federation = make_federation(tmp_path, ALLOW + "\nmax_output_buffer = 65536")
    wire, _ = encrypted(federation)
    wire.transport.producer.pauseProducing()
    verify = f"<db:verify from='{REMOTE}' to='{LOCAL}' id='{{}}'>key</db:verify>"
    # Each answer echoes the id: about 1100 bytes.
    wire.send("".join(verify.format(f"{i:02}" + "x" * 1000) for i in range(50)))
    assert not wire.closed  # below the limit, what waits is kept
    with capturedLogs() as events:
        wire.send("".join(verify.format(f"{i:02}" + "x" * 1000) for i in range(50, 70)))
    assert wire.closed
    assert stream_error(wire.take()) == "policy-violation"  # what waited is dropped
    assert f"s2s from 192.168.1.1:54321 ({REMOTE} -> {LOCAL}): the peer does not read: " \
        "more than 65536 bytes wait, closing" in [formatEvent(e) for e in events]
    wire.stream.connectionLost(None)
    assert federation.connections.unauthenticated.count("192.168.1.1") == 0
