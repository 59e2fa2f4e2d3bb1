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
``vcard-temp:x:update`` element of clients' presence as the clients sent it.

Stored in the ``keyval`` store named ``vcard`` under the key ``""``.
"""

from twisted.words.xish import domish

from xmppd.core.events import BARE
from xmppd.core.stanzas import StanzaError
from xmppd.options import Option, Options, integer

NS_VCARD = "vcard-temp"
STORE = "vcard"
KEY = ""

OPTIONS = Options(  # [vcard]
    max_size=Option(65536, integer(1024)),  # bytes
)


def setup(api):
    vcards = api.open_store("keyval", STORE)

    def get(stanza):
        _vcard(stanza)
        owner = stanza.recipient
        d = vcards.get(owner.local, owner.domain, KEY)
        own = _is_own(stanza)

        def answer(stored):
            if stored is not None:
                return domish.SerializedXML(stored)
            if own:
                return domish.Element((NS_VCARD, "vCard"))
            raise StanzaError("service-unavailable")

        return d.addCallback(answer)

    def set_(stanza):
        if not _is_own(stanza):
            raise StanzaError("forbidden", "a vCard is set only by its own account")
        text = _vcard(stanza).toXml()
        max_size = api.options.max_size
        if len(text.encode("utf-8")) > max_size:
            raise StanzaError("not-acceptable", f"the vCard is larger than {max_size} bytes")
        user = stanza.recipient
        return vcards.set(user.local, user.domain, KEY, text)

    api.disco_feature(NS_VCARD)
    api.handle_iq("get", BARE, NS_VCARD, get)
    api.handle_iq("set", BARE, NS_VCARD, set_)


def _vcard(stanza):
    """The request's ``<vCard/>`` element."""
    if stanza.payload.name != "vCard":
        raise StanzaError("bad-request", "expected <vCard xmlns='vcard-temp'/>")
    return stanza.payload


def _is_own(stanza):
    """Whether the account's own client sent ``stanza`` to its bare JID."""
    return stanza.origin is not None and stanza.recipient == stanza.sender.bare
