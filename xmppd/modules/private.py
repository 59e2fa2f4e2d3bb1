"""Private XML storage (XEP-0049): arbitrary XML a user keeps on the server.

An iq set with ``<query xmlns='jabber:iq:private'/>`` stores each child
element of the query, replacing what was stored under the same element name
and namespace; an iq get returns the stored element for each child it names,
or the child itself, empty, when nothing was stored under it (§2.3).

- Only the account's own resources reach its data: a request with a 'to'
  other than the user's own bare JID is ``forbidden`` (§2.3, §4).
- The query needs at least one child element (§2.3: ``not-acceptable``).  A
  set may carry several (§2.3 allows several elements of one namespace); a
  get names one namespace only (§2.3), otherwise ``bad-request``.
- Reserved namespaces (§2.3: ``jabber:*``, ``http://jabber.org/*``,
  ``vcard-temp``) and elements in no namespace of their own are
  ``not-acceptable``.
- A child whose serialised form exceeds ``private.max_size`` bytes is
  ``not-acceptable``, and nothing of that set is stored; the children of one
  set are stored together (one transaction) or not at all.
- Support is advertised as the ``jabber:iq:private`` disco feature.

Stored in the ``keyval`` store named ``private``, keyed by
``"{namespace} {element name}"``.
"""

from twisted.words.xish import domish

from xmppd.core.events import BARE
from xmppd.core.stanzas import StanzaError
from xmppd.options import Option, Options, integer

NS_PRIVATE = "jabber:iq:private"
STORE = "private"
RESERVED_PREFIXES = ("jabber:", "http://jabber.org/")
RESERVED = ("vcard-temp",)

OPTIONS = Options(  # [private]
    max_size=Option(65536, integer(1024)),  # bytes
)


def setup(api):
    private = api.open_store("keyval", STORE)

    def get(stanza):
        user = _own(stanza)
        wanted = _children(stanza)
        if len({child.uri for child in wanted}) > 1:
            raise StanzaError("bad-request", "a get names one namespace only")
        def answer(stored):
            query = domish.Element((NS_PRIVATE, "query"))
            for child in wanted:
                text = stored.get(_key(child))
                query.addChild(child if text is None else domish.SerializedXML(text))
            return query

        return private.get_all(user.local, user.domain).addCallback(answer)

    def set_(stanza):
        user = _own(stanza)
        max_size = api.options.max_size
        items = {}
        for child in _children(stanza):
            text = child.toXml()
            if len(text.encode("utf-8")) > max_size:
                raise StanzaError("not-acceptable",
                                  f"<{child.name}/> is larger than {max_size} bytes")
            items[_key(child)] = text
        return private.set_many(user.local, user.domain, items)

    api.disco_feature(NS_PRIVATE)
    api.handle_iq("get", BARE, NS_PRIVATE, get)
    api.handle_iq("set", BARE, NS_PRIVATE, set_)


def _own(stanza):
    """The requesting account, which must be the one addressed."""
    if stanza.origin is None or stanza.recipient != stanza.sender.bare:
        raise StanzaError("forbidden", "private data belongs to its own account")
    return stanza.recipient


def _children(stanza):
    """The query's child elements, each in a namespace a user may store."""
    query = stanza.payload
    if query.name != "query":
        raise StanzaError("bad-request", "expected <query xmlns='jabber:iq:private'/>")
    children = list(query.elements())
    if not children:
        raise StanzaError("not-acceptable", "the query needs a child element")
    for child in children:
        if _reserved(child.uri):
            raise StanzaError("not-acceptable", f"namespace {child.uri!r} is reserved")
    return children


def _reserved(namespace):
    return (not namespace or namespace.startswith(RESERVED_PREFIXES)
            or namespace in RESERVED)


def _key(child):
    return f"{child.uri} {child.name}"
