"""Copies of a stanza for the recipients of a fan-out
(xmppd.core.stanzas.addressed_copy): each its own address and list of
children, which the server may change on the way without touching the
others'."""

from xmppd.core.stanzas import addressed_copy
from xmppd.core.xmlstream import parse_stanza, serialize


def test_copies_are_addressed_and_independent_at_the_top():
    template = parse_stanza("<message from='room@muc.example.com/nick' type='groupchat' "
                            "id='m1'><body>hi</body><x xmlns='urn:example'/></message>")
    first = addressed_copy(template, "alice@example.com/phone")
    second = addressed_copy(template, "bob@example.com/laptop")

    first.addElement(("urn:xmpp:delay", "delay"))["stamp"] = "2026-01-01T00:00:00Z"
    second.children = [c for c in second.children if getattr(c, "name", None) != "x"]

    assert serialize(first) == (
        b"<message from='room@muc.example.com/nick' type='groupchat' id='m1' "
        b"to='alice@example.com/phone'><body>hi</body><x xmlns='urn:example'/>"
        b"<delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>")
    assert serialize(second) == (
        b"<message from='room@muc.example.com/nick' type='groupchat' id='m1' "
        b"to='bob@example.com/laptop'><body>hi</body></message>")
    assert serialize(template) == (
        b"<message from='room@muc.example.com/nick' type='groupchat' id='m1'>"
        b"<body>hi</body><x xmlns='urn:example'/></message>")
    assert first.children[0] is template.children[0]  # the children are shared
