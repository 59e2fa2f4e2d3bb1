"""A publish-subscribe service (XEP-0060 v1.26) at ``pubsub.HOST`` for
each host it is enabled on, a service domain of its own (the delivery
table's), with its nodes in the ``pubsub`` store of the ``pubsub`` kind.

- Discovery (§5): disco#info of the service (identity ``pubsub/service``
  and the features below) and of a node (``pubsub/leaf`` with the
  ``pubsub#meta-data`` form, §5.4); disco#items of the service (its nodes,
  §5.2) and of a node (its item ids, §5.5, to those who may read it).
  The host's disco#items lists the service.
- Subscribers (§6): subscribe (the ``jid`` must be the requester's, else
  ``invalid-jid``; the node's access model decides, see
  :mod:`xmppd.pubsub.access`; the last item comes at once when
  ``send_last_published_item`` says ``on_sub``), unsubscribe
  (``not-subscribed`` if not), subscription options (§6.3: the
  ``pubsub#deliver`` switch), one's subscriptions and affiliations
  (§5.6, §5.7), item retrieval (§6.5).
- Publishers (§7): publish, by the node's ``pubsub#publish_model``
  (``publishers``: owners and publishers; ``subscribers``; ``open``), with
  publish-options (§7.1.5) as preconditions; an absent node is created
  for whoever may create nodes; retract, by owners, publishers and the
  item's publisher.  Each subscription gets a notification (with the
  payload if ``pubsub#deliver_payloads``) unless it set ``pubsub#deliver``
  false.
- Owners (§8): create (a name, or an instant node, §8.1.2) with a
  configuration; configure, default configuration, delete, purge (all
  notified), and manage subscriptions (§8.8) and affiliations (§8.9).  Who
  may create nodes: ``pubsub.create_nodes`` = ``admins`` (the JIDs in
  ``pubsub.admins``, owners of every node) or ``local`` (every account of
  the host).  The creator is the node's owner.
- Limits: ``max_nodes`` per service, ``max_items`` (what ``max`` means),
  ``max_item_size`` bytes, ``max_subscriptions`` per node, each refused
  with a clear error.

Not offered: collection nodes (XEP-0248), the ``authorize`` access model,
pending subscriptions, presence-based delivery.
"""

import secrets
from datetime import datetime, timezone

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.events import HOST
from xmppd.core.stanzas import StanzaError, make_stanza
from xmppd.jid import JID, InvalidJID
from xmppd.modules.disco import NS_INFO, NS_ITEMS, info_element, items_element
from xmppd.options import Option, Options, choice, integer, strings
from xmppd.pubsub import NS_OWNER, NS_PUBSUB, error
from xmppd.pubsub.access import refusal
from xmppd.pubsub.config import (PEP_DEFAULTS, check_preconditions, config_form, enabled,
                                 max_items, read_form, read_publish_options, reconfigure)
from xmppd.pubsub.elements import (end_subscription, form_in, items_event, node_event,
                                   node_name, own_subscriptions, owner_payload, publish_result,
                                   published_item, pubsub, retract_event, retrieve, subscriber,
                                   subscription_element)
from xmppd.storage import NodeExists, TooManyNodes
from xmppd.storage.kinds import AFFILIATIONS, PubSubItem, PubSubSubscription
from xmppd.wokkel_compat import data_form

SUBDOMAIN = "pubsub"
NS_SUBSCRIBE_OPTIONS = NS_PUBSUB + "#subscribe_options"
NS_META_DATA = NS_PUBSUB + "#meta-data"
SERVICE_IDENTITY = ("pubsub", "service", "Publish-Subscribe")
NODE_IDENTITY = ("pubsub", "leaf", None)
FEATURES = ("access-open", "access-presence", "access-roster", "access-whitelist",
            "auto-create", "config-node", "create-and-configure", "create-nodes",
            "delete-items", "delete-nodes", "instant-nodes", "item-ids", "last-published",
            "manage-subscriptions", "meta-data", "modify-affiliations", "multi-items",
            "persistent-items", "publish", "publish-options", "purge-nodes", "retract-items",
            "retrieve-affiliations", "retrieve-default", "retrieve-items",
            "retrieve-subscriptions", "subscribe", "subscription-options")
SERVICE_DEFAULTS = {**PEP_DEFAULTS, "pubsub#access_model": "open", "pubsub#max_items": "10",
                    "pubsub#send_last_published_item": "never"}
OWNERS = ("owner",)
PUBLISHERS = ("owner", "publisher", "publish-only")

OPTIONS = Options(  # [pubsub]
    create_nodes=Option("admins", choice(("admins", "local"))),
    admins=Option((), strings),  # bare JIDs: they create nodes and own every node
    max_nodes=Option(1000, integer(1)),  # per service
    max_items=Option(1000, integer(1)),  # per node: what "max" means
    max_item_size=Option(131072, integer(1)),  # bytes of one item's payload
    max_subscriptions=Option(10000, integer(1)),  # per node
)


def _now(clock):
    return datetime.fromtimestamp(clock.seconds(), timezone.utc)


def _jid(text, condition="jid-malformed"):
    try:
        return JID.parse(text or "")
    except InvalidJID as e:
        raise StanzaError(condition, str(e))


def _subscribe_options_form(options):
    form = data_form.Form("form", formNamespace=NS_SUBSCRIBE_OPTIONS)
    form.addField(data_form.Field("boolean", var="pubsub#deliver", label="Receive notifications",
                                  value=options.get("pubsub#deliver", "true") == "true"))
    return form.toElement()


def _read_subscribe_options(x):
    form = data_form.Form.fromElement(x)
    deliver = form.fields.get("pubsub#deliver")
    if deliver is None:
        return {}
    value = str(deliver.value).lower()
    if value not in ("1", "true", "0", "false"):
        raise error("not-acceptable", text="pubsub#deliver is a boolean")
    return {"pubsub#deliver": "true" if value in ("1", "true") else "false"}


class PubSubService:
    """The nodes of the ``pubsub.HOST`` services."""

    def __init__(self, api, store):
        self._api = api
        self._store = store

    def _options(self, service):
        return self._api.options_for(self._api.owner(service))

    # Who may do what

    def _is_admin(self, service, jid):
        return jid.bare.full in self._options(service).admins

    @defer.inlineCallbacks
    def _affiliation(self, service, name, jid):
        """The affiliation of ``jid`` (bare) with the node (admins own all)."""
        if self._is_admin(service, jid):
            return "owner"
        found = yield self._store.affiliations(service, name)
        return found.get(jid.bare.full)

    def _may_create(self, service, jid):
        if self._is_admin(service, jid):
            return True
        return (self._options(service).create_nodes == "local" and jid.local is not None
                and jid.domain == self._api.owner(service))

    @defer.inlineCallbacks
    def _node(self, service, name):
        node = yield self._store.get_node(service, name)
        if node is None:
            raise StanzaError("item-not-found", f"no node {name}")
        return node

    @defer.inlineCallbacks
    def _owner_of(self, stanza, name):
        """The node, if the requester owns it; else forbidden."""
        service = stanza.recipient.domain
        node = yield self._node(service, name)
        if (yield self._affiliation(service, name, stanza.sender)) not in OWNERS:
            raise StanzaError("forbidden", "only an owner of the node may")
        return node

    @defer.inlineCallbacks
    def _refusal(self, service, node, jid):
        """None if ``jid`` may read ``node`` (and subscribe to it), else the
        error; the presence and roster models use the first owner's roster."""
        affiliation = yield self._affiliation(service, node.name, jid)
        if affiliation in OWNERS:
            return None
        item = None
        if node.config.get("pubsub#access_model") in ("presence", "roster"):
            owners = sorted(jid for jid, value in (
                yield self._store.affiliations(service, node.name)).items() if value == "owner")
            if owners:
                owner = JID.parse(owners[0])
                roster = yield self._api.service("roster").roster(owner)
                item = next((entry for entry in roster[1] if entry.jid == jid.bare.full), None)
        return refusal(node.config, jid.bare.full, item, affiliation)

    # Requests

    def request(self, stanza):
        verbs = list(stanza.payload.elements(NS_PUBSUB))
        if not verbs:
            raise error("bad-request", text="an empty pubsub request")
        verb, rest = verbs[0], {child.name: child for child in verbs[1:]}
        handlers = ({"items": self.items, "subscriptions": self.own_subscriptions,
                     "affiliations": self.own_affiliations, "options": self.options}
                    if stanza.type == "get" else
                    {"subscribe": self.subscribe, "unsubscribe": self.unsubscribe,
                     "options": self.set_options, "publish": self.publish,
                     "retract": self.retract, "create": self.create})
        handler = handlers.get(verb.name)
        if handler is None:
            raise error("feature-not-implemented", text=f"{stanza.type} {verb.name} is not offered")
        return handler(stanza, verb, rest)

    def owner_request(self, stanza):
        verb = next(stanza.payload.elements(NS_OWNER), None)
        handlers = ({"configure": self.configuration, "default": self.default,
                     "subscriptions": self.subscriptions, "affiliations": self.affiliations}
                    if stanza.type == "get" else
                    {"configure": self.configure, "delete": self.delete, "purge": self.purge,
                     "subscriptions": self.set_subscriptions,
                     "affiliations": self.set_affiliations})
        handler = None if verb is None else handlers.get(verb.name)
        if handler is None:
            raise error("feature-not-implemented", text="not an owner request this service offers")
        return handler(stanza, verb)

    # Subscribers (§6)

    @defer.inlineCallbacks
    def subscribe(self, stanza, subscribe, rest):
        service, name = stanza.recipient.domain, node_name(subscribe)
        jid = subscriber(stanza, subscribe)
        node = yield self._node(service, name)
        refused = yield self._refusal(service, node, jid)
        if refused is not None:
            raise refused
        subscriptions = yield self._store.subscriptions(service, name)
        existing = next((s for s in subscriptions if s.jid == jid.full), None)
        x = form_in(rest.get("options"))
        if existing is not None and x is None:
            return pubsub(subscription_element(name, existing))
        if existing is None and len(subscriptions) >= self._options(service).max_subscriptions:
            raise StanzaError("resource-constraint", "the node has too many subscriptions")
        options = {"pubsub#deliver": "true", **({} if x is None else _read_subscribe_options(x))}
        subscription = PubSubSubscription(
            jid.full, secrets.token_hex(8) if existing is None else existing.subid,
            "subscribed", options)
        yield self._store.subscribe(service, name, subscription)
        if node.config.get("pubsub#send_last_published_item") in ("on_sub",
                                                                  "on_sub_and_presence"):
            # After the result (§6.1.7).
            self._api.clock.callLater(0, self._send_last, service, node, jid.full)
        return pubsub(subscription_element(name, subscription))

    @defer.inlineCallbacks
    def unsubscribe(self, stanza, unsubscribe, rest):
        service, name = stanza.recipient.domain, node_name(unsubscribe)
        jid = subscriber(stanza, unsubscribe)
        yield self._node(service, name)
        yield end_subscription(self._store, service, name, jid, unsubscribe.getAttribute("subid"))
        return None

    @defer.inlineCallbacks
    def _subscription(self, stanza, element):
        service, name = stanza.recipient.domain, node_name(element)
        jid = subscriber(stanza, element)
        yield self._node(service, name)
        for subscription in (yield self._store.subscriptions(service, name)):
            if subscription.jid == jid.full:
                return service, name, subscription
        raise error("unexpected-request", "not-subscribed")

    @defer.inlineCallbacks
    def options(self, stanza, options, rest):
        _, name, subscription = yield self._subscription(stanza, options)
        answer = domish.Element((NS_PUBSUB, "pubsub"))
        element = answer.addElement("options")
        element["node"], element["jid"] = name, subscription.jid
        element["subid"] = subscription.subid
        element.addChild(_subscribe_options_form(subscription.options))
        return answer

    @defer.inlineCallbacks
    def set_options(self, stanza, options, rest):
        service, name, subscription = yield self._subscription(stanza, options)
        x = form_in(options)
        if x is None:
            raise error("bad-request", text="a subscription options form is needed")
        yield self._store.subscribe(service, name, PubSubSubscription(
            subscription.jid, subscription.subid, subscription.state,
            {**subscription.options, **_read_subscribe_options(x)}))
        return None

    def own_subscriptions(self, stanza, request, rest):
        return own_subscriptions(self._store, stanza.recipient.domain, stanza, request)

    @defer.inlineCallbacks
    def own_affiliations(self, stanza, request, rest):
        service, only = stanza.recipient.domain, request.getAttribute("node")
        answer = domish.Element((NS_PUBSUB, "pubsub"))
        listed = answer.addElement("affiliations")
        for node in (yield self._store.nodes(service)):
            if only is None or node.name == only:
                affiliation = yield self._affiliation(service, node.name, stanza.sender)
                if affiliation is not None:
                    entry = listed.addElement("affiliation")
                    entry["node"], entry["affiliation"] = node.name, affiliation
        return answer

    @defer.inlineCallbacks
    def items(self, stanza, request, rest):
        service, name = stanza.recipient.domain, node_name(request)
        node = yield self._node(service, name)
        refused = yield self._refusal(service, node, stanza.sender)
        if refused is not None:
            raise refused
        return (yield retrieve(self._store, service, name, request))

    def _send_last(self, service, node, to):
        def send(last):
            item = last.get(node.name)
            if item is not None:
                self._send(service, to, node.config, items_event(
                    node.name, [item], enabled(node.config, "pubsub#deliver_payloads")).toXml())
        self._store.last_items(service, [node.name]).addCallback(send).addErrback(
            lambda failure: self._api.log.failure("cannot send the last item of {node}",
                                                  failure, node=node.name))

    # Publishers (§7)

    @defer.inlineCallbacks
    def publish(self, stanza, publish, rest):
        service, name, sender = stanza.recipient.domain, node_name(publish), stanza.sender
        item_id, payload = published_item(publish)
        x = form_in(rest.get("publish-options"))
        wanted = {} if x is None else read_publish_options(x)
        options = self._options(service)
        xml = payload.toXml()
        if len(xml.encode("utf-8")) > options.max_item_size:
            raise error("not-acceptable", "payload-too-big",
                        f"an item is at most {options.max_item_size} bytes")
        node = yield self._store.get_node(service, name)
        if node is None:
            if not self._may_create(service, sender):
                raise StanzaError("item-not-found", f"no node {name}")
            config = {**SERVICE_DEFAULTS, **wanted}
            yield self._create(service, name, config, sender)
        else:
            config = node.config
            check_preconditions(config, wanted)
            yield self._check_publisher(service, name, config, sender)
        item = PubSubItem(item_id or secrets.token_hex(8), sender.bare.full, xml,
                          _now(self._api.clock))
        keep = max_items(config, options.max_items)
        if keep:
            yield self._store.publish(service, name, item, keep)
        yield self.notify(service, name, config, items_event(
            name, [item], enabled(config, "pubsub#deliver_payloads")))
        return publish_result(name, item.id)

    @defer.inlineCallbacks
    def _check_publisher(self, service, name, config, jid):
        model = config.get("pubsub#publish_model")
        if model == "open":
            return
        affiliation = yield self._affiliation(service, name, jid)
        if affiliation == "outcast":
            raise StanzaError("forbidden", "an outcast may not publish")
        if affiliation in PUBLISHERS:
            return
        if model == "subscribers" and any(
                s.state == "subscribed" and JID.parse(s.jid).bare == jid.bare
                for s in (yield self._store.subscriptions(service, name))):
            return
        raise StanzaError("forbidden", "only the node's publishers may publish")

    @defer.inlineCallbacks
    def retract(self, stanza, retract, rest):
        service, name = stanza.recipient.domain, node_name(retract)
        ids = [item.getAttribute("id") for item in retract.elements(NS_PUBSUB, "item")]
        if len(ids) != 1 or not ids[0]:
            raise error("bad-request", "item-required")
        node = yield self._node(service, name)
        found = yield self._store.get_items(service, name, ids=ids)
        if not found:
            raise StanzaError("item-not-found", f"no item {ids[0]}")
        affiliation = yield self._affiliation(service, name, stanza.sender)
        if affiliation not in PUBLISHERS and found[0].publisher != stanza.sender.bare.full:
            raise StanzaError("forbidden", "only publishers retract others' items")
        yield self._store.retract(service, name, ids[0])
        if retract.getAttribute("notify") in ("1", "true") or enabled(
                node.config, "pubsub#notify_retract"):
            yield self.notify(service, name, node.config, retract_event(name, ids))
        return None

    # Owners (§8)

    def _create(self, service, name, config, creator):
        d = self._store.create_node(service, name, config,
                                    max_nodes=self._options(service).max_nodes)

        def owned(_):
            return self._store.set_affiliation(service, name, creator.bare.full, "owner")

        def refused(failure):
            failure.trap(NodeExists, TooManyNodes)
            if failure.check(NodeExists):
                raise StanzaError("conflict", f"node {name} exists")
            raise StanzaError("resource-constraint", "the service has too many nodes")
        return d.addCallbacks(owned, refused)

    @defer.inlineCallbacks
    def create(self, stanza, create, rest):
        service, sender = stanza.recipient.domain, stanza.sender
        if not self._may_create(service, sender):
            raise StanzaError("forbidden", "node creation is restricted")
        name = create.getAttribute("node") or secrets.token_hex(8)
        config = dict(SERVICE_DEFAULTS)
        x = form_in(rest.get("configure"))
        if x is not None:
            config.update(read_form(x))
        yield self._create(service, name, config, sender)
        if create.getAttribute("node"):
            return None
        answer = domish.Element((NS_PUBSUB, "pubsub"))
        answer.addElement("create")["node"] = name
        return answer

    @defer.inlineCallbacks
    def configuration(self, stanza, configure):
        name = node_name(configure)
        node = yield self._owner_of(stanza, name)
        return owner_payload("configure", name, config_form(node.config))

    def default(self, stanza, request):
        return owner_payload("default", None, config_form(SERVICE_DEFAULTS))

    @defer.inlineCallbacks
    def configure(self, stanza, configure):
        service, name = stanza.recipient.domain, node_name(configure)
        node = yield self._owner_of(stanza, name)
        yield reconfigure(self._store, service, node, configure,
                          self._options(service).max_items)
        return None

    @defer.inlineCallbacks
    def delete(self, stanza, delete):
        service, name = stanza.recipient.domain, node_name(delete)
        node = yield self._owner_of(stanza, name)
        if enabled(node.config, "pubsub#notify_delete"):
            yield self.notify(service, name, node.config, node_event("delete", name))
        yield self._store.delete_node(service, name)
        return None

    @defer.inlineCallbacks
    def purge(self, stanza, purge):
        service, name = stanza.recipient.domain, node_name(purge)
        node = yield self._owner_of(stanza, name)
        yield self._store.purge(service, name)
        yield self.notify(service, name, node.config, node_event("purge", name))
        return None

    @defer.inlineCallbacks
    def subscriptions(self, stanza, request):
        service, name = stanza.recipient.domain, node_name(request)
        yield self._owner_of(stanza, name)
        payload = owner_payload("subscriptions", name)
        listed = next(payload.elements())
        for subscription in (yield self._store.subscriptions(service, name)):
            entry = listed.addElement("subscription")
            entry["jid"], entry["subscription"] = subscription.jid, subscription.state
            entry["subid"] = subscription.subid
        return payload

    @defer.inlineCallbacks
    def set_subscriptions(self, stanza, request):
        service, name = stanza.recipient.domain, node_name(request)
        yield self._owner_of(stanza, name)
        for entry in request.elements(NS_OWNER, "subscription"):
            jid, state = _jid(entry.getAttribute("jid")), entry.getAttribute("subscription")
            if state == "none":
                yield self._store.unsubscribe(service, name, jid.full,
                                              entry.getAttribute("subid"))
            elif state == "subscribed":
                yield self._store.subscribe(service, name, PubSubSubscription(
                    jid.full, entry.getAttribute("subid") or secrets.token_hex(8), state,
                    {"pubsub#deliver": "true"}))
            else:
                raise StanzaError("not-acceptable", "a subscription is subscribed or none")
        return None

    @defer.inlineCallbacks
    def affiliations(self, stanza, request):
        service, name = stanza.recipient.domain, node_name(request)
        yield self._owner_of(stanza, name)
        payload = owner_payload("affiliations", name)
        listed = next(payload.elements())
        for jid, affiliation in sorted((yield self._store.affiliations(service, name)).items()):
            entry = listed.addElement("affiliation")
            entry["jid"], entry["affiliation"] = jid, affiliation
        return payload

    @defer.inlineCallbacks
    def set_affiliations(self, stanza, request):
        service, name = stanza.recipient.domain, node_name(request)
        yield self._owner_of(stanza, name)
        current = yield self._store.affiliations(service, name)
        changes = {}
        for entry in request.elements(NS_OWNER, "affiliation"):
            affiliation = entry.getAttribute("affiliation")
            if affiliation not in (*AFFILIATIONS, "none"):
                raise StanzaError("not-acceptable", f"unknown affiliation {affiliation!r}")
            changes[_jid(entry.getAttribute("jid")).bare.full] = affiliation
        after = {jid: value for jid, value in {**current, **changes}.items() if value != "none"}
        if "owner" not in after.values():
            raise StanzaError("not-acceptable", "a node keeps at least one owner")
        for jid, affiliation in changes.items():
            yield self._store.set_affiliation(service, name, jid, affiliation)
        return None

    # Notifications

    @defer.inlineCallbacks
    def notify(self, service, name, config, event):
        """``event`` to every subscription of the node that takes
        deliveries (§7.1.2.1, §8.4.2, §8.5.2) and whose subscriber may
        still read the node: an outcast, or one the access model no longer
        lets in (§4.1, §4.5), gets nothing; serialised once for all."""
        if not enabled(config, "pubsub#deliver_notifications"):
            return
        subscriptions = [s for s in (yield self._store.subscriptions(service, name))
                         if s.state == "subscribed"
                         and s.options.get("pubsub#deliver", "true") == "true"]
        if not subscriptions:
            return
        affiliations = yield self._store.affiliations(service, name)
        roster = {}
        if config.get("pubsub#access_model") in ("presence", "roster"):
            owners = sorted(jid for jid, value in affiliations.items() if value == "owner")
            if owners:
                roster = {item.jid: item for item in
                          (yield self._api.service("roster").roster(JID.parse(owners[0])))[1]}
        xml = event.toXml()
        for subscription in subscriptions:
            bare = JID.parse(subscription.jid).bare.full
            affiliation = affiliations.get(bare)
            if affiliation in OWNERS or refusal(config, bare, roster.get(bare),
                                                affiliation) is None:
                self._send(service, subscription.jid, config, xml)

    def _send(self, service, to, config, xml):
        message = make_stanza("message", to=to, from_=service,
                              type_=config.get("pubsub#notification_type", "headline"),
                              id_=self._api.next_id())
        message.addRawXml(xml)
        self._api.route(message)

    # Discovery (§5)

    @defer.inlineCallbacks
    def info(self, stanza):
        service, name = stanza.recipient.domain, stanza.payload.getAttribute("node")
        if name is None:
            return info_element([SERVICE_IDENTITY], sorted(
                [NS_INFO, NS_ITEMS, NS_PUBSUB, *(f"{NS_PUBSUB}#{f}" for f in FEATURES)]))
        node = yield self._node(service, name)
        query = info_element([NODE_IDENTITY], [NS_PUBSUB], name)
        meta = data_form.Form("result", formNamespace=NS_META_DATA)
        for var in ("pubsub#title", "pubsub#description", "pubsub#type",
                    "pubsub#access_model", "pubsub#publish_model"):
            meta.addField(data_form.Field(var=var, value=node.config.get(var, "")))
        query.addChild(meta.toElement())
        return query

    @defer.inlineCallbacks
    def disco_items(self, stanza):
        service, name = stanza.recipient.domain, stanza.payload.getAttribute("node")
        if name is None:
            nodes = yield self._store.nodes(service)
            query = items_element([], None)
            for node in nodes:
                item = query.addElement("item")
                item["jid"], item["node"] = service, node.name
                if node.config.get("pubsub#title"):
                    item["name"] = node.config["pubsub#title"]
            return query
        node = yield self._node(service, name)
        refused = yield self._refusal(service, node, stanza.sender)
        if refused is not None:
            raise refused
        return items_element([(service, item.id) for item in
                              reversed((yield self._store.get_items(service, name)))], name)


def setup(api):
    service = PubSubService(api, api.open_store("pubsub", "pubsub"))
    for _, domain in api.add_services(lambda host: SUBDOMAIN, "Publish-Subscribe"):
        for type_ in ("get", "set"):
            api.handle_iq(type_, HOST, NS_PUBSUB, service.request, host=domain)
            api.handle_iq(type_, HOST, NS_OWNER, service.owner_request, host=domain)
        api.handle_iq("get", HOST, NS_INFO, service.info, host=domain)
        api.handle_iq("get", HOST, NS_ITEMS, service.disco_items, host=domain)
