"""Moving accounts from a real Prosody (Debian's 0.12) to xmppd.

Prosody runs from a private directory (tests/integration/interop.py) with
vCards (mod_vcard); juliet and romeo are registered with ``prosodyctl``,
then juliet logs in with slixmpp, names romeo in her roster with two
groups, subscribes to his presence (he approves: ``to`` on her side,
``from`` on his), sets her vCard, and romeo asks for her presence, which
she leaves pending.  ``prosody-migrator`` copies the ``internal`` store to
the ``xep0227`` one, one file per user; ``xmppctl import`` reads them into
a new xmppd for ``prosody.test``, and juliet logs in there with her old
password and finds her roster, subscriptions and vCard.

Prosody keeps SCRAM-SHA-1 verifiers only, so the imported accounts have
only those: a client choosing SCRAM-SHA-256 (slixmpp's first choice among
what xmppd offers by default) is refused, one using SCRAM-SHA-1 or PLAIN
logs in.  Both are checked.
"""

import asyncio
import os
import shutil

import pytest
import trustme

from tests.integration.conftest import (
    CONFIG, Clients, Deployment, LoginFailed, ServerProcess, free_ports, run_xmppctl,
    collect, next_of, settled, write_certificate)
from tests.integration.interop import C2S_PORT, PeerClients, Prosody

PASSWORDS = {"juliet": "juliet-Pr0sody", "romeo": "romeo-Pr0sody"}
MIGRATOR = "/usr/bin/prosody-migrator"


def xmppd_importing(directory, domain, files):
    """xmppd for ``domain`` with ``xmppctl import FILES`` run on its new
    database, started; the Deployment and the import's output."""
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    write_certificate(ca, directory / "certs", domain)
    c2s_port, direct_tls_port = free_ports(2)
    config_path = directory / "xmppd.toml"
    config_path.write_text(CONFIG.format(c2s_port=c2s_port, direct_tls_port=direct_tls_port,
                                         domain=domain, storage_url="sqlite:///xmppd.sqlite"))
    run_xmppctl("-c", config_path, "migrate")
    output = run_xmppctl("-c", config_path, "import", *files)
    assert run_xmppctl("-c", config_path, "import", *files).splitlines()[-1] == (
        f"accounts: 0 created, 0 updated, {len(PASSWORDS)} unchanged, 0 skipped")
    process = ServerProcess(config_path, (c2s_port, direct_tls_port))
    process.start()
    return Deployment(domain, c2s_port, direct_tls_port, ca_file, dict(PASSWORDS),
                      process), output


async def check_juliet(clients, romeo, groups, subscription):
    """juliet logs in to xmppd with her old password over SCRAM-SHA-1 and
    PLAIN, not SCRAM-SHA-256; her roster has romeo as exported."""
    with pytest.raises(LoginFailed, match="not-authorized"):
        await clients.login("juliet", "sha256", mechanism="SCRAM-SHA-256")
    await clients.login("juliet", "plain", mechanism="PLAIN")
    juliet = clients.new("juliet", "sha1", mechanism="SCRAM-SHA-1")
    juliet.xmpp.register_plugin("xep_0054")
    juliet.connect()
    await juliet.wait_started()
    assert juliet.mechanism == "SCRAM-SHA-1"
    await juliet.xmpp.get_roster(timeout=10)
    item = juliet.xmpp.client_roster[romeo]
    assert (item["name"], sorted(item["groups"]), item["subscription"]) == (
        "Romeo", groups, subscription)
    vcard = await juliet.xmpp.plugin["xep_0054"].get_vcard(
        juliet.xmpp.boundjid.bare, local=False, timeout=10)
    assert vcard["vcard_temp"]["FN"] == "Juliet Capulet"
    return juliet


class ProsodyWithVcards(Prosody):
    def configure(self):
        super().configure()
        text = self.config_path.read_text()
        self.config_path.write_text(text.replace('"ping" }', '"ping"; "vcard" }'))


@pytest.fixture
def prosody():
    ProsodyWithVcards.require()
    if not os.path.exists(MIGRATOR):
        pytest.skip("prosody-migrator is not installed (Debian package prosody)")
    peer = ProsodyWithVcards(trustme.CA(), None)
    try:
        peer.start()
        for user, password in PASSWORDS.items():
            peer.register(user, password)
        yield peer
    finally:
        peer.stop()
        peer.remove()


async def fill_prosody(peer):
    """juliet's roster and vCard, and the subscriptions, set by clients."""
    clients = PeerClients(Deployment(peer.domain, C2S_PORT, None, peer.ca_file,
                                     dict(PASSWORDS)), peer.address)
    try:
        juliet = clients.new("juliet", "balcony")
        juliet.xmpp.register_plugin("xep_0054")
        juliet.xmpp.auto_authorize = None  # her answer to romeo stays pending
        romeo = clients.new("romeo", "orchard")
        romeo.xmpp.auto_authorize = None  # he answers below
        romeo.xmpp.auto_subscribe = False
        for client in (juliet, romeo):
            client.connect()
            await client.wait_started()
        romeo.xmpp.send_presence()
        romeo_jid, juliet_jid = f"romeo@{peer.domain}", f"juliet@{peer.domain}"
        await juliet.xmpp.update_roster(romeo_jid, name="Romeo", groups=["Friends", "Family"])
        asked = collect(romeo, "presence_subscribe")
        juliet.xmpp.send_presence(pto=romeo_jid, ptype="subscribe")
        await next_of(asked)
        romeo.xmpp.send_presence(pto=juliet_jid, ptype="subscribed")
        romeo.xmpp.send_presence(pto=juliet_jid, ptype="subscribe")
        await settled(romeo)  # Prosody handled the request before the ping
        vcard = juliet.xmpp.plugin["xep_0054"].make_vcard()
        vcard["FN"] = "Juliet Capulet"
        await juliet.xmpp.plugin["xep_0054"].publish_vcard(vcard)
    finally:
        await clients.close_all()


def migrate(peer):
    """``prosody-migrator`` from the internal store to XEP-0227 files; their
    paths.  The migrator writes those into Prosody's data directory, which
    is built into the script (/var/lib/prosody): a copy of the script with
    the test's own directory is run instead."""
    out = peer.home / "xep0227"
    out.mkdir()
    shutil.chown(out, peer.account.pw_uid, peer.account.pw_gid)
    script = peer.home / "prosody-migrator"
    text = open(MIGRATOR).read()
    assert "CFG_DATADIR='/var/lib/prosody'" in text
    script.write_text(text.replace("CFG_DATADIR='/var/lib/prosody'", f"CFG_DATADIR='{out}'"))
    config = peer.home / "migrator.cfg.lua"
    config.write_text(f"""\
input {{
    type = "internal";
    path = "{peer.home / 'data'}";
    hosts = {{ ["{peer.domain}"] = {{ "accounts"; "roster"; "vcard"; "private" }} }};
}}
output {{
    type = "xep0227";
    path = "{out}";
}}
""")
    peer.run_as_user("lua5.4", str(script), f"--config={config}", "input", "output")
    return sorted(out.glob("*.xml"))


def test_import_from_prosody(prosody, tmp_path):
    asyncio.run(asyncio.wait_for(fill_prosody(prosody), 20))
    prosody.stop()
    files = migrate(prosody)
    assert [path.name for path in files] == [f"juliet@{prosody.domain}.xml",
                                             f"romeo@{prosody.domain}.xml"]
    deployment, output = xmppd_importing(tmp_path, prosody.domain, files)
    assert f"created juliet@{prosody.domain}: 1 roster item, 1 subscription request, " \
           "1 vCard" in output.splitlines()

    async def body():
        clients = Clients(deployment)
        try:
            await check_juliet(clients, f"romeo@{prosody.domain}", ["Family", "Friends"], "to")
            romeo = await clients.login("romeo", mechanism="SCRAM-SHA-1")
            await romeo.xmpp.get_roster(timeout=10)
            item = romeo.xmpp.client_roster[f"juliet@{prosody.domain}"]
            assert (item["subscription"], item["pending_out"]) == ("from", True)
        finally:
            await clients.close_all()

    try:
        asyncio.run(asyncio.wait_for(body(), 30))
    finally:
        deployment.process.check_clean_exit()
