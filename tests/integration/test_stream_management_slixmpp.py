"""Stream management (XEP-0198) on the real server with slixmpp's own
client side (plugin ``xep_0198``): a connection cut without a closing
stream, then resumption (§5), its window expiring (messages kept offline,
§4.3) and a resumption the server must refuse (item-not-found).

A cut is an abort of the client's TCP connection: the server sees the
connection lost, never ``</stream:stream>``.  slixmpp resumes by itself when
it connects again with the id of ``<enabled/>`` still set.  Each test runs a
server of its own: what one leaves hibernating or offline stays out of the
others.
"""

import asyncio
import json

import pytest

from tests.integration.conftest import STEP_TIMEOUT, collect, settled, xmppctl_result
from tests.integration.test_messaging_slixmpp import stored_offline

COUNT = 20  # messages sent while the client is cut off
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


async def next_of(queue, what):
    """The next item of ``queue`` (see ``collect``); the test fails if none
    comes within STEP_TIMEOUT."""
    try:
        return await asyncio.wait_for(queue.get(), STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError(f"no {what} within {STEP_TIMEOUT} s") from None


async def managed(clients, user, resource):
    """A client of ``user`` logged in with stream management enabled and
    resumable (§3)."""
    client = clients.new(user, resource)
    client.xmpp.register_plugin("xep_0198")
    enabled = collect(client, "sm_enabled")
    client.connect()
    await client.wait_started()
    assert (await next_of(enabled, "<enabled/>"))["resume"], "<enabled/> without resume='true'"
    return client


async def cut(client):
    """Abort the client's connection (TCP RST, no closing stream) and wait
    until slixmpp has seen it go."""
    client.xmpp.transport.abort()
    await client.wait_disconnected()


def reconnect(client):
    """Connect ``client`` again; slixmpp resumes if it has an id (§5)."""
    client.disconnected = asyncio.get_running_loop().create_future()
    client.connect()


async def sessions(deployment):
    """``xmppctl sessions --json``: full JID -> session."""
    result = await asyncio.to_thread(
        xmppctl_result, "-c", deployment.process.config_path, "sessions", "--json")
    assert result.returncode == 0, result.stderr
    return {session["jid"]: session for session in json.loads(result.stdout)}


async def until_session(deployment, jid, state):
    """Poll the server until the session of ``jid`` is in ``state``:
    "hibernating" (bound without a connection) or "gone"."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT
    while loop.time() < deadline:
        session = (await sessions(deployment)).get(jid)
        if (session is None) if state == "gone" else (session and session["address"] is None):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the session of {jid} is not {state} after {STEP_TIMEOUT} s")


def send_numbered(sender, to, label, count=COUNT):
    """Send ``count`` chat messages "LABEL N"; their bodies."""
    sent = [f"{label} {n}" for n in range(count)]
    for body in sent:
        sender.send_message(to, body)
    return sent


async def bodies(client, count=None, until=None):
    """The bodies of the next ``count`` messages ``client`` receives, or of
    those before the one whose body is ``until``; a message awaited for more
    than STEP_TIMEOUT fails the test."""
    got = []
    while len(got) != count:
        try:
            body = str((await client.next_message())["body"])
        except asyncio.TimeoutError:
            waited = f"message {len(got) + 1} of {count}" if until is None else repr(until)
            raise AssertionError(f"{client.jid}: no {waited} within {STEP_TIMEOUT} s; "
                                 f"got {got}") from None
        if body == until:
            break
        got.append(body)
    return got


def condition(failed):
    """The stanza error condition of a ``<failed/>``."""
    return [child.tag.split("}")[1] for child in failed.xml if child.tag.startswith(
        f"{{{NS_STANZAS}}}")]


def test_resumption_delivers_what_was_sent_while_cut_exactly_once(fresh_server, run):
    """§5: the stanzas sent to the hibernating session come after
    ``<resumed/>``, each once, in order; those the client acknowledged with
    the ``h`` of ``<resume/>`` (§4) are not sent again."""

    async def body(clients):
        alice = await managed(clients, "alice", "phone")
        bob = await clients.login("bob", "desk")
        # Fewer than ack_request_after (5): the server has not asked for
        # their acknowledgement yet, so only the h of <resume/> acknowledges them.
        before = send_numbered(bob, alice.jid, "before", 3)
        assert await bodies(alice, len(before)) == before
        jid = alice.jid
        binds, resumed = collect(alice, "session_bind"), collect(alice, "session_resumed")

        await cut(alice)
        await until_session(fresh_server, jid, "hibernating")
        sent = send_numbered(bob, jid, "while cut")
        await settled(bob)
        reconnect(alice)
        await next_of(resumed, "<resumed/>")
        bob.send_message(jid, "marker")

        assert await bodies(alice, until="marker") == sent
        assert binds.empty(), "the client bound a new session instead of resuming"
        assert alice.jid == jid
        assert bob.messages.empty(), "the sender got a message back (a bounce?)"

    run(fresh_server, body)


@pytest.mark.parametrize("server_settings", [{"c2s": {"resume_timeout": 2.0}}],
                         ids=["resume_timeout=2"])
def test_messages_of_an_expired_session_go_offline(fresh_server, run):
    """§4.3: when the resumption window passes, the messages the client did
    not acknowledge are stored offline and come at the next login, once."""

    async def body(clients):
        alice = await managed(clients, "alice", "phone")
        bob = await clients.login("bob", "desk")
        jid = alice.jid

        await cut(alice)
        sent = send_numbered(bob, jid, "while cut")
        await settled(bob)
        await until_session(fresh_server, jid, "gone")
        log = fresh_server.process.log_path.read_text()
        assert f"{jid} hibernating" in log and f"{jid} not resumed in time" in log, \
            "the session did not hibernate, then expire (see the server log)"
        await stored_offline(fresh_server, "alice@example.test", COUNT)

        later = await clients.login("alice", "laptop")
        later.xmpp.send_presence()
        assert await bodies(later, COUNT) == sent
        bob.send_message(later.jid, "marker")
        assert await bodies(later, until="marker") == []
        assert bob.messages.empty(), "the sender got a message back (a bounce?)"

    run(fresh_server, body)


def test_resumption_with_an_unknown_id_fails_and_the_client_binds_anew(fresh_server, run):
    """§5: an id the server does not know is ``item-not-found`` (without
    ``h``); the client binds a new session and enables stream management
    again."""

    async def body(clients):
        alice = await managed(clients, "alice", "phone")
        bob = await clients.login("bob", "desk")
        failed, started = collect(alice, "sm_failed"), collect(alice, "session_start")
        enabled = collect(alice, "sm_enabled")
        old_id = alice.xmpp.plugin["xep_0198"].sm_id

        await cut(alice)
        await until_session(fresh_server, alice.jid, "hibernating")
        alice.xmpp.plugin["xep_0198"].sm_id = "no-such-session"
        reconnect(alice)
        failure = await next_of(failed, "<failed/>")
        assert condition(failure) == ["item-not-found"], str(failure)
        assert failure.xml.get("h") is None, str(failure)
        await next_of(started, "new session")
        assert (await next_of(enabled, "<enabled/> again"))["id"] not in (None, "", old_id)

        bob.send_message(alice.jid, "to the new session")
        assert await bodies(alice, 1) == ["to the new session"]

    run(fresh_server, body)


def test_another_accounts_session_cannot_be_resumed(fresh_server, run):
    """§5: the id of a session of another account is ``item-not-found``;
    that session stays hibernating, for its own client to resume."""

    async def body(clients):
        alice = await managed(clients, "alice", "phone")
        jid, alice_id = alice.jid, alice.xmpp.plugin["xep_0198"].sm_id
        resumed = collect(alice, "session_resumed")
        await cut(alice)
        await until_session(fresh_server, jid, "hibernating")

        mallory = clients.new("bob", "desk")
        mallory.xmpp.register_plugin("xep_0198")
        mallory.xmpp.plugin["xep_0198"].sm_id = alice_id
        failed = collect(mallory, "sm_failed")
        mallory.connect()
        await mallory.wait_started()
        assert condition(await next_of(failed, "<failed/>")) == ["item-not-found"]
        assert mallory.jid == "bob@example.test/desk"

        reconnect(alice)
        await next_of(resumed, "<resumed/>")
        mallory.send_message(jid, "still yours")
        assert await bodies(alice, 1) == ["still yours"]

    run(fresh_server, body)
