"""BOSH (XEP-0124, XEP-0206) on the real server over real TLS: a small
BOSH client (aiohttp, SCRAM-SHA-256 by ``scramp``, both independent of
xmppd) logs in and exchanges messages with a slixmpp TCP client, then
terminates its session; host-meta (XEP-0156) names the BOSH URL."""

import asyncio
import base64
import json
import ssl
import urllib.request
import xml.etree.ElementTree as ET

import aiohttp
import pytest
from scramp import ScramClient

from tests.integration.conftest import DOMAIN, STEP_TIMEOUT, prepare_web

HTTPBIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The module's server, with an HTTPS listener; yields (deployment, port)."""
    deployment, port = prepare_web(tmp_path_factory.mktemp("xmppd-bosh"))
    deployment.process.start()
    yield deployment, port
    deployment.process.check_clean_exit()


def tls_context(deployment):
    context = ssl.create_default_context(cafile=str(deployment.ca_file))
    context.check_hostname = False  # the certificate names example.test, not 127.0.0.1
    return context


class BoshClient:
    def __init__(self, http, url):
        self.http, self.url = http, url
        self.rid, self.sid = 7000, None

    async def post(self, payload="", **attributes):
        """One request of the session; the response's <body/>."""
        self.rid += 1
        attributes = {"rid": self.rid, "sid": self.sid, **attributes}
        attrs = "".join(f" {name}='{value}'" for name, value in attributes.items()
                        if value is not None)
        data = f"<body xmlns='{HTTPBIND}' xmlns:xmpp='{XBOSH}'{attrs}>{payload}</body>"
        async with self.http.post(self.url, data=data.encode(),
                                  headers={"Content-Type": "text/xml; charset=utf-8"}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/xml; charset=utf-8"
            return ET.fromstring(await r.read())

    async def login(self, user, password, resource="bosh"):
        """Session creation, SCRAM-SHA-256, the restart, bind; the full JID."""
        body = await self.post(to=DOMAIN, wait=10, hold=1, ver="1.11",
                               **{"xml:lang": "en", "xmpp:version": "1.0"})
        self.sid = body.get("sid")
        assert self.sid and body.get("requests") == "2"
        mechanisms = [m.text for m in body.iter(f"{{{SASL}}}mechanism")]
        assert "SCRAM-SHA-256" in mechanisms
        scram = ScramClient(["SCRAM-SHA-256"], user, password)
        first = base64.b64encode(scram.get_client_first().encode()).decode()
        body = await self.post(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>")
        scram.set_server_first(base64.b64decode(body[0].text).decode())
        final = base64.b64encode(scram.get_client_final().encode()).decode()
        body = await self.post(f"<response xmlns='{SASL}'>{final}</response>")
        assert body[0].tag == f"{{{SASL}}}success", ET.tostring(body)
        scram.set_server_final(base64.b64decode(body[0].text).decode())
        body = await self.post(to=DOMAIN, **{"xmpp:restart": "true"})
        assert body.find(".//{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
        body = await self.post("<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns="
                               f"'urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}"
                               "</resource></bind></iq>")
        assert body[0].get("type") == "result"
        return body.find(".//{urn:ietf:params:xml:ns:xmpp-bind}jid").text


def test_a_bosh_client_and_a_tcp_client_exchange_messages(web, run):
    deployment, port = web

    async def body(clients):
        bob = await clients.login("bob", "tcp")
        bob.xmpp.send_presence()
        connector = aiohttp.TCPConnector(ssl=tls_context(deployment))
        timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT * 2)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            alice = BoshClient(http, f"https://127.0.0.1:{port}/http-bind")
            jid = await alice.login("alice", deployment.passwords["alice"])
            assert jid == f"alice@{DOMAIN}/bosh"
            held = asyncio.ensure_future(alice.post(
                f"<message xmlns='jabber:client' to='bob@{DOMAIN}/tcp' type='chat'>"
                "<body>from BOSH</body></message>"))
            message = await bob.next_message()
            assert message["body"] == "from BOSH" and message["from"] == jid
            bob.send_message(jid, "from TCP")
            reply = await asyncio.wait_for(held, STEP_TIMEOUT)
            while reply.find("{jabber:client}message") is None:
                reply = await alice.post()
            assert reply.findtext("{jabber:client}message/{jabber:client}body") == "from TCP"
            ended = await alice.post(type="terminate")
            assert ended.get("type") == "terminate"
            gone = await alice.post()
            assert gone.get("condition") == "item-not-found"

    run(deployment, body)


def test_host_meta_names_bosh(web):
    deployment, port = web
    request = urllib.request.Request(f"https://127.0.0.1:{port}/.well-known/host-meta.json",
                                     headers={"Host": DOMAIN})
    with urllib.request.urlopen(request, context=tls_context(deployment),
                                timeout=STEP_TIMEOUT) as response:
        links = json.load(response)["links"]
    assert {"rel": "urn:xmpp:alt-connections:xbosh",
            "href": f"https://{DOMAIN}:{port}/http-bind"} in links
