"""Ad-hoc administration commands (XEP-0050, XEP-0133) on the real server,
driven by slixmpp's ``xep_0050`` plugin: an admin lists the commands and
adds an account in two steps (the form asked, then submitted), the new
account logs in; a user who is no admin sees no admin command and may
not run one.

The module's server hosts ``example.test`` with ``alice`` as its admin;
the host table enables the ``adhoc`` and ``admin_commands`` modules.
"""

import pytest
from slixmpp.exceptions import IqError

from tests.integration.conftest import DOMAIN, STEP_TIMEOUT, prepare

NS_COMMANDS = "http://jabber.org/protocol/commands"
ADD_USER = "http://jabber.org/protocol/admin#add-user"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    deployment = prepare(tmp_path_factory.mktemp("xmppd-adhoc"))
    config = deployment.process.config_path
    # The host's table is the file's last: these keys are its own.
    config.write_text(config.read_text() + f'admins = ["alice@{DOMAIN}"]\n'
                                           'modules_enabled = ["adhoc", "admin_commands"]\n')
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


async def commander(clients, user):
    client = clients.new(user)
    for plugin in ("xep_0030", "xep_0004", "xep_0050"):
        client.xmpp.register_plugin(plugin)
    client.connect()
    await client.wait_started()
    return client


async def command_nodes(client):
    items = await client.xmpp.plugin["xep_0050"].get_commands(DOMAIN, timeout=STEP_TIMEOUT)
    assert items["disco_items"]["node"] == NS_COMMANDS
    return [(str(jid), node) for jid, node, _ in items["disco_items"]["items"]]


def test_an_admin_adds_an_account_that_then_logs_in(server, run):
    async def body(clients):
        alice = await commander(clients, "alice")
        adhoc = alice.xmpp.plugin["xep_0050"]
        assert (DOMAIN, ADD_USER) in await command_nodes(alice)

        first = await adhoc.send_command(DOMAIN, ADD_USER, timeout=STEP_TIMEOUT)
        assert first["command"]["status"] == "executing"
        assert first["command"]["actions"] == {"complete"}
        asked = first["command"]["form"]
        assert {"accountjid", "password", "password-verify"} <= set(asked.get_fields())

        answer = alice.xmpp.plugin["xep_0004"].make_form(ftype="submit")
        answer.add_field(var="FORM_TYPE", ftype="hidden",
                         value="http://jabber.org/protocol/admin")
        answer.add_field(var="accountjid", value=f"carol@{DOMAIN}")
        answer.add_field(var="password", value="carol-secret-3")
        answer.add_field(var="password-verify", value="carol-secret-3")
        done = await adhoc.send_command(
            DOMAIN, ADD_USER, sessionid=first["command"]["sessionid"], action="complete",
            payload=answer, timeout=STEP_TIMEOUT)

        assert done["command"]["status"] == "completed"
        assert done["command"]["notes"] == [("info", f"carol@{DOMAIN} was added")]
        clients.deployment.passwords["carol"] = "carol-secret-3"
        carol = await clients.login("carol", "phone")
        assert carol.jid == f"carol@{DOMAIN}/phone"

    run(server, body)


def test_a_user_who_is_no_admin_cannot(server, run):
    async def body(clients):
        bob = await commander(clients, "bob")
        assert await command_nodes(bob) == []
        with pytest.raises(IqError) as refused:
            await bob.xmpp.plugin["xep_0050"].send_command(DOMAIN, ADD_USER,
                                                           timeout=STEP_TIMEOUT)
        assert refused.value.iq["error"]["condition"] == "forbidden"

    run(server, body)
