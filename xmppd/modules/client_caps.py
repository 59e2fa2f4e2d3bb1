"""Entity Capabilities of the entities whose presence passes through the
server (XEP-0115), for personal eventing's filtered notifications
(XEP-0163 §4: which full JIDs want notifications of which nodes).

- Seen: the ``<c hash node ver/>`` of available presence (§6.1) broadcast
  by a local client, or sent to a local account (by a local or remote
  entity), recorded for the sender's full JID.  Unavailable presence from
  that JID, or its local session ending, forgets it.  Presence without
  ``<c/>`` changes nothing (§8.4); caps without a node or ver, or with a
  part longer than ``MAX_LENGTH``, are ignored.  In a cluster, presence
  sent on behalf of a client bound on another node (an answer to a probe)
  is left to that node: it follows the client's presence, and the
  client's answers to queries reach it, not this one.
- Followed (:meth:`ClientCaps.follow`): who sent its presence to an
  account, for personal eventing's notifications; not a room's occupant
  (its presence carries ``muc#user``): an occupant is not the account's
  contact, and the room would bounce what is sent to it (XEP-0045 §7.5).
- Resolved (§6.2): the features of a ``(hash, ver)`` seen before come
  from a cache of the ``CACHE_SIZE`` most recently used (§8.2); otherwise
  the server (the domain of the local account involved) asks the entity,
  a disco#info ``<query node='NODE#VER'/>``.  One query is in flight per
  ``(hash, ver)``, the other entities announcing it wait for its answer;
  one per full JID and ``MAX_QUERIES`` in all.  A query unanswered after
  ``QUERY_TIMEOUT`` seconds, answered with an error or with more than
  ``MAX_FEATURES`` features, is passed on to the next entity waiting; if
  none is left, the features stay unknown until the ver is announced again.
- Verified (§5.4): an answer is cached only if it is well formed (no
  identity, feature or form type twice) and hashes, with the announced
  hash function (sha-1, sha-256 or sha-512), to the ver; otherwise it
  describes only the entity that gave it, and the next entity waiting is
  asked.  An answer for caps of an unknown hash function, or of the legacy
  format (no ``hash``, §13; ``ext`` bundles are not resolved), describes
  only that entity too.

Publishes the ``client_caps`` service (:class:`ClientCaps`); advertises
nothing.
"""

import sys
from collections import OrderedDict

from xmppd.core.events import (BARE, FULL, HOST, IQ_RESPONSES, SESSION_UNBOUND, iq_event,
                               pre_event, presence_event)
from xmppd.core.sessions import Session
from xmppd.core.stanzas import child, make_stanza
from xmppd.modules.caps import (HASHES, IDENTITY_ATTRIBUTES, NS_CAPS, NS_DISCO_INFO,
                                verification_string)
from xmppd.wokkel_compat import data_form

# Ahead of every other handler (the closed-domain policy's 100 included):
# this module only looks, so that handlers after it read features() of the
# presence being processed; and it claims only the answers to its queries.
PRIORITY = 200
CACHE_SIZE = 10_000  # (hash, ver) pairs
MAX_QUERIES = 300  # in flight, in all
QUERY_TIMEOUT = 30.0  # seconds
MAX_LENGTH = 256  # characters of a hash name, node or ver
MAX_FEATURES = 500  # in one answer
NS_MUC_USER = "http://jabber.org/protocol/muc#user"  # an occupant's presence, from its room


class _Entity:
    """What is known of one full JID: its caps ``(hash, node, ver)``, the
    domain that asks it, its features once known, the query it waits for."""

    __slots__ = ("caps", "domain", "features", "query")

    def __init__(self, caps, domain):
        self.caps = caps
        self.domain = domain
        self.features = None
        self.query = None


class _Query:
    """A disco#info query: ``key``, the ``(hash, ver)`` it resolves (None
    for caps that cannot be verified), and the full JIDs waiting for it,
    the first one asked (under ``id``, until ``timer``)."""

    __slots__ = ("key", "waiting", "id", "timer")

    def __init__(self, key, full_jid):
        self.key = key
        self.waiting = [full_jid]
        self.id = self.timer = None


class ClientCaps:
    """The ``client_caps`` service: the features of full JIDs."""

    def __init__(self, api):
        self._api = api
        self._entities = {}  # full JID -> _Entity
        self._cache = OrderedDict()  # (hash, ver) -> features, least recently used first
        self._resolving = {}  # (hash, ver) -> its _Query
        self._queries = {}  # iq id -> _Query
        self._listeners = []
        self._followers = []

    def features(self, full_jid):
        """The disco#info features (a frozenset) of ``full_jid`` if known,
        else None."""
        entity = self._entities.get(full_jid)
        return None if entity is None else entity.features

    def listen(self, callback):
        """Call ``callback(full_jid, features)`` whenever the features of a
        full JID become known from an answer (not when its presence names
        a ver already known: :meth:`features` has them then)."""
        self._listeners.append(callback)

    def follow(self, callback):
        """Call ``callback(account, full_jid, available)`` for presence to a
        local account (``account``, a bare JID) from another entity:
        available presence with capabilities (``available`` True) and
        unavailable presence (False); presence without capabilities
        (whose sender wants no notifications) is not passed on."""
        self._followers.append(callback)

    def forget(self, full_jid):
        """``full_jid`` is no longer available."""
        entity = self._entities.pop(full_jid, None)
        query = entity and entity.query
        if query is None:
            return
        if query.waiting[0] == full_jid:
            self._end(query)
            self._pass_on(query)
        else:
            query.waiting.remove(full_jid)

    # Presence

    def broadcast(self, stanza):
        """A local client's presence broadcast (no ``to``)."""
        if stanza.origin is not None and not stanza.element.hasAttribute("to"):
            self._presence(stanza, stanza.sender.domain)
        return False

    def inbound(self, stanza):
        """Presence to a local account; in a cluster, not that of a client
        bound on another node (a probe's answer, sent on its behalf): its
        own node follows it."""
        sender = stanza.sender
        if sender is not None and sender.resource is not None:
            session = None if self._api.node is None else self._api.sessions.get(sender)
            if session is not None and not isinstance(session, Session):
                return False
            available = self._presence(stanza, stanza.recipient.domain)
            if available is not None and self._followers:
                account = stanza.recipient.bare
                if sender.bare != account and child(stanza.element, NS_MUC_USER, "x") is None:
                    for callback in self._followers:
                        callback(account, sender.full, available)
        return False

    def _presence(self, stanza, domain):
        """Record what the presence says: True if it is available with
        capabilities, False if unavailable, else None.  (Presence without
        capabilities, most of it, is let go first.)"""
        type_ = stanza.type
        if type_ is None:
            caps = _caps(stanza.element)
            if caps is None or not self._api.enabled(domain):
                return None
            self._announced(stanza.sender.full, domain, caps)
            return True
        if type_ == "unavailable":
            self.forget(stanza.sender.full)
            return False
        return None

    def _announced(self, full_jid, domain, caps):
        entity = self._entities.get(full_jid)
        if entity is not None and entity.caps == caps and (
                entity.features is not None or entity.query is not None):
            return
        self.forget(full_jid)
        entity = self._entities[full_jid] = _Entity(caps, domain)
        hash_, _, ver = caps
        key = (hash_, ver) if hash_ in HASHES else None
        if key is not None:
            entity.features = self._cache.get(key)
            if entity.features is not None:
                self._cache.move_to_end(key)
                return
            query = self._resolving.get(key)
            if query is not None:
                query.waiting.append(full_jid)
                entity.query = query
                return
        if len(self._queries) < MAX_QUERIES:
            entity.query = query = _Query(key, full_jid)
            if key is not None:
                self._resolving[key] = query
            self._ask(query)

    # Queries

    def _ask(self, query):
        """Send ``query`` to the first entity waiting for it."""
        full_jid = query.waiting[0]
        entity = self._entities[full_jid]
        query.id = self._api.next_id()
        query.timer = self._api.clock.callLater(QUERY_TIMEOUT, self._unanswered, query)
        self._queries[query.id] = query
        _, node, ver = entity.caps
        iq = make_stanza("iq", to=full_jid, from_=entity.domain, type_="get", id_=query.id)
        iq.addElement((NS_DISCO_INFO, "query"))["node"] = f"{node}#{ver}"
        self._api.route(iq)

    def _end(self, query):
        """No (other) answer is expected to ``query``'s current iq."""
        del self._queries[query.id]
        if query.timer.active():
            query.timer.cancel()

    def _pass_on(self, query):
        """The entity asked gave no usable answer: ask the next one waiting."""
        entity = self._entities.get(query.waiting.pop(0))
        if entity is not None:
            entity.query = None
        if query.waiting:
            self._ask(query)
        elif query.key is not None:
            del self._resolving[query.key]

    def _unanswered(self, query):
        self._end(query)
        self._pass_on(query)

    def answered(self, stanza):
        """Claim an answer to one of this module's queries."""
        query = self._queries.get(stanza.element.getAttribute("id"))
        if query is None or stanza.sender is None or stanza.sender.full != query.waiting[0]:
            return False
        self._end(query)
        info = (next(stanza.element.elements(NS_DISCO_INFO, "query"), None)
                if stanza.type == "result" else None)
        features = None if info is None else _features(info)
        if features is None:
            self._pass_on(query)
            return True
        verified = query.key is not None and _verified(info, *query.key)
        known = list(query.waiting) if verified else query.waiting[:1]
        for full_jid in known:
            entity = self._entities[full_jid]
            entity.features, entity.query = features, None
        if verified:
            self._cache[query.key] = features
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            del self._resolving[query.key]
        else:
            self._pass_on(query)
        for full_jid in known:
            for callback in self._listeners:
                try:
                    callback(full_jid, features)
                except Exception:
                    self._api.log.failure("caps listener {callback!r} failed", callback=callback)
        return True


def _caps(presence):
    """``(hash, node, ver)`` of the ``<c/>`` of a presence (hash None for
    legacy caps), or None."""
    c = child(presence, NS_CAPS, "c")
    if c is None:
        return None
    caps = (c.getAttribute("hash"), c.getAttribute("node"), c.getAttribute("ver"))
    if not caps[1] or not caps[2] or any(len(part or "") > MAX_LENGTH for part in caps):
        return None
    return caps


def _features(info):
    """The features of a disco#info ``<query/>``, or None if too many."""
    features = [feature.getAttribute("var") for feature in info.elements(NS_DISCO_INFO, "feature")]
    if len(features) > MAX_FEATURES:
        return None
    return frozenset(sys.intern(var) for var in features if var)


def _verified(info, hash_, ver):
    """Whether a disco#info ``<query/>`` is well formed and hashes to
    ``ver`` (§5.4)."""
    identities = [tuple(identity.getAttribute(name, "") for name in IDENTITY_ATTRIBUTES)
                  for identity in info.elements(NS_DISCO_INFO, "identity")]
    features = [feature.getAttribute("var") for feature in info.elements(NS_DISCO_INFO, "feature")]
    form_types = []
    for form in info.elements(data_form.NS_X_DATA, "x"):
        for field in form.elements(data_form.NS_X_DATA, "field"):
            if field.getAttribute("var") == "FORM_TYPE" and field.getAttribute("type") == "hidden":
                values = {str(value) for value in field.elements(data_form.NS_X_DATA, "value")}
                if len(values) != 1:
                    return False
                form_types += values
    if None in features or any(len(set(parts)) != len(parts)
                               for parts in (identities, features, form_types)):
        return False
    try:
        return verification_string(info, hash_) == ver
    except data_form.Error:  # a form wokkel cannot read (a field twice...)
        return False


def setup(api):
    tracker = ClientCaps(api)
    api.provide("client_caps", tracker)
    # A client's broadcast is addressed to its own bare JID.
    api.hook(pre_event("presence", BARE), tracker.broadcast, priority=PRIORITY)
    for target in (BARE, FULL):
        api.hook(presence_event(target), tracker.inbound, priority=PRIORITY)
    for type_ in IQ_RESPONSES:
        api.hook(iq_event(type_, HOST), tracker.answered, priority=PRIORITY)
    api.hook(SESSION_UNBOUND, lambda session: tracker.forget(session.jid.full))
