"""Personal eventing (XEP-0163 v1.2): a publish-subscribe service
(XEP-0060) on every account's bare JID, with its own ``pep`` store of the
``pubsub`` kind.

- Publishing (XEP-0060 §7.1), only by the account's own clients: a node
  that does not exist is created with the defaults of XEP-0163 §4
  (``presence`` access, one item) and the publish-options (XEP-0060
  §7.1.5, XEP-0222, XEP-0223); for a node that exists, publish-options
  the node's configuration does not hold are ``conflict`` with
  ``precondition-not-met``.  An item without an id gets one; an item with
  no payload, or more than one, is ``bad-request``
  (``payload-required``, ``invalid-payload``); a payload over
  ``pep.max_item_size`` bytes is ``not-acceptable`` (``payload-too-big``);
  a new node beyond ``pep.max_nodes`` is ``resource-constraint``.
  ``pubsub#max_items`` keeps the newest items (``max``:
  ``pep.max_items``); with ``pubsub#persist_items`` false none is kept.
- Retracting (§7.2), creating (§8.1, with a configuration), configuring
  (§8.2), the default configuration (§8.3), deleting (§8.4) and purging
  (§8.5) nodes, and the whitelist's affiliations (§8.9): the owner's.
- Retrieving items (§6.5): all, the newest ``max_items``, or by id, by the
  owner and by whoever the node's access model allows
  (:mod:`xmppd.pubsub.access`); an unknown node is ``item-not-found``.
- Notifications (XEP-0163 §4.3, "filtered notifications"): an event goes
  to each available resource of the account and each entity whose
  available presence with capabilities the account received (as the
  ``client_caps`` service passes it on), when the entity's capabilities
  (XEP-0115, resolved by that service) have ``NODE+notify``
  and the access model allows it, unless the account blocks the entity
  (XEP-0191).  Such an entity newly available, or with new capabilities,
  gets the last item of each node it is interested in (XEP-0163 §4.3.1,
  ``pubsub#send_last_published_item`` ``on_sub_and_presence``), stamped
  with its publication time (XEP-0203); so does such an entity of a
  contact that becomes a subscriber (XEP-0163 §4.3.4), when the account's
  ``subscribed`` goes out.
- In a cluster (docs/cluster.md) each resource is notified by the node it
  is bound to, a remote entity by the node that received its presence
  last.  The publishing node tells the others the event
  (``pep/notified``) with the available resources, wherever bound, of the
  local contacts whose presence the account receives (its roster's ``to``
  and ``both``, RFC 6121 §4.2.2); each node notifies, among them and the
  account's resources, those bound on it that want the event (their
  capabilities are known there), and the entities whose presence it
  received (``client_caps`` passes on the presence of clients bound on it
  and of remote entities only).  A node receiving a remote entity's
  presence tells the others to forget it (``pep/heard``): the peer's
  next connection may reach another node.  An account's ``subscribed``
  is told to the others (``pep/subscribed``): each node sends the last
  items to the entities of the new subscriber it follows, and follows the
  account's resources bound on it, whose presence the subscriber now
  receives (RFC 6121 §3.1.5) from the node of the approving resource.
- The account's disco#info has the identity ``pubsub/pep`` and the
  pubsub features (XEP-0163 §6).

- Explicit subscriptions (XEP-0060 §6.1, §6.2, §5.6; XEP-0163 §6 requires
  them of a PEP service): anyone the node's access model lets read it
  subscribes its own JID, bare or full (at most ``pep.max_subscriptions``
  per node), and gets the last item (§6.1.7); every event then goes to it
  as well, while the access model still lets it read the node and the
  account does not block it, unless it is one of the account's own.  A
  contact's client may so get an event twice (by its ``+notify`` and its
  subscription): the item ids tell them apart.  Subscription options
  (§6.3) are not offered.
"""

import json
import secrets
from datetime import datetime, timezone

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.events import BARE, SESSION_AVAILABLE, pre_event
from xmppd.core.sessions import Session
from xmppd.core.stanzas import StanzaError, child, make_stanza, xep0082_stamp
from xmppd.jid import JID, InvalidJID
from xmppd.modules.caps import NS_CAPS
from xmppd.options import Option, Options, integer
from xmppd.pubsub import NS_OWNER, NS_PUBSUB, error
from xmppd.pubsub.access import refusal
from xmppd.pubsub.elements import (end_subscription, form_in, items_event, node_event,
                                   node_name, own_subscriptions, owner_payload, publish_result,
                                   published_item, pubsub, retract_event, retrieve, subscriber,
                                   subscription_element)
from xmppd.pubsub.config import (PEP_DEFAULTS, check_preconditions, config_form, enabled,
                                 max_items, read_form, read_publish_options, reconfigure)
from xmppd.storage import SUBSCRIBED_TO, NodeExists, TooManyNodes
from xmppd.storage.kinds import PubSubItem, PubSubSubscription

NS_DELAY = "urn:xmpp:delay"
IDENTITY = ("pubsub", "pep", None)
FEATURES = ("access-open", "access-presence", "access-roster", "access-whitelist",
            "auto-create", "auto-subscribe", "config-node", "config-node-max",
            "create-and-configure", "create-nodes", "delete-items", "delete-nodes",
            "filtered-notifications", "item-ids", "last-published", "modify-affiliations",
            "multi-items", "persistent-items", "presence-notifications", "publish",
            "publish-options", "purge-nodes", "retract-items", "retrieve-affiliations",
            "retrieve-default", "retrieve-items", "retrieve-subscriptions", "subscribe")
SETTABLE_AFFILIATIONS = ("member", "outcast", "none")
# From another cluster node: JSON {"a": account, "n": node, "c": its
# configuration, "x": the event, "j": contacts' full JIDs}; and "ACCOUNT FULL-JID".
NOTIFIED = "pep/notified"
HEARD = "pep/heard"
# "ACCOUNT CONTACT": ACCOUNT approved the subscription of CONTACT (bare JIDs).
SUBSCRIBED = "pep/subscribed"
SUBSCRIBED_PRIORITY = -100  # on the pre-event: after the policies (closed domains, blocking)

OPTIONS = Options(  # [pep]
    max_nodes=Option(100, integer(1)),  # per account
    max_items=Option(256, integer(1)),  # per node: what "max" means
    max_subscriptions=Option(1000, integer(1)),  # explicit ones, per node
    max_item_size=Option(131072, integer(1)),  # bytes of one item's payload
)


def _now(clock):
    return datetime.fromtimestamp(clock.seconds(), timezone.utc)


def _service(account):
    return account.full


class Pep:
    """The PEP services of the accounts."""

    def __init__(self, api, store):
        self._api = api
        self._store = store
        # The entities whose available presence each account received, and
        # the reverse: account bare JID <-> contact full JID (text).
        self._recipients = {}
        self._accounts_of = {}
        self._listeners = []

    @property
    def _caps(self):
        return self._api.service("client_caps")

    # Requests

    def request(self, stanza):
        """An iq to the account with a ``<pubsub/>`` payload (§6, §7)."""
        account = stanza.recipient.bare
        verbs = list(stanza.payload.elements(NS_PUBSUB))
        if not verbs:
            raise error("bad-request", text="an empty pubsub request")
        verb = verbs[0]
        if stanza.element.getAttribute("type") == "get":
            if verb.name == "items":
                return self.items(stanza, account, verb)
            if verb.name == "affiliations":
                return self.own_affiliations(stanza, account)
        elif verb.name == "publish":
            options = next((child for child in verbs[1:] if child.name == "publish-options"),
                           None)
            return self.publish(stanza, account, verb, options)
        elif verb.name == "retract":
            return self.retract(stanza, account, verb)
        elif verb.name == "create":
            configure = next((child for child in verbs[1:] if child.name == "configure"), None)
            return self.create(stanza, account, verb, configure)
        if verb.name == "subscribe":
            return self.subscribe(stanza, account, verb)
        if verb.name == "unsubscribe":
            return self.unsubscribe(stanza, account, verb)
        if verb.name == "subscriptions":
            return own_subscriptions(self._store, _service(account), stanza, verb)
        if verb.name == "options":
            raise error("feature-not-implemented", feature="subscription-options")
        raise error("feature-not-implemented", text=f"{verb.name} is not offered by PEP")

    def owner_request(self, stanza):
        """An iq to the account with a ``<pubsub xmlns='…#owner'/>`` payload (§8)."""
        account = self._owner(stanza)
        verb = next(stanza.payload.elements(NS_OWNER), None)
        name = None if verb is None else verb.name
        if stanza.element.getAttribute("type") == "get":
            if name == "configure":
                return self.configuration(account, verb)
            if name == "default":
                return owner_payload("default", None, config_form(PEP_DEFAULTS))
            if name == "affiliations":
                return self.affiliations(account, verb)
        elif name == "configure":
            return self.configure(stanza, account, verb)
        elif name == "delete":
            return self.delete(account, verb)
        elif name == "purge":
            return self.purge(account, verb)
        elif name == "affiliations":
            return self.set_affiliations(account, verb)
        raise error("feature-not-implemented", text=f"{name} is not offered by PEP")

    def _owner(self, stanza):
        sender = stanza.sender
        if sender is None or sender.bare != stanza.recipient.bare:
            raise error("forbidden", text="only the account may change its PEP nodes")
        return stanza.recipient.bare

    @defer.inlineCallbacks
    def publish(self, stanza, account, publish, options_element):
        self._owner(stanza)
        name = node_name(publish)
        item_id, payload = published_item(publish)
        x = form_in(options_element)
        item = yield self.put(account, name, item_id, payload,
                              None if x is None else read_publish_options(x))
        return publish_result(name, item.id)

    @defer.inlineCallbacks
    def put(self, account, name, item_id, payload, wanted=None, publisher=None):
        """Publish ``payload`` (an element) as item ``item_id`` (None: a new
        id) of the account's node ``name``, created with the publish-options
        ``wanted`` if absent, which an existing node must hold; notify, and
        tell the listeners (unless ``publisher``, a listener, published it).
        Deferred: the :class:`PubSubItem`.  Other modules publish for an
        account through this (vCard avatars, bookmarks)."""
        wanted = wanted or {}
        xml = payload.toXml()
        options = self._api.options
        if len(xml.encode("utf-8")) > options.max_item_size:
            raise error("not-acceptable", "payload-too-big",
                        f"an item is at most {options.max_item_size} bytes")
        node = yield self._store.get_node(_service(account), name)
        if node is None:
            config = {**PEP_DEFAULTS, **wanted}
            try:
                yield self._create(account, name, config)
            except NodeExists:  # another resource was first: its node holds
                node = yield self._store.get_node(_service(account), name)
        if node is not None:
            config = node.config
            check_preconditions(config, wanted)
        item = PubSubItem(item_id or secrets.token_hex(8), account.full, xml,
                          _now(self._api.clock))
        keep = max_items(config, options.max_items)
        if keep:
            yield self._store.publish(_service(account), name, item, keep)
        payloads = enabled(config, "pubsub#deliver_payloads")
        self.notify(account, name, config, lambda: items_event(name, [item], payloads))
        self._tell(publisher, account, name, item, None)
        return item

    def listen(self, listener):
        """``listener(account, node, item, retracted_id)`` after each item
        published (``retracted_id`` None) or gone (``item`` None: retracted,
        or its node purged or deleted)."""
        self._listeners.append(listener)

    def _tell(self, publisher, account, name, item, retracted):
        for listener in self._listeners:
            if listener != publisher:
                try:
                    listener(account, name, item, retracted)
                except Exception:
                    self._api.log.failure("a PEP listener failed on {node}", node=name)

    def items_of(self, account, name):
        """Deferred: the items of the account's node ``name``, oldest first
        (empty if there is no such node)."""
        return self._store.get_items(_service(account), name).addCallback(
            lambda items: items[::-1])

    @defer.inlineCallbacks
    def remove(self, account, name, item_id, publisher=None):
        """Retract item ``item_id`` of the account's node ``name``, notifying
        as a retraction by the account does; Deferred: whether it was there."""
        node = yield self._store.get_node(_service(account), name)
        if node is None or not (yield self._store.retract(_service(account), name, item_id)):
            return False
        if enabled(node.config, "pubsub#notify_retract"):
            self.notify(account, name, node.config, lambda: retract_event(name, [item_id]))
        self._tell(publisher, account, name, None, item_id)
        return True

    def _create(self, account, name, config):
        d = self._store.create_node(_service(account), name, config,
                                    account=(account.local, account.domain),
                                    max_nodes=self._api.options.max_nodes)

        def too_many(failure):
            failure.trap(TooManyNodes)
            raise StanzaError("resource-constraint",
                              f"an account has at most {self._api.options.max_nodes} nodes")
        return d.addErrback(too_many)

    @defer.inlineCallbacks
    def create(self, stanza, account, create, configure):
        self._owner(stanza)
        name = node_name(create)
        config = dict(PEP_DEFAULTS)
        x = form_in(configure)
        if x is not None:
            config.update(read_form(x))
        try:
            yield self._create(account, name, config)
        except NodeExists:
            raise StanzaError("conflict", f"node {name} exists")
        return None

    @defer.inlineCallbacks
    def retract(self, stanza, account, retract):
        self._owner(stanza)
        name = node_name(retract)
        ids = [item.getAttribute("id") for item in retract.elements(NS_PUBSUB, "item")]
        if len(ids) != 1 or not ids[0]:
            raise error("bad-request", "item-required")
        node = yield self._node(account, name)
        if not (yield self._store.retract(_service(account), name, ids[0])):
            raise StanzaError("item-not-found", f"no item {ids[0]}")
        if retract.getAttribute("notify") in ("1", "true") or enabled(
                node.config, "pubsub#notify_retract"):
            self.notify(account, name, node.config, lambda: retract_event(name, ids))
        self._tell(None, account, name, None, ids[0])
        return None

    @defer.inlineCallbacks
    def items(self, stanza, account, request):
        name = node_name(request)
        node = yield self._node(account, name)
        if stanza.sender is None:
            raise StanzaError("forbidden")
        if stanza.sender.bare != account:
            refused = (yield self._access(account, name, node.config))(
                stanza.sender.bare.full)
            if refused is not None:
                raise refused
        return (yield retrieve(self._store, _service(account), name, request))

    # Explicit subscriptions (XEP-0060 §6.1, §6.2, §5.6)

    @defer.inlineCallbacks
    def subscribe(self, stanza, account, request):
        name = node_name(request)
        jid = subscriber(stanza, request)
        node = yield self._node(account, name)
        if jid.bare != account:
            refused = (yield self._access(account, name, node.config))(jid.bare.full)
            if refused is not None:
                raise refused
        service = _service(account)
        subscriptions = yield self._store.subscriptions(service, name)
        subscription = next((s for s in subscriptions if s.jid == jid.full), None)
        if subscription is None:
            if len(subscriptions) >= self._api.options.max_subscriptions:
                raise StanzaError("resource-constraint", "the node has too many subscriptions")
            subscription = PubSubSubscription(jid.full, secrets.token_hex(8), "subscribed", {})
            yield self._store.subscribe(service, name, subscription)
        # The last item after the result (§6.1.7).
        self._api.clock.callLater(0, lambda: self._send_last(
            account, jid.full, {name}, ("on_sub", "on_sub_and_presence")).addErrback(
                self._failed, account))
        return pubsub(subscription_element(name, subscription))

    @defer.inlineCallbacks
    def unsubscribe(self, stanza, account, request):
        name = node_name(request)
        jid = subscriber(stanza, request)
        yield self._node(account, name)
        yield end_subscription(self._store, _service(account), name, jid,
                               request.getAttribute("subid"))
        return None

    def own_affiliations(self, stanza, account):
        """The requester's affiliations (§5.7): the owner's nodes."""
        answer = domish.Element((NS_PUBSUB, "pubsub"))
        affiliations = answer.addElement("affiliations")
        if stanza.sender is None or stanza.sender.bare != account:
            return answer
        d = self._store.nodes(_service(account))

        def listed(nodes):
            for node in nodes:
                affiliation = affiliations.addElement("affiliation")
                affiliation["node"], affiliation["affiliation"] = node.name, "owner"
            return answer
        return d.addCallback(listed)

    # Owner requests

    @defer.inlineCallbacks
    def configuration(self, account, configure):
        name = node_name(configure)
        node = yield self._node(account, name)
        return owner_payload("configure", name, config_form(node.config))

    @defer.inlineCallbacks
    def configure(self, stanza, account, configure):
        node = yield self._node(account, node_name(configure))
        yield reconfigure(self._store, _service(account), node, configure,
                          self._api.options.max_items)
        return None

    @defer.inlineCallbacks
    def delete(self, account, delete):
        name = node_name(delete)
        node = yield self._node(account, name)
        items = yield self._store.get_items(_service(account), name)
        if enabled(node.config, "pubsub#notify_delete"):
            # Before the node goes with its subscriptions and affiliations,
            # which say who gets the notice (XEP-0060 §8.4.2).
            yield self.notify(account, name, node.config, lambda: node_event("delete", name))
        yield self._store.delete_node(_service(account), name)
        for item in items:
            self._tell(None, account, name, None, item.id)
        return None

    @defer.inlineCallbacks
    def purge(self, account, purge):
        name = node_name(purge)
        node = yield self._node(account, name)
        removed = yield self._store.purge(_service(account), name)
        self.notify(account, name, node.config, lambda: node_event("purge", name))
        for item_id in removed:
            self._tell(None, account, name, None, item_id)
        return None

    @defer.inlineCallbacks
    def affiliations(self, account, request):
        name = node_name(request)
        yield self._node(account, name)
        found = yield self._store.affiliations(_service(account), name)
        payload = owner_payload("affiliations", name)
        listed = next(payload.elements())
        for jid, affiliation in sorted({account.full: "owner", **found}.items()):
            entry = listed.addElement("affiliation")
            entry["jid"], entry["affiliation"] = jid, affiliation
        return payload

    @defer.inlineCallbacks
    def set_affiliations(self, account, request):
        name = node_name(request)
        yield self._node(account, name)
        changes = []
        for entry in request.elements(NS_OWNER, "affiliation"):
            affiliation = entry.getAttribute("affiliation")
            try:
                jid = JID.parse(entry.getAttribute("jid", "")).bare
            except InvalidJID as e:
                raise StanzaError("jid-malformed", str(e))
            if affiliation not in SETTABLE_AFFILIATIONS or jid == account:
                raise StanzaError("not-acceptable",
                                  f"a contact's affiliation is one of {SETTABLE_AFFILIATIONS}")
            changes.append((jid.full, affiliation))
        for jid, affiliation in changes:
            yield self._store.set_affiliation(_service(account), name, jid, affiliation)
        return None

    def _node(self, account, name):
        """Deferred: the node; item-not-found if there is none."""
        def found(node):
            if node is None:
                raise StanzaError("item-not-found", f"no node {name}")
            return node
        return self._store.get_node(_service(account), name).addCallback(found)

    # Access (XEP-0060 §4.5)

    @defer.inlineCallbacks
    def _access(self, account, name, config):
        """Deferred: ``refused(contact)``, None if ``contact`` (a bare JID
        text, not the account) may read the account's node ``name`` of
        ``config``, else the error it gets; from one read of the roster or
        the affiliations, whatever the number of contacts asked."""
        model = config.get("pubsub#access_model")
        roster, affiliations = {}, {}
        if model in ("presence", "roster"):
            roster = {item.jid: item for item in
                      (yield self._api.service("roster").roster(account))[1]}
        if model == "whitelist":
            affiliations = yield self._store.affiliations(_service(account), name)
        return lambda contact: refusal(config, contact, roster.get(contact),
                                       affiliations.get(contact))

    # Notifications (XEP-0163 §4.3)

    def _interested(self, full, name):
        caps = self._caps
        features = None if caps is None else caps.features(full)
        return features is not None and f"{name}+notify" in features

    def notify(self, account, name, config, event):
        """Send the event ``event()`` about node ``name`` to the account's
        resources and its contacts that want it and may have it (in a
        cluster, those this node serves, and the other nodes theirs).
        Deferred: the notices are routed (this node's), failures logged."""
        if not enabled(config, "pubsub#deliver_notifications"):
            return defer.succeed(None)
        sent = [self._to_subscribers(account, name, config, event)]
        if self._api.node is None:
            sent.append(self._send(account, name, config, lambda: event().toXml(),
                                   self._api.sessions.resources(account),
                                   self._recipients.get(account, ())))
        else:
            sent.append(self._notify_cluster(account, name, config, event().toXml()))
        return defer.gatherResults([d.addErrback(self._failed, account) for d in sent])

    @defer.inlineCallbacks
    def _notify_cluster(self, account, name, config, xml):
        """Tell the other nodes the event ``xml`` with the available
        resources, wherever bound, of the local contacts whose presence the
        account receives (RFC 6121 §4.2.2: its roster's "to" and "both"), and
        notify those this node serves."""
        sessions = self._api.sessions
        contacts = []
        for item in (yield self._api.service("roster").roster(account))[1]:
            if item.subscription in SUBSCRIBED_TO:
                contacts += [session.jid.full for session in
                             sessions.resources(JID.parse(item.jid)) if session.available]
        self._api.tell_cluster(NOTIFIED, json.dumps(
            {"a": account.full, "n": name, "c": config, "x": xml, "j": contacts},
            separators=(",", ":")))
        yield self._served(account, name, config, xml, contacts)

    def notified(self, argument):
        """Another node of the cluster notified (``NOTIFIED``): the
        recipients this node serves."""
        try:
            fields = json.loads(argument)
            account = JID.parse(fields["a"])
            name, config, xml, contacts = fields["n"], fields["c"], fields["x"], fields["j"]
        except (ValueError, KeyError, TypeError, InvalidJID):
            return
        self._served(account, name, config, xml, contacts).addErrback(self._failed, account)

    def _served(self, account, name, config, xml, contacts):
        """Notify (in a cluster) the account's resources bound here, those of
        ``contacts`` (full JIDs) bound here, and the entities whose presence
        to the account this node received; Deferred: they are notified."""
        sessions = self._api.sessions
        here = set(self._recipients.get(account, ()))
        for full in contacts:
            session = sessions.get(JID.parse(full))
            if isinstance(session, Session) and session.available:
                here.add(full)
        return self._send(account, name, config, lambda: xml,
                          [session for session in sessions.resources(account)
                           if isinstance(session, Session)], here)

    def _send(self, account, name, config, event, resources, contacts):
        """Send the event (serialised, ``event()``) to the sessions among
        ``resources`` (the account's) and the full JIDs among ``contacts``
        that want it, the contacts if they may have it; Deferred: sent."""
        own = [session.jid.full for session in resources
               if session.available and self._interested(session.jid.full, name)]
        others = [full for full in contacts if self._interested(full, name)]
        if not own and not others:
            return defer.succeed(None)
        # Serialised once for every recipient.
        xml = event()
        for full in own:
            self._api.route(self._message(account, full, config, xml))
        if others:
            return self._to_contacts(account, config, name, others, xml)
        return defer.succeed(None)

    @defer.inlineCallbacks
    def _to_subscribers(self, account, name, config, event):
        """The event to the node's explicit subscriptions that may still
        read it, but the account's own (notified by their ``+notify``)."""
        subscriptions = [s.jid for s in (yield self._store.subscriptions(_service(account), name))
                         if JID.normalised(s.jid).bare != account]
        if not subscriptions:
            return
        may_read = yield self._readers(account, name, config)
        xml = event().toXml()
        for jid in subscriptions:
            if may_read(jid):
                self._api.route(self._message(account, jid, config, xml))

    @defer.inlineCallbacks
    def _to_contacts(self, account, config, name, recipients, xml):
        may_read = yield self._readers(account, name, config)
        for full in recipients:
            if may_read(full):
                self._api.route(self._message(account, full, config, xml))

    @defer.inlineCallbacks
    def _readers(self, account, name, config):
        """Deferred: whether an entity (a full JID, text) may have the
        items of the account's node (its access model, and the account's
        block list), from one read of the roster and the affiliations."""
        refused = yield self._access(account, name, config)
        blocking = self._api.service("blocking")
        blocked = None if blocking is None else (yield defer.maybeDeferred(blocking.get, account))

        def may_read(full):
            if refused(full.partition("/")[0]):
                return False
            return not (blocked and blocking.blocks(account, JID.parse(full)))
        return may_read

    def _message(self, account, full, config, xml):
        """The notification (serialised ``xml``) from ``account`` to ``full``."""
        message = make_stanza("message", to=full, from_=account.full,
                              type_=config.get("pubsub#notification_type", "headline"),
                              id_=self._api.next_id())
        message.addRawXml(xml)
        return message

    def _failed(self, failure, account):
        self._api.log.failure("cannot send the PEP notifications of {account}", failure,
                              account=account)

    # Who receives notifications: presence received, capabilities known

    def presence(self, account, full, available):
        """Presence from ``full`` to the account (``client_caps``): available
        with capabilities, or unavailable.  Remember who is there."""
        if not available:
            if full in self._accounts_of:
                self._forget(account, full)
        elif full not in self._recipients.get(account, ()):
            self._recipients.setdefault(account, set()).add(full)
            self._accounts_of.setdefault(full, set()).add(account)
            if self._api.node is not None and self._api.owner(JID.parse(full).domain) is None:
                self._api.tell_cluster(HEARD, f"{account.full} {full}")
            self.send_last(account, full)

    def heard(self, argument):
        """Another node of the cluster received available presence from
        the remote entity ``FULL`` to ``ACCOUNT`` (``HEARD``): that node
        notifies it now."""
        account, _, full = argument.partition(" ")
        try:
            self._forget(JID.parse(account), full)
        except InvalidJID:
            pass

    def _forget(self, account, full):
        for table, key, value in ((self._recipients, account, full),
                                  (self._accounts_of, full, account)):
            entries = table.get(key)
            if entries is not None:
                entries.discard(value)
                if not entries:
                    del table[key]

    def subscribed(self, stanza):
        """The server's own ``subscribed`` from an account, sent once the
        account's roster has the contact subscribed (RFC 6121 §3.1.5,
        §3.1.3, §3.4.2): :meth:`approved` here and on the other nodes of a
        cluster (``SUBSCRIBED``)."""
        account = stanza.sender
        if (stanza.type == "subscribed" and stanza.origin is None and account is not None
                and account.local is not None and account.resource is None
                and self._api.enabled(account.domain)):
            contact = stanza.recipient.bare
            self._api.tell_cluster(SUBSCRIBED, f"{account.full} {contact.full}")
            self.approved(account, contact)
        return False

    def subscribed_elsewhere(self, argument):
        """Another node of the cluster sent an account's ``subscribed``
        (``SUBSCRIBED``)."""
        try:
            account, contact = (JID.parse(jid) for jid in argument.split(" "))
        except (ValueError, InvalidJID):
            return
        self.approved(account, contact)

    def approved(self, account, contact):
        """``account`` approved the subscription of ``contact`` (bare JIDs):
        the entities of the contact followed here, a new subscriber's, get
        the account's last items (XEP-0163 §4.3.4); a local contact follows
        the account's available resources bound here, with capabilities,
        whose presence it now receives (RFC 6121 §3.1.5)."""
        for full in tuple(self._recipients.get(account, ())):
            if JID.parse(full).bare == contact:
                self.send_last(account, full)
        if self._api.enabled(contact.domain):
            for session in self._api.sessions.resources(account):
                if (isinstance(session, Session) and session.available
                        and child(session.presence, NS_CAPS, "c") is not None):
                    self.presence(contact, session.jid.full, True)

    def available(self, session):
        """An account's own resource became available: its own last items."""
        self.send_last(session.jid.bare, session.jid.full)

    def capabilities(self, full, features):
        """The capabilities of ``full`` became known (``client_caps``)."""
        try:
            jid = JID.parse(full)
        except InvalidJID:
            return
        session = self._api.sessions.get(jid)
        if session is not None and session.available:
            self.send_last(jid.bare, full)
        for account in tuple(self._accounts_of.get(full, ())):
            self.send_last(account, full)

    def send_last(self, account, full):
        """The last item of each node of ``account`` that ``full`` wants
        (and may have), with its publication time (XEP-0060 §6.1.7)."""
        caps = self._caps
        features = None if caps is None else caps.features(full)
        if not features or not self._api.enabled(account.domain):
            return
        wanted = {feature[:-len("+notify")] for feature in features
                  if feature.endswith("+notify")}
        if wanted:
            self._send_last(account, full, wanted).addErrback(self._failed, account)

    @defer.inlineCallbacks
    def _send_last(self, account, full, wanted, when=("on_sub_and_presence",)):
        """The last items of the account's nodes named in ``wanted`` whose
        ``pubsub#send_last_published_item`` is in ``when``, to ``full``
        if it may have them."""
        nodes = [node for node in (yield self._store.nodes(_service(account)))
                 if node.name in wanted and node.config.get(
                     "pubsub#send_last_published_item") in when
                 and enabled(node.config, "pubsub#deliver_notifications")]
        if not nodes:
            return
        if JID.parse(full).bare != account:
            allowed = []
            for node in nodes:
                if (yield self._readers(account, node.name, node.config))(full):
                    allowed.append(node)
            nodes = allowed
        last = yield self._store.last_items(_service(account), [node.name for node in nodes])
        for node in nodes:
            item = last.get(node.name)
            if item is not None:
                event = items_event(node.name, [item],
                                    enabled(node.config, "pubsub#deliver_payloads"))
                message = self._message(account, full, node.config, event.toXml())
                delay = message.addElement((NS_DELAY, "delay"))
                delay["stamp"], delay["from"] = xep0082_stamp(item.published), account.full
                self._api.route(message)


def setup(api):
    pep = Pep(api, api.open_store("pubsub", "pep"))
    api.provide("pep", pep)
    disco = api.service("disco")
    if disco is not None:
        disco.add_account_identity(IDENTITY)
    api.account_feature(NS_PUBSUB)
    for feature in FEATURES:
        api.account_feature(f"{NS_PUBSUB}#{feature}")
    for type_ in ("get", "set"):
        api.handle_iq(type_, BARE, NS_PUBSUB, pep.request)
        api.handle_iq(type_, BARE, NS_OWNER, pep.owner_request)
    api.hook(SESSION_AVAILABLE, pep.available)
    api.hook(NOTIFIED, pep.notified)
    api.hook(HEARD, pep.heard)
    api.hook(pre_event("presence", BARE), pep.subscribed, priority=SUBSCRIBED_PRIORITY)
    api.hook(SUBSCRIBED, pep.subscribed_elsewhere)
    caps = api.service("client_caps")
    if caps is not None:
        caps.listen(pep.capabilities)
        caps.follow(pep.presence)
