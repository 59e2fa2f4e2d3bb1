"""Abuse handling on the real server, with slixmpp's own xep_0191 and
xep_0377 plugins: a block with a spam report (XEP-0377) is done and the
report is what ``xmppctl reports`` then shows; a domain on the host's
blocklist (``domain_blocklist``) is refused with ``not-allowed``.

The module's server lets ``example.test`` exchange stanzas with other
domains (``cross_domain_messages``) but federates with none, so a message
to a remote domain that is not blocked gets the federation policy's
``service-unavailable``.
"""

import json

import pytest
from slixmpp.plugins.xep_0191 import BlockItem

from tests.integration.conftest import DOMAIN, STEP_TIMEOUT, prepare, run_xmppctl

ABUSE = "urn:xmpp:reporting:abuse"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    deployment = prepare(tmp_path_factory.mktemp("xmppd-abuse"),
                         '[domain_blocklist]\ndomains = ["*.spam.example"]\n')
    path = deployment.process.config_path
    host = f'[hosts."{DOMAIN}"]\n'
    path.write_text(path.read_text().replace(host, host + "cross_domain_messages = true\n"))
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


def reports(server, *args):
    return run_xmppctl("-c", server.process.config_path, "reports", *args)


def test_a_block_with_a_report_is_kept_for_the_operator(server, run):
    async def body(clients):
        alice = clients.new("alice", "desk")
        for plugin in ("xep_0191", "xep_0377"):
            alice.xmpp.register_plugin(plugin)
        alice.connect()
        await alice.wait_started()
        await alice.xmpp.plugin["xep_0377"].report("bot@spam.test", timeout=STEP_TIMEOUT)

        iq = alice.xmpp.make_iq_set()  # a report with a text, from the plugin's stanzas
        item = BlockItem(parent=iq["block"])
        item["jid"] = "troll@abuse.test/phone"
        item["report"]["reason"] = ABUSE
        item["report"]["text"] = "threats, three times today"
        await iq.send(timeout=STEP_TIMEOUT)

        blocked = await alice.xmpp.plugin["xep_0191"].get_blocked_jids(timeout=STEP_TIMEOUT)
        assert {str(jid) for jid in blocked} == {"bot@spam.test", "troll@abuse.test/phone"}

    run(server, body)
    lines = reports(server).splitlines()
    assert lines[-1] == "2 reports"
    assert lines[0].endswith(f'"alice@{DOMAIN}" reported "bot@spam.test" for spam')
    assert lines[1].endswith(f'"alice@{DOMAIN}" reported "troll@abuse.test/phone" for abuse')
    assert lines[2] == '  text: "threats, three times today"'
    found = json.loads(reports(server, DOMAIN, "--json"))
    assert [(r["domain"], r["reporter"], r["jid"], r["reason"]) for r in found] == [
        (DOMAIN, f"alice@{DOMAIN}", "bot@spam.test", "urn:xmpp:reporting:spam"),
        (DOMAIN, f"alice@{DOMAIN}", "troll@abuse.test/phone", ABUSE)]
    assert reports(server, "--clear", found[0]["id"]) == f"deleted report {found[0]['id']}\n"
    assert reports(server).splitlines()[-1] == "1 report"


def test_a_blocked_domain_is_not_allowed(server, run):
    async def body(clients):
        alice = await clients.login("alice", "laptop")
        alice.send_message("someone@chat.spam.example", "hello?")
        error = await alice.next_message()
        assert (error["type"], error["error"]["condition"]) == ("error", "not-allowed")
        assert error["error"]["text"] == "chat.spam.example is blocked by this server"
        alice.send_message("someone@fine.example", "hello?")
        error = await alice.next_message()
        assert (error["type"], error["error"]["condition"]) == ("error", "service-unavailable")

    run(server, body)
