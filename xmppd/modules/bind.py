"""Resource binding (RFC 6120 §7).

Offers ``<bind/>`` after SASL and binds the requested resource, or a
server-generated one when the client asks for none or for an invalid one
(§7.6.2.1, §7.7.2.1).  Binding a resource that is already bound replaces the
old session, which is closed with ``conflict`` (§7.7.2.2).  More than
``c2s.max_resources`` resources for one account is ``resource-constraint``
(§7.6.2.1).  The bind request is a negotiation element of the
authenticated stream; once bound, another is ``not-allowed``.
"""

import secrets

from twisted.words.xish import domish

from xmppd.core.events import HOST
from xmppd.core.stanzas import StanzaError, error_reply, iq_result
from xmppd.core.xmlstream import NS_CLIENT
from xmppd.jid import InvalidJID, normalize_resourcepart

NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"


def setup(api):
    def offer(stream):
        if stream.session is None:
            return domish.Element((NS_BIND, "bind"))
        return None

    def request(stream, element):
        payload = next(element.elements(), None)
        if (stream.user is None or stream.session is not None
                or element.getAttribute("type") != "set"
                or payload is None or payload.uri != NS_BIND):
            return False
        try:
            stream.send(iq_result(element, bind(stream, _requested(payload))))
        except StanzaError as e:
            stream.send(error_reply(element, e))
        return True

    def bind(stream, resource):
        user = stream.user
        if (api.sessions.count(user) >= api.config.c2s.max_resources
                and api.sessions.get(user.with_resource(resource)) is None):
            raise StanzaError("resource-constraint", "too many resources bound")
        session = api.streams.bind(stream, resource)
        result = domish.Element((NS_BIND, "bind"))
        result.addElement("jid", content=session.jid.full)
        return result

    def already_bound(stanza):
        raise StanzaError("not-allowed", "a resource is already bound")

    api.stream_feature(offer)
    api.streams.on_element(NS_CLIENT, "iq", request)
    api.handle_iq("set", HOST, NS_BIND, already_bound)


def _requested(payload):
    """The client's resource if valid, else a fresh random one."""
    for child in payload.elements(NS_BIND, "resource"):
        try:
            return normalize_resourcepart(str(child).strip())
        except InvalidJID:
            break
    return secrets.token_hex(8)
