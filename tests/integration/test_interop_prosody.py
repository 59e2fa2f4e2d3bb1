"""Federation with a real Prosody (Debian package prosody), both ways.

xmppd serves ``xmppd.test`` (alice), Prosody ``prosody.test`` (carol); see
:mod:`tests.integration.interop` for how both run.  In each test alice and
carol exchange messages, subscribe to each other's presence and see each
other's presence changes; the logs of both servers then say how each
direction was authenticated.
"""

import pytest

from tests.integration.interop import Prosody, XMPPD_DOMAIN, converse, run_both, running


@pytest.fixture
def dialback(tmp_path):
    """Certificates from CAs the other server does not trust."""
    yield from running(Prosody, tmp_path, trusted=False)


@pytest.fixture
def certificates(tmp_path):
    """Certificates from one CA that both servers trust, and both require."""
    yield from running(Prosody, tmp_path, trusted=True)


def test_dialback_without_trusted_certificates(dialback):
    run_both(dialback, converse)
    assert dialback.xmppd_methods() == {"outgoing": {"dialback"}, "incoming": {"dialback"}}
    log = dialback.peer.log_text()
    # Prosody dialed back to check xmppd's key, and confirmed its own key
    # when xmppd dialed back.
    assert f"asking {XMPPD_DOMAIN} if key" in log
    assert "verified dialback key... it is valid" in log
    assert "SASL EXTERNAL" not in log


def test_sasl_external_with_trusted_certificates(certificates):
    run_both(certificates, converse)
    assert certificates.xmppd_methods() == {"outgoing": {"SASL EXTERNAL"},
                                            "incoming": {"SASL EXTERNAL"}}
    log = certificates.peer.log_text()
    assert f"Accepting SASL EXTERNAL identity from {XMPPD_DOMAIN}" in log  # incoming
    assert f"SASL EXTERNAL with {XMPPD_DOMAIN} succeeded" in log  # outgoing
    assert "dialback key" not in log
