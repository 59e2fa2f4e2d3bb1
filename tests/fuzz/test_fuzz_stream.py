"""Fuzzing client streams (RFC 6120 §4.9 stream errors, §11.1 restricted
XML, §13.12 resource exhaustion).

Arbitrary bytes, and XMPP streams assembled from known pieces (headers,
negotiation steps, stanzas, generated elements, the hostile corpus) then
mutated, are fed in reads of random sizes to a client stream in memory,
before TLS, after TLS or after resource binding.  Properties:

- ``dataReceived`` never raises, and nothing is logged as a failure;
- all the server writes is well-formed XML, stream by stream (one per
  restart); a stream ends only after a stream error or the client's own end
  of stream, and a stream error always ends it;
- once the connection is lost, only live sessions stay in the directory,
  no connection stays counted and no timer stays scheduled;
- another client is still served, and all it received is well-formed.

``XMPPD_FUZZ_EXAMPLES`` sets the number of examples of each test (default
300); they are derandomized, so that a run repeats the last one.
``bench/fuzz_stream.py`` runs the same target for long, at random.
"""

import os
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.words.xish import domish

from tests.fuzz import CORPUS, reach
from tests.harness import Client, add_user, error_condition, make_server
from xmppd.core.xmlstream import NS_STREAMS

EXAMPLES = int(os.environ.get("XMPPD_FUZZ_EXAMPLES", "300"))
STAGES = ("connected", "tls", "bound")
CONFIG = """
[c2s]
max_stanza_size = 10000
[limits]
auth_failure_delay = 0
auth_ban_after = 1000000000
"""

# RFC 6120 §4.9.3
STREAM_CONDITIONS = frozenset({
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
    "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
    "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed",
    "policy-violation", "remote-connection-failed", "reset", "resource-constraint",
    "restricted-xml", "see-other-host", "system-shutdown", "undefined-condition",
    "unsupported-encoding", "unsupported-feature", "unsupported-stanza-type",
    "unsupported-version"})

SERVER_HEADER = b"<?xml version='1.0'?>"
CONTINUED = (b"<stream:stream xmlns='jabber:client' "
             b"xmlns:stream='http://etherx.jabber.org/streams'>")


class FuzzTarget:
    """One server for all examples (building one takes longer than an
    example); every example uses new clients and closes them."""

    def __init__(self, directory):
        self.server = make_server(Path(directory), extra=CONFIG)
        add_user(self.server, "alice@example.com")
        add_user(self.server, "bob@example.com")
        self.timers = len(self.server.clock.getDelayedCalls())
        self.examples = 0

    def run(self, stage, data, read_sizes):
        """Feed ``data`` at ``stage`` in reads of ``read_sizes`` (repeated)
        and check every property (raises when one does not hold)."""
        self.examples += 1
        failures = []

        def observe(event):
            if "log_failure" in event or event.get("log_level") in (LogLevel.error,
                                                                    LogLevel.critical):
                failures.append(event)

        globalLogPublisher.addObserver(observe)
        try:
            self._run(stage, data, read_sizes)
        finally:
            globalLogPublisher.removeObserver(observe)
        assert not failures, "logged: " + "\n".join(
            formatEvent(e) + str(e.get("log_failure", "")) for e in failures)

    def _run(self, stage, data, read_sizes):
        server = self.server
        peer = Client(server)
        peer.login("bob@example.com", "res")
        client = Client(server)
        reach(client, stage, "fuzz")
        errors = []
        stream_error = client.stream.stream_error

        def record(condition, text=None):
            if not client.transport.disconnecting:
                errors.append(condition)
            stream_error(condition, text)

        client.stream.stream_error = record
        for read in reads(data, read_sizes):
            client.stream.dataReceived(read)
        check_output(client.transport.value(), stage != "connected", errors,
                     client.transport.disconnecting)

        client.stream.connectionLost(None)
        assert client.stream not in server.streams
        assert [s.carrier for s in server.sessions.all()] == [peer.stream]
        assert server.connections.total == 1
        peer.send("<iq type='get' id='ping' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
        answers = [e for e in peer.take() if e.getAttribute("id") == "ping"]
        assert [e["type"] for e in answers] == ["result"] and not peer.closed
        peer.stream.connectionLost(None)
        assert server.sessions.count() == 0 and server.connections.total == 0
        assert not server.streams
        assert len(server.clock.getDelayedCalls()) <= self.timers


def reads(data, sizes):
    """``data`` cut in pieces of the given sizes, repeated."""
    start, i = 0, 0
    while start < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        yield data[start:start + size]
        start += size
        i += 1


def check_output(output, continued, errors, closed):
    """What the server wrote: well-formed streams, the last one ended by a
    stream error (or the client's end of stream) exactly when closed."""
    pieces = output.split(SERVER_HEADER)
    assert continued or pieces[0] == b"", f"data before the stream header: {output[:200]!r}"
    streams = [CONTINUED + pieces[0]] if continued else []
    streams += [SERVER_HEADER + piece for piece in pieces[1:]]
    parsed = [read_stream(s) for s in streams]
    for elements, ended in parsed[:-1]:
        assert not ended and not stream_errors(elements)
    elements, ended = parsed[-1] if parsed else ([], False)
    if errors:
        assert closed and ended and len(errors) == 1
        assert errors[0] in STREAM_CONDITIONS
        assert stream_errors(elements) == elements[-1:]
        assert error_condition(elements[-1]) == errors[0]
    else:
        assert not stream_errors(elements)
        assert ended == closed


def read_stream(data):
    """Parse one stream the server wrote, with domish's own expat stream
    (independent of xmppd's parser); return its elements and whether it
    ended.  Restricted XML would be accepted by it, so none may appear."""
    assert b"<!" not in data and b"<?" not in data[len(SERVER_HEADER):]
    elements, ended = [], []
    parser = domish.elementStream()
    parser.DocumentStartEvent = lambda root: None
    parser.ElementEvent = elements.append
    parser.DocumentEndEvent = lambda: ended.append(True)
    parser.parse(data)
    return elements, bool(ended)


def stream_errors(elements):
    return [e for e in elements if e.uri == NS_STREAMS and e.name == "error"]


# Inputs

HEADER = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
          " to='example.com' version='1.0'>")
NEGOTIATION = [
    HEADER, "<?xml version='1.0'?>", "</stream:stream>",
    "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
    "biwsbj1hbGljZSxyPWZ5a28rZDJsYmJGZ09OUnY5cWt4ZGF3TA==</auth>",
    "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</response>",
    "<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    "<resource>fuzz</resource></bind></iq>",
]
STANZAS = [
    " ", "\n",
    "<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
    "<presence/>", "<presence type='unavailable'/>",
    "<presence to='bob@example.com' type='subscribe'/>",
    "<message to='bob@example.com/res' type='chat'><body>hi</body></message>",
    "<message to='bob@example.com'><body>hi</body></message>",
    "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    "<iq type='set' id='rs'><query xmlns='jabber:iq:roster'>"
    "<item jid='bob@example.com' name='Bob'><group>g</group></item></query></iq>",
    "<iq type='get' id='d' to='example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    "<iq type='get' id='v' to='example.com'><query xmlns='jabber:iq:version'/></iq>",
    "<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<iq type='get' id='vc' to='bob@example.com'><vCard xmlns='vcard-temp'/></iq>",
    "<iq type='set' id='vs'><vCard xmlns='vcard-temp'><FN>A</FN></vCard></iq>",
    "<iq type='set' id='ps'><query xmlns='jabber:iq:private'><x xmlns='urn:example:x'/></query></iq>",
    "<iq type='set' id='bl'><block xmlns='urn:xmpp:blocking'><item jid='bob@example.com'/></block></iq>",
    "<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    "<iq type='result' id='x' to='bob@example.com/res'/>",
]
NAMES = ["message", "presence", "iq", "body", "subject", "thread", "show", "status", "priority",
         "query", "item", "group", "x", "error", "bind", "resource", "session", "ping", "vCard",
         "FN", "storage", "block", "unblock", "blocklist", "enable", "sent", "forwarded",
         "auth", "response", "starttls", "stream", "features", "c", "delay", "feature"]
NAMESPACES = [None, "", "jabber:client", "jabber:server", "jabber:iq:roster", "urn:xmpp:ping",
              "http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items",
              "jabber:iq:version", "urn:xmpp:time", "jabber:iq:last", "vcard-temp",
              "jabber:iq:private", "urn:xmpp:blocking", "urn:xmpp:carbons:2",
              "urn:xmpp:forward:0", "urn:ietf:params:xml:ns:xmpp-bind",
              "urn:ietf:params:xml:ns:xmpp-session", "urn:ietf:params:xml:ns:xmpp-sasl",
              "urn:ietf:params:xml:ns:xmpp-tls", "http://etherx.jabber.org/streams",
              "urn:ietf:params:xml:ns:xmpp-stanzas", "http://jabber.org/protocol/caps",
              "urn:example:x"]
ATTRIBUTES = ["to", "from", "type", "id", "xml:lang", "jid", "name", "subscription", "ask",
              "node", "var", "category", "mechanism", "version", "ver", "hash", "seconds"]
VALUES = ["", "example.com", "alice@example.com", "alice@example.com/fuzz", "bob@example.com",
          "bob@example.com/res", "nobody@example.com", "other.example", "get", "set", "result",
          "error", "chat", "normal", "headline", "groupchat", "unavailable", "subscribe",
          "subscribed", "unsubscribe", "unsubscribed", "probe", "both", "from", "none",
          "remove", "true", "-1", "128", "PLAIN", "en", "@", "a@b@c", "example.com/", "/res",
          "e\u0301", "\u212b", "\ufb00", "\u0000"]
CORPUS_FILES = sorted(p.read_bytes() for p in CORPUS.iterdir())

xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")), max_size=24)


def element_xml(name, namespace, attributes, children):
    attrs = "".join(f" {k}={quoteattr(v)}" for k, v in attributes.items())
    if namespace is not None:
        attrs += f" xmlns={quoteattr(namespace)}"
    if not children:
        return f"<{name}{attrs}/>"
    return f"<{name}{attrs}>{''.join(children)}</{name}>"


def _element(children):
    return st.builds(element_xml, st.sampled_from(NAMES), st.sampled_from(NAMESPACES),
                     st.dictionaries(st.sampled_from(ATTRIBUTES),
                                     st.sampled_from(VALUES) | xml_text, max_size=4),
                     st.lists(children, max_size=4))


elements = st.recursive(
    st.builds(element_xml, st.sampled_from(NAMES), st.sampled_from(NAMESPACES),
              st.just({}), st.just([])) | xml_text.map(escape),
    _element, max_leaves=16)
stanzas = st.builds(element_xml, st.sampled_from(["message", "presence", "iq"]), st.none(),
                    st.dictionaries(st.sampled_from(ATTRIBUTES[:4]), st.sampled_from(VALUES),
                                    max_size=4),
                    st.lists(elements, max_size=3))


def pieces(known):
    """Mostly valid pieces, so that streams get past negotiation."""
    hostile = st.sampled_from(CORPUS_FILES) | st.binary(max_size=8)
    return st.one_of(known, known, known, known, stanzas, stanzas, stanzas, elements,
                     elements, hostile).map(lambda p: p.encode() if isinstance(p, str) else p)


@st.composite
def mutated(draw, data):
    """``data`` with a few bytes flipped, inserted, deleted or duplicated."""
    data = bytearray(data)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        at = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "duplicate"]))
        if operation == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif operation == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif operation == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
    return bytes(data)


@st.composite
def structured_inputs(draw):
    """A stage, and a mutated stream of pieces likely to matter there."""
    stage = draw(stages)
    known = STANZAS if stage == "bound" else NEGOTIATION + STANZAS
    data = b"".join(draw(st.lists(pieces(st.sampled_from(known)), max_size=12)))
    return stage, draw(mutated(data))


stages = st.sampled_from(STAGES)
read_sizes = st.lists(st.integers(1, 64) | st.integers(1, 4096), max_size=8)


def fuzz_settings(examples, derandomize=False):
    return settings(max_examples=examples, deadline=None, database=None,
                    derandomize=derandomize,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def target():
    with tempfile.TemporaryDirectory() as directory:
        yield FuzzTarget(directory)


@fuzz_settings(EXAMPLES, derandomize=True)
@given(stage=stages, data=st.binary(max_size=2048), sizes=read_sizes)
def test_arbitrary_bytes(target, stage, data, sizes):
    target.run(stage, data, sizes)


@fuzz_settings(EXAMPLES, derandomize=True)
@given(stage_and_data=structured_inputs(), sizes=read_sizes)
def test_mutated_xmpp_streams(target, stage_and_data, sizes):
    target.run(*stage_and_data, sizes)
