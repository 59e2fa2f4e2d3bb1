"""Server dialback keys and elements (XEP-0220, keys per XEP-0185).

A key is ``HMAC-SHA256(hex(SHA256(secret)), "receiving originating
stream-id")`` in lowercase hex, every string encoded as UTF-8 so that
internationalised domain names work (XEP-0185 §2).  The secret is
``s2s.dialback_secret``, or a random one per process when unset; several
processes serving one domain need the same secret to verify each other's
keys.

Dialback elements are written with the ``db:`` prefix that the stream header
declares (XEP-0220 §2: some servers accept no other), and dialback errors
carry a stanza error condition (XEP-0220 §2.5).
"""

import hashlib
import hmac

from twisted.words.xish import domish

from xmppd.core.stanzas import ERROR_TYPES, NS_STANZAS
from xmppd.core.xmlstream import NS_CLIENT, NS_STREAMS

NS_DIALBACK = "jabber:server:dialback"
NS_DIALBACK_FEATURE = "urn:xmpp:features:dialback"
# The prefixes a server stream header declares (XEP-0220 §2.4.1: ``db:``).
S2S_PREFIXES = {NS_STREAMS: "stream", NS_DIALBACK: "db"}


class DialbackError(Exception):
    """A dialback step failed with this stanza error ``condition``
    (XEP-0220 §2.5)."""

    def __init__(self, condition, text=None):
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text


def dialback_key(secret, receiving, originating, stream_id):
    """The XEP-0185 key ``originating`` sends to ``receiving`` on the stream
    that ``receiving`` gave the id ``stream_id``."""
    hashed = hashlib.sha256(secret.encode("utf-8")).hexdigest().encode("ascii")
    text = f"{receiving} {originating} {stream_id}".encode("utf-8")
    return hmac.new(hashed, text, hashlib.sha256).hexdigest()


class DialbackKeys:
    """Makes and checks the keys of this server's domains."""

    def __init__(self, secret):
        self._secret = secret

    def make(self, receiving, originating, stream_id):
        return dialback_key(self._secret, receiving, originating, stream_id)

    def valid(self, key, receiving, originating, stream_id):
        """Whether ``key`` is the one we would have sent (XEP-0220 §2.2.2)."""
        expected = self.make(receiving, originating, stream_id)
        return hmac.compare_digest(expected.encode("ascii"), key.strip().encode("utf-8"))


def dialback_element(name, from_, to, key=None, type_=None, id_=None, condition=None):
    """``<db:result/>`` or ``<db:verify/>``; with ``condition``, a dialback
    error of ``type='error'`` (XEP-0220 §2.5)."""
    element = domish.Element((NS_DIALBACK, name), NS_CLIENT)
    element["from"] = from_
    element["to"] = to
    if id_ is not None:
        element["id"] = id_
    if condition is not None:
        type_ = "error"
        error = element.addElement((NS_CLIENT, "error"))
        error["type"] = ERROR_TYPES[condition]
        error.addElement((NS_STANZAS, condition))
    if type_ is not None:
        element["type"] = type_
    if key is not None:
        element.addContent(key)
    return element


def error_condition(element):
    """The stanza error condition inside a dialback error, or
    ``undefined-condition``."""
    for error in element.elements(NS_CLIENT, "error"):
        for child in error.elements(NS_STANZAS):
            if child.name != "text":
                return child.name
    return "undefined-condition"

