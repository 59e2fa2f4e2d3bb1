"""The RFC 3921 session iq, for clients that still send it.

RFC 6121 drops session establishment; draft-cridland-xmpp-session-01 has
servers advertise ``<session><optional/></session>`` and answer the iq with
an empty result, which is all this module does.
"""

from twisted.words.xish import domish

from xmppd.core.events import BARE, HOST

NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"


def setup(api):
    def offer(stream):
        feature = domish.Element((NS_SESSION, "session"))
        feature.addElement("optional")
        return feature

    api.stream_feature(offer)
    api.handle_iq("set", (HOST, BARE), NS_SESSION, lambda stanza: None)
