"""Stanzas as the router sees them, and stanza errors (RFC 6120 §8).

A :class:`Stanza` wraps the parsed ``domish.Element`` with its parsed
addresses and the session it came from.  :class:`StanzaError` carries an
RFC 6120 §8.3.3 condition; :func:`error_reply` and :func:`iq_result` build
the answers (§8.3.1, §8.2.3).
"""

from datetime import datetime, timezone

from twisted.words.xish import domish

from xmppd.core.xmlstream import NS_CLIENT

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_CARBONS = "urn:xmpp:carbons:2"  # XEP-0280 (Message Carbons)
# (namespace, name) of the end-to-end encrypted payloads a message may carry
# instead of a body: what archives keep and push notifies.
ENCRYPTED_PAYLOADS = frozenset({
    ("eu.siacs.conversations.axolotl", "encrypted"),  # XEP-0384 (OMEMO, legacy)
    ("urn:xmpp:omemo:2", "encrypted"),  # XEP-0384 (OMEMO)
    ("urn:xmpp:openpgp:0", "openpgp"),  # XEP-0373
    ("jabber:x:encrypted", "x"),  # XEP-0027
})

# RFC 6120 §8.3.3: the error type that goes with each defined condition.
ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


class StanzaError(Exception):
    """Raise from a handler to answer the stanza with this error;
    ``application``, a ``(namespace, name)`` or an element, adds an
    application-specific condition (RFC 6120 §8.3.2), such as XEP-0060's
    ``precondition-not-met``."""

    def __init__(self, condition, text=None, type_=None, application=None):
        if condition not in ERROR_TYPES:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text
        self.type = type_ or ERROR_TYPES[condition]
        self.application = application


class Stanza:
    """One routed stanza: element, parsed addresses, and where it came from.

    ``origin`` is the local :class:`~xmppd.core.sessions.Session` that sent
    it, or None for stanzas the server itself generated or received from a
    peer server.
    """

    __slots__ = ("element", "kind", "type", "sender", "recipient", "origin")

    def __init__(self, element, sender, recipient, origin=None):
        self.element = element
        self.kind = element.name
        self.type = element.getAttribute("type")
        self.sender = sender
        self.recipient = recipient
        self.origin = origin

    @property
    def payload(self):
        """The first child element (an iq's query), or None."""
        for child in self.element.elements():
            return child
        return None

    def __repr__(self):
        return f"<Stanza {self.kind} type={self.type} {self.sender} -> {self.recipient}>"


IQ_TYPES = ("get", "set", "result", "error")


def iq_problem(element):
    """What breaks the iq rules of RFC 6120 §8.2.3, or None."""
    if element.name != "iq":
        return None
    type_ = element.getAttribute("type")
    if type_ not in IQ_TYPES or not element.getAttribute("id"):
        return "an iq needs an id and a valid type"
    if type_ in ("get", "set") and len(list(element.elements())) != 1:
        return "an iq request has exactly one payload"
    return None


def copy_element(element):
    """A deep copy of a domish element (``copy.deepcopy`` cannot copy one)."""
    duplicate = domish.Element((element.uri, element.name), element.defaultUri,
                               dict(element.attributes), dict(element.localPrefixes))
    for child in element.children:
        duplicate.addChild(copy_element(child) if isinstance(child, domish.Element) else child)
    return duplicate


def addressed_copy(element, to):
    """A copy of stanza ``element`` addressed ``to``, for one recipient of
    a fan-out: its own attributes and list of children, the children
    themselves shared with ``element`` and every other copy (what the
    server adds to or takes from a stanza on its way, a delay, a stanza
    id, is a child of the stanza itself; nothing changes a child's
    insides).  Several times cheaper than :func:`copy_element`."""
    duplicate = domish.Element((element.uri, element.name), element.defaultUri,
                               dict(element.attributes), dict(element.localPrefixes))
    duplicate.children = list(element.children)
    duplicate["to"] = to
    return duplicate


def make_stanza(kind, to=None, from_=None, type_=None, id_=None):
    element = domish.Element((NS_CLIENT, kind))
    for name, value in (("to", to), ("from", from_), ("type", type_), ("id", id_)):
        if value is not None:
            element[name] = str(value)
    return element


def iq_result(request, payload=None):
    """The ``result`` answering iq ``request`` (an element), with an optional
    payload element."""
    result = make_stanza("iq", to=request.getAttribute("from"),
                         from_=request.getAttribute("to"), type_="result",
                         id_=request.getAttribute("id"))
    if payload is not None:
        result.addChild(payload)
    return result


def child(element, uri, name):
    """The first child element ``{uri}name`` of ``element``, or None: what
    ``next(element.elements(uri, name), None)`` gives, at a quarter of the
    cost, for the handlers every presence or message runs."""
    for node in element.children:
        if getattr(node, "name", None) == name and node.uri == uri:
            return node
    return None


def error_reply(element, condition, text=None, type_=None):
    """The error answering ``element`` (RFC 6120 §8.3.1): addresses swapped,
    the original payload kept, an ``<error/>`` child added."""
    if not isinstance(condition, StanzaError):
        condition = StanzaError(condition, text, type_)
    reply = make_stanza(element.name, to=element.getAttribute("from"),
                        from_=element.getAttribute("to"), type_="error",
                        id_=element.getAttribute("id"))
    for child in element.elements():
        if child.name != "error":
            reply.addChild(child)
    error = reply.addElement("error")
    error["type"] = condition.type
    error.addElement((NS_STANZAS, condition.condition))
    if condition.text:
        error.addElement((NS_STANZAS, "text"), content=condition.text)
    if isinstance(condition.application, domish.Element):
        error.addChild(condition.application)
    elif condition.application is not None:
        error.addElement(condition.application)
    return reply


def xep0082_stamp(moment):
    """``moment`` (seconds of the clock, or an aware datetime) as a XEP-0082
    DateTime in UTC to the microsecond, such as
    ``2002-09-10T23:08:25.000000Z``: the stamps of one server sort as text."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
