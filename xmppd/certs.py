"""Self-signed TLS certificates for hosted domains.

``make_self_signed`` writes ``DOMAIN.crt`` and ``DOMAIN.key`` in the layout
that ``tls.certificates`` expects.  The certificate covers the domain and its
direct subdomains (``*.DOMAIN``), so it also serves components such as
``conference.DOMAIN``.  Clients and other servers will not trust it: it is
meant for testing and private deployments until a CA-issued one replaces it.
"""

import datetime
import errno
import os

import idna
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_TYPES = ("rsa", "ec")
RSA_BITS = 2048
VALIDITY = datetime.timedelta(days=365)
BACKDATE = datetime.timedelta(hours=1)  # tolerate clocks running a little behind


def make_self_signed(domain, out_dir, key_type="ec", force=False):
    """Write a self-signed certificate and key for *domain* into *out_dir*.

    *key_type* is ``"ec"`` (P-256: its TLS handshake costs the server a
    fraction of RSA's) or ``"rsa"`` (2048 bits).  Existing files
    are only replaced when *force* is true; otherwise ``FileExistsError``.
    Returns the paths ``(DOMAIN.crt, DOMAIN.key)``; the key is mode 0600.
    """
    names = _dns_names(domain)
    key = _private_key(key_type)
    cert_path = os.path.join(out_dir, f"{domain}.crt")
    key_path = os.path.join(out_dir, f"{domain}.key")
    if not force:
        for path in (cert_path, key_path):
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
    os.makedirs(out_dir, exist_ok=True)
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    with open(cert_path, "wb") as f:
        f.write(_certificate(names, key).public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _dns_names(domain):
    """The subjectAltName entries for *domain*, as A-labels (ValueError if invalid)."""
    ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    return [ascii_domain, "*." + ascii_domain]


def _private_key(key_type):
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r}: expected one of {', '.join(KEY_TYPES)}")


def _key_usage(key):
    """digitalSignature, plus keyEncipherment for RSA keys (RFC 5480 §3
    does not allow it for EC keys)."""
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=isinstance(key, rsa.RSAPrivateKey),
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(names, key):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    not_before = datetime.datetime.now(datetime.timezone.utc) - BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(map(x509.DNSName, names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([
            ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
        ]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def _write_private(path, data):
    """Write *data* to *path*, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, 0o600)
        f.write(data)
