"""Service discovery and entity capabilities of the real server over real
TLS, checked with slixmpp: disco#info to the server lists the server
identity and exactly the features of the modules enabled for the host, and
slixmpp's own XEP-0115 code validates the ``ver`` of the caps stream
feature against the server's answer for the caps node."""

import asyncio
import xml.etree.ElementTree as ET

import pytest
import trustme
from slixmpp.exceptions import IqError

from tests.harness import make_server
from tests.integration.conftest import (CONFIG, STEP_TIMEOUT, free_ports, run_xmppctl,
                                       write_certificate)

NS_VERSION = "jabber:iq:version"
ALWAYS = {"http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items",
          "http://jabber.org/protocol/caps", "urn:xmpp:ping"}


def enabled_features(tmp_path, deployment):
    """The features the modules of ``xmppd.tap`` declare for the
    deployment's domain under its configuration, from an in-memory server."""
    config = deployment.process.config_path.read_text()
    return make_server(tmp_path, hosts=(), extra=config).features_for(deployment.domain)


async def login_with_caps(clients, user):
    """A client that processes the server's caps stream feature (XEP-0115)."""
    client = clients.new(user, "disco")
    client.xmpp.register_plugin("xep_0030")
    client.xmpp.register_plugin("xep_0115")
    client.connect()
    await client.wait_started()
    return client


async def server_info(client):
    iq = await client.xmpp.plugin["xep_0030"].get_info(
        jid=client.xmpp.boundjid.domain, timeout=STEP_TIMEOUT)
    info = iq["disco_info"]
    return info["identities"], info["features"]


async def validated_ver(client):
    """The server's ver once slixmpp has checked it against the caps node's
    disco#info (it keeps only verification strings that match)."""
    caps = client.xmpp.plugin["xep_0115"]
    domain = client.xmpp.boundjid.domain
    for _ in range(int(STEP_TIMEOUT * 10)):
        ver = await caps.get_verstring(domain)
        if ver:
            return ver
        await asyncio.sleep(0.1)
    pytest.fail(f"slixmpp did not validate the caps of {domain}")


async def ask_version(client):
    iq = client.xmpp.Iq()
    iq["type"], iq["to"] = "get", client.xmpp.boundjid.domain
    ET.SubElement(iq.xml, f"{{{NS_VERSION}}}query")
    return await iq.send(timeout=STEP_TIMEOUT)


def test_server_identity_features_and_caps(server, run, tmp_path):
    expected = enabled_features(tmp_path, server)
    assert ALWAYS | {NS_VERSION, "urn:xmpp:time", "jabber:iq:last"} <= set(expected)

    async def body(clients):
        alice = await login_with_caps(clients, "alice")
        identities, features = await server_info(alice)
        assert set(identities) == {("server", "im", None, "xmppd")}
        assert sorted(features) == expected
        assert await validated_ver(alice)
        version = (await ask_version(alice)).xml.find(f"{{{NS_VERSION}}}query/{{{NS_VERSION}}}name")
        assert version is not None and version.text == "xmppd"

    run(server, body)


def test_disabled_modules_leave_disco(launcher, run, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(site / "ca.pem"))
    domain = "quiet.test"
    write_certificate(ca, site / "certs", domain)
    c2s_port, direct_tls_port = free_ports(2)
    config = site / "xmppd.toml"
    config.write_text(CONFIG.format(c2s_port=c2s_port, direct_tls_port=direct_tls_port,
                                    domain=domain, storage_url="sqlite:///xmppd.sqlite")
                      + 'disabled_modules = ["version", "time"]\n')
    run_xmppctl("-c", config, "migrate")
    run_xmppctl("-c", config, "adduser", f"dave@{domain}", "--password", "dave-secret-4")
    deployment = launcher.start(config, domain, c2s_port, direct_tls_port,
                                ca_file=site / "ca.pem", passwords={"dave": "dave-secret-4"})
    expected = enabled_features(tmp_path, deployment)
    assert NS_VERSION not in expected and "urn:xmpp:time" not in expected

    async def body(clients):
        dave = await login_with_caps(clients, "dave")
        identities, features = await server_info(dave)
        assert set(identities) == {("server", "im", None, "xmppd")}
        assert sorted(features) == expected and ALWAYS <= set(features)
        assert await validated_ver(dave)
        with pytest.raises(IqError) as error:
            await ask_version(dave)
        assert error.value.iq["error"]["condition"] == "service-unavailable"

    run(deployment, body)
