"""Hostile and fuzzed input for client streams: the corpus of hostile inputs
(``corpus/``, one file each) and the negotiation stages they are sent at."""

from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


def reach(client, stage, resource="hostile"):
    """Negotiate a harness ``Client`` up to ``stage``: ``connected`` (nothing
    sent), ``plain`` (header sent, before STARTTLS), ``tls`` (before SASL),
    ``auth`` (before resource binding) or ``bound`` (as alice@example.com)."""
    if stage in ("plain", "tls", "auth"):
        client.open()
    if stage in ("tls", "auth"):
        client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert client.take()[0].name == "proceed"
        client.open()
    if stage == "auth":
        assert client.auth_plain("alice@example.com").name == "success"
        client.open()
    if stage == "bound":
        client.login("alice@example.com", resource)
    client.take()
