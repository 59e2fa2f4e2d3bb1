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


@pytest.fixture
def one_way(tmp_path):
    """xmppd trusts ejabberd's certificate, ejabberd does not trust xmppd's."""
    yield from running(Ejabberd, tmp_path, trusted="xmppd")


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


def test_dialback_when_ejabberd_refuses_external(one_way):
    """ejabberd offers SASL EXTERNAL, refuses it for a certificate it cannot
    verify, and accepts dialback on the same stream."""
    run_both(one_way, converse)
    assert one_way.xmppd_methods() == {"outgoing": {"dialback"},
                                       "incoming": {"SASL EXTERNAL"}}
    xmppd_log = one_way.xmppd.process.log_path.read_text(errors="replace")
    assert "the peer refused SASL EXTERNAL (not-authorized); trying dialback" in xmppd_log
    log = one_way.peer.log_text()
    assert accepted(log, "dialback") == {"inbound"}
    assert accepted(log, "EXTERNAL") == {"outbound"}
