"""The publish-subscribe service (XEP-0060) at ``pubsub.DOMAIN`` on the real
server, driven by slixmpp's xep_0060 and xep_0030 plugins: discovery, a
node created with a configuration, subscriptions and the notifications
they bring (publish, retract, delete), unsubscribing, and a whitelist node
opened to a member by its owner."""

import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ElementBase

from tests.integration.conftest import (
    DOMAIN, STEP_TIMEOUT, collect, new_accounts, next_of, prepare, settled)

SERVICE = f"pubsub.{DOMAIN}"
NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
PLUGINS = ("xep_0030", "xep_0004", "xep_0060", "xep_0199")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server whose host has the pubsub module, where every account may
    create nodes."""
    deployment = prepare(tmp_path_factory.mktemp("xmppd-pubsub"),
                         extra_config='[pubsub]\ncreate_nodes = "local"\n')
    config = deployment.process.config_path
    config.write_text(config.read_text() + 'modules_enabled = ["pubsub"]\n')  # the host's
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


async def login(clients, user):
    """A client of ``user``, available: notifications to a bare JID go to
    its available resources (RFC 6121 §8.5.2.1.1)."""
    client = clients.new(user, "desk")
    for plugin in PLUGINS:
        client.xmpp.register_plugin(plugin)
    client.connect()
    await client.wait_started()
    client.xmpp.send_presence()
    await settled(client)
    return client


def entry(text):
    element = ET.Element("{urn:example:news}entry")
    element.text = text
    return ElementBase(element)


def node_config(client, **fields):
    form = client.xmpp.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=NS_NODE_CONFIG)
    for name, value in fields.items():
        form.add_field(var=f"pubsub#{name}", value=value)
    return form


def pubsub_condition(iq):
    error = iq.xml.find("{jabber:client}error")
    return next((child.tag.split("}")[1] for child in error
                 if child.tag.startswith(f"{{{NS_ERRORS}}}")), None)


def test_discover_subscribe_publish_retract_delete(server, run):
    owner, reader = new_accounts(server, "owner", "reader")

    async def body(clients):
        publisher, subscriber = await login(clients, owner), await login(clients, reader)
        pubsub = publisher.xmpp.plugin["xep_0060"]
        disco = subscriber.xmpp.plugin["xep_0030"]
        items = await disco.get_items(jid=DOMAIN, timeout=STEP_TIMEOUT)
        assert SERVICE in {str(jid) for jid, _, _ in items["disco_items"]["items"]}
        info = await disco.get_info(jid=SERVICE, timeout=STEP_TIMEOUT)
        assert ("pubsub", "service") in {(c, t) for c, t, _, _ in
                                         info["disco_info"]["identities"]}

        await pubsub.create_node(SERVICE, "news", config=node_config(publisher, title="News"),
                                 timeout=STEP_TIMEOUT)
        nodes = await subscriber.xmpp.plugin["xep_0060"].get_nodes(jid=SERVICE,
                                                                   timeout=STEP_TIMEOUT)
        assert ("news", "News") in {(node, name) for _, node, name in
                                    nodes["disco_items"]["items"]}

        published, retracted = collect(subscriber, "pubsub_publish"), collect(
            subscriber, "pubsub_retract")
        deleted = collect(subscriber, "pubsub_delete")
        result = await subscriber.xmpp.plugin["xep_0060"].subscribe(SERVICE, "news",
                                                                    timeout=STEP_TIMEOUT)
        assert result["pubsub"]["subscription"]["subscription"] == "subscribed"

        await pubsub.publish(SERVICE, "news", id="first", payload=entry("hello"),
                             timeout=STEP_TIMEOUT)
        event = await next_of(published)
        assert event["from"] == SERVICE
        item = event["pubsub_event"]["items"]["item"]
        assert (item["id"], item["payload"].text) == ("first", "hello")
        stored = await subscriber.xmpp.plugin["xep_0060"].get_items(SERVICE, "news",
                                                                    timeout=STEP_TIMEOUT)
        assert [i["id"] for i in stored["pubsub"]["items"]] == ["first"]

        await pubsub.retract(SERVICE, "news", "first", timeout=STEP_TIMEOUT)
        event = await next_of(retracted)
        assert event["pubsub_event"]["items"]["retract"]["id"] == "first"

        await subscriber.xmpp.plugin["xep_0060"].unsubscribe(SERVICE, "news",
                                                             timeout=STEP_TIMEOUT)
        await pubsub.publish(SERVICE, "news", id="second", payload=entry("unseen"),
                             timeout=STEP_TIMEOUT)
        await settled(publisher)
        await settled(subscriber)
        assert published.empty()

        await subscriber.xmpp.plugin["xep_0060"].subscribe(SERVICE, "news",
                                                           timeout=STEP_TIMEOUT)
        await pubsub.delete_node(SERVICE, "news", timeout=STEP_TIMEOUT)
        event = await next_of(deleted)
        assert event["pubsub_event"]["delete"]["node"] == "news"
        with pytest.raises(IqError) as gone:
            await subscriber.xmpp.plugin["xep_0060"].get_items(SERVICE, "news",
                                                               timeout=STEP_TIMEOUT)
        assert gone.value.iq["error"]["condition"] == "item-not-found"

    run(server, body)


def test_a_whitelist_node_opens_to_a_member(server, run):
    owner, reader = new_accounts(server, "owner", "reader")

    async def body(clients):
        publisher, subscriber = await login(clients, owner), await login(clients, reader)
        pubsub = publisher.xmpp.plugin["xep_0060"]
        await pubsub.create_node(SERVICE, "board", timeout=STEP_TIMEOUT,
                                 config=node_config(publisher, access_model="whitelist"))
        with pytest.raises(IqError) as closed:
            await subscriber.xmpp.plugin["xep_0060"].subscribe(SERVICE, "board",
                                                               timeout=STEP_TIMEOUT)
        assert closed.value.iq["error"]["condition"] == "not-allowed"
        assert pubsub_condition(closed.value.iq) == "closed-node"
        member = f"{reader}@{DOMAIN}"
        await pubsub.modify_affiliations(SERVICE, "board", [(member, "member")],
                                         timeout=STEP_TIMEOUT)
        result = await subscriber.xmpp.plugin["xep_0060"].subscribe(SERVICE, "board",
                                                                    timeout=STEP_TIMEOUT)
        assert result["pubsub"]["subscription"]["subscription"] == "subscribed"
        published = collect(subscriber, "pubsub_publish")
        await pubsub.publish(SERVICE, "board", id="1", payload=entry("members only"),
                             timeout=STEP_TIMEOUT)
        event = await next_of(published)
        assert event["pubsub_event"]["items"]["item"]["payload"].text == "members only"

    run(server, body)
