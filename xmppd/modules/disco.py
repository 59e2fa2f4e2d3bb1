"""Service Discovery (XEP-0030).

- disco#info to the server (§3.1): identity ``server/im`` named "xmppd",
  the features every module enabled for the host advertises
  (``api.disco_feature``) and the extended information forms of XEP-0128
  that modules add (:meth:`DiscoService.add_form`, such as XEP-0157's
  contact addresses); a ``node`` the server does not know is
  ``item-not-found`` (§3.2, §7) unless a module answers it (see
  :meth:`DiscoService.add_node`).
- disco#items to the server (§4.1): the items other modules add with
  :meth:`DiscoService.add_item` (components), in the order added.
- disco#info and disco#items to an account's bare JID, answered by the server
  on the account's behalf (§3.1, §4.1) under the rules of §8: only the
  account itself and entities with a presence subscription (``from`` or
  ``both``, RFC 6121 §3) learn anything.  Others, and requests for accounts
  that do not exist, get ``service-unavailable`` for disco#info and an empty
  result for disco#items (§8, rules 1 and 2).  Authorised requests get the
  identity ``account/registered`` (``account/anonymous`` on an anonymous
  host: the XMPP Registrar's disco identities) (and those modules add with
  :meth:`DiscoService.add_account_identity`) with the disco features, and as items the
  account's resources: all connected ones for the account itself, the
  available ones for a subscriber.

Publishes the ``disco`` service (:class:`DiscoService`).
"""

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.events import BARE, HOST
from xmppd.core.stanzas import StanzaError

NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
SERVER_IDENTITY = ("server", "im", "xmppd")  # category, type, name
ACCOUNT_IDENTITY = ("account", "registered", None)
ANONYMOUS_IDENTITY = ("account", "anonymous", None)
ACCOUNT_FEATURES = (NS_INFO, NS_ITEMS)


def info_element(identities, features, node=None):
    """A disco#info ``<query/>`` with ``(category, type, name)`` identities."""
    query = domish.Element((NS_INFO, "query"))
    if node is not None:
        query["node"] = node
    for category, type_, name in identities:
        identity = query.addElement("identity")
        identity["category"] = category
        identity["type"] = type_
        if name is not None:
            identity["name"] = name
    for feature in features:
        query.addElement("feature")["var"] = feature
    return query


def items_element(items, node=None):
    """A disco#items ``<query/>`` with ``(jid, name)`` items."""
    query = domish.Element((NS_ITEMS, "query"))
    if node is not None:
        query["node"] = node
    for jid, name in items:
        item = query.addElement("item")
        item["jid"] = jid
        if name is not None:
            item["name"] = name
    return query


class DiscoService:
    """What other modules may use and extend of the server's disco answers."""

    def __init__(self, api):
        self._api = api
        self._items = {}  # domain -> [(jid, name)]
        self._nodes = []
        self._forms = []
        self.account_identities = [ACCOUNT_IDENTITY]

    def serves(self, domain):
        """Whether service discovery is enabled for ``domain``."""
        return self._api.enabled(domain)

    def info(self, domain, node=None):
        """The server's disco#info ``<query/>`` for ``domain`` (mirroring
        ``node`` if given), with the modules' extended information forms."""
        query = info_element([SERVER_IDENTITY], self._api.features(domain), node)
        for form in filter(None, (builder(domain) for builder in self._forms)):
            query.addChild(form.toElement())
        return query

    def add_form(self, builder):
        """Extend the server's disco#info with a form (XEP-0128 §2):
        ``builder(domain)`` returns the ``result`` data form
        (``wokkel.data_form.Form`` with its FORM_TYPE, one per FORM_TYPE,
        §4) for hosted ``domain``, or None (the module is not enabled
        there, or has nothing to say).  Asked on every request, so a form
        follows a reloaded config; the forms are in the order added."""
        self._forms.append(builder)

    def add_account_identity(self, identity):
        """Give accounts' disco#info the identity ``(category, type, name)``
        too (such as XEP-0163's ``pubsub/pep``)."""
        self.account_identities.append(identity)

    def add_item(self, domain, jid, name=None):
        """List ``jid`` among the items of the server ``domain`` (§4.1)."""
        self._items.setdefault(domain, []).append((jid, name))

    def items(self, domain):
        return list(self._items.get(domain, ()))

    def add_node(self, handler):
        """Answer disco#info requests to the server with a ``node``:
        ``handler(domain, node)`` returns the ``<query/>`` for a node it
        knows, else None."""
        self._nodes.append(handler)

    def node_info(self, domain, node):
        """The ``<query/>`` a handler gives for ``node``, or None."""
        for handler in self._nodes:
            query = handler(domain, node)
            if query is not None:
                return query
        return None


def setup(api):
    disco = DiscoService(api)
    api.provide("disco", disco)
    api.disco_feature(NS_INFO)
    api.disco_feature(NS_ITEMS)

    def server_info(stanza):
        domain, node = stanza.recipient.domain, stanza.payload.getAttribute("node")
        query = disco.info(domain) if node is None else disco.node_info(domain, node)
        if query is None:
            raise StanzaError("item-not-found")
        return query

    def server_items(stanza):
        if stanza.payload.getAttribute("node") is not None:
            raise StanzaError("item-not-found")
        return items_element(disco.items(stanza.recipient.domain))

    def account_info(stanza):
        def answer(access):
            if access is None:
                raise StanzaError("service-unavailable")
            node = stanza.payload.getAttribute("node")
            if node is not None:
                raise StanzaError("item-not-found")
            domain = stanza.recipient.domain
            identities = disco.account_identities
            if api.hosts[domain].authentication == "anonymous":
                identities = [ANONYMOUS_IDENTITY if identity == ACCOUNT_IDENTITY else identity
                              for identity in identities]
            return info_element(identities, sorted(
                {*ACCOUNT_FEATURES, *api.account_features(domain)}))

        return _access(api, stanza).addCallback(answer)

    def account_items(stanza):
        def answer(access):
            node = stanza.payload.getAttribute("node")
            if access is None:
                return items_element([], node)
            if node is not None:
                raise StanzaError("item-not-found")
            sessions = api.sessions.resources(stanza.recipient)
            if access != "self":
                sessions = [s for s in sessions if s.available]
            return items_element(sorted((s.jid.full, None) for s in sessions))

        return _access(api, stanza).addCallback(answer)

    api.handle_iq("get", HOST, NS_INFO, server_info)
    api.handle_iq("get", HOST, NS_ITEMS, server_items)
    api.handle_iq("get", BARE, NS_INFO, account_info)
    api.handle_iq("get", BARE, NS_ITEMS, account_items)


@defer.inlineCallbacks
def _access(api, stanza):
    """What the sender of ``stanza`` may learn of the account it is
    addressed to (XEP-0030 §8): ``"self"``, ``"subscriber"``, or None (no
    such account, or no presence subscription)."""
    account, sender = stanza.recipient, stanza.sender
    if sender is None or not (yield api.open_store("accounts").exists(account.local,
                                                                      account.domain)):
        return None
    if sender.bare == account:
        return "self"
    subscribed = yield api.service("roster").sees_presence(account, sender)
    return "subscriber" if subscribed else None
