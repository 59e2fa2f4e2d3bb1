"""The elements of XEP-0060 both pubsub services build and read: request
parts (§7.1 publish, the node attribute, §6.1 the subscriber), the answer
to an item retrieval (§6.5), subscriptions (§6.1.2, §6.2, §5.6) and event
notifications (§7.1.2.1 items, §7.2.2.1 retractions, §8.4.2 deletion,
§8.5.2 purge)."""

from twisted.words.xish import domish

from xmppd.core.stanzas import StanzaError
from xmppd.jid import JID, InvalidJID

from . import NS_EVENT, NS_OWNER, NS_PUBSUB, error

NS_DATA = "jabber:x:data"


def node_name(element):
    """The ``node`` of a request; ``bad-request`` with ``nodeid-required``
    without one."""
    name = element.getAttribute("node")
    if not name:
        raise error("bad-request", "nodeid-required")
    return name


def subscriber(stanza, element):
    """The JID a subscription request (``element``) is for: the
    requester's own, bare or full, else ``invalid-jid`` (§6.1.3.1)."""
    try:
        jid = JID.parse(element.getAttribute("jid") or "")
    except InvalidJID:
        raise error("bad-request", "invalid-jid") from None
    if jid.bare != stanza.sender.bare:
        raise error("bad-request", "invalid-jid")
    return jid


def subscription_element(node, subscription):
    """``<subscription node jid subid subscription/>`` (§6.1.2)."""
    element = domish.Element((NS_PUBSUB, "subscription"))
    element["node"], element["jid"] = node, subscription.jid
    element["subid"], element["subscription"] = subscription.subid, subscription.state
    return element


def pubsub(child):
    """``<pubsub xmlns='…pubsub'>`` with ``child``."""
    answer = domish.Element((NS_PUBSUB, "pubsub"))
    answer.addChild(child)
    return answer


def published_item(publish):
    """``(item id or None, payload element)`` of a ``<publish/>`` (§7.1.1):
    exactly one item with exactly one payload, else ``bad-request``
    (§7.1.3.6)."""
    items = list(publish.elements(NS_PUBSUB, "item"))
    if len(items) != 1:
        raise error("bad-request", "invalid-payload" if items else "item-required")
    payloads = list(items[0].elements())
    if len(payloads) != 1:
        raise error("bad-request", "invalid-payload" if payloads else "payload-required")
    return items[0].getAttribute("id") or None, payloads[0]


def form_in(element):
    """The data form (XEP-0004) inside ``element`` (or None)."""
    return None if element is None else next(element.elements(NS_DATA, "x"), None)


def publish_result(name, item_id):
    answer = domish.Element((NS_PUBSUB, "pubsub"))
    published = answer.addElement("publish")
    published["node"] = name
    published.addElement("item")["id"] = item_id
    return answer


def owner_payload(name, node=None, form=None):
    """``<pubsub xmlns='…#owner'><NAME node?>FORM?</NAME></pubsub>``."""
    payload = domish.Element((NS_OWNER, "pubsub"))
    child = payload.addElement(name)
    if node is not None:
        child["node"] = node
    if form is not None:
        child.addChild(form)
    return payload


def items_element(uri, name, items, payloads=True):
    """``<items node>`` in namespace ``uri`` with ``items``
    (:class:`~xmppd.storage.kinds.PubSubItem`), with their payloads or not."""
    element = domish.Element((uri, "items"))
    element["node"] = name
    for item in items:
        entry = element.addElement("item")
        entry["id"] = item.id
        if payloads and item.payload:
            entry.addRawXml(item.payload)
    return element


def retrieve(store, service, name, request):
    """Deferred: the answer to ``<items/>`` (§6.5) of an allowed requester:
    the items it names by id (§6.5.8), or the newest ``max_items`` (§6.5.7),
    or all, oldest first."""
    ids = [item.getAttribute("id") for item in request.elements(NS_PUBSUB, "item")]
    limit = request.getAttribute("max_items")
    if limit is not None and not limit.isdigit():
        raise StanzaError("bad-request", "max_items is a number")

    def answer(found):
        result = domish.Element((NS_PUBSUB, "pubsub"))
        result.addChild(items_element(NS_PUBSUB, name, found[::-1]))
        return result
    return store.get_items(service, name, ids=[i for i in ids if i] or None,
                           limit=None if limit is None else int(limit)).addCallback(answer)


def end_subscription(store, service, name, jid, subid):
    """Deferred: the end of ``jid``'s subscription to the node (§6.2);
    ``unexpected-request`` with ``not-subscribed`` if it has none."""
    def ended(found):
        if not found:
            raise error("unexpected-request", "not-subscribed")
    return store.unsubscribe(service, name, jid.full, subid).addCallback(ended)


def own_subscriptions(store, service, stanza, request):
    """Deferred: the answer to ``<subscriptions/>`` (§5.6): those of the
    requester's bare and full JID, of the ``node`` asked for or all."""
    only = request.getAttribute("node")
    answer = domish.Element((NS_PUBSUB, "pubsub"))
    listed = answer.addElement("subscriptions")

    def add(found):
        for name, subscription in found:
            if only is None or name == only:
                listed.addChild(subscription_element(name, subscription))

    d = store.subscriptions_of(service, stanza.sender.bare.full).addCallback(add)
    if stanza.sender.resource is not None:
        d.addCallback(lambda _: store.subscriptions_of(service, stanza.sender.full))
        d.addCallback(add)
    return d.addCallback(lambda _: answer)


def items_event(name, items, payloads):
    event = domish.Element((NS_EVENT, "event"))
    event.addChild(items_element(NS_EVENT, name, items, payloads))
    return event


def retract_event(name, ids):
    event = domish.Element((NS_EVENT, "event"))
    items = event.addElement("items")
    items["node"] = name
    for item_id in ids:
        items.addElement("retract")["id"] = item_id
    return event


def node_event(kind, name):
    """A ``<delete/>`` or ``<purge/>`` event."""
    event = domish.Element((NS_EVENT, "event"))
    event.addElement(kind)["node"] = name
    return event
