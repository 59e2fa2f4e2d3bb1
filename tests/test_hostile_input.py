"""Hostile input on client streams: RFC 6120 §4.9 (stream errors), §11.1
(restricted XML), §11.6 (UTF-8 only), §13.12 (resource exhaustion).

Every file of ``tests/fuzz/corpus/`` is sent at the negotiation stages its
entry in :data:`CASES` names, whole and one byte per read, and must get the
outcome listed there.  After each, the session directory must hold only
live sessions, another client must still be served, and a new login must
work.  The other tests check that floods are refused before they take much
memory, that elements sent during a pending SASL step are bounded and never
outlive the stream restart, that a valid session works one byte per read, and
that a stanza or negotiation step split at any byte boundary arrives intact.
"""

import base64
import tracemalloc

import pytest

from tests.fuzz import CORPUS, reach
from tests.harness import Client, add_user, error_condition, make_server
from tests.paused_storage import pausable_server
from xmppd.core.c2s import MAX_BACKLOG
from xmppd.core.xmlstream import MAX_DEPTH, MAX_ELEMENTS, NS_STREAMS, StreamParser

LIMIT = 10000  # the smallest c2s.max_stanza_size: keeps the corpus small
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
PING = "<iq type='get' id='ping' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>"
PLAIN_ALICE = base64.b64encode(b"\0alice\0secret").decode()


def stream(condition):
    return ("stream", condition)


def stanza(condition):
    return ("stanza", condition)


def delivered(check=None):
    return ("delivered", check)


CLOSED = ("closed", None)
R, NWF, PV, NA = (stream(c) for c in (
    "restricted-xml", "not-well-formed", "policy-violation", "not-authorized"))


def depth(element):
    children = list(element.elements())
    return 1 + max((depth(c) for c in children), default=0)


def check_depth_at_limit(message):
    assert depth(message) == MAX_DEPTH


def check_many_attributes(message):
    assert {f"a{i}" for i in range(1000)} <= set(message.attributes)


def check_many_namespaces(message):
    assert [c.uri for c in message.elements()] == [f"urn:example:{i}" for i in range(300)]


def check_prefix_collision(message):
    """The prefixes reused with other namespaces are not written back."""
    _, c = message.elements()
    d, e = c.elements()
    assert d.attributes == {("urn:example:x", "a"): "1", ("urn:example:y", "a"): "2"}
    assert e.uri == "urn:example:x"


def check_stream_prefix_rebound(message):
    [x] = message.elements()
    assert x.uri == "urn:example:evil" and next(x.elements()).uri == "urn:example:evil"


def check_cdata(message):
    assert str(message.body) == "<not-an-element/> & "


def check_after_flood(message):
    assert str(message.body) == "after the flood"


# corpus file -> {stage (see tests.fuzz.reach): expected outcome}
CASES = {
    "billion_laughs.xml": {"connected": R, "bound": R},
    "quadratic_blowup.xml": {"connected": R, "bound": R},
    "xxe_file.xml": {"connected": R, "tls": R, "bound": R},
    "xxe_parameter_entity.xml": {"connected": R, "bound": R},
    "external_dtd.xml": {"connected": R, "bound": R},
    "dtd_declarations.xml": {"connected": R, "bound": R},
    "processing_instruction.xml": {"connected": R, "plain": R, "tls": R, "auth": R, "bound": R},
    "comment.xml": {"connected": R, "plain": R, "bound": R},
    "comment_in_stanza.xml": {"bound": R},
    "pi_in_stanza.xml": {"bound": R},
    "undefined_entity.xml": {"bound": NWF},
    "deep_nesting.xml": {"tls": PV, "bound": PV},
    "deep_nesting_at_limit.xml": {"bound": delivered(check_depth_at_limit)},
    "huge_attribute_value.xml": {"plain": PV, "tls": PV, "bound": PV},
    "huge_stream_header.xml": {"connected": PV},
    "long_element_name.xml": {"bound": PV},
    "many_attributes.xml": {"bound": delivered(check_many_attributes)},
    "too_many_attributes.xml": {"bound": PV},
    "many_namespace_prefixes.xml": {"tls": PV, "bound": PV},
    "many_default_namespaces.xml": {"bound": delivered(check_many_namespaces)},
    "prefix_collision.xml": {"bound": delivered(check_prefix_collision)},
    "stream_prefix_rebound.xml": {"bound": delivered(check_stream_prefix_rebound)},
    "invalid_utf8.xml": {"plain": NWF, "bound": NWF},
    "overlong_utf8.xml": {"bound": NWF},
    "utf8_surrogate.xml": {"bound": NWF},
    "truncated_utf8.xml": {"bound": NWF},
    "nul_byte.xml": {"plain": NWF, "tls": NWF, "bound": NWF},
    "nul_char_reference.xml": {"bound": NWF},
    "control_character.xml": {"bound": NWF},
    "utf16_stream.xml": {"connected": stream("unsupported-encoding")},
    "nested_stream_header.xml": {stage: stream("bad-format")
                                 for stage in ("plain", "tls", "auth", "bound")},
    "xml_declaration_mid_stream.xml": {"bound": NWF},
    "mismatched_tags.xml": {"bound": NWF},
    "unbound_prefix.xml": {"bound": NWF},
    "duplicate_attribute.xml": {"bound": NWF},
    "reserved_prefix.xml": {"bound": NWF},
    "unknown_top_level_element.xml": {"plain": PV, "tls": NA, "auth": NA,
                                      "bound": stream("unsupported-stanza-type")},
    "stanza_in_server_namespace.xml": {"bound": stream("unsupported-stanza-type")},
    "message_before_auth.xml": {"plain": PV, "tls": NA, "auth": NA, "bound": delivered()},
    "iq_before_auth.xml": {"plain": PV, "tls": NA, "auth": NA},
    "bind_before_auth.xml": {"plain": PV, "tls": NA},
    "sasl_before_tls.xml": {"plain": PV, "bound": stream("unsupported-stanza-type")},
    "starttls_again.xml": {"tls": NA, "bound": stream("unsupported-stanza-type")},
    "iq_without_id.xml": {"bound": stanza("bad-request")},
    "iq_bad_type.xml": {"bound": stanza("bad-request")},
    "iq_two_payloads.xml": {"bound": stanza("bad-request")},
    "malformed_jid.xml": {"bound": stanza("jid-malformed")},
    "whitespace_flood.xml": {"bound": delivered(check_after_flood)},
    "cdata_section.xml": {"bound": delivered(check_cdata)},
    "stream_end_then_garbage.xml": {"bound": CLOSED},
}


@pytest.fixture
def server(tmp_path):
    server = pausable_server(tmp_path, extra=f"[c2s]\nmax_stanza_size = {LIMIT}\n")
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    return server


@pytest.fixture
def default_server(tmp_path):
    """A server with the default limits (stanzas up to 256 KiB)."""
    server = make_server(tmp_path)
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    return server


def feed(client, data, read_size=None):
    """Send ``data`` in reads of ``read_size`` bytes (all at once if None)."""
    step = read_size or len(data)
    for start in range(0, len(data), step):
        client.stream.dataReceived(data[start:start + step])
    return client.take()


def stream_errors(received):
    return [e for e in received if e.uri == NS_STREAMS and e.name == "error"]


def assert_outcome(expected, client, bob, received):
    kind, detail = expected
    if kind == "stream":
        errors = stream_errors(received)
        assert errors, f"no stream error in {[e.toXml() for e in received]}"
        assert error_condition(errors[-1]) == detail
        assert client.closed and client.ended
    elif kind == "closed":
        assert not stream_errors(received)
        assert client.closed and client.ended
    elif kind == "stanza":
        assert not client.closed
        reply = received[-1]
        assert reply.getAttribute("type") == "error" and error_condition(reply) == detail
    else:
        assert not client.closed and not stream_errors(received)
        [message] = bob.take()
        assert message.name == "message"
        assert message["from"] == "alice@example.com/hostile"
        if detail is not None:
            detail(message)


def assert_server_healthy(server, bob, *others):
    """Closed streams leave the directory, and the server still serves."""
    for client in others:
        if client.closed:
            client.stream.connectionLost(None)
            assert client.stream not in server.streams
    for session in server.sessions.all():
        assert session.carrier.session is session
        assert not session.carrier.transport.disconnecting
    bob.send(PING)
    [pong] = bob.take()
    assert pong["type"] == "result" and pong["id"] == "ping"
    newcomer = Client(server)
    jid = newcomer.login("alice@example.com", "newcomer")
    newcomer.send("<message to='bob@example.com/res'><body>still here</body></message>")
    [message] = bob.take()
    assert message["from"] == jid and str(message.body) == "still here"


def test_every_corpus_file_has_a_case():
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(CASES)


@pytest.mark.parametrize("read_size", [None, 1], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name,stage", [(name, stage) for name, stages in CASES.items()
                                        for stage in stages])
def test_corpus(server, name, stage, read_size):
    bob = Client(server)
    bob.login("bob@example.com")
    alice = Client(server)
    reach(alice, stage)
    received = feed(alice, (CORPUS / name).read_bytes(), read_size)
    assert_outcome(CASES[name][stage], alice, bob, received)
    assert_server_healthy(server, bob, alice)


# Floods: the connection is refused before the server holds much of it.

CHUNK = 16384


def flood(client, prefix, filler, total):
    """Send ``prefix`` then ``filler`` in CHUNK-sized reads until ``total``
    bytes or until the stream closes; return the bytes accepted and the
    peak of memory allocated meanwhile."""
    block = filler * (CHUNK // len(filler))
    tracemalloc.start()
    try:
        client.stream.dataReceived(prefix)
        sent = len(prefix)
        while sent < total and not client.closed:
            client.stream.dataReceived(block)
            sent += len(block)
        return sent, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


HEADER_START = (b"<stream:stream xmlns='jabber:client' "
                b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'")


# The peak memory allowed, in multiples of the stanza limit: expat's buffer
# grows by doubling; a tree of tiny elements takes some 80 times its bytes.
@pytest.mark.parametrize("stage,prefix,filler,factor", [
    ("connected", b"", b" ", 4),
    ("connected", HEADER_START + b" x='", b"A", 4),
    ("connected", HEADER_START, b" a='' b=''", 4),
    ("plain", b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' x='", b"A", 4),
    ("bound", b"<message to='bob@example.com/res'><body>", b"text ", 4),
    ("bound", b"<message to='bob@example.com/res'>", b" \n", 4),
    ("bound", b"<message to='bob@example.com/res'>", b"<x/>", 100),
    ("bound", b"<message to='bob@example.com/res' a='", b"&amp;", 4),
    ("bound", b"<", b"n", 4),
], ids=["prolog-whitespace", "header-attribute", "header-attributes", "starttls-attribute",
        "text", "whitespace-in-stanza", "children", "entities-in-attribute", "element-name"])
def test_flood_is_refused_at_the_stanza_limit(default_server, stage, prefix, filler, factor):
    limit = default_server.config.c2s.max_stanza_size
    bob = Client(default_server)
    bob.login("bob@example.com")
    alice = Client(default_server)
    reach(alice, stage)
    sent, peak = flood(alice, prefix, filler, 40 * limit)
    assert alice.closed and sent <= limit + CHUNK
    assert error_condition(stream_errors(alice.take())[-1]) == "policy-violation"
    assert peak < factor * limit
    assert_server_healthy(default_server, bob, alice)


@pytest.mark.parametrize("filler", [b" ", b"\r\n\t ", b"text at the top level "])
def test_flood_between_stanzas_is_not_held(default_server, filler):
    """Character data between stanzas is dropped as it comes: it counts
    against no stanza and is not kept (RFC 6120 §4.6.1 whitespace pings)."""
    limit = default_server.config.c2s.max_stanza_size
    bob = Client(default_server)
    bob.login("bob@example.com")
    alice = Client(default_server)
    reach(alice, "bound")
    sent, peak = flood(alice, b"", filler, 40 * limit)
    assert not alice.closed and sent >= 40 * limit
    assert peak < 4 * limit
    alice.send("<message to='bob@example.com/res'><body>after the flood</body></message>")
    assert str(bob.take()[0].body) == "after the flood"
    assert_server_healthy(default_server, bob, alice)


@pytest.mark.parametrize("read_size", [None, 4096])
def test_hundred_thousand_nested_elements(default_server, read_size):
    """Expat nests without limit, domish's serialiser recurses: a stanza
    deeper than MAX_DEPTH is a policy violation, whatever its size."""
    bob = Client(default_server)
    bob.login("bob@example.com")
    alice = Client(default_server)
    reach(alice, "bound")
    data = b"<message to='bob@example.com/res'>" + b"<a>" * 100000 + b"</a>" * 100000 + b"</message>"
    tracemalloc.start()
    try:
        received = feed(alice, data, read_size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error_condition(stream_errors(received)[-1]) == "policy-violation"
    assert peak < 2 * len(data)
    assert bob.take() == []
    assert_server_healthy(default_server, bob, alice)


# Elements that arrive while a SASL step waits for the database.

def start_plain_auth(server, password="secret"):
    client = Client(server)
    reach(client, "tls")
    token = base64.b64encode(f"\0alice\0{password}".encode()).decode()
    client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
    return client


def test_backlog_while_authenticating_is_bounded(server):
    bob = Client(server)
    bob.login("bob@example.com")
    server.runner.pause()  # the credential lookup waits
    client = start_plain_auth(server)
    for _ in range(MAX_BACKLOG):
        client.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    assert not client.closed
    client.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    assert client.closed
    assert error_condition(stream_errors(client.take())[-1]) == "policy-violation"
    server.runner.resume()
    assert_server_healthy(server, bob, client)


def test_elements_sent_before_sasl_success_are_discarded(server):
    """RFC 6120 §6.4.6: the client restarts the stream after <success/>;
    a bind pipelined before it belongs to the old stream."""
    server.runner.pause()  # the credential lookup waits
    client = start_plain_auth(server)
    client.send("<iq type='set' id='early'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>early</resource></bind></iq>")
    server.runner.resume()
    assert [e.name for e in client.take()] == ["success"]
    assert server.sessions.count() == 0
    client.open()
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>late</resource></bind></iq>")
    assert client.take()[0]["type"] == "result"
    assert [s.jid.resource for s in server.sessions.all()] == ["late"]


def test_stream_error_while_replaying_the_backlog(server):
    """A non-SASL element waiting behind a failed SASL step closes the
    stream with not-authorized."""
    server.runner.pause()  # the credential lookup waits
    client = start_plain_auth(server, password="wrong")
    client.send("<message to='bob@example.com/res'><body>hi</body></message>")
    server.runner.resume()
    received = client.take()
    assert received[0].name == "failure"
    assert error_condition(stream_errors(received)[-1]) == "not-authorized"
    assert client.closed


# Reads may split the stream anywhere.

SESSION = [
    (b"<?xml version='1.0'?>" + HEADER_START + b">"
     b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", ["proceed"]),
    (HEADER_START + b"><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
     + PLAIN_ALICE.encode() + b"</auth>", ["success"]),
    (HEADER_START + b">\n<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
     b"<resource>bytes</resource></bind></iq>\n " + PING.encode()
     + "<message to='bob@example.com/res'><body>é 😀 &amp;</body></message>".encode()
     + b"</stream:stream>", ["iq", "iq"]),
]


def parse_server_output(data):
    """The features and elements of one server stream, and whether it ended."""
    elements, ended = [], []
    parser = StreamParser(lambda header: None, elements.append, lambda: ended.append(True), 10**7)
    parser.feed(data)
    return elements, bool(ended)


def test_whole_session_one_byte_per_read(server):
    bob = Client(server)
    bob.login("bob@example.com")
    client = Client(server)
    for data, expected in SESSION:
        for i in range(len(data)):
            client.stream.dataReceived(data[i:i + 1])
        elements, ended = parse_server_output(client.transport.value())
        client.transport.clear()
        assert [e.name for e in elements] == ["features"] + expected
    assert ended and client.closed
    assert [e["type"] for e in elements[1:]] == ["result", "result"]
    assert str(bob.take()[0].body) == "é 😀 &"


STANZA = ("<message to='bob@example.com/res' type='chat' xml:lang='fr' id='s&amp;1'"
          " xmlns:e='urn:example:e' e:note='n&lt;1'>"
          "<body>déjà vu — 😀 &lt;&amp;&gt; <![CDATA[<x>]]></body>"
          "<e:extra xmlns:f='urn:example:f'><f:g a='&quot;'/></e:extra></message>").encode()


def without_stanza_id(message):
    """The message without the archive's stanza-id (XEP-0359), which differs
    for each."""
    message.children = [child for child in message.children
                        if getattr(child, "name", None) != "stanza-id"]
    return message


def test_stanza_split_at_every_boundary(server):
    bob = Client(server)
    bob.login("bob@example.com")
    alice = Client(server)
    reach(alice, "bound")
    alice.send(STANZA)
    expected = without_stanza_id(bob.take()[0]).toXml()
    for i in range(1, len(STANZA)):
        alice.send(STANZA[:i])
        alice.send(STANZA[i:])
        [message] = bob.take()
        assert without_stanza_id(message).toXml() == expected, f"split at {i}"
        assert str(message.body) == "déjà vu — 😀 <&> <x>", f"split at {i}"
    assert not alice.closed


@pytest.mark.parametrize("data", [SESSION[0][0], SESSION[1][0]], ids=["header", "auth"])
def test_negotiation_split_at_every_boundary(server, data):
    for i in range(1, len(data)):
        client = Client(server)
        if data is SESSION[1][0]:
            client.starttls()
        client.stream.dataReceived(data[:i])
        client.stream.dataReceived(data[i:])
        elements, _ = parse_server_output(client.transport.value())
        assert [e.name for e in elements][-1] in ("proceed", "success"), f"split at {i}"
        client.stream.connectionLost(None)


def test_element_count_is_bounded(tmp_path):
    """A stanza of many tiny elements is refused before it eats memory."""
    server = make_server(tmp_path, extra="[c2s]\nmax_stanza_size = 1000000\n")
    add_user(server, "alice@example.com")
    client = Client(server)
    client.login("alice@example.com")
    client.send("<message to='example.com'>" + "<x/>" * (MAX_ELEMENTS + 1) + "</message>")
    assert client.closed
    assert error_condition(client.take()[-1]) == "policy-violation"
