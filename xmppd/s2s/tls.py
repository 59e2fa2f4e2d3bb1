"""TLS between servers: our certificates both ways, and checking the peer's.

RFC 6120 §5 and §13.7.2, XEP-0178, XEP-0368.  Each hosted domain presents
its own certificate (that of the TLS store, :mod:`xmppd.core.tls`): as the
server certificate on incoming streams (chosen by the stream's ``to``, or
by SNI on direct TLS) and as the client certificate on outgoing streams,
which send SNI for the remote domain and, on direct TLS, the ALPN protocol
``xmpp-server``.

A service domain (``conference.example.com``) presents the store's
certificate for it if there is one, else its hosted domain's when that
certificate covers the service's name too (a wildcard ``*.example.com`` or
a subjectAltName entry; RFC 6125 §6.4): peers check the name they connect
to (XEP-0178 §3, RFC 6120 §13.7.2.1).  Without either, TLS is refused for
it, and logged.

Both directions ask for the peer's certificate but accept any during the
handshake: whether it is valid decides between SASL EXTERNAL and dialback
afterwards.  A certificate is valid for a domain when its chain leads to a
CA of the system trust store or of ``s2s.ca_file``, and its names cover the
domain (RFC 6125 DNS-ID, checked by ``service_identity``).
"""

import ssl

import idna
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.cryptography import verify_certificate_hostname
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator)
from twisted.logger import Logger
from zope.interface import implementer

from xmppd.jid import InvalidJID, normalize_domain

ALPN_SERVER = b"xmpp-server"

log = Logger(namespace="xmppd.s2s")


class TrustStoreError(Exception):
    """``s2s.ca_file`` cannot be read."""


def trust_store(ca_file=None):
    """The system's CA certificates, plus those of ``ca_file``."""
    store = crypto.X509Store()
    paths = ssl.get_default_verify_paths()
    try:
        if paths.cafile or paths.capath:
            store.load_locations(paths.cafile, paths.capath)
    except crypto.Error:
        pass  # no usable system store: only ca_file is trusted
    if ca_file is not None:
        try:
            store.load_locations(ca_file)
        except crypto.Error as e:
            raise TrustStoreError(f"cannot load CA certificates from {ca_file}: {e}") from None
    return store


def _accept_any(connection, certificate, errno, depth, ok):
    """Ask for the peer's certificate without failing the handshake on it:
    it is checked once the stream knows which domain it must be valid for."""
    return True


class FederationTLS:
    """TLS contexts of the domains served here for server streams, and the
    check of peer certificates.  ``owner(domain)`` names the hosted domain
    a domain is or belongs to (:meth:`~xmppd.core.router.Router.owner`)."""

    def __init__(self, certificates, min_version, ca_file=None, owner=lambda domain: None):
        self._certificates = certificates
        self._owner = owner
        self._min_version = min_version
        self._store = trust_store(ca_file)
        self._server = {}  # domain -> SSL.Context
        self._client = {}  # (domain, direct TLS) -> SSL.Context
        self._uncovered = set()  # service domains already warned of

    def server_tls(self, domain):
        """A connection creator presenting ``domain``'s certificate (switched
        by SNI to another hosted domain's), or None without a certificate."""
        if self._server_context(domain) is None:
            return None
        return _ServerTLS(self, domain)

    def client_tls(self, local, remote, direct_tls=False):
        """A connection creator for an outgoing stream from ``local`` to
        ``remote``, or None when ``local`` has no certificate."""
        key = (local, direct_tls)
        if key not in self._client:
            context = self._context(local)
            if context is None:
                return None
            if direct_tls:
                context.set_alpn_protos([ALPN_SERVER])
            self._client[key] = context
        return _ClientTLS(self._client[key], remote)

    def peer_problem(self, transport, domain):
        """Why the certificate the peer presented on ``transport`` is not
        valid for ``domain``, or None when it is."""
        connection = transport.getHandle()
        leaf = connection.get_peer_certificate()
        if leaf is None:
            return "no certificate presented"
        chain = [c for c in connection.get_peer_cert_chain() or ()
                 if c.to_cryptography() != leaf.to_cryptography()]
        return self.certificate_problem(leaf, chain, domain)

    def certificate_problem(self, leaf, chain, domain):
        """Why ``leaf`` (with intermediate ``chain``, pyOpenSSL X509s) is not
        valid for ``domain``, or None."""
        try:
            crypto.X509StoreContext(self._store, leaf, chain).verify_certificate()
        except crypto.X509StoreContextError as e:
            return f"untrusted certificate: {e}"
        try:
            verify_certificate_hostname(leaf.to_cryptography(), domain)
        except VerificationError:
            return f"certificate is not for {domain}"
        return None

    def certificate(self, domain):
        """The certificate ``domain`` presents, or None: its own, else (for
        a service domain) its hosted domain's if that covers it too."""
        own = self._certificates.certificates.get(domain)
        host = self._owner(domain)
        if own is not None or host is None or host == domain:
            return own
        certificate = self._certificates.certificates.get(host)
        if certificate is not None and certificate.covers(domain):
            return certificate
        if domain not in self._uncovered:  # once: peers choose when to ask
            self._uncovered.add(domain)
            log.warn("s2s: no certificate for {domain}: it has none of its own and {host}'s "
                     "does not cover it (add {domain} or *.{host} to it)",
                     domain=domain, host=host)
        return None

    def _context(self, domain):
        certificate = self.certificate(domain)
        if certificate is None:
            return None
        context = certificate.context(self._min_version)
        context.set_verify(SSL.VERIFY_PEER, _accept_any)
        return context

    def _server_context(self, domain):
        if domain not in self._server:
            context = self._context(domain)
            if context is None:
                return None
            context.set_tlsext_servername_callback(self._switch)
            self._server[domain] = context
        return self._server[domain]

    def _switch(self, connection):
        """SNI (RFC 6066 §3): the context of the domain named, if served here."""
        name = connection.get_servername()
        try:
            domain = normalize_domain(name.decode("ascii")) if name else None
        except (UnicodeDecodeError, InvalidJID):
            return
        context = self._server_context(domain) if domain else None
        if context is not None:
            connection.set_context(context)


@implementer(IOpenSSLServerConnectionCreator)
class _ServerTLS:
    def __init__(self, tls, domain):
        self._tls = tls
        self._domain = domain

    def serverConnectionForTLS(self, protocol):
        return SSL.Connection(self._tls._server_context(self._domain), None)


@implementer(IOpenSSLClientConnectionCreator)
class _ClientTLS:
    def __init__(self, context, server_name):
        self._context = context
        self._server_name = server_name

    def clientConnectionForTLS(self, protocol):
        connection = SSL.Connection(self._context, None)
        connection.set_tlsext_host_name(idna.encode(self._server_name, uts46=True))
        return connection
