"""TLS for client and server streams: one certificate per hosted domain.

RFC 6120 §5 (STARTTLS, TLS 1.2 or later per RFC 7590), XEP-0368 (direct
TLS, ALPN ``xmpp-client``/``xmpp-server``, SNI).  Certificates are read
from ``tls.certificates``: ``DOMAIN.crt`` (PEM, leaf first, chain after) and
``DOMAIN.key``.  A domain without its own file uses any loaded certificate
whose subjectAltName dNSName covers it, wildcards included (RFC 6125 §6.4.3).

Each certificate gets one OpenSSL context; a connection picks the context by
the stream's ``to`` domain (STARTTLS) or by SNI (direct TLS).

A reconnecting client resumes its TLS session (RFC 8446 §2.2, §4.6.1; RFC
5077 for TLS 1.2) instead of a full handshake: the server keeps no session
cache, it sends stateless tickets, encrypted with the random key OpenSSL
gives each context.  The contexts live as long as the process (until a
certificate reload makes new ones), so do their keys, in memory only: a
restart or a reload rotates them, and tickets issued before fall back to a
full handshake.  A ticket lasts :data:`SESSION_LIFETIME` seconds.  TLS 1.3
resumption still runs an (EC)DHE exchange (psk_dhe_ke), so traffic keeps
forward secrecy; the key only protects the resumption secrets.

A ticket is decrypted with the key of the context the connection started
with (the stream's domain, or the listener's default for direct TLS), before
SNI switches context, and every context has the same session id context: a
session resumes across the SNI switch, and under any domain this process
hosts (clients offer a ticket only to the name they got it from).
"""

import datetime
import os
import weakref

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL, crypto
from OpenSSL._util import lib as _openssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

MIN_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
# Forward-secret AEAD suites only for TLS 1.2; TLS 1.3 suites are all good.
CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
ALPN = (b"xmpp-client", b"xmpp-server")
SESSION_ID_CONTEXT = b"xmppd"  # the same for every context: see the module docstring
SESSION_LIFETIME = 7200  # seconds a session ticket can be resumed (OpenSSL's default)


class CertificateError(Exception):
    """A certificate or key could not be loaded or does not match."""


class Certificate:
    """One loaded certificate file with its key and the names it covers."""

    def __init__(self, cert_path, key_path):
        self.cert_path = cert_path
        self.key_path = key_path
        try:
            with open(cert_path, "rb") as f:
                self.x509 = x509.load_pem_x509_certificate(f.read())
        except (OSError, ValueError) as e:
            raise CertificateError(f"{cert_path}: {e}") from None
        self.names = dns_names(self.x509)

    def covers(self, domain):
        return any(name_matches(name, domain) for name in self.names)

    @property
    def not_after(self):
        return self.x509.not_valid_after_utc

    def expired(self, now=None):
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return now > self.not_after

    def context(self, min_version):
        """An OpenSSL server context for this certificate."""
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(MIN_VERSIONS[min_version])
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        # Resumption by stateless tickets only: no session cache.
        ctx.set_session_id(SESSION_ID_CONTEXT)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.set_timeout(SESSION_LIFETIME)
        # Free a connection's read/write buffers while it is idle (most
        # sessions are): about 30 KB less per connection.
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        ctx.set_cipher_list(CIPHERS)
        ctx.set_alpn_select_callback(_select_alpn)
        try:
            ctx.use_certificate_chain_file(self.cert_path)
            ctx.use_privatekey_file(self.key_path)
            ctx.check_privatekey()
        except (SSL.Error, crypto.Error) as e:
            raise CertificateError(
                f"{self.cert_path} / {self.key_path}: {_ssl_reason(e)}") from None
        return ctx


def dns_names(cert):
    """The dNSName entries of the subjectAltName, else the common name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [a.value.lower() for a in cert.subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME)]


def name_matches(name, domain):
    """RFC 6125 §6.4: exact match, or ``*.`` covering exactly one label."""
    if name.startswith("*."):
        head, _, rest = domain.partition(".")
        return bool(head) and rest == name[2:]
    return name == domain


def _select_alpn(connection, offered):
    for protocol in ALPN:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _ssl_reason(error):
    details = error.args[0] if error.args else None
    if isinstance(details, list) and details and isinstance(details[0], tuple):
        return details[0][-1]
    return str(error)


class CertificateStore:
    """The certificates of ``directory`` and an OpenSSL context per host."""

    def __init__(self, directory, hosts, min_version="1.2"):
        self.directory = directory
        self.certificates = {}  # host -> Certificate
        self._contexts = {}  # host -> SSL.Context
        loaded = []
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
            if name.endswith(".crt"):
                key = os.path.join(directory, name[:-4] + ".key")
                if os.path.exists(key):
                    loaded.append(Certificate(os.path.join(directory, name), key))
        for host in hosts:
            own = [c for c in loaded if os.path.basename(c.cert_path) == host + ".crt"]
            match = own or [c for c in loaded if c.covers(host)]
            if match:
                self.certificates[host] = match[0]
                self._contexts[host] = match[0].context(min_version)
                self._contexts[host].set_tlsext_servername_callback(self._switch)

    def replace(self, other):
        """Take over the certificates of ``other`` (a reload): connections
        already set up keep theirs, new handshakes use the new ones."""
        self.directory = other.directory
        self.certificates = other.certificates
        self._contexts = other._contexts

    def missing(self, hosts):
        return [h for h in hosts if h not in self.certificates]

    def context(self, domain):
        """The context for ``domain``, or None when none covers it."""
        return self._contexts.get(domain)

    def context_factory(self, domain):
        """A Twisted TLS connection creator for ``domain`` that still honours
        SNI, or None."""
        if domain not in self._contexts:
            return None
        return ServerTLS(self, domain)

    def _switch(self, connection):
        """SNI (RFC 6066 §3): use the named hosted domain's context."""
        name = connection.get_servername()
        if name:
            ctx = self.context(name.decode("ascii", "replace").lower().rstrip("."))
            if ctx is not None:
                connection.set_context(ctx)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Creates server-side TLS connections: the default domain's context,
    switched by SNI to another hosted domain's when the client names one."""

    def __init__(self, store, default_domain):
        self._store = store
        self._default = default_domain

    def serverConnectionForTLS(self, protocol):
        return SSL.Connection(self._store.context(self._default), None)


def session_reused(connection):
    """Whether the established pyOpenSSL ``connection`` resumed a session
    (pyOpenSSL has no public call for SSL_session_reused)."""
    return bool(_openssl.SSL_session_reused(connection._ssl))


# RFC 9266 §2: the exporter label of tls-exporter; 32 bytes of keying material.
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"


def channel_binding(connection, kind):
    """The channel binding data of ``kind`` for the server side of an
    established pyOpenSSL ``connection``, or None if it has none:

    - ``tls-exporter`` (RFC 9266): TLS 1.3 keying material;
    - ``tls-server-end-point`` (RFC 5929 §4): the hash of our certificate,
      with its signature's hash (SHA-256 for MD5 and SHA-1);
    - ``tls-unique`` (RFC 5929 §3): the first Finished message of the
      last handshake: the client's in a full handshake, ours in a resumed
      one (§3.1); undefined for TLS 1.3 (RFC 8446 §C.5), so None there.
    """
    if connection is None:
        return None
    if kind == "tls-server-end-point":
        return _end_point(connection)
    if kind not in ("tls-exporter", "tls-unique"):
        return None
    tls13 = connection.get_protocol_version_name() == "TLSv1.3"
    if kind == "tls-exporter":
        return connection.export_keying_material(EXPORTER_LABEL, 32) if tls13 else None
    if tls13:
        return None
    return connection.get_finished() if session_reused(connection) else (
        connection.get_peer_finished())


_END_POINTS = weakref.WeakKeyDictionary()  # SSL.Context -> its tls-server-end-point


def _end_point(connection):
    """tls-server-end-point of the certificate of ``connection``, hashed
    once per context (a context has one certificate; SNI's switch gives the
    connection another context)."""
    context = connection.get_context()
    found = _END_POINTS.get(context)
    if found is None:
        certificate = connection.get_certificate()
        if certificate is None:
            return None
        cert = certificate.to_cryptography()
        algorithm = cert.signature_hash_algorithm
        if algorithm is None or algorithm.name in ("md5", "sha1"):
            algorithm = hashes.SHA256()
        found = _END_POINTS[context] = cert.fingerprint(algorithm)
    return found
