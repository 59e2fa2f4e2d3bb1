"""The real server over real TLS, driven by slixmpp and by raw sockets.

Each test starts from the session-wide server of ``conftest.py``: xmppd for
``example.test`` on 127.0.0.1 (STARTTLS and direct TLS ports), accounts
alice and bob.
"""

import asyncio
import base64
import ssl
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from tests.integration.conftest import settled

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_ROSTER = "jabber:iq:roster"

XML_DECLARATION = "<?xml version='1.0'?>"
STREAM_OPEN = ("<stream:stream xmlns='jabber:client' "
               "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>")


# Raw streams


async def exchange(port, data, *, ca_file=None, server_hostname=None, timeout=10):
    """Connect to 127.0.0.1:``port`` (over TLS verified against ``ca_file``
    if given), send ``data`` and return everything received until the server
    closes the connection."""
    context = None if ca_file is None else ssl.create_default_context(cafile=str(ca_file))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, ssl=context,
        server_hostname=server_hostname if context else None), timeout)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), timeout)  # to EOF: closed
    finally:
        writer.close()


def parse_stream(data):
    """The top-level elements of a server stream, and whether it was closed
    with ``</stream:stream>``."""
    parser = ET.XMLPullParser(("start", "end"))
    parser.feed(data)
    depth, elements, ended = 0, [], False
    for event, element in parser.read_events():
        if event == "start":
            depth += 1
            continue
        depth -= 1
        if depth == 1:
            elements.append(element)
        elif depth == 0:
            ended = element.tag == f"{{{NS_STREAMS}}}stream"
    return elements, ended


def stream_error_condition(elements):
    """The condition of the (last) stream error among ``elements``."""
    errors = [e for e in elements if e.tag == f"{{{NS_STREAMS}}}error"]
    assert errors, f"no stream error in {[e.tag for e in elements]}"
    return next(c.tag.split("}")[1] for c in errors[-1]
                if c.tag.startswith(f"{{{NS_STREAM_ERRORS}}}") and not c.tag.endswith("}text"))


# Helpers for slixmpp clients


def roster_items(iq):
    """The items of a roster result or push: ``{jid: (name, subscription, groups)}``."""
    query = iq.xml.find(f"{{{NS_ROSTER}}}query")
    assert query is not None, f"no roster query in {iq}"
    return {item.get("jid"): (item.get("name"), item.get("subscription"),
                              sorted(g.text for g in item.findall(f"{{{NS_ROSTER}}}group")))
            for item in query.findall(f"{{{NS_ROSTER}}}item")}


async def roster_request(client, type_, item=None):
    """Send a roster get, or a set of ``item`` (an ``<item/>`` element);
    returns the result iq."""
    iq = client.xmpp.Iq()
    iq["type"] = type_
    query = ET.SubElement(iq.xml, f"{{{NS_ROSTER}}}query")
    if item is not None:
        query.append(item)
    return await iq.send(timeout=10)


def roster_item(jid, name=None, groups=(), subscription=None):
    """A roster ``<item/>`` element."""
    item = ET.Element(f"{{{NS_ROSTER}}}item", {"jid": jid})
    if name is not None:
        item.set("name", name)
    if subscription is not None:
        item.set("subscription", subscription)
    for group in groups:
        ET.SubElement(item, f"{{{NS_ROSTER}}}group").text = group
    return item


# Tests


def test_scram_login_over_starttls_and_message_routing(server, run):
    """Both users log in with SCRAM-SHA-256 after STARTTLS; alice's messages
    reach bob at his full and at his bare JID, stamped with alice's full JID
    although her client claimed to be someone else."""

    async def body(clients):
        alice = await clients.login("alice", "desk")
        bob = await clients.login("bob", "phone")
        for client in (alice, bob):
            assert "starttls" in client.xmpp.features
            assert client.mechanism == "SCRAM-SHA-256"
            assert client.tls is not None and client.tls.version() in ("TLSv1.2", "TLSv1.3")
        assert alice.jid == "alice@example.test/desk"
        assert bob.jid == "bob@example.test/phone"

        bob.xmpp.send_presence()  # available: bare-JID messages go to available resources
        await settled(bob)  # before alice's bare-JID message, or it goes to bob's offline store
        forged = "mallory@example.test/forged"
        sent = alice.send_message(bob.jid, "to your full JID", mfrom=forged)
        assert sent["from"] == forged
        alice.send_message("bob@example.test", "to your bare JID", mfrom=forged)

        first, second = await bob.next_message(), await bob.next_message()
        assert [(m["body"], str(m["from"]), str(m["to"])) for m in (first, second)] == [
            ("to your full JID", alice.jid, bob.jid),
            ("to your bare JID", alice.jid, "bob@example.test"),
        ]

    run(server, body)


def test_login_over_direct_tls(server, run):
    """XEP-0368: TLS from the first byte on the direct TLS port, then the same
    SCRAM-SHA-256 login, and the session routes stanzas."""

    async def body(clients):
        alice = await clients.login("alice", "direct", direct_tls=True)
        assert alice.mechanism == "SCRAM-SHA-256"
        assert alice.tls is not None
        assert alice.xmpp.transport.get_extra_info("peername")[1] == server.direct_tls_port
        bob = await clients.login("bob")
        bob.send_message(alice.jid, "hello over direct TLS")
        message = await alice.next_message()
        assert (message["body"], str(message["from"])) == ("hello over direct TLS", bob.jid)

    run(server, body)


def test_roster_set_get_push_and_remove(server, run):
    """A roster set is stored and pushed to the resource that asked for the
    roster (not to one that did not); a removal pushes subscription='remove'."""
    contact = "carol@example.test"

    async def body(clients):
        editor = await clients.login("alice", "editor")
        watcher = await clients.login("alice", "watcher")
        await roster_request(watcher, "get")

        await roster_request(editor, "set", roster_item(
            contact, "Carol", ["Friends", "Work"], subscription="both"))
        push = await watcher.next_roster_push()
        assert push["type"] == "set"
        assert roster_items(push) == {contact: ("Carol", "none", ["Friends", "Work"])}
        # The push to a resource precedes the result of its own set on the
        # same stream: the editor, which never asked for the roster, got none.
        assert editor.roster_pushes.empty()

        result = await roster_request(editor, "get")
        assert roster_items(result)[contact] == ("Carol", "none", ["Friends", "Work"])

        await roster_request(editor, "set", roster_item(contact, subscription="remove"))
        for client in (watcher, editor):  # the editor asked for the roster since
            push = await client.next_roster_push()
            assert roster_items(push) == {contact: (None, "remove", [])}
        assert contact not in roster_items(await roster_request(editor, "get"))

    run(server, body)


def test_wrong_password_fails_and_closes(server, run):
    """A wrong password fails with not-authorized in each of the three
    mechanisms offered; after the third failure the server ends the stream
    with policy-violation and closes the connection, and no session starts."""

    async def body(clients):
        bob = clients.new("bob", password="not-bobs-password", mechanism=None)
        bob.connect()
        await bob.wait_disconnected()
        assert not bob.started.done()
        assert bob.failed_auth == ["not-authorized"] * 3
        assert bob.stream_errors == ["policy-violation"]
        assert bob.xmpp.transport is None

    run(server, body)


def test_auth_before_starttls_is_a_policy_violation(server, run):
    """Plaintext SASL is refused with policy-violation and the connection is
    closed; the credentials (valid ones) never reach SASL."""
    token = base64.b64encode(f"\0alice\0{server.passwords['alice']}".encode()).decode()
    data = (XML_DECLARATION + STREAM_OPEN.format(to=server.domain)
            + f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>").encode()

    async def body(clients):
        received = await exchange(server.c2s_port, data)
        elements, ended = parse_stream(received)
        assert elements and elements[0].tag == f"{{{NS_STREAMS}}}features", received
        assert [child.tag for child in elements[0]] == [f"{{{NS_TLS}}}starttls"]
        assert stream_error_condition(elements[1:]) == "policy-violation"
        assert not any(e.tag.startswith(f"{{{NS_SASL}}}") for e in elements)
        assert ended

    run(server, body)


def test_dtd_is_restricted_xml_and_other_sessions_continue(server, run):
    """A stream with a DOCTYPE and entity declarations (over direct TLS) is
    closed with restricted-xml; logged-in clients are unaffected."""
    data = (XML_DECLARATION
            + "<!DOCTYPE stream:stream [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>"
            + STREAM_OPEN.format(to=server.domain) + "&b;").encode()

    async def body(clients):
        alice = await clients.login("alice")
        bob = await clients.login("bob")
        received = await exchange(server.direct_tls_port, data, ca_file=server.ca_file,
                                  server_hostname=server.domain)
        elements, ended = parse_stream(received)
        assert stream_error_condition(elements) == "restricted-xml"
        assert ended

        bob.send_message(alice.jid, "still here?")
        assert (await alice.next_message())["body"] == "still here?"
        alice.send_message(bob.jid, "still here.")
        reply = await bob.next_message()
        assert (reply["body"], str(reply["from"])) == ("still here.", alice.jid)

    run(server, body)


def test_ping_to_server(server, run):
    """XEP-0199: a ping to the server's domain gets an iq result from it; one
    to an account that does not exist gets service-unavailable."""

    async def body(clients):
        alice = await clients.login("alice")
        result = await alice.xmpp.plugin["xep_0199"].send_ping(server.domain, timeout=10)
        assert result["type"] == "result"
        assert str(result["from"]) == server.domain
        with pytest.raises(IqError) as error:
            await alice.xmpp.plugin["xep_0199"].send_ping("nobody@example.test", timeout=10)
        assert error.value.iq["error"]["condition"] == "service-unavailable"

    run(server, body)


def test_xmppctl_init_then_twistd_serves_clients(tmp_path, xmppctl, launcher, run):
    """A fresh installation: ``xmppctl init DIR --domain localhost`` (free
    ports), ``xmppctl adduser``, then ``twistd xmppd`` on that configuration.
    A client trusting the generated self-signed certificate logs in over
    STARTTLS and over direct TLS, and the two resources exchange a message."""
    site = tmp_path / "site"
    c2s_port, direct_tls_port = launcher.free_ports(2)
    xmppctl("init", site, "--domain", "localhost",
            "--c2s-port", c2s_port, "--direct-tls-port", direct_tls_port)
    config = site / "xmppd.toml"
    xmppctl("-c", config, "adduser", "carol@localhost", "--password", "carol-secret-3")
    deployment = launcher.start(config, "localhost", c2s_port, direct_tls_port,
                                ca_file=site / "certs" / "localhost.crt",
                                passwords={"carol": "carol-secret-3"})

    async def body(clients):
        starttls = await clients.login("carol", "starttls")
        direct = await clients.login("carol", "direct", direct_tls=True)
        assert starttls.tls is not None and direct.tls is not None
        starttls.send_message(direct.jid, "hello from the other resource")
        assert (await direct.next_message())["body"] == "hello from the other resource"

    run(deployment, body)
