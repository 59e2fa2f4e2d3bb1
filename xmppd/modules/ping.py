"""XMPP Ping (XEP-0199 §4.2): the server answers pings addressed to it."""

from xmppd.core.events import HOST

NS_PING = "urn:xmpp:ping"


def setup(api):
    api.disco_feature(NS_PING)
    api.handle_iq("get", HOST, NS_PING, lambda stanza: None)
