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

Publishes the ``private`` service (:class:`PrivateStorage`), through which
other modules read and write an account's elements and hear of each one a
client stores (bookmarks kept in step with PEP, XEP-0402 §5.3).
"""

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.events import BARE
from xmppd.core.stanzas import StanzaError
from xmppd.core.xmlstream import parse_stanza
from xmppd.options import Option, Options, integer

NS_PRIVATE = "jabber:iq:private"
STORE = "private"
RESERVED_PREFIXES = ("jabber:", "http://jabber.org/")
RESERVED = ("vcard-temp",)

OPTIONS = Options(  # [private]
    max_size=Option(65536, integer(1024)),  # bytes
)


class PrivateStorage:
    """Accounts' private XML: the iq handlers and the ``private`` service."""

    def __init__(self, api, store):
        self._api = api
        self._store = store
        self._listeners = []

    # Clients' requests

    def query_get(self, stanza):
        user = _own(stanza)
        wanted = _children(stanza)
        if len({child.uri for child in wanted}) > 1:
            raise StanzaError("bad-request", "a get names one namespace only")

        def answer(stored):
            query = domish.Element((NS_PRIVATE, "query"))
            for child in wanted:
                text = stored.get(_key(child.uri, child.name))
                query.addChild(child if text is None else domish.SerializedXML(text))
            return query

        return self._store.get_all(user.local, user.domain).addCallback(answer)

    def query_set(self, stanza):
        user = _own(stanza)
        children = _children(stanza)
        items = {_key(child.uri, child.name): self._checked(child) for child in children}
        d = self._store.set_many(user.local, user.domain, items)
        return d.addCallback(lambda _: self._tell(None, user, children))

    def _checked(self, element):
        """``element`` serialised, if it is no larger than ``private.max_size``."""
        text = element.toXml()
        max_size = self._api.options.max_size
        if len(text.encode("utf-8")) > max_size:
            raise StanzaError("not-acceptable",
                              f"<{element.name}/> is larger than {max_size} bytes")
        return text

    # The service

    def listen(self, listener):
        """Call ``listener(account, element)`` after each element stored for
        an account (``account`` a bare JID): by its clients, or through
        :meth:`set` by anyone but ``listener``.  A Deferred it returns
        delays the client's answer; a failure is logged, never answered."""
        self._listeners.append(listener)

    def get(self, account, namespace, name):
        """Deferred: the account's element ``<name xmlns=namespace/>`` as
        stored, or None."""
        d = self._store.get(account.local, account.domain, _key(namespace, name))
        return d.addCallback(lambda text: None if text is None else parse_stanza(text))

    def set(self, account, element, writer=None):
        """Store ``element`` for the account, as its client's set would
        (``not-acceptable`` if too large), and tell the listeners but
        ``writer``; Deferred: done."""
        d = self._store.set(account.local, account.domain, _key(element.uri, element.name),
                            self._checked(element))
        return d.addCallback(lambda _: self._tell(writer, account, [element]))

    def _tell(self, writer, account, elements):
        told = [defer.maybeDeferred(listener, account, element).addErrback(self._failed)
                for listener in self._listeners if listener is not writer
                for element in elements]
        return defer.gatherResults(told).addCallback(lambda _: None)

    def _failed(self, failure):
        self._api.log.failure("a private storage listener failed", failure)


def setup(api):
    private = PrivateStorage(api, api.open_store("keyval", STORE))
    api.provide("private", private)
    api.disco_feature(NS_PRIVATE)
    api.handle_iq("get", BARE, NS_PRIVATE, private.query_get)
    api.handle_iq("set", BARE, NS_PRIVATE, private.query_set)


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


def _key(namespace, name):
    return f"{namespace} {name}"
