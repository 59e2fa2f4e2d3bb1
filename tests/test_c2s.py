"""Client stream negotiation (RFC 6120 §4-§7) over in-memory transports."""

import base64

import pytest
from OpenSSL import SSL
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from tests.harness import (
    HEADER, Client, TLSStringTransport, add_user, error_condition, make_server)
from tests.paused_storage import pausable_server
from xmppd.core.c2s import ClientStream
from xmppd.core.stream import MAX_HOLD
from xmppd.core.stream import peer_text

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def stream_error(client):
    errors = [e for e in client.take() if e.name == "error"]
    assert errors, "no stream error"
    assert client.closed
    return error_condition(errors[-1])


def test_header_and_starttls_required(server):
    client = Client(server)
    features = client.open()
    assert client.header["from"] == "example.com"
    assert client.header["version"] == "1.0"
    assert client.header.getAttribute("id")
    [starttls] = list(features.elements())
    assert starttls.name == "starttls"
    assert next(starttls.elements()).name == "required"


def test_replies_are_not_held_back_by_nagles_algorithm(server):
    assert Client(server).transport.no_delay is True


def test_unknown_host(server):
    client = Client(server)
    client.send("<stream:stream xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' to='other.org' version='1.0'>")
    assert stream_error(client) == "host-unknown"


TLS_CLIENT_HELLO = bytes.fromhex("160301020001000001fc0303") + bytes(range(32))


@pytest.mark.parametrize("data, condition", [
    (HEADER.format(to="other.org"), "host-unknown"),
    ("<stream:stream xmlns='jabber:client' "
     "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>", "host-unknown"),
    (HEADER.format(to="example.net").replace("jabber:client", "jabber:server"),
     "invalid-namespace"),
    (TLS_CLIENT_HELLO, "unsupported-encoding"),
    ("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "not-well-formed"),
], ids=["unknown-host", "no-to-with-two-hosts", "bad-header", "tls-client-hello", "garbage"])
def test_early_stream_error_header_names_the_default_host(tmp_path, data, condition):
    """RFC 6120 §4.7.1, §4.9.1.2: the response header has a 'from' even
    when the error comes before the requested domain is known."""
    client = Client(make_server(tmp_path, hosts=("example.com", "example.net")))
    client.send(data)
    assert stream_error(client) == condition
    assert client.header["from"] == "example.com"


def test_wrong_namespace_and_version(server):
    client = Client(server)
    client.send("<stream:stream xmlns='jabber:server' "
                "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")
    assert stream_error(client) == "invalid-namespace"
    client = Client(server)
    client.send("<stream:stream xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' to='example.com'>")
    assert stream_error(client) == "unsupported-version"


@pytest.mark.parametrize("stanza", [
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
    "<message to='bob@example.com'><body>hi</body></message>",
    "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
])
def test_nothing_before_tls(server, stanza):
    client = Client(server)
    client.open()
    client.send(stanza)
    assert stream_error(client) == "policy-violation"
    assert client.transport.tls is None


def test_starttls_uses_the_domain_context_and_restarts(server):
    client = Client(server)
    client.starttls()
    assert client.transport.tls == "tls-context-for-example.com"
    features = client.open()
    mechanisms = [str(m) for m in features.elements(NS_SASL, "mechanisms").__next__().elements()]
    assert mechanisms == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


def test_bytes_after_starttls_are_ignored(server):
    client = Client(server)
    client.open()
    client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>")
    assert [e.name for e in client.take()] == ["proceed"]
    assert not client.closed


def test_direct_tls_offers_sasl_at_once(server):
    client = Client(server, direct_tls=True)
    features = client.open()
    assert [e.name for e in features.elements()] == ["mechanisms", "authentication"]


def test_plain_login_bind(server):
    client = Client(server)
    assert client.login("alice@example.com", "laptop") == "alice@example.com/laptop"
    assert server.sessions.count() == 1


def test_scram_sha256_login(server):
    client = Client(server)
    client.starttls()
    client.open()
    nonce = "rOprNGfwEbeRWgbNEkqO"
    first = f"n,,n=alice,r={nonce}"
    client.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>"
                f"{base64.b64encode(first.encode()).decode()}</auth>")
    challenge = client.take()[0]
    assert challenge.name == "challenge"
    server_first = base64.b64decode(str(challenge)).decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    assert attrs["r"].startswith(nonce) and int(attrs["i"]) >= 4096
    from xmppd.core import scram
    salted = scram.salted_password("SHA-256", b"secret", base64.b64decode(attrs["s"]), int(attrs["i"]))
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"n=alice,r={nonce},{server_first},{without_proof}".encode()
    key = scram.client_key("SHA-256", salted)
    signature = scram.client_signature("SHA-256", scram.stored_key("SHA-256", key), auth_message)
    proof = bytes(a ^ b for a, b in zip(key, signature))
    final = f"{without_proof},p={base64.b64encode(proof).decode()}"
    client.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final.encode()).decode()}</response>")
    success = client.take()[0]
    assert success.name == "success"
    expected = scram.server_signature("SHA-256", scram.server_key("SHA-256", salted), auth_message)
    assert base64.b64decode(str(success)).decode() == "v=" + base64.b64encode(expected).decode()


def test_three_failures_close_the_stream(server):
    client = Client(server)
    client.starttls()
    client.open()
    failure = client.auth_plain("alice@example.com", "wrong")
    assert failure.name == "failure" and error_condition_sasl(failure) == "not-authorized"
    client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>")
    assert client.take() == []  # the second failure from this address is delayed
    server.clock.advance(server.config.limits.auth_failure_delay)
    assert error_condition_sasl(client.take()[0]) == "not-authorized"
    assert not client.closed
    client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>")
    server.clock.advance(2 * server.config.limits.auth_failure_delay)
    assert client.closed


def error_condition_sasl(failure):
    return next(c.name for c in failure.elements() if c.name != "text")


def test_bad_base64_and_unknown_mechanism(server):
    client = Client(server)
    client.starttls()
    client.open()
    client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>!!!</auth>")
    assert error_condition_sasl(client.take()[0]) == "incorrect-encoding"
    client.send(f"<auth xmlns='{NS_SASL}' mechanism='X-UNKNOWN'/>")
    server.clock.advance(server.config.limits.auth_failure_delay)
    assert error_condition_sasl(client.take()[0]) == "invalid-mechanism"


def test_failures_from_one_address_lead_to_a_ban(tmp_path):
    server = make_server(tmp_path, extra="[limits]\nauth_ban_after = 2\nauth_ban_time = 60\n"
                                         "auth_failure_delay = 0\n")
    add_user(server, "alice@example.com")
    for _ in range(2):
        client = Client(server)
        client.starttls()
        client.open()
        client.auth_plain("alice@example.com", "wrong")
    assert client.closed
    banned = Client(server)
    assert banned.closed and error_condition(banned.take()[-1]) == "policy-violation"
    server.clock.advance(61)
    assert Client(server).login("alice@example.com") == "alice@example.com/res"


def test_connection_limits(tmp_path):
    server = make_server(tmp_path, extra="[limits]\nmax_connections_per_ip = 2\n")
    first, second = Client(server), Client(server)
    third = Client(server)
    assert third.closed and error_condition(third.take()[-1]) == "policy-violation"
    assert not first.closed and not second.closed
    first.stream.connectionLost(None)
    assert not Client(server).closed


def test_total_connection_limit(tmp_path):
    server = make_server(tmp_path, extra="[limits]\nmax_connections = 1\n")
    Client(server)
    refused = Client(server)
    assert error_condition(refused.take()[-1]) == "resource-constraint"


def test_read_rate_pauses_and_resumes(tmp_path):
    server = make_server(tmp_path, extra="[limits]\nc2s_read_rate = 1024\n"
                                         "c2s_read_burst = 10000\n")
    add_user(server, "alice@example.com")
    client = Client(server)
    client.login("alice@example.com")
    assert client.transport.producerState == "producing"
    client.send("<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>" + " " * 12000)
    assert client.transport.producerState == "paused"
    assert client.take()[0]["type"] == "result"  # what was read is still processed
    server.clock.advance(3)
    assert client.transport.producerState == "producing"


def test_stanzas_before_auth_are_not_authorized(server):
    client = Client(server)
    client.starttls()
    client.open()
    client.send("<message to='bob@example.com'><body>hi</body></message>")
    assert stream_error(client) == "not-authorized"


def test_stanzas_before_bind_are_not_authorized(server):
    client = Client(server)
    client.starttls()
    client.open()
    client.auth_plain("alice@example.com")
    features = client.open()
    assert {e.name for e in features.elements()} >= {"bind", "session"}
    client.send("<message to='bob@example.com'><body>hi</body></message>")
    assert stream_error(client) == "not-authorized"


def test_auth_timeout(server):
    client = Client(server)
    client.open()
    server.clock.advance(server.config.c2s.auth_timeout + 1)
    assert stream_error(client) == "connection-timeout"


def test_auth_timeout_cancelled_by_login(server):
    client = Client(server)
    client.login("alice@example.com")
    server.clock.advance(server.config.c2s.auth_timeout + 1)
    assert not client.closed


def test_generated_resource_and_conflict(server):
    first = Client(server)
    jid = first.login("alice@example.com", resource="")
    assert jid.startswith("alice@example.com/") and len(jid) > len("alice@example.com/")
    a = Client(server)
    a.login("alice@example.com", "phone")
    b = Client(server)
    b.login("alice@example.com", "phone")
    assert error_condition(a.take()[-1]) == "conflict"
    assert a.closed and not b.closed
    assert server.sessions.count() == 2


def test_max_resources(tmp_path):
    server = make_server(tmp_path, extra="[c2s]\nmax_resources = 1\n")
    add_user(server, "alice@example.com")
    Client(server).login("alice@example.com", "one")
    client = Client(server)
    client.starttls()
    client.open()
    client.auth_plain("alice@example.com")
    client.open()
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>two</resource></bind></iq>")
    assert error_condition(client.take()[0]) == "resource-constraint"


def test_session_iq_is_a_no_op(server):
    client = Client(server)
    client.login("alice@example.com")
    client.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    [result] = client.take()
    assert result["type"] == "result" and result["id"] == "s"


def test_disconnect_unbinds(server):
    client = Client(server)
    client.login("alice@example.com")
    client.stream.connectionLost(None)
    assert server.sessions.count() == 0


def test_closing_the_stream(server):
    client = Client(server)
    client.login("alice@example.com")
    client.send("</stream:stream>")
    assert client.ended and client.closed


@pytest.mark.parametrize("payload,condition", [
    ("<!DOCTYPE x [<!ENTITY a 'b'>]>", "restricted-xml"),
    ("<?evil x?>", "restricted-xml"),
    ("<!-- comment -->", "restricted-xml"),
    ("<message><body>&lol;</body></message>", "not-well-formed"),
    ("<message></iq>", "not-well-formed"),
    ("<message><body>" + "x" * 300000 + "</body></message>", "policy-violation"),
])
def test_bad_xml_after_login(server, payload, condition):
    client = Client(server)
    client.login("alice@example.com")
    other = Client(server)
    other.login("bob@example.com")
    client.send(payload)
    assert stream_error(client) == condition
    other.send("<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert other.take()[0]["type"] == "result"


def test_doctype_before_the_header(server):
    client = Client(server)
    client.send("<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY lol 'lol'>]>")
    assert stream_error(client) == "restricted-xml"


# Log lines for operators (grep, fail2ban)


def test_peer_text():
    assert peer_text(IPv4Address("TCP", "127.0.0.1", 57712)) == "127.0.0.1:57712"
    assert peer_text(IPv6Address("TCP", "::1", 57712)) == "[::1]:57712"
    assert peer_text(UNIXAddress(None)) == "local"


def log_lines(events):
    return [formatEvent(event) for event in events]


def test_connection_log_lines_write_the_address(server):
    with capturedLogs() as events:
        client = Client(server)
        client.stream.connectionLost(Failure(ConnectionDone()))
    assert log_lines(events) == ["c2s connection from 192.168.1.1:54321",
                                 "c2s connection from 192.168.1.1:54321 closed"]


@pytest.mark.parametrize("mechanism, token", [
    ("PLAIN", base64.b64encode(b"\0alice\0wrong").decode()),
    ("SCRAM-SHA-1", base64.b64encode(b"n,,n=alice,r=abc").decode()),
])
def test_authentication_failure_log_names_the_account(server, mechanism, token):
    client = Client(server)
    client.starttls()
    client.open()
    with capturedLogs() as events:
        client.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{token}</auth>")
        if mechanism.startswith("SCRAM"):
            assert client.take()[0].name == "challenge"
            final = base64.b64encode(b"c=biws,r=abc-wrong,p=" + base64.b64encode(b"x" * 20))
            client.send(f"<response xmlns='{NS_SASL}'>{final.decode()}</response>")
    assert client.take()[0].name == "failure"
    assert "c2s authentication failure for alice@example.com from 192.168.1.1:54321: " \
           "not-authorized" in log_lines(events)


def test_authentication_failure_before_an_account_is_named(server):
    client = Client(server)
    client.starttls()
    client.open()
    with capturedLogs() as events:
        client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>not base64!</auth>")
    assert "c2s authentication failure from 192.168.1.1:54321: incorrect-encoding" \
        in log_lines(events)


def test_tls_failure_log_gives_the_openssl_reason(server):
    connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    connection.set_accept_state()
    connection.bio_write(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(SSL.Error) as error:
        connection.do_handshake()
    client = Client(server, direct_tls=True)
    with capturedLogs() as events:
        client.stream.connectionLost(Failure(error.value))
    assert log_lines(events) == ["c2s TLS failure with 192.168.1.1:54321: http request",
                                 "c2s connection from 192.168.1.1:54321 closed"]


# TLS handshakes and closes that stall (the peer stops answering)


def test_direct_tls_without_handshake_is_aborted(server):
    client = Client(server)  # a plain connection, for contrast
    stalled = TLSStalled(server, direct_tls=True)
    server.clock.advance(server.config.c2s.handshake_timeout - 0.1)
    assert not stalled.transport.disconnecting
    server.clock.advance(0.1)
    assert stalled.transport.disconnected  # abortConnection
    assert not client.transport.disconnecting


def test_handshake_after_proceed_is_timed(server):
    client = Client(server)
    client.open()
    client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert client.take()[0].name == "proceed"
    server.clock.advance(server.config.c2s.handshake_timeout)
    assert client.transport.disconnected


def test_finished_handshake_is_not_aborted(server):
    client = Client(server, direct_tls=True)  # the harness completes the handshake
    client.open()
    server.clock.advance(server.config.c2s.handshake_timeout + 1)
    assert not client.closed


def test_close_that_cannot_finish_is_aborted(server):
    client = Client(server)
    client.open()
    server.clock.advance(server.config.c2s.auth_timeout)
    assert stream_error(client) == "connection-timeout"
    assert not client.transport.disconnected  # an orderly close first
    server.clock.advance(5.0)
    assert client.transport.disconnected


def test_close_that_finishes_leaves_no_timer(server):
    before = server.clock.getDelayedCalls()  # the server's own (archive retention)
    client = Client(server)
    client.open()
    client.send("</stream:stream>")
    client.lose()
    assert server.clock.getDelayedCalls() == before


class TLSStalled:
    """A connection whose TLS handshake never completes."""

    def __init__(self, server, direct_tls):
        self.transport = TLSStringTransport()
        self.stream = ClientStream(server, direct_tls=direct_tls)
        self.stream.makeConnection(self.transport)


# Nothing received is lost when the stream ends (RFC 6120 §4.4)


def offline_bodies(server, user="bob"):
    return [m.split("<body>")[1].split("</body>")[0]
            for m in server.sql.take_offline(user, "example.com")]


def sent_then_held(tmp_path, count=5):
    server = pausable_server(tmp_path)
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    alice = Client(server)
    alice.login("alice@example.com")
    server.runner.pause()
    alice.send("".join(f"<message to='bob@example.com' type='chat'><body>{n}</body></message>"
                       for n in range(count)))
    return server, alice


def test_messages_before_the_closing_tag_are_all_stored(tmp_path):
    server, alice = sent_then_held(tmp_path)
    alice.send("</stream:stream>")
    assert not alice.closed  # our closing tag waits for what came before it
    assert server.sessions.count() == 1
    server.runner.flush()
    assert offline_bodies(server) == ["0", "1", "2", "3", "4"]
    assert alice.transport.value().endswith(b"</stream:stream>")
    alice.lose()  # the transport closed
    assert server.sessions.count() == 0


def test_messages_before_a_dropped_connection_are_all_stored(tmp_path):
    server, alice = sent_then_held(tmp_path)
    [session] = server.sessions.all()
    alice.lose()
    # Out of the directory at once; unbound once its stanzas are routed.
    assert server.sessions.count() == 0 and not session.unbound
    server.runner.flush()
    assert offline_bodies(server) == ["0", "1", "2", "3", "4"]
    assert session.unbound


def test_messages_before_a_stream_error_are_all_stored(tmp_path):
    server, alice = sent_then_held(tmp_path)
    alice.send("<iq type='get' id='x'><bad")  # not well-formed
    alice.send("<<")
    assert alice.closed
    alice.lose()
    server.runner.flush()
    assert offline_bodies(server) == ["0", "1", "2", "3", "4"]
    assert server.sessions.count() == 0


def test_a_session_the_server_ends_leaves_at_once(tmp_path):
    """A kick or a ping timeout: messages routed to the session before its
    connection is gone are stored, and a presence it sent before the end
    but processed after it (behind a storage read) does not make it
    available again (which would hand it the stored messages)."""
    server = pausable_server(tmp_path)
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    alice, bob = Client(server), Client(server)
    alice.login("alice@example.com")
    alice.send("<message to='bob@example.com' type='chat'><body>0</body></message>")
    bob.login("bob@example.com")
    server.runner.pause()
    bob.send("<iq type='get' id='v'><vCard xmlns='vcard-temp'/></iq><presence/>")
    [session] = server.sessions.resources(bob.stream.user)
    session.close("connection-timeout", "no answer to a ping")
    assert server.sessions.count() == 1 and bob.closed
    alice.send("<message to='bob@example.com/res' type='chat'><body>1</body></message>")
    server.runner.flush()
    assert not session.available and session.unbound
    assert offline_bodies(server) == ["0", "1"]


# Output to a client that does not read is bounded


def not_reading(tmp_path):
    server = make_server(tmp_path, extra="[c2s]\nmax_output_buffer = 65536\n")
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    alice, bob = Client(server), Client(server)
    alice.login("alice@example.com")
    bob.login("bob@example.com")
    bob.transport.producer.pauseProducing()  # its transport's buffer is full
    return server, alice, bob


def kilobyte_messages(count):
    return "".join(f"<message to='bob@example.com/res' type='chat'><body>{'x' * 1000}</body>"
                   "</message>" for _ in range(count))


def test_a_client_that_does_not_read_is_cut_off(tmp_path):
    server, alice, bob = not_reading(tmp_path)
    for _ in range(70):
        alice.send(kilobyte_messages(1))
        alice.transport.producerState = "producing"  # not held, for this test
    assert bob.closed
    assert len(bob.transport.value()) < 1000  # what waited is dropped: the error only
    # Its session ended at once: what comes for it before the connection
    # is gone is stored, not written to a closed stream.
    assert server.sessions.count() == 1
    alice.send("<message to='bob@example.com/res' type='chat'><body>later</body></message>")
    assert offline_bodies(server)[-1] == "later"
    bob.lose()
    assert server.sessions.count() == 1 and not alice.closed


def test_writers_are_held_while_the_reader_is_backlogged(tmp_path):
    server, alice, bob = not_reading(tmp_path)
    alice.send(kilobyte_messages(10))
    assert alice.transport.producerState == "producing"
    alice.send(kilobyte_messages(10))  # past a quarter of the limit
    assert alice.transport.producerState == "paused"
    bob.transport.producer.resumeProducing()  # bob reads
    assert alice.transport.producerState == "producing"
    assert not bob.closed


def test_writers_are_released_when_the_reader_leaves(tmp_path):
    server, alice, bob = not_reading(tmp_path)
    alice.send(kilobyte_messages(20))
    assert alice.transport.producerState == "paused"
    bob.lose()
    assert alice.transport.producerState == "producing"


def test_writers_are_released_after_a_while(tmp_path):
    server, alice, bob = not_reading(tmp_path)
    alice.send(kilobyte_messages(20))
    assert alice.transport.producerState == "paused"
    server.clock.advance(MAX_HOLD)
    assert alice.transport.producerState == "producing"


# A stanza rate per connection


def test_stanzas_past_the_burst_pause_reading_until_the_bucket_refills(tmp_path):
    server = make_server(tmp_path, extra="[limits]\nc2s_stanza_rate = 10\nc2s_stanza_burst = 20\n")
    add_user(server, "alice@example.com")
    alice = Client(server)
    alice.login("alice@example.com")  # auth and bind: 2 elements
    alice.send("<presence type='unavailable'/>" * 18)
    assert alice.transport.producerState == "producing"
    alice.send("<presence type='unavailable'/>")
    assert alice.transport.producerState == "paused"
    server.clock.advance(0.1)
    assert alice.transport.producerState == "producing"
    assert not alice.closed
