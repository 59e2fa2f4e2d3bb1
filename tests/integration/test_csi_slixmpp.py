"""Client state indication (XEP-0352) on the real server, with slixmpp's
own xep_0352 and xep_0085 plugins: an inactive client is sent only the
newest chat state of a conversation, before the message that follows it;
an active one gets every chat state."""

from tests.integration.conftest import settled

NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
STATES = ("active", "composing", "paused")


async def typing_then_message(sender, recipient, states, body):
    """``sender`` sends every chat state of :data:`STATES` then ``body``;
    the chat states ``recipient`` got before the body (``states`` collects
    them as slixmpp reports them)."""
    states.clear()
    for state in STATES:
        sender.xmpp.send_raw(f"<message to='{recipient.jid}' type='chat'>"
                             f"<{state} xmlns='{NS_CHATSTATES}'/></message>")
    sender.send_message(recipient.jid, body)
    while not (await recipient.next_message())["body"]:
        pass
    return list(states)


def test_an_inactive_client_gets_the_newest_chat_state_only(server, run):
    async def body(clients):
        alice = clients.new("alice", "phone")
        for plugin in ("xep_0085", "xep_0352"):
            alice.xmpp.register_plugin(plugin)
        states = []
        alice.xmpp.add_event_handler("chatstate", lambda m: states.append(m["chat_state"]))
        alice.connect()
        await alice.wait_started()
        csi = alice.xmpp.plugin["xep_0352"]
        assert csi.enabled, "the server did not offer <csi/>"
        bob = await clients.login("bob", "desk")

        csi.send_inactive()
        await settled(alice)
        assert await typing_then_message(bob, alice, states, "inactive") == ["paused"]

        csi.send_active()
        await settled(alice)
        assert await typing_then_message(bob, alice, states, "active") == list(STATES)

    run(server, body)
