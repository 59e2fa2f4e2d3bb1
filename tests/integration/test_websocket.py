"""WebSocket (RFC 7395) on the real server over real TLS: a WebSocket
client (the ``websockets`` library, SCRAM-SHA-256 by ``scramp``, both
independent of xmppd) logs in and exchanges messages with a slixmpp TCP
client, and resumes its session (XEP-0198) on a new WebSocket after its
connection is cut; host-meta (XEP-0156) names the WebSocket; an element
over the size limit gets ``policy-violation``."""

import asyncio
import base64
import json
import ssl
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from scramp import ScramClient
from websockets.asyncio.client import connect

from tests.integration.conftest import DOMAIN, STEP_TIMEOUT, prepare_web
from tests.integration.test_stream_management_slixmpp import until_session

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
STREAMS = "http://etherx.jabber.org/streams"
OPEN = f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The module's server, with an HTTPS listener; yields (deployment, port)."""
    deployment, port = prepare_web(tmp_path_factory.mktemp("xmppd-web"))
    deployment.process.start()
    yield deployment, port
    deployment.process.check_clean_exit()


def tls_context(deployment):
    return ssl.create_default_context(cafile=str(deployment.ca_file))


class WebSocketClient:
    def __init__(self, socket):
        self.socket = socket

    async def send(self, xml):
        await self.socket.send(xml)

    async def receive(self):
        return ET.fromstring(await asyncio.wait_for(self.socket.recv(), STEP_TIMEOUT))

    async def login(self, user, password, resource="web"):
        """<open/>, SCRAM-SHA-256, the restart, bind; the full JID."""
        await self.send(OPEN)
        assert (await self.receive()).tag == f"{{{FRAMING}}}open"
        features = await self.receive()
        mechanisms = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
        assert "SCRAM-SHA-256" in mechanisms
        scram = ScramClient(["SCRAM-SHA-256"], user, password)
        first = base64.b64encode(scram.get_client_first().encode()).decode()
        await self.send(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>")
        challenge = await self.receive()
        scram.set_server_first(base64.b64decode(challenge.text).decode())
        final = base64.b64encode(scram.get_client_final().encode()).decode()
        await self.send(f"<response xmlns='{SASL}'>{final}</response>")
        success = await self.receive()
        assert success.tag == f"{{{SASL}}}success", ET.tostring(success)
        scram.set_server_final(base64.b64decode(success.text).decode())  # the server proved itself
        await self.send(OPEN)
        assert (await self.receive()).tag == f"{{{FRAMING}}}open"
        await self.receive()  # features
        await self.send("<iq xmlns='jabber:client' type='set' id='bind'><bind xmlns="
                        f"'urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource>"
                        "</bind></iq>")
        bound = await self.receive()
        assert bound.get("type") == "result"
        return bound.find(".//{urn:ietf:params:xml:ns:xmpp-bind}jid").text


def websocket(deployment, port):
    return connect(f"wss://{DOMAIN}:{port}/xmpp-websocket", ssl=tls_context(deployment),
                   host="127.0.0.1", port=port, subprotocols=["xmpp"],
                   open_timeout=STEP_TIMEOUT)


def test_a_websocket_client_and_a_tcp_client_exchange_messages(web, run):
    deployment, port = web

    async def body(clients):
        bob = await clients.login("bob", "tcp")
        bob.xmpp.send_presence()
        async with websocket(deployment, port) as socket:
            assert socket.subprotocol == "xmpp"
            alice = WebSocketClient(socket)
            jid = await alice.login("alice", deployment.passwords["alice"])
            assert jid == f"alice@{DOMAIN}/web"
            await alice.send(f"<message xmlns='jabber:client' to='bob@{DOMAIN}/tcp' "
                             "type='chat'><body>from the web</body></message>")
            message = await bob.next_message()
            assert message["body"] == "from the web" and message["from"] == jid
            bob.send_message(jid, "from TCP")
            reply = await alice.receive()
            while reply.tag != "{jabber:client}message":
                reply = await alice.receive()
            assert reply.findtext("{jabber:client}body") == "from TCP"
            await alice.send(f"<close xmlns='{FRAMING}'/>")
            assert (await alice.receive()).tag == f"{{{FRAMING}}}close"

    run(deployment, body)


def test_an_element_over_the_limit_is_a_policy_violation(web, run):
    deployment, port = web

    async def body(clients):
        async with websocket(deployment, port) as socket:
            client = WebSocketClient(socket)
            await client.send(OPEN)
            await client.receive()
            await client.receive()
            await client.send("<message xmlns='jabber:client'><body>"
                              + "x" * 300000 + "</body></message>")
            error = await client.receive()
            assert error.tag == f"{{{STREAMS}}}error"
            assert error.find("{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") \
                is not None
            assert (await client.receive()).tag == f"{{{FRAMING}}}close"

    run(deployment, body)


def test_host_meta_names_the_websocket(web):
    deployment, port = web
    request = urllib.request.Request(f"https://127.0.0.1:{port}/.well-known/host-meta.json",
                                     headers={"Host": DOMAIN})
    context = tls_context(deployment)
    context.check_hostname = False  # the certificate names example.test, not 127.0.0.1
    with urllib.request.urlopen(request, context=context, timeout=STEP_TIMEOUT) as response:
        links = json.load(response)["links"]
    assert {"rel": "urn:xmpp:alt-connections:websocket",
            "href": f"wss://{DOMAIN}:{port}/xmpp-websocket"} in links


NS_SM = "urn:xmpp:sm:3"
STANZAS = ("{jabber:client}message", "{jabber:client}presence", "{jabber:client}iq")


async def authenticate(client, user, password):
    """<open/>, SCRAM-SHA-256 and the restart, without binding (before a
    resumption); the features of the restarted stream."""
    await client.send(OPEN)
    assert (await client.receive()).tag == f"{{{FRAMING}}}open"
    await client.receive()  # features
    scram = ScramClient(["SCRAM-SHA-256"], user, password)
    first = base64.b64encode(scram.get_client_first().encode()).decode()
    await client.send(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>")
    scram.set_server_first(base64.b64decode((await client.receive()).text).decode())
    final = base64.b64encode(scram.get_client_final().encode()).decode()
    await client.send(f"<response xmlns='{SASL}'>{final}</response>")
    success = await client.receive()
    assert success.tag == f"{{{SASL}}}success", ET.tostring(success)
    await client.send(OPEN)
    assert (await client.receive()).tag == f"{{{FRAMING}}}open"
    return await client.receive()


def test_a_websocket_session_is_resumed_on_a_new_websocket_after_a_cut(web, run):
    """XEP-0198 §5 over RFC 7395: the TCP connection under the WebSocket is
    aborted (no <close/>, no close frame), the session hibernates, a new
    WebSocket resumes it and gets what a slixmpp client sent meanwhile."""
    deployment, port = web
    password = deployment.passwords["alice"]

    async def body(clients):
        bob = await clients.login("bob", "tcp")
        async with websocket(deployment, port) as socket:
            alice = WebSocketClient(socket)
            jid = await alice.login("alice", password, resource="resumable")
            await alice.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
            enabled = await alice.receive()
            assert enabled.tag == f"{{{NS_SM}}}enabled" and enabled.get("resume") == "true"
            bob.send_message(jid, "before the cut")
            handled = 0
            while True:
                element = await alice.receive()
                handled += element.tag in STANZAS
                if element.tag == "{jabber:client}message":
                    break
            assert element.findtext("{jabber:client}body") == "before the cut"
            await alice.send(f"<a xmlns='{NS_SM}' h='{handled}'/>")
            socket.transport.abort()  # the TCP connection is cut
        await until_session(deployment, jid, "hibernating")
        bob.send_message(jid, "while away")
        async with websocket(deployment, port) as socket:
            alice = WebSocketClient(socket)
            features = await authenticate(alice, "alice", password)
            assert features.find(f"{{{NS_SM}}}sm") is not None
            await alice.send(f"<resume xmlns='{NS_SM}' previd='{enabled.get('id')}' "
                             f"h='{handled}'/>")
            resumed = await alice.receive()
            assert resumed.tag == f"{{{NS_SM}}}resumed", ET.tostring(resumed)
            assert resumed.get("previd") == enabled.get("id")
            bodies = []
            while not bodies:
                element = await alice.receive()
                if element.tag == "{jabber:client}message":
                    bodies.append(element.findtext("{jabber:client}body"))
            assert bodies == ["while away"]  # "before the cut" was acknowledged
            await alice.send(f"<message xmlns='jabber:client' to='bob@{DOMAIN}/tcp' "
                             "type='chat'><body>resumed</body></message>")
            message = await bob.next_message()
            assert message["body"] == "resumed" and message["from"] == jid
            await alice.send(f"<close xmlns='{FRAMING}'/>")
            while (await alice.receive()).tag != f"{{{FRAMING}}}close":
                pass

    run(deployment, body)
