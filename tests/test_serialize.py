"""xmppd.core.xmlstream.serialize writes what domish's toXml writes, the
way a stream sends it: the same bytes for parsed and built stanzas, and
the unusual ones (own prefixes, namespaced attributes) left to domish."""

import pytest
from twisted.words.xish import domish

from xmppd.core.xmlstream import (NS_CLIENT, NS_STREAMS, NS_XML, STREAM_PREFIXES,
                                  parse_stanza, serialize)

DIALBACK = {NS_STREAMS: "stream", "jabber:server:dialback": "db"}


def domish_bytes(element, prefixes=STREAM_PREFIXES):
    return element.toXml(prefixes=prefixes, defaultUri=NS_CLIENT,
                         prefixesInScope=[list(prefixes.values())]).encode("utf-8")


@pytest.mark.parametrize("text", [
    "<message to='bob@example.com/r' type='chat' id='a&amp;b' xml:lang='en'>"
    "<body>hi &lt;there&gt; &amp; &apos;q&apos; \"d\" ☃</body>"
    "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v='/>"
    "<x xmlns='vcard-temp:x:update'><photo/></x></presence>",
    "<iq type='result' id='1'><query xmlns='jabber:iq:roster' ver='3'>"
    "<item jid='a@b' name='A &amp; &quot;B&quot;' subscription='both'><group>G</group></item>"
    "</query></iq>",
    "<message><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='x'/>"
    "<message xmlns='jabber:client' to='a'><body>x</body></message></forwarded></message>",
    "<message><x xmlns:foo='urn:foo'><foo:bar/></x></message>",
    "<message><html xmlns='http://jabber.org/protocol/xhtml-im'>"
    "<body xmlns='http://www.w3.org/1999/xhtml'><p style='a'>x</p></body></html></message>",
])
def test_parsed_stanzas(text):
    element = parse_stanza(text)
    assert serialize(element) == domish_bytes(element)


def built():
    plain = domish.Element((None, "message"))
    plain["to"] = "x"
    plain.addElement("body", content="a<b & c>")
    version = domish.Element((NS_CLIENT, "iq"))
    version.addElement(("jabber:iq:version", "query")).addElement("name", content="xmppd")
    error = domish.Element((NS_STREAMS, "error"))
    error.addElement(("urn:ietf:params:xml:ns:xmpp-streams", "conflict"))
    attributes = domish.Element((NS_CLIENT, "message"))
    attributes[(NS_XML, "lang")] = "en"
    attributes[("urn:other", "attr")] = "v"
    raw = domish.Element((NS_CLIENT, "message"))
    raw.addRawXml("<raw/>")
    features = domish.Element((NS_STREAMS, "features"))
    features.addElement(("urn:ietf:params:xml:ns:xmpp-sasl", "mechanisms")).addElement(
        "mechanism", content="SCRAM-SHA-1")
    features.addElement(("urn:xmpp:csi:0", "csi"))
    features.addElement((NS_STREAMS, "other"))["a"] = "'&"
    features.addElement("inherited").addContent("<")  # in the stream namespace too
    return [plain, version, error, attributes, raw, features]


@pytest.mark.parametrize("element", built(), ids=lambda e: e.name)
def test_built_stanzas(element):
    assert serialize(element) == domish_bytes(element)


def test_stream_elements_are_written_natively():
    features = built()[-1]
    assert serialize(features) == domish_bytes(features) == (
        b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        b"<mechanism>SCRAM-SHA-1</mechanism></mechanisms><csi xmlns='urn:xmpp:csi:0'/>"
        b"<stream:other a='&apos;&amp;'/><stream:inherited>&lt;</stream:inherited>"
        b"</stream:features>")
    odd = domish.Element((NS_STREAMS, "features"), defaultUri="urn:other")
    odd.addElement("x")
    assert serialize(odd) == domish_bytes(odd)  # left to domish


def test_other_stream_prefixes():
    result = domish.Element(("jabber:server:dialback", "result"))
    result["to"] = "example.net"
    result.addContent("key")
    assert serialize(result, DIALBACK) == domish_bytes(result, DIALBACK) == (
        b"<db:result to='example.net'>key</db:result>")


@pytest.mark.parametrize("element", [parse_stanza(
    "<message to='a@example.com' xml:lang='en'><body>hi</body>"
    "<x xmlns='urn:example'/></message>"), *built()], ids=lambda e: e.name)
def test_standalone_elements_as_websocket_and_bosh_write_them(element):
    """A WebSocket frame declares its namespaces (RFC 7395 §3.3.3); a BOSH
    body's child has the stream prefix declared around it."""
    assert serialize(element, default="", declared=False) == element.toXml(
        prefixes=dict(STREAM_PREFIXES)).encode()
    assert serialize(element, default="") == element.toXml(
        prefixes=dict(STREAM_PREFIXES), prefixesInScope=["stream"]).encode()
