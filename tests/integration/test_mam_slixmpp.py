"""Message archive management (XEP-0313) on the real server, driven by
slixmpp's own xep_0313 and xep_0059 plugins: a conversation paged backwards
with its count (XEP-0059 §2.5, §2.7), each result's id the stanza-id its
message was delivered with (XEP-0359 §3), an offline message's too, and another
account's archive refused (XEP-0313 §4).

The module's server archives; offline messages and archives left behind by
other tests would get in the way, so each test has accounts of its own.
"""

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from tests.integration.conftest import DOMAIN, STEP_TIMEOUT, prepare, run_xmppctl, settled
from tests.integration.test_messaging_slixmpp import stored_offline

OTHERS = {"carol": "carol-secret-3", "dave": "dave-secret-4", "erin": "erin-secret-5",
          "frank": "frank-secret-6", "grace": "grace-secret-7"}
NS_MAM = "urn:xmpp:mam:2"
NS_SID = "urn:xmpp:sid:0"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The module's server, archiving (the host's ``modules_enabled``), with
    alice, bob and :data:`OTHERS`."""
    deployment = prepare(tmp_path_factory.mktemp("xmppd-mam"))
    config = deployment.process.config_path
    config.write_text(config.read_text() + 'modules_enabled = ["mam"]\n')  # the host's table
    for user, password in OTHERS.items():
        run_xmppctl("-c", config, "adduser", f"{user}@{DOMAIN}", "--password", password)
    deployment.passwords.update(OTHERS)
    deployment.process.start()
    yield deployment
    deployment.process.check_clean_exit()


async def online(clients, user, resource):
    """A client with slixmpp's MAM plugin, available (offline messages
    come), once the server has processed its presence."""
    client = clients.new(user, resource)
    client.xmpp.register_plugin("xep_0313")
    client.connect()
    await client.wait_started()
    client.xmpp.send_presence()
    await settled(client)
    return client


def delivered_id(message, by):
    """The id of the one XEP-0359 ``<stanza-id by=by>`` of ``message``."""
    ids = [sid.get("id") for sid in message.xml.findall(f"{{{NS_SID}}}stanza-id")
           if sid.get("by") == by]
    assert len(ids) == 1, f"not one stanza-id by {by}: {message}"
    return ids[0]


def archived(result):
    """(archive id, the archived message) of a ``<result/>`` (§4.2)."""
    return result["mam_result"]["id"], result["mam_result"]["forwarded"]["stanza"]


def test_a_conversation_paged_backwards(server, run):
    alice_jid, bob_jid = f"alice@{DOMAIN}", f"bob@{DOMAIN}"

    async def body(clients):
        alice = await online(clients, "alice", "desk")
        bob = await online(clients, "bob", "phone")
        sent = []  # (body, sender's full JID, the stanza-id alice got or None)
        for number in range(8):  # ends with one to alice: all is archived when she has it
            sender, recipient = (alice, bob) if number % 2 == 0 else (bob, alice)
            text = f"message {number}"
            sender.send_message(recipient.jid, text)
            if number == 4:
                alice.send_message(f"carol@{DOMAIN}", "not with bob")
            message = await recipient.next_message()
            assert message["body"] == text
            sent.append((text, sender.jid, delivered_id(message, alice_jid)
                         if recipient is alice else None))

        mam = alice.xmpp.plugin["xep_0313"]
        pages = [page async for page in mam.retrieve(
            with_jid=JID(bob_jid), reverse=True, iterator=True, rsm={"max": 3})]
        assert [len(page["mam"]["results"]) for page in pages] == [3, 3, 2]
        assert [page["mam_fin"]["rsm"]["count"] for page in pages] == ["8"] * 3
        assert [page["mam_fin"]["complete"] for page in pages] == ["", "", "true"]
        results = [result for page in reversed(pages) for result in page["mam"]["results"]]
        assert {str(result["from"]) for result in results} == {alice_jid}
        archive_ids = [archived(result)[0] for result in results]
        assert len(set(archive_ids)) == len(archive_ids)
        for result, (text, sender, stanza_id) in zip(results, sent):
            archive_id, message = archived(result)
            assert (message["body"], str(message["from"])) == (text, sender)
            if stanza_id is not None:  # the result gives the id, the copy has none
                assert archive_id == stanza_id
            assert message.xml.find(f"{{{NS_SID}}}stanza-id") is None

        counted = await mam.retrieve(with_jid=JID(bob_jid), rsm={"max": 0},
                                     timeout=STEP_TIMEOUT)
        assert counted["mam"]["results"] == []
        assert counted["mam_fin"]["rsm"]["count"] == "8"

    run(server, body)


def test_an_offline_message_has_its_archive_id(server, run):
    dave_jid = f"dave@{DOMAIN}"

    async def body(clients):
        erin = await online(clients, "erin", "e")
        erin.send_message(dave_jid, "while you were away")
        await stored_offline(server, dave_jid, 1)
        dave = await online(clients, "dave", "later")
        message = await dave.next_message()
        assert message["body"] == "while you were away"
        stanza_id = delivered_id(message, dave_jid)

        answer = await dave.xmpp.plugin["xep_0313"].retrieve(
            with_jid=JID(f"erin@{DOMAIN}"), timeout=STEP_TIMEOUT)
        [result] = answer["mam"]["results"]
        archive_id, archived_message = archived(result)
        assert archived_message["body"] == "while you were away"
        assert archive_id == stanza_id

    run(server, body)


def test_another_accounts_archive_is_refused(server, run):
    grace_jid = f"grace@{DOMAIN}"

    async def body(clients):
        frank = await online(clients, "frank", "f")
        frank.send_message(grace_jid, "for grace's archive")
        await stored_offline(server, grace_jid, 1)
        with pytest.raises(IqError) as refused:
            await frank.xmpp.plugin["xep_0313"].retrieve(jid=JID(grace_jid),
                                                         timeout=STEP_TIMEOUT)
        assert refused.value.iq["error"]["condition"] == "forbidden"
        received = []  # results would have come before the answer
        while not frank.messages.empty():
            received.append(frank.messages.get_nowait())
        assert [m for m in received if m.xml.find(f"{{{NS_MAM}}}result") is not None] == []

    run(server, body)
