"""TLS session resumption on the server contexts (RFC 8446 §2.2, RFC 5077):
Python's ``ssl`` client against the pyOpenSSL server connections of a
:class:`~xmppd.core.tls.CertificateStore`, in memory.  A second handshake
with the session of the first resumes, for TLS 1.3 and 1.2, across the SNI
switch too; another process's contexts (other ticket keys) do not resume it;
tls-unique follows the resumed handshake (RFC 5929 §3.1), tls-server-end-point
the certificate SNI chose (§4)."""

import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL

from xmppd.certs import make_self_signed
from xmppd.core.tls import CertificateStore, channel_binding, session_reused

VERSIONS = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}


@pytest.fixture
def certificates(tmp_path):
    for domain in ("a.test", "b.test"):
        make_self_signed(domain, tmp_path)
    return str(tmp_path)


def client_context(version):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = VERSIONS[version]
    return context


class Handshake:
    """One client and one server connection joined by memory BIOs."""

    def __init__(self, store, default, context, server_name, session=None):
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = context.wrap_bio(self.incoming, self.outgoing,
                                       server_hostname=server_name, session=session)
        self.server = store.context_factory(default).serverConnectionForTLS(None)
        self.server.set_accept_state()
        for _ in range(10):
            try:
                self.client.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._pump()
        else:
            raise AssertionError("the handshake did not finish")
        self._pump()  # the client's Finished
        # The server's first data carries the TLS 1.3 tickets along.
        self.server.send(b"<stream:features/>")
        self._pump()
        assert self.client.read(100) == b"<stream:features/>"

    def _pump(self):
        """Move bytes both ways until neither side has any."""
        while True:
            sent = self.outgoing.read()
            if sent:
                self.server.bio_write(sent)
            try:
                self.server.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                answered = self.server.bio_read(65536)
            except SSL.WantReadError:
                answered = b""
            if answered:
                self.incoming.write(answered)
            if not sent and not answered:
                return

    def certificate_name(self):
        return self.server.get_certificate().to_cryptography().subject.rfc4514_string()


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_a_second_connection_resumes_the_session(certificates, version):
    store = CertificateStore(certificates, ["a.test", "b.test"])
    context = client_context(version)
    first = Handshake(store, "a.test", context, "a.test")
    assert not first.client.session_reused and not session_reused(first.server)
    assert first.client.session.has_ticket
    second = Handshake(store, "a.test", context, "a.test", first.client.session)
    assert second.client.session_reused and session_reused(second.server)
    assert second.client.version() == {"1.3": "TLSv1.3", "1.2": "TLSv1.2"}[version]


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_resumption_across_the_sni_switch(certificates, version):
    """The listener's default is a.test, the client names b.test: b.test's
    certificate, and the next connection resumes."""
    store = CertificateStore(certificates, ["a.test", "b.test"])
    context = client_context(version)
    first = Handshake(store, "a.test", context, "b.test")
    assert first.certificate_name() == "CN=b.test"
    second = Handshake(store, "a.test", context, "b.test", first.client.session)
    assert second.client.session_reused and second.certificate_name() == "CN=b.test"


def test_other_contexts_do_not_resume(certificates):
    """A restart or a certificate reload makes new contexts with new ticket
    keys: a ticket of the old ones gets a full handshake."""
    context = client_context("1.3")
    first = Handshake(CertificateStore(certificates, ["a.test"]), "a.test", context, "a.test")
    again = Handshake(CertificateStore(certificates, ["a.test"]), "a.test", context, "a.test",
                      first.client.session)
    assert not again.client.session_reused and not session_reused(again.server)


def test_tls_unique_of_a_resumed_session_is_the_servers_finished(certificates):
    store = CertificateStore(certificates, ["a.test"])
    context = client_context("1.2")
    first = Handshake(store, "a.test", context, "a.test")
    assert (channel_binding(first.server, "tls-unique")
            == first.client.get_channel_binding("tls-unique"))
    second = Handshake(store, "a.test", context, "a.test", first.client.session)
    assert second.client.session_reused
    unique = channel_binding(second.server, "tls-unique")
    assert unique == second.client.get_channel_binding("tls-unique")
    assert unique == second.server.get_finished() != second.server.get_peer_finished()


def test_tls_server_end_point_is_of_the_certificate_sni_chose(certificates, tmp_path):
    store = CertificateStore(certificates, ["a.test", "b.test"])
    context = client_context("1.3")
    expected = {domain: x509.load_pem_x509_certificate(
        (tmp_path / f"{domain}.crt").read_bytes()).fingerprint(hashes.SHA256())
        for domain in ("a.test", "b.test")}
    assert expected["a.test"] != expected["b.test"]
    for name in ("b.test", "a.test", "b.test"):
        handshake = Handshake(store, "a.test", context, name)
        assert channel_binding(handshake.server, "tls-server-end-point") == expected[name]
    resumed = Handshake(store, "a.test", context, "b.test", handshake.client.session)
    assert resumed.client.session_reused
    assert channel_binding(resumed.server, "tls-server-end-point") == expected["b.test"]
    assert len(channel_binding(resumed.server, "tls-exporter")) == 32
    assert channel_binding(resumed.server, "tls-unique") is None  # TLS 1.3
    assert channel_binding(resumed.server, "no-such-binding") is None


def test_tls_1_1_is_still_refused(certificates):
    store = CertificateStore(certificates, ["a.test"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, SSL.Error)):
        Handshake(store, "a.test", context, "a.test")
