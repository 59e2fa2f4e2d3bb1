"""Personal eventing (XEP-0163) on the real server, driven by slixmpp's own
plugins (xep_0060, xep_0115, xep_0163, xep_0172, xep_0222, xep_0223,
xep_0084, xep_0292, xep_0402, xep_0048/xep_0049, xep_0054):

- publish-options (XEP-0060 §7.1.5, XEP-0222, XEP-0223): a node created
  with them, and a publish whose options the node does not hold refused
  with ``conflict`` and ``precondition-not-met``;
- another account reading a node (XEP-0060 §6.5, access models §4.5):
  ``presence``, ``open``, ``roster`` (groups allowed) and ``whitelist``
  (member affiliations set by the owner, §8.9), refusals with the
  application conditions of §6.5.9;
- an OMEMO device list (XEP-0384) published ``open`` and read by an account
  that is not a contact;
- filtered notifications (XEP-0163 §4.3) through the clients' real entity
  capabilities (XEP-0115): a contact's resource that advertises
  ``NODE+notify`` gets the event, one that does not is left out, and a
  resource coming online later gets the last item (§4.3.1, XEP-0203), and
  so does a contact's resource when its subscription is approved (§4.3.4);
- avatars and bookmarks across the older protocols (XEP-0398 between
  XEP-0084 and vCard photos; XEP-0411 between XEP-0048 private storage and
  XEP-0402).

The module runs a server of its own and each test makes accounts of its
own, so no subscription, node or notification of one test reaches another.
"""

import asyncio
import base64
import hashlib
import itertools
import xml.etree.ElementTree as ET

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ElementBase

from tests.integration.conftest import (
    DOMAIN, STEP_TIMEOUT, collect, new_accounts, next_of, prepare, settled)
from tests.integration.test_presence_slixmpp import subscribe_both

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_ERRORS = NS_PUBSUB + "#errors"
NS_EVENT = NS_PUBSUB + "#event"
NS_PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DELAY = "urn:xmpp:delay"
NS_NICK = "http://jabber.org/protocol/nick"
NS_AXOLOTL = "eu.siacs.conversations.axolotl"
NODE_DEVICELIST = NS_AXOLOTL + ".devicelist"
NODE_AVATAR_DATA = "urn:xmpp:avatar:data"
NODE_AVATAR_METADATA = "urn:xmpp:avatar:metadata"
NS_BOOKMARKS2 = "urn:xmpp:bookmarks:1"
_features = itertools.count(1)  # a feature of its own makes a client's caps new
PEP_PLUGINS = ("xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163")
# A PNG of one transparent pixel: what a client would publish as an avatar.
AVATAR = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
    "60e6kgAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The module's server."""
    deployment = prepare(tmp_path_factory.mktemp("xmppd-pep"))
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


def bare(user):
    return f"{user}@{DOMAIN}"


async def login(clients, user, resource, *plugins):
    """A client of ``user`` with slixmpp's pubsub plugins and ``plugins``,
    at session start (not available)."""
    client = clients.new(user, resource)
    for plugin in PEP_PLUGINS + plugins:
        client.xmpp.register_plugin(plugin)
    client.connect()
    await client.wait_started()
    return client


async def available_with_caps(client):
    """Make ``client`` available with entity capabilities of its own (a
    feature of its own makes its ver new to the server) and wait until the
    server has asked for them (XEP-0115 §6.2) and read the answer; the
    features the client answered with."""
    xmpp = client.xmpp
    xmpp.plugin["xep_0030"].add_feature(f"urn:example:client:{xmpp.boundjid.resource}"
                                        f":{next(_features)}")
    await xmpp.plugin["xep_0115"].update_caps(broadcast=False)
    loop = asyncio.get_running_loop()
    answered = loop.create_future()

    def watch(stanza):
        if (stanza.name == "iq" and stanza["type"] == "result"
                and str(stanza["to"]) == xmpp.boundjid.domain
                and stanza.xml.find(f"{{{NS_DISCO_INFO}}}query") is not None
                and not answered.done()):
            answered.set_result(stanza)
        return stanza

    xmpp.add_filter("out", watch)
    xmpp.send_presence()
    try:
        answer = await asyncio.wait_for(answered, STEP_TIMEOUT)
    finally:
        xmpp.del_filter("out", watch)
    await settled(client)
    query = answer.xml.find(f"{{{NS_DISCO_INFO}}}query")
    return {feature.get("var") for feature in query.findall(f"{{{NS_DISCO_INFO}}}feature")}


def form(client, form_type, **fields):
    """A submitted data form of FORM_TYPE ``form_type``; each keyword is a
    field, ``__`` standing for ``#`` (``pubsub__access_model``)."""
    x = client.xmpp.plugin["xep_0004"].make_form(ftype="submit")
    x.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
    for name, value in fields.items():
        ftype = "text-multi" if isinstance(value, list) else None
        x.add_field(var=name.replace("__", "#"), ftype=ftype, value=value)
    return x


def publish_options(client, **fields):
    return form(client, NS_PUBLISH_OPTIONS, **fields)


def payload(tag, text=None, **attributes):
    element = ET.Element(tag, attributes)
    element.text = text
    return element


def publish(client, node, item_id, element, options=None):
    """Publish ``element`` as item ``item_id`` of ``client``'s own node."""
    return client.xmpp.plugin["xep_0060"].publish(None, node, id=item_id, payload=element,
                                                  options=options, timeout=STEP_TIMEOUT)


async def read(client, owner, node):
    """The items of ``owner``'s ``node`` as ``client`` reads them:
    ``[(id, payload element)]``, oldest first."""
    result = await client.xmpp.plugin["xep_0060"].get_items(JID(bare(owner)), node,
                                                            timeout=STEP_TIMEOUT)
    return [(item["id"], item["payload"]) for item in result["pubsub"]["items"]]


async def refused(client, owner, node):
    """``client`` reading ``owner``'s ``node``: the error it gets, as
    ``(condition, XEP-0060 condition)``; fails if it gets items."""
    with pytest.raises(IqError) as refusal:
        await read(client, owner, node)
    iq = refusal.value.iq
    # The error may carry the request back (RFC 6120 §8.3.1), never an item.
    assert iq.xml.find(f".//{{{NS_PUBSUB}}}item") is None, f"an item with an error: {iq}"
    return iq["error"]["condition"], pubsub_condition(iq)


def pubsub_condition(iq):
    """The application condition (``pubsub#errors``, XEP-0060) of an error iq, or None."""
    error = iq.xml.find("{jabber:client}error")
    conditions = [child.tag.split("}")[1] for child in error
                  if child.tag.startswith(f"{{{NS_ERRORS}}}")]
    assert len(conditions) <= 1, f"several pubsub conditions: {iq}"
    return conditions[0] if conditions else None


async def configuration(client, node):
    """The owner's view of the configuration of its ``node`` (§8.2.1)."""
    result = await client.xmpp.plugin["xep_0060"].get_node_config(None, node,
                                                                  timeout=STEP_TIMEOUT)
    return result["pubsub_owner"]["configure"]["form"].get_values()


def text_of(element, tag):
    found = element.find(tag)
    return None if found is None else found.text


# Publish-options


def test_publish_options_create_the_node_and_must_then_hold(server, run):
    """XEP-0223's private profile creates a whitelist node; XEP-0222's
    public profile a node that never sends its last item; publishing again
    with options the node does not hold is refused and publishes nothing,
    with the options it holds it replaces the item."""
    [owner] = new_accounts(server, "owner")
    private_node, public_node = "urn:example:settings", "urn:example:profile"

    async def body(clients):
        client = await login(clients, owner, "desk", "xep_0222", "xep_0223")
        store = client.xmpp.plugin["xep_0223"].store
        result = await store(ElementBase(payload("{urn:example:settings}settings", "first")),
                             node=private_node, id="current", timeout=STEP_TIMEOUT)
        assert result["pubsub"]["publish"]["item"]["id"] == "current"
        config = await configuration(client, private_node)
        assert config["pubsub#access_model"] == "whitelist"
        assert config["pubsub#persist_items"] in (True, "1", "true")

        await client.xmpp.plugin["xep_0222"].store(
            ElementBase(payload("{urn:example:profile}profile", "public")), node=public_node,
            id="current", timeout=STEP_TIMEOUT)
        config = await configuration(client, public_node)
        assert config["pubsub#send_last_published_item"] == "never"
        assert config["pubsub#access_model"] == "presence"  # the XEP-0163 default

        with pytest.raises(IqError) as conflict:
            await publish(client, private_node, "current",
                          payload("{urn:example:settings}settings", "leaked"),
                          publish_options(client, pubsub__access_model="open"))
        assert conflict.value.iq["error"]["condition"] == "conflict"
        assert pubsub_condition(conflict.value.iq) == "precondition-not-met"
        [(item_id, stored)] = await read(client, owner, private_node)
        assert (item_id, stored.text) == ("current", "first")
        assert (await configuration(client, private_node))["pubsub#access_model"] == "whitelist"

        await store(ElementBase(payload("{urn:example:settings}settings", "second")),
                    node=private_node, id="current", timeout=STEP_TIMEOUT)
        [(item_id, stored)] = await read(client, owner, private_node)
        assert (item_id, stored.text) == ("current", "second")

    run(server, body)


# Access models


def test_presence_access_a_subscribed_contact_reads_a_stranger_does_not(server, run):
    """The default access model (XEP-0163 §4): a contact subscribed to the
    owner's presence reads the items; an account with no subscription gets
    not-authorized with presence-subscription-required (XEP-0060 §6.5.9)
    and no item."""
    owner, contact, stranger = new_accounts(server, "owner", "contact", "stranger")
    node = "http://jabber.org/protocol/mood"
    mood = payload(f"{{{node}}}mood")
    ET.SubElement(mood, f"{{{node}}}happy")

    async def body(clients):
        await subscribe_both(clients, owner, contact)
        publisher = await login(clients, owner, "desk")
        await publish(publisher, node, "current", mood)
        assert (await configuration(publisher, node))["pubsub#access_model"] == "presence"

        reader = await login(clients, contact, "desk")
        [(item_id, got)] = await read(reader, owner, node)
        assert item_id == "current"
        assert got.find(f"{{{node}}}happy") is not None

        outsider = await login(clients, stranger, "desk")
        assert await refused(outsider, owner, node) == (
            "not-authorized", "presence-subscription-required")

    run(server, body)


def test_open_access_a_stranger_reads(server, run):
    """A node published with access_model=open is read by an account that
    has nothing to do with the owner."""
    owner, stranger = new_accounts(server, "owner", "stranger")
    node = "urn:example:status"

    async def body(clients):
        publisher = await login(clients, owner, "desk")
        await publish(publisher, node, "s1", payload("{urn:example:status}status", "open"),
                      publish_options(publisher, pubsub__access_model="open"))
        outsider = await login(clients, stranger, "desk")
        [(item_id, got)] = await read(outsider, owner, node)
        assert (item_id, got.tag, got.text) == ("s1", "{urn:example:status}status", "open")

    run(server, body)


def test_roster_access_an_allowed_group_reads_another_group_does_not(server, run):
    """access_model=roster with roster_groups_allowed: a roster item of the
    owner in an allowed group reads, one in another group gets
    not-authorized with not-in-roster-group (XEP-0060 §6.5.9); a
    presence subscription alone does not let a contact read."""
    owner, friend, colleague = new_accounts(server, "owner", "friend", "colleague")
    node = "urn:example:whereabouts"

    async def body(clients):
        await subscribe_both(clients, owner, colleague)
        publisher = await login(clients, owner, "desk")
        await publisher.xmpp.get_roster(timeout=STEP_TIMEOUT)
        await publisher.xmpp.update_roster(bare(friend), groups=["Friends", "Family"],
                                           timeout=STEP_TIMEOUT)
        await publisher.xmpp.update_roster(bare(colleague), groups=["Work"],
                                           timeout=STEP_TIMEOUT)
        await publish(publisher, node, "here",
                      payload("{urn:example:whereabouts}place", "home"),
                      publish_options(publisher, pubsub__access_model="roster",
                                      pubsub__roster_groups_allowed=["Friends"]))
        config = await configuration(publisher, node)
        assert config["pubsub#access_model"] == "roster"
        assert "Friends" in config["pubsub#roster_groups_allowed"]

        reader = await login(clients, friend, "desk")
        [(item_id, got)] = await read(reader, owner, node)
        assert (item_id, got.text) == ("here", "home")

        other = await login(clients, colleague, "desk")
        assert await refused(other, owner, node) == ("not-authorized", "not-in-roster-group")

    run(server, body)


def test_whitelist_access_refused_until_the_owner_makes_a_member(server, run):
    """access_model=whitelist: an account (even a subscribed contact) gets
    not-allowed with closed-node (XEP-0060 §6.5.9); once the owner sets
    its affiliation to member (§8.9) it reads, and the owner sees the
    affiliation; set back to none, it is refused again."""
    owner, member, contact = new_accounts(server, "owner", "member", "contact")
    node = "urn:example:diary"

    async def body(clients):
        await subscribe_both(clients, owner, contact)
        publisher = await login(clients, owner, "desk")
        pubsub = publisher.xmpp.plugin["xep_0060"]
        await publish(publisher, node, "page1", payload("{urn:example:diary}page", "secret"),
                      publish_options(publisher, pubsub__access_model="whitelist"))
        reader = await login(clients, member, "desk")
        neighbour = await login(clients, contact, "desk")
        assert await refused(reader, owner, node) == ("not-allowed", "closed-node")
        assert await refused(neighbour, owner, node) == ("not-allowed", "closed-node")

        await pubsub.modify_affiliations(None, node, [(JID(bare(member)), "member")],
                                         timeout=STEP_TIMEOUT)
        result = await pubsub.get_node_affiliations(None, node, timeout=STEP_TIMEOUT)
        affiliations = {str(entry["jid"]): entry["affiliation"]
                        for entry in result["pubsub_owner"]["affiliations"]}
        assert affiliations.get(bare(member)) == "member"
        assert affiliations.get(bare(owner)) == "owner"
        [(item_id, got)] = await read(reader, owner, node)
        assert (item_id, got.text) == ("page1", "secret")
        assert await refused(neighbour, owner, node) == ("not-allowed", "closed-node")

        await pubsub.modify_affiliations(None, node, [(JID(bare(member)), "none")],
                                         timeout=STEP_TIMEOUT)
        assert await refused(reader, owner, node) == ("not-allowed", "closed-node")

    run(server, body)


# OMEMO


def test_a_vcard4_is_read_by_a_contact_not_by_a_stranger(server, run):
    """vCard4 over PEP (XEP-0292) with slixmpp's xep_0292: a contact reads
    the card the owner published; under the default access model a
    stranger gets not-authorized and no card."""
    owner, contact, stranger = new_accounts(server, "owner", "contact", "stranger")

    async def body(clients):
        await subscribe_both(clients, owner, contact)
        writer = await login(clients, owner, "desk", "xep_0292")
        await writer.xmpp.plugin["xep_0292"].publish_vcard(
            full_name="Olive Owner", nickname="olive", timeout=STEP_TIMEOUT)
        reader = await login(clients, contact, "desk", "xep_0292")
        result = await reader.xmpp.plugin["xep_0292"].retrieve_vcard(
            JID(bare(owner)), timeout=STEP_TIMEOUT)
        card = result["pubsub"]["items"]["item"]["payload"]
        full_name = card.find("{urn:ietf:params:xml:ns:vcard-4.0}fn/"
                              "{urn:ietf:params:xml:ns:vcard-4.0}text")
        assert full_name is not None and full_name.text == "Olive Owner"
        outsider = await login(clients, stranger, "desk", "xep_0292")
        # slixmpp publishes the card to the node named by its namespace.
        node = writer.xmpp.plugin["xep_0292"].stanza.VCard4.namespace
        assert await refused(outsider, owner, node) == (
            "not-authorized", "presence-subscription-required")

    run(server, body)


def test_omemo_device_list_published_open_is_read_by_a_non_contact(server, run):
    """An OMEMO client (XEP-0384 v0.3, as Conversations does) publishes its
    device list and a bundle with access_model=open; an account that is no
    contact reads both, and after the device list is replaced it reads only
    the newest list (one item kept)."""
    owner, stranger = new_accounts(server, "owner", "stranger")
    bundles = f"{NS_AXOLOTL}.bundles:31415"

    def device_list(*ids):
        element = payload(f"{{{NS_AXOLOTL}}}list")
        for device in ids:
            ET.SubElement(element, f"{{{NS_AXOLOTL}}}device", id=str(device))
        return element

    def devices(element):
        return [device.get("id") for device in element.findall(f"{{{NS_AXOLOTL}}}device")]

    async def body(clients):
        phone = await login(clients, owner, "phone")
        options = publish_options(phone, pubsub__access_model="open")
        await publish(phone, NODE_DEVICELIST, "current", device_list(31415), options)
        bundle = payload(f"{{{NS_AXOLOTL}}}bundle")
        ET.SubElement(bundle, f"{{{NS_AXOLOTL}}}identityKey").text = "BQ" + "A" * 42
        await publish(phone, bundles, "current", bundle,
                      publish_options(phone, pubsub__access_model="open"))

        outsider = await login(clients, stranger, "laptop")
        [(item_id, got)] = await read(outsider, owner, NODE_DEVICELIST)
        assert (item_id, devices(got)) == ("current", ["31415"])
        [(_, got)] = await read(outsider, owner, bundles)
        assert text_of(got, f"{{{NS_AXOLOTL}}}identityKey") == "BQ" + "A" * 42

        await publish(phone, NODE_DEVICELIST, "current", device_list(31415, 27182),
                      publish_options(phone, pubsub__access_model="open"))
        [(item_id, got)] = await read(outsider, owner, NODE_DEVICELIST)
        assert (item_id, devices(got)) == ("current", ["31415", "27182"])

    run(server, body)


def test_a_stranger_subscribes_to_an_open_device_list(server, run):
    """As Monal does for a new contact's OMEMO device list (XEP-0060 §6.1,
    which XEP-0163 §6 requires): an account that is no contact subscribes
    through slixmpp's xep_0060 (its bare JID, while available), gets the
    last item, then each new one, lists its subscription, and after
    unsubscribing gets nothing more."""
    owner, stranger = new_accounts(server, "owner", "stranger")

    async def body(clients):
        phone = await login(clients, owner, "phone")
        options = publish_options(phone, pubsub__access_model="open")
        await publish(phone, NODE_DEVICELIST, "current", payload(f"{{{NS_AXOLOTL}}}list"),
                      options)
        outsider = await login(clients, stranger, "laptop")
        events = collect(outsider, "pubsub_publish")
        outsider.xmpp.send_presence()  # events to its bare JID go to available resources
        await settled(outsider)
        pubsub = outsider.xmpp.plugin["xep_0060"]
        await pubsub.subscribe(JID(bare(owner)), NODE_DEVICELIST, timeout=STEP_TIMEOUT)
        last = await next_of(events)
        assert (str(last["from"]), last["pubsub_event"]["items"]["node"]) == (
            bare(owner), NODE_DEVICELIST)
        await publish(phone, NODE_DEVICELIST, "current", payload(f"{{{NS_AXOLOTL}}}list"),
                      publish_options(phone, pubsub__access_model="open"))
        assert str((await next_of(events))["from"]) == bare(owner)
        listed = await pubsub.get_subscriptions(JID(bare(owner)), timeout=STEP_TIMEOUT)
        assert [(s["node"], str(s["jid"])) for s in listed["pubsub"]["subscriptions"]] == [
            (NODE_DEVICELIST, bare(stranger))]
        await pubsub.unsubscribe(JID(bare(owner)), NODE_DEVICELIST, timeout=STEP_TIMEOUT)
        await publish(phone, NODE_DEVICELIST, "current", payload(f"{{{NS_AXOLOTL}}}list"),
                      publish_options(phone, pubsub__access_model="open"))
        await settled(outsider)
        assert events.empty(), f"after unsubscribing: {events.get_nowait()}"

    run(server, body)


# Filtered notifications


def nick_of(message):
    """The nickname a notification (XEP-0172) carries."""
    items = message.xml.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
    assert items is not None and items.get("node") == NS_NICK, f"not a nick event: {message}"
    [item] = items.findall(f"{{{NS_EVENT}}}item")
    return text_of(item, f"{{{NS_NICK}}}nick")


def test_notifications_follow_the_contacts_caps(server, run):
    """alice and bob are mutual contacts.  alice publishes her nickname
    (XEP-0172) while bob is offline; bob's phone, whose caps advertise
    http://jabber.org/protocol/nick+notify (slixmpp's xep_0172 through
    xep_0163), comes online and gets that last item, delayed (XEP-0203).
    alice comes online from a laptop interested too, which gets her own
    last item, and publishes again: the phone and the laptop get the event;
    bob's desk, whose caps do not have +notify for the node, gets nothing."""
    alice, bob = new_accounts(server, "alice", "bob")

    async def body(clients):
        await subscribe_both(clients, alice, bob)
        writer = await login(clients, alice, "desk", "xep_0172")
        await writer.xmpp.plugin["xep_0172"].publish_nick("Alice", timeout=STEP_TIMEOUT)
        await writer.close()

        phone = await login(clients, bob, "phone", "xep_0172")
        nicks = collect(phone, "user_nick_publish")
        assert f"{NS_NICK}+notify" in await available_with_caps(phone)
        last = await next_of(nicks)
        assert str(last["from"]) == bare(alice)
        assert nick_of(last) == "Alice"
        delay = last.xml.find(f"{{{NS_DELAY}}}delay")
        assert delay is not None and delay.get("stamp"), f"no delay: {last}"
        assert delay.get("from") == bare(alice)

        desk = await login(clients, bob, "desk")
        desk_events = collect(desk, "pubsub_publish")
        assert f"{NS_NICK}+notify" not in await available_with_caps(desk)

        writer = await login(clients, alice, "laptop", "xep_0172")
        own = collect(writer, "user_nick_publish")
        await available_with_caps(writer)
        assert nick_of(await next_of(own)) == "Alice"  # her own last item
        await writer.xmpp.plugin["xep_0172"].publish_nick("Alice L.", timeout=STEP_TIMEOUT)
        for queue in (nicks, own):
            live = await next_of(queue)
            assert str(live["from"]) == bare(alice)
            assert nick_of(live) == "Alice L."
            assert live.xml.find(f"{{{NS_DELAY}}}delay") is None
        # The event to the desk, if any, was sent with the phone's: a ping
        # answered now comes after it.
        await settled(desk)
        assert desk_events.empty(), f"the desk got {desk_events.get_nowait()}"
        assert nicks.empty() and own.empty()

    run(server, body, timeout=60)


def test_a_new_contact_gets_the_last_item_when_its_subscription_is_approved(server, run):
    """alice has bob's presence (his phone, interested in nicknames, is
    available to her), bob not yet hers; when she approves his request,
    the phone gets her last nickname (XEP-0163 §4.3.4: a new subscriber
    gets the last item at once)."""
    alice, bob = new_accounts(server, "alice", "bob")

    async def body(clients):
        writer = await login(clients, alice, "desk", "xep_0172")
        writer.xmpp.auto_authorize = None  # alice approves herself
        requests = collect(writer, "presence_subscribe")
        writer.xmpp.send_presence()  # available: requests come to it
        await writer.xmpp.plugin["xep_0172"].publish_nick("Alice", timeout=STEP_TIMEOUT)
        phone = await login(clients, bob, "phone", "xep_0172")
        nicks = collect(phone, "user_nick_publish")
        assert f"{NS_NICK}+notify" in await available_with_caps(phone)
        writer.xmpp.send_presence(pto=bare(bob), ptype="subscribe")  # the phone approves
        phone.xmpp.send_presence(pto=bare(alice), ptype="subscribe")
        await next_of(requests)
        await settled(phone)
        assert nicks.empty(), "a nickname before the subscription was approved"
        writer.xmpp.send_presence(pto=bare(bob), ptype="subscribed")
        last = await next_of(nicks)
        assert (str(last["from"]), nick_of(last)) == (bare(alice), "Alice")

    run(server, body, timeout=60)


# Across the older protocols


async def eventually(fetch, check, tries=50, pause=0.1):
    """``await fetch()`` until ``check(result)`` is true (a conversion may
    be written just after the request that causes it is answered); the last
    result."""
    for _ in range(tries):
        result = await fetch()
        if check(result):
            return result
        await asyncio.sleep(pause)
    return result


def test_an_avatar_published_with_pep_is_the_vcard_photo(server, run):
    """alice publishes an avatar with slixmpp's xep_0084 (data, then
    metadata); bob, her contact, reads her vCard (xep_0054) and finds the
    same bytes as PHOTO, with the type (XEP-0398)."""
    alice, bob = new_accounts(server, "alice", "bob")
    sha1 = hashlib.sha1(AVATAR).hexdigest()

    async def body(clients):
        await subscribe_both(clients, alice, bob)
        client = await login(clients, alice, "desk", "xep_0084")
        avatars = client.xmpp.plugin["xep_0084"]
        await avatars.publish_avatar(AVATAR, timeout=STEP_TIMEOUT)
        await avatars.publish_avatar_metadata(
            {"id": sha1, "type": "image/png", "bytes": len(AVATAR)}, timeout=STEP_TIMEOUT)

        reader = await login(clients, bob, "desk", "xep_0054")
        vcards = reader.xmpp.plugin["xep_0054"]

        async def vcard():
            return (await vcards.get_vcard(bare(alice), timeout=STEP_TIMEOUT))["vcard_temp"]

        found = await eventually(vcard, lambda v: v["PHOTO"]["BINVAL"] == AVATAR)
        assert found["PHOTO"]["BINVAL"] == AVATAR
        assert found["PHOTO"]["TYPE"] == "image/png"

    run(server, body)


def test_a_vcard_photo_is_the_pep_avatar(server, run):
    """alice sets a vCard PHOTO with slixmpp's xep_0054; bob, her contact,
    reads her urn:xmpp:avatar:metadata (its info has the SHA-1 of the
    photo as id, its size and type) and, with xep_0084, the data item of
    that id: the same bytes (XEP-0398)."""
    alice, bob = new_accounts(server, "alice", "bob")
    sha1 = hashlib.sha1(AVATAR).hexdigest()

    async def body(clients):
        await subscribe_both(clients, alice, bob)
        client = await login(clients, alice, "desk", "xep_0054")
        vcards = client.xmpp.plugin["xep_0054"]
        vcard = vcards.make_vcard()
        vcard["FN"] = "Alice"
        vcard["PHOTO"]["TYPE"] = "image/png"
        vcard["PHOTO"]["BINVAL"] = AVATAR
        await vcards.publish_vcard(vcard, timeout=STEP_TIMEOUT)

        reader = await login(clients, bob, "desk", "xep_0084")

        async def metadata():
            try:
                return await read(reader, alice, NODE_AVATAR_METADATA)
            except IqError as e:
                if e.iq["error"]["condition"] == "item-not-found":
                    return []
                raise

        items = await eventually(metadata, bool)
        assert len(items) == 1, f"metadata items: {items}"
        item_id, got = items[0]
        [info] = got.findall(f"{{{NODE_AVATAR_METADATA}}}info")
        assert (item_id, info.get("id")) == (sha1, sha1)
        assert (info.get("bytes"), info.get("type")) == (str(len(AVATAR)), "image/png")

        result = await reader.xmpp.plugin["xep_0084"].retrieve_avatar(
            JID(bare(alice)), sha1, timeout=STEP_TIMEOUT)
        item = result["pubsub"]["items"]["item"]
        assert item["id"] == sha1
        assert item["avatar_data"]["value"] == AVATAR
        assert hashlib.sha1(item["avatar_data"]["value"]).hexdigest() == sha1

    run(server, body)


def test_bookmarks_in_private_storage_and_pep_are_the_same(server, run):
    """Bookmarks stored in private XML storage (XEP-0048 through xep_0049)
    are read as XEP-0402 items of urn:xmpp:bookmarks:1, one per room, and a
    XEP-0402 bookmark published with the publish-options the XEP asks for
    is read back through private storage (XEP-0411); the XEP-0048
    storage:bookmarks node (XEP-0223) then lists both rooms too."""
    [alice] = new_accounts(server, "alice")
    tea, coffee = f"tea@rooms.{DOMAIN}", f"coffee@rooms.{DOMAIN}"

    async def body(clients):
        client = await login(clients, alice, "desk", "xep_0048", "xep_0049", "xep_0402")
        legacy = client.xmpp.plugin["xep_0048"]
        stored = legacy.stanza.Bookmarks()
        stored.add_conference(tea, "alice", name="Tea party", autojoin=True)
        await legacy.set_bookmarks(stored, method="xep_0049", timeout=STEP_TIMEOUT)

        async def pep_bookmarks():
            try:
                return await read(client, alice, NS_BOOKMARKS2)
            except IqError as e:
                if e.iq["error"]["condition"] == "item-not-found":
                    return []
                raise

        items = await eventually(pep_bookmarks, bool)
        assert [item_id for item_id, _ in items] == [tea]
        conference = items[0][1]
        assert conference.tag == f"{{{NS_BOOKMARKS2}}}conference"
        assert conference.get("name") == "Tea party"
        assert conference.get("autojoin") in ("true", "1")
        assert text_of(conference, f"{{{NS_BOOKMARKS2}}}nick") == "alice"

        added = payload(f"{{{NS_BOOKMARKS2}}}conference", name="Coffee", autojoin="false")
        ET.SubElement(added, f"{{{NS_BOOKMARKS2}}}nick").text = "ali"
        await publish(client, NS_BOOKMARKS2, coffee, added, publish_options(
            client, pubsub__persist_items="true", pubsub__max_items="max",
            pubsub__send_last_published_item="never", pubsub__access_model="whitelist"))

        async def private_bookmarks():
            result = await legacy.get_bookmarks(method="xep_0049", timeout=STEP_TIMEOUT)
            return {str(c["jid"]): c for c in result["private"]["bookmarks"]["conferences"]}

        conferences = await eventually(private_bookmarks, lambda found: coffee in found)
        assert set(conferences) == {tea, coffee}
        assert (conferences[coffee]["name"], conferences[coffee]["nick"]) == ("Coffee", "ali")
        assert not conferences[coffee]["autojoin"]
        assert (conferences[tea]["name"], conferences[tea]["autojoin"]) == ("Tea party", True)

        async def pep_storage():
            try:
                result = await legacy.get_bookmarks(method="xep_0223", timeout=STEP_TIMEOUT)
            except IqError as e:
                if e.iq["error"]["condition"] == "item-not-found":
                    return set()
                raise
            storage = result["pubsub"]["items"]["item"]["bookmarks"]
            return {str(c["jid"]) for c in storage["conferences"]}

        assert await eventually(pep_storage, lambda found: found == {tea, coffee}) == {tea, coffee}

    run(server, body)
