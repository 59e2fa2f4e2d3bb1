"""An anonymous host (SASL ANONYMOUS, XEP-0175) on the real server, with
slixmpp clients: random JIDs, messages between anonymous users, none to
another domain, and nothing of theirs in the database (``xmppctl users``
lists none).

The module's server hosts ``example.test`` (alice, bob: passwords) and
``guest.example.test`` (anonymous), both under the certificate of
``conftest.py`` (``*.example.test``), neither allowing cross-domain
messages.
"""

import sqlite3

import pytest
import slixmpp

from tests.integration.conftest import DOMAIN, STEP_TIMEOUT, Client, prepare, run_xmppctl

GUEST = f"guest.{DOMAIN}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    deployment = prepare(tmp_path_factory.mktemp("xmppd-anonymous"),
                         f'[hosts."{GUEST}"]\nauthentication = "anonymous"\n')
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


async def anonymous(clients):
    """A slixmpp client logged in to the anonymous host: a JID of the
    domain alone and no password make slixmpp choose ANONYMOUS."""
    xmpp = slixmpp.ClientXMPP(GUEST, "")
    xmpp.ca_certs = clients.deployment.ca_file
    xmpp.enable_direct_tls, xmpp.enable_starttls, xmpp.enable_plaintext = False, True, False
    client = Client(xmpp, ("127.0.0.1", clients.deployment.c2s_port))
    clients.all.append(client)
    client.connect()
    await client.wait_started()
    return client


def test_anonymous_users_get_random_jids_and_talk_to_each_other_only(server, run):
    async def body(clients):
        first, second = await anonymous(clients), await anonymous(clients)
        alice = await clients.login("alice", "desk")
        jids = [slixmpp.JID(client.jid) for client in (first, second)]
        assert [client.mechanism for client in (first, second)] == ["ANONYMOUS"] * 2
        assert [jid.domain for jid in jids] == [GUEST] * 2
        assert jids[0].local and jids[1].local and jids[0].local != jids[1].local

        # Something an account stores: a roster item.
        await first.xmpp.update_roster(slixmpp.JID(second.jid).bare, name="stranger",
                                       timeout=STEP_TIMEOUT)
        first.send_message(second.jid, "hello, stranger")
        message = await second.next_message()
        assert (message["body"], str(message["from"])) == ("hello, stranger", first.jid)

        first.send_message(alice.jid, "over the fence")  # closed domains: refused
        error = await first.next_message()
        assert (error["type"], error["error"]["condition"]) == ("error", "service-unavailable")
        assert str(error["from"]) == alice.jid
        await clients.close_all()
        assert alice.messages.empty()

    run(server, body, timeout=STEP_TIMEOUT * 3)
    database = server.process.config_path.parent / "xmppd.sqlite"
    with sqlite3.connect(database) as connection:
        dump = "\n".join(connection.iterdump())
    assert f"'{DOMAIN}'" in dump and GUEST not in dump
    assert run_xmppctl("-c", server.process.config_path, "users").split() == [
        f"alice@{DOMAIN}", f"bob@{DOMAIN}"]
