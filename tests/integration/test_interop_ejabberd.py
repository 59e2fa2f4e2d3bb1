"""Federation with a real ejabberd (Debian package ejabberd), both ways.

xmppd serves ``xmppd.test`` (alice), ejabberd ``ejabberd.test`` (carol); see
:mod:`tests.integration.interop` for how both run.  In each test alice and
carol exchange messages, subscribe to each other's presence and see each
other's presence changes; the logs of both servers then say how each
direction was authenticated.
"""

import pytest

from tests.integration.interop import Ejabberd, XMPPD_DOMAIN, converse, run_both, running

PEER = Ejabberd.domain


@pytest.fixture
def dialback(tmp_path):
    """Certificates from CAs the other server does not trust."""
    yield from running(Ejabberd, tmp_path, trusted=False)


@pytest.fixture
def certificates(tmp_path):
    """Certificates from one CA that both servers trust."""
    yield from running(Ejabberd, tmp_path, trusted=True)


def accepted(log, method):
    """The directions ejabberd authenticated with ``method``."""
    return {direction for direction, pair in (("inbound", f"{XMPPD_DOMAIN} -> {PEER}"),
                                              ("outbound", f"{PEER} -> {XMPPD_DOMAIN}"))
            if f"Accepted {direction} s2s {method} authentication {pair}" in log}


def test_dialback_without_trusted_certificates(dialback):
    run_both(dialback, converse)
    assert dialback.xmppd_methods() == {"outgoing": {"dialback"}, "incoming": {"dialback"}}
    log = dialback.peer.log_text()
    assert accepted(log, "dialback") == {"inbound", "outbound"}
    assert accepted(log, "EXTERNAL") == set()


def test_sasl_external_with_trusted_certificates(certificates):
    run_both(certificates, converse)
    assert certificates.xmppd_methods() == {"outgoing": {"SASL EXTERNAL"},
                                            "incoming": {"SASL EXTERNAL"}}
    log = certificates.peer.log_text()
    assert accepted(log, "EXTERNAL") == {"inbound", "outbound"}
    assert accepted(log, "dialback") == set()
