"""TLS between servers (RFC 6120 §5, §13.7.2; XEP-0178; XEP-0368): peer
certificates checked against the trust store and the domain, and two
federations talking over real TLS in memory (direct TLS, SNI, ALPN, client
certificates), authenticating with SASL EXTERNAL or dialback."""

import pytest
import trustme
from cryptography import x509
from OpenSSL import crypto
from twisted.logger import capturedLogs, formatEvent
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import ConnectionCompleter

from tests.harness import Client, add_user, make_server
from tests.s2s_support import MODULES, FakeResolver
from tests.test_service_domain import echo_module
from xmppd.config import ConfigError
from xmppd.core.tls import CertificateStore
from xmppd.s2s.service import Federation
from xmppd.s2s.tls import FederationTLS

PORTS = {"a.test": 5301, "b.test": 5302}


def x509_of(pem):
    return crypto.X509.from_cryptography(x509.load_pem_x509_certificate(pem.bytes()))


def write_ca(ca, path):
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_certificate_checks(tmp_path):
    ca, intermediate_root = trustme.CA(), trustme.CA()
    intermediate = intermediate_root.create_child_ca()
    tls = FederationTLS(None, "1.2", write_ca(ca, tmp_path / "ca.pem"))
    leaf = ca.issue_cert("a.test", "*.a.test")
    cert = x509_of(leaf.cert_chain_pems[0])
    assert tls.certificate_problem(cert, [], "a.test") is None
    assert tls.certificate_problem(cert, [], "muc.a.test") is None
    assert tls.certificate_problem(cert, [], "b.test") == "certificate is not for b.test"
    assert tls.certificate_problem(cert, [], "x.muc.a.test") is not None
    assert FederationTLS(None, "1.2").certificate_problem(cert, [], "a.test") \
        .startswith("untrusted certificate")
    # A chain through an intermediate CA the peer sends along.
    chained = intermediate.issue_cert("c.test")
    tls = FederationTLS(None, "1.2", write_ca(intermediate_root, tmp_path / "root.pem"))
    leaf_cert, *chain = [x509_of(p) for p in chained.cert_chain_pems]
    assert tls.certificate_problem(leaf_cert, chain, "c.test") is None
    assert tls.certificate_problem(leaf_cert, [], "c.test").startswith("untrusted")


def test_unreadable_ca_file_is_a_config_error(tmp_path):
    (tmp_path / "bad.pem").write_text("not a certificate")
    server = make_server(tmp_path, modules=(), extra='[s2s]\nca_file = "bad.pem"')
    with pytest.raises(ConfigError, match="s2s.ca_file"):
        Federation(server, MemoryReactorClock())


class Network:
    """Federations of a.test and b.test on one memory reactor, connected
    through real TLS; SRV records point each domain and its ``muc.``
    subdomain to direct TLS; each allows the other and its subdomains."""

    def __init__(self, tmp_path, trusted=True, wildcards=False):
        self.reactor = MemoryReactorClock()
        self.completer = ConnectionCompleter(self.reactor)
        self.pumps = []
        shared = trustme.CA()
        zone = {f"_xmpps-server._tcp.{sub}{d}": [(0, 0, port, "127.0.0.1")]
                for d, port in PORTS.items() for sub in ("", "muc.")}
        self.federations = {}
        for domain, port in PORTS.items():
            ca = shared if trusted else trustme.CA()
            home = tmp_path / domain
            (home / "certs").mkdir(parents=True)
            leaf = ca.issue_cert(domain, *([f"*.{domain}"] if wildcards else []))
            (home / "certs" / f"{domain}.crt").write_bytes(
                b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
            leaf.private_key_pem.write_to_path(str(home / "certs" / f"{domain}.key"))
            peer = "b.test" if domain == "a.test" else "a.test"
            trust = f'ca_file = "{write_ca(shared, home / "ca.pem")}"' if trusted else ""
            extra = (f'[s2s]\nallow = ["{peer}", "*.{peer}"]\n{trust}\n'
                     f'[hosts."{domain}"]\ncross_domain_messages = true\n')
            server = make_server(home, hosts=(), modules=MODULES, extra=extra)
            server.certificates = CertificateStore(str(home / "certs"), server.hosts)
            federation = Federation(server, self.reactor, resolver=FakeResolver(zone))
            self.reactor.listenTCP(port, federation.listener_factory(direct_tls=True))
            self.federations[domain] = federation

    def run(self):
        """Connect and pump until nothing moves."""
        while True:
            pump = self.completer.succeedOnce()
            if pump is not None:
                self.pumps.append(pump)
            moved = [p.flush() for p in self.pumps]
            if pump is None and not any(moved):
                return

    def user(self, jid):
        federation = self.federations[jid.split("@")[1]]
        add_user(federation.server, jid)
        client = Client(federation.server, domain=jid.split("@")[1])
        client.login(jid)
        return client


@pytest.mark.parametrize("trusted, method", [(True, "SASL EXTERNAL"), (False, "dialback")])
def test_federation_over_direct_tls(tmp_path, trusted, method):
    network = Network(tmp_path, trusted)
    alice, bob = network.user("alice@a.test"), network.user("bob@b.test")
    alice.send("<message to='bob@b.test/res' type='chat'><body>hi bob</body></message>")
    network.run()
    received = bob.take()
    assert [(m["from"], str(m.body)) for m in received] == [("alice@a.test/res", "hi bob")]
    bob.send("<message to='alice@a.test/res' type='chat'><body>hi alice</body></message>")
    network.run()
    assert [str(m.body) for m in alice.take()] == ["hi alice"]

    a, b = network.federations["a.test"], network.federations["b.test"]
    assert (a.peers(), b.peers()) == ({"b.test"}, {"a.test"})
    incoming, = b.incoming
    assert incoming.authenticated == {"a.test": method}
    connection = incoming.transport.getHandle()
    assert connection.get_servername() == b"b.test"
    assert connection.get_alpn_proto_negotiated() == b"xmpp-server"
    names = connection.get_peer_certificate().to_cryptography().extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["a.test"]


def test_a_service_domain_presents_its_hosts_certificate_if_it_covers_it(tmp_path):
    ca = trustme.CA()
    for domain, names in (("a.test", ("a.test", "*.a.test")), ("b.test", ("b.test",))):
        leaf = ca.issue_cert(*names)
        leaf.cert_chain_pems[0].write_to_path(str(tmp_path / f"{domain}.crt"))
        leaf.private_key_pem.write_to_path(str(tmp_path / f"{domain}.key"))
    store = CertificateStore(str(tmp_path), ["a.test", "b.test"])
    owners = {"a.test": "a.test", "b.test": "b.test", "muc.a.test": "a.test",
              "muc.b.test": "b.test"}
    tls = FederationTLS(store, "1.2", owner=owners.get)
    assert tls.certificate("muc.a.test") is store.certificates["a.test"]
    assert tls.client_tls("muc.a.test", "b.test") is not None
    assert tls.server_tls("muc.a.test") is not None
    assert tls.certificate("elsewhere.test") is None
    with capturedLogs() as events:
        assert tls.server_tls("muc.b.test") is None
        assert tls.client_tls("muc.b.test", "a.test") is None
    assert "s2s: no certificate for muc.b.test: it has none of its own and b.test's does " \
        "not cover it (add muc.b.test or *.b.test to it)" in [formatEvent(e) for e in events]


def test_federation_with_a_service_domain_over_direct_tls(tmp_path):
    """SNI names the service; its host's wildcard certificate serves it both
    ways, and SASL EXTERNAL authenticates it (XEP-0178)."""
    network = Network(tmp_path, wildcards=True)
    b = network.federations["b.test"]
    b.server.load(echo_module("muc.b.test", "b.test"))
    alice = network.user("alice@a.test")
    alice.send("<message to='room@muc.b.test' type='chat'><body>echo</body></message>")
    network.run()
    assert [(m["from"], m["type"], str(m.body)) for m in alice.take()] == \
        [("room@muc.b.test", "chat", "echo")]
    incoming, = b.incoming
    assert incoming.transport.getHandle().get_servername() == b"muc.b.test"
    assert (incoming.domain, incoming.authenticated) == ("muc.b.test", {"a.test": "SASL EXTERNAL"})
    a_incoming, = network.federations["a.test"].incoming
    assert a_incoming.authenticated == {"muc.b.test": "SASL EXTERNAL"}
