"""External components (XEP-0114) on the real server, with slixmpp's
``ComponentXMPP``: the handshake with the right secret, an iq from a user
answered by the component, a ping from the component to its host, the
host's disco#items, and a second connection (``conflict``) or a wrong
secret (``not-authorized``) refused."""

import asyncio

import pytest
from slixmpp.componentxmpp import ComponentXMPP

from tests.integration.conftest import DOMAIN, STEP_TIMEOUT, free_ports, prepare

GATEWAY = f"gateway.{DOMAIN}"
SECRET = "a-long-random-component-secret"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with one component, ``gateway.example.test``, on a loopback port."""
    [port] = free_ports(1)
    deployment = prepare(tmp_path_factory.mktemp("xmppd-component"), extra_config=(
        f'[components]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'[components."{GATEWAY}"]\nsecret = "{SECRET}"\n'))
    deployment.component_port = port
    deployment.process.ports = (*deployment.process.ports, port)
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


class Component:
    """A slixmpp component connection and what happened to it."""

    def __init__(self, deployment, secret=SECRET):
        self.xmpp = ComponentXMPP(GATEWAY, secret, "127.0.0.1", deployment.component_port)
        for plugin in ("xep_0030", "xep_0092", "xep_0199"):
            self.xmpp.register_plugin(plugin)
        loop = asyncio.get_running_loop()
        self.started, self.disconnected = loop.create_future(), loop.create_future()
        self.stream_errors = []
        on = self.xmpp.add_event_handler
        on("session_start", lambda _: self.started.done() or self.started.set_result(True))
        on("disconnected", lambda _: self.disconnected.done()
           or self.disconnected.set_result(True))
        on("stream_error", lambda error: self.stream_errors.append(error["condition"]))

    async def connect(self):
        """Connect; the outcome (started, or disconnected) within STEP_TIMEOUT."""
        self.xmpp.connect()
        done, _ = await asyncio.wait({self.started, self.disconnected}, timeout=STEP_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert done, "neither accepted nor refused in time"
        return self.started in done

    async def close(self):
        if self.xmpp.transport is not None and not self.disconnected.done():
            self.xmpp.disconnect(wait=2)
            try:
                await asyncio.wait_for(asyncio.shield(self.disconnected), 4)
            except asyncio.TimeoutError:
                self.xmpp.abort()


async def with_component(deployment, body, secret=SECRET):
    component = Component(deployment, secret)
    try:
        await body(component)
    finally:
        await component.close()


def test_the_component_answers_a_user_and_pings_its_host(server, run):
    async def body(clients):
        async def connected(component):
            assert await component.connect(), component.stream_errors
            alice = await clients.login("alice", "desk")
            alice.xmpp.register_plugin("xep_0092")
            version = await alice.xmpp.plugin["xep_0092"].get_version(
                GATEWAY, timeout=STEP_TIMEOUT)
            assert version["software_version"]["name"] == "Slixmpp"
            assert version["from"] == GATEWAY
            pong = await component.xmpp.plugin["xep_0199"].send_ping(
                DOMAIN, ifrom=GATEWAY, timeout=STEP_TIMEOUT)
            assert (pong["type"], pong["from"]) == ("result", DOMAIN)

        await with_component(server, connected)

    run(server, body)


def test_the_host_lists_the_component(server, run):
    async def body(clients):
        alice = await clients.login("alice", "disco")
        alice.xmpp.register_plugin("xep_0030")
        items = await alice.xmpp.plugin["xep_0030"].get_items(jid=DOMAIN, timeout=STEP_TIMEOUT)
        assert GATEWAY in {str(jid) for jid, _, _ in items["disco_items"]["items"]}

    run(server, body)


def test_a_second_connection_is_refused_with_conflict(server, run):
    async def body(clients):
        async def first_connected(first):
            assert await first.connect(), first.stream_errors

            async def second_refused(second):
                assert not await second.connect()
                assert second.stream_errors == ["conflict"]

            await with_component(server, second_refused)
            # The first connection stays and is still served.
            pong = await first.xmpp.plugin["xep_0199"].send_ping(
                DOMAIN, ifrom=GATEWAY, timeout=STEP_TIMEOUT)
            assert pong["type"] == "result" and not first.disconnected.done()

        await with_component(server, first_connected)

    run(server, body)


def test_a_wrong_secret_is_not_authorized(server, run):
    async def body(clients):
        async def refused(component):
            assert not await component.connect()
            assert component.stream_errors == ["not-authorized"]

        await with_component(server, refused, secret="a-guess")

    run(server, body)
