"""vcard-temp (XEP-0054): each account stores one vCard on the server.

- Own vCard (§3.1, §3.2): an iq get or set with no 'to' (or to the user's
  own bare JID) reads or replaces the stored ``<vCard/>``; with none stored
  the get returns an empty ``<vCard/>`` (§3.1 allows it instead of an error).
  A vCard whose serialised form exceeds ``vcard.max_size`` bytes is refused
  with ``not-acceptable`` (RFC 6120 §8.3.3.9: the request does not meet a
  criterion the server defines).
- Someone else's vCard (§3.3): a get to an account's bare JID is answered by
  the server on the account's behalf, never forwarded to its resources.  No
  vCard stored and no such account are both ``service-unavailable`` (§3.3:
  an error, ``service-unavailable`` or ``item-not-found``), so a requester
  cannot tell whether an account exists.
- A set on anyone else's vCard is ``forbidden`` (§3.2).
- Support is advertised as the ``vcard-temp`` disco feature (§4).

vCard-based avatars (XEP-0153) need nothing more from the server: it stores
and serves the vCard, ``<PHOTO/>`` included, and leaves the
``vcard-temp:x:update`` element of clients' presence as the clients sent it
(where XEP-0398 conversion is enabled, that module adds the hash).

Stored in the ``keyval`` store named ``vcard`` under the key ``""``.

Publishes the ``vcard`` service (:class:`VCards`), through which other
modules read and write an account's vCard and hear of each one its clients
set (avatars kept in step with PEP, XEP-0398).
"""

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.events import BARE
from xmppd.core.stanzas import StanzaError
from xmppd.core.xmlstream import parse_stanza
from xmppd.options import Option, Options, integer

NS_VCARD = "vcard-temp"
STORE = "vcard"
KEY = ""

OPTIONS = Options(  # [vcard]
    max_size=Option(65536, integer(1024)),  # bytes
)


class VCards:
    """Accounts' vCards: the iq handlers and the ``vcard`` service."""

    def __init__(self, api, store):
        self._api = api
        self._store = store
        self._listeners = []

    # Requests

    def query_get(self, stanza):
        _vcard(stanza)
        own = _is_own(stanza)

        def answer(stored):
            if stored is not None:
                return domish.SerializedXML(stored)
            if own:
                return domish.Element((NS_VCARD, "vCard"))
            raise StanzaError("service-unavailable")

        owner = stanza.recipient
        return self._store.get(owner.local, owner.domain, KEY).addCallback(answer)

    def query_set(self, stanza):
        if not _is_own(stanza):
            raise StanzaError("forbidden", "a vCard is set only by its own account")
        return self.set(stanza.recipient, _vcard(stanza))

    # The service

    def listen(self, listener):
        """Call ``listener(account, vcard)`` after each vCard stored for an
        account (``account`` a bare JID): by its clients, or through
        :meth:`set` by anyone but ``listener``.  A Deferred it returns
        delays the client's answer; a failure is logged, never answered."""
        self._listeners.append(listener)

    def get(self, account):
        """Deferred: the account's ``<vCard/>`` element, or None."""
        d = self._store.get(account.local, account.domain, KEY)
        return d.addCallback(lambda text: None if text is None else parse_stanza(text))

    def set(self, account, vcard, writer=None):
        """Store ``vcard`` for the account, as its client's set would
        (``not-acceptable`` if larger than ``vcard.max_size``), and tell the
        listeners but ``writer``; Deferred: done."""
        text = vcard.toXml()
        max_size = self._api.options.max_size
        if len(text.encode("utf-8")) > max_size:
            raise StanzaError("not-acceptable", f"the vCard is larger than {max_size} bytes")
        d = self._store.set(account.local, account.domain, KEY, text)
        return d.addCallback(lambda _: self._tell(writer, account, vcard))

    def _tell(self, writer, account, vcard):
        told = [defer.maybeDeferred(listener, account, vcard).addErrback(self._failed)
                for listener in self._listeners if listener is not writer]
        return defer.gatherResults(told).addCallback(lambda _: None)

    def _failed(self, failure):
        self._api.log.failure("a vCard listener failed", failure)


def setup(api):
    vcards = VCards(api, api.open_store("keyval", STORE))
    api.provide("vcard", vcards)
    api.disco_feature(NS_VCARD)
    api.handle_iq("get", BARE, NS_VCARD, vcards.query_get)
    api.handle_iq("set", BARE, NS_VCARD, vcards.query_set)


def _vcard(stanza):
    """The request's ``<vCard/>`` element."""
    if stanza.payload.name != "vCard":
        raise StanzaError("bad-request", "expected <vCard xmlns='vcard-temp'/>")
    return stanza.payload


def _is_own(stanza):
    """Whether the account's own client sent ``stanza`` to its bare JID."""
    return stanza.origin is not None and stanza.recipient == stanza.sender.bare
