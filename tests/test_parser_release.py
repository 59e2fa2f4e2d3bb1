"""Releasing the expat parser of a stream that waits between stanzas: the
next read re-creates it in the same state, and nothing partial is lost."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xmppd.core.xmlstream import NS_CLIENT, NS_SERVER, NS_STREAMS, StreamError, StreamParser

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>")
S2S_HEADER = (b"<stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' "
              b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")


class Recorder:
    def __init__(self, max_size=10000, content=(NS_CLIENT,)):
        self.elements, self.ended = [], False
        self.parser = StreamParser(lambda header: None, self.elements.append, self.end,
                                   max_size, content)

    def end(self):
        self.ended = True

    def feed(self, data):
        self.parser.feed(data)
        return self.elements


def test_a_released_parser_comes_back_in_the_same_stream():
    r = Recorder()
    r.feed(HEADER + b"<presence/>\n")
    assert r.parser.release()
    assert r.parser._parser is None
    r.feed(b"<message to='a@example.com'><body>after</body></message>"
           b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>")
    message, error = r.elements[1:]
    assert (message.uri, message["to"], str(message.body)) == (NS_CLIENT, "a@example.com", "after")
    assert (error.uri, error.name) == (NS_STREAMS, "error")
    r.feed(b"</stream:stream>")
    assert r.ended


def test_the_dialback_prefix_and_server_namespace_survive_a_release():
    r = Recorder(content=(NS_SERVER,))
    r.feed(S2S_HEADER + b"<db:result to='a.example' from='b.example'>key</db:result>")
    assert r.parser.release()
    r.feed(b"<db:verify to='a.example' from='b.example' id='1'>k</db:verify>"
           b"<message to='x@a.example'/>")
    verify, message = r.elements[1:]
    assert (verify.uri, verify.name) == ("jabber:server:dialback", "verify")
    assert message.uri == NS_CLIENT


@pytest.mark.parametrize("partial,rest", [
    (b"<message to='a@example.com'><bo", b"dy>x</body></message>"),
    (b"<message a='>", b"'/>"),
    (b"<mess", b"age/>"),
])
def test_nothing_partial_is_ever_released(partial, rest):
    r = Recorder()
    r.feed(HEADER + partial)
    assert not r.parser.release()
    r.feed(rest)
    assert r.elements[-1].name == "message"


def test_limits_and_restrictions_hold_after_a_release():
    r = Recorder(max_size=10000)
    r.feed(HEADER + b"<presence/>")
    assert r.parser.release()
    with pytest.raises(StreamError) as error:
        r.feed(b"<message><body>" + b"x" * 20000)
    assert error.value.condition == "policy-violation"
    r = Recorder()
    r.feed(HEADER)
    assert r.parser.release()
    with pytest.raises(StreamError) as error:
        r.feed(b"<!DOCTYPE x>")
    assert error.value.condition == "restricted-xml"
    r = Recorder()
    r.feed(HEADER + b"<presence/>")
    assert r.parser.release()
    r.feed(b"<")  # a declaration split over two reads after the release
    with pytest.raises(StreamError) as error:
        r.feed(b"!DOCTYPE x>")
    assert error.value.condition == "restricted-xml"
    r = Recorder()
    r.feed(HEADER)
    assert r.parser.release()
    with pytest.raises(StreamError) as error:
        r.feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>")
    assert error.value.condition == "bad-format"


STANZAS = (b"<message to='a@example.com' a='x&gt;y' b='say \"hi\"'><body>one &amp; two</body>"
           b"<x xmlns='urn:x' attr='>'/></message>\n <presence/><iq type='get' id='1'>"
           b"<query xmlns='jabber:iq:roster'/></iq>\r\n<message><body><![CDATA[a<b>]]></body>"
           b"</message>")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(HEADER + STANZAS)), max_size=30))
def test_releasing_whenever_allowed_changes_nothing(cuts):
    data = HEADER + STANZAS
    expected = [e.toXml() for e in Recorder().feed(data)]
    r = Recorder()
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        r.feed(data[start:cut])
        r.parser.release()
        start = cut
    assert [e.toXml() for e in r.elements] == expected


def test_the_sweep_releases_only_streams_quiet_long_enough(tmp_path):
    from tests.harness import Client, add_user, make_server
    from xmppd.core.stream import ParserSweep
    server = make_server(tmp_path)
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    alice, bob = Client(server), Client(server)
    alice.login("alice@example.com", "a")
    bob.login("bob@example.com", "b")
    sweep = ParserSweep(server, server.clock, interval=5.0, quiet=10.0)
    server.clock.advance(11)
    bob.send("<presence/>")
    assert sweep.sweep() == 1  # alice's; bob just sent something
    assert alice.stream._parser._parser is None
    alice.send("<message to='bob@example.com/b' type='chat'><body>back</body></message>")
    assert [str(m.body) for m in bob.take() if m.name == "message"] == ["back"]
