"""Moving accounts from a real ejabberd (Debian's 23.01) to xmppd.

ejabberd runs from a private directory (tests/integration/interop.py) with
SCRAM-hashed passwords, vCards, private storage, offline messages and the
admin commands of mod_admin_extra.  ``ejabberdctl`` registers juliet and
romeo, gives juliet romeo in two groups (``both``), a vCard, a private
element and an offline message from romeo; ``ejabberdctl export_piefxis``
writes the XEP-0227 files (a main file including one per host, its SCRAM
values base64-encoded twice), which ``xmppctl import`` reads into a new
xmppd for ``ejabberd.test``.  juliet logs in there with her old password
(SCRAM-SHA-1 or PLAIN: ejabberd keeps SHA-1 verifiers only, so
SCRAM-SHA-256 is refused, as with Prosody) and finds her roster, vCard
and offline message.
"""

import asyncio

import pytest
import trustme

from tests.integration.conftest import Clients
from tests.integration.interop import Ejabberd
from tests.integration.test_import_prosody import PASSWORDS, check_juliet, xmppd_importing

MODULES = ("mod_admin_extra", "mod_vcard", "mod_private", "mod_offline")


class EjabberdExporting(Ejabberd):
    def configure(self):
        super().configure()
        config = self.home / "ejabberd.yml"
        extra = "".join(f"  {module}: {{}}\n" for module in MODULES)
        config.write_text(config.read_text().replace("  mod_roster: {}\n",
                                                     "  mod_roster: {}\n" + extra))
        (self.home / "export").mkdir()


@pytest.fixture
def ejabberd():
    EjabberdExporting.require()
    peer = EjabberdExporting(trustme.CA(), None)
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()
        peer.remove()


def test_import_from_ejabberd(ejabberd, tmp_path):
    domain = ejabberd.domain
    for user, password in PASSWORDS.items():
        ejabberd.register(user, password)
    ctl = ejabberd.ctl
    ejabberd.run_as_user(*ctl("add_rosteritem", "juliet", domain, "romeo", domain, "Romeo",
                              "Friends;Family", "both"))
    ejabberd.run_as_user(*ctl("set_vcard", "juliet", domain, "FN", "Juliet Capulet"))
    ejabberd.run_as_user(*ctl("private_set", "juliet", domain,
                              "<prefs xmlns='urn:example:prefs'><nick>J</nick></prefs>"))
    ejabberd.run_as_user(*ctl("send_message", "chat", f"romeo@{domain}", f"juliet@{domain}",
                              "", "while you were away"))
    ejabberd.run_as_user(*ctl("export_piefxis", str(ejabberd.home / "export")))
    ejabberd.stop()
    [main] = [path for path in (ejabberd.home / "export").glob("*.xml") if "_" not in path.name]
    deployment, output = xmppd_importing(tmp_path, domain, [main])
    assert (f"created juliet@{domain}: 1 roster item, 1 vCard, 1 private XML element, "
            "1 offline message") in output.splitlines()

    async def body():
        clients = Clients(deployment)
        try:
            juliet = await check_juliet(clients, f"romeo@{domain}", ["Family", "Friends"],
                                        "both")
            juliet.xmpp.send_presence()
            message = await juliet.next_message()
            assert (str(message["from"]), message["body"]) == (
                f"romeo@{domain}", "while you were away")
        finally:
            await clients.close_all()

    try:
        asyncio.run(asyncio.wait_for(body(), 30))
    finally:
        deployment.process.check_clean_exit()
