"""SCRAM key derivation (RFC 5802 §3, RFC 7677, SCRAM-SHA-512 alike) and the
downgrade protection hash of XEP-0474 §6.1.

Only the verifier (salt, iteration count, StoredKey, ServerKey) is ever
stored; passwords are prepared with the PRECIS OpaqueString profile
(RFC 8265 §4.2), which RFC 7677 allows in place of SASLprep.

    SaltedPassword  := Hi(Normalize(password), salt, i)      (PBKDF2-HMAC)
    ClientKey       := HMAC(SaltedPassword, "Client Key")
    StoredKey       := H(ClientKey)
    ServerKey       := HMAC(SaltedPassword, "Server Key")
    ClientSignature := HMAC(StoredKey, AuthMessage)
    ServerSignature := HMAC(ServerKey, AuthMessage)
"""

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from precis_i18n import get_profile

from xmppd.storage import ScramKeys
from xmppd.storage.models import HASH_NAMES as _STORABLE

HASHES = {"SHA-1": hashlib.sha1, "SHA-256": hashlib.sha256, "SHA-512": hashlib.sha512}
# The verifiers a password gets: every supported hash the account store keeps.
DERIVED = tuple(name for name in HASHES if name in _STORABLE)

# RFC 7677 §4: the iteration count should be at least 4096.
MIN_ITERATIONS = 4096
SALT_LENGTH = 16

_OPAQUE_STRING = get_profile("OpaqueString")


def prepare_password(password: str) -> bytes:
    """Enforce the OpaqueString profile (RFC 8265 §4.2) and encode in UTF-8.

    Raises ``ValueError`` (``UnicodeEncodeError``) for a password the
    profile rejects, e.g. an empty one or one with control characters.
    """
    return _OPAQUE_STRING.enforce(password).encode("utf-8")


def _digest_name(hash_name: str) -> str:
    try:
        return HASHES[hash_name]().name
    except KeyError:
        raise ValueError(f"unsupported SCRAM hash: {hash_name!r}") from None


def _hmac(hash_name: str, key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, _digest_name(hash_name))


def salted_password(hash_name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
    """Hi(password, salt, i) of RFC 5802 §2.2, for a prepared password."""
    return hashlib.pbkdf2_hmac(_digest_name(hash_name), password, salt, iterations)


def client_key(hash_name: str, salted: bytes) -> bytes:
    """ClientKey from SaltedPassword."""
    return _hmac(hash_name, salted, b"Client Key")


def server_key(hash_name: str, salted: bytes) -> bytes:
    """ServerKey from SaltedPassword."""
    return _hmac(hash_name, salted, b"Server Key")


def stored_key(hash_name: str, key: bytes) -> bytes:
    """StoredKey from ClientKey."""
    return hashlib.new(_digest_name(hash_name), key).digest()


def client_signature(hash_name: str, key: bytes, auth_message: bytes) -> bytes:
    """ClientSignature from StoredKey."""
    return _hmac(hash_name, key, auth_message)


def server_signature(hash_name: str, key: bytes, auth_message: bytes) -> bytes:
    """ServerSignature from ServerKey."""
    return _hmac(hash_name, key, auth_message)


def derive_keys(
    password: str, hash_name: str, salt: bytes | None = None, iterations: int = MIN_ITERATIONS
) -> ScramKeys:
    """The SCRAM verifier of ``password`` for ``hash_name`` (a key of ``HASHES``).

    A random 16-byte salt is drawn unless ``salt`` is given.
    """
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"SCRAM iteration count must be at least {MIN_ITERATIONS}")
    if salt is None:
        salt = secrets.token_bytes(SALT_LENGTH)
    salted = salted_password(hash_name, prepare_password(password), salt, iterations)
    return ScramKeys(
        salt=salt,
        iterations=iterations,
        stored_key=stored_key(hash_name, client_key(hash_name, salted)),
        server_key=server_key(hash_name, salted),
    )


def derive_all(
    password: str, iterations: int = MIN_ITERATIONS, names: Sequence[str] = DERIVED
) -> dict[str, ScramKeys]:
    """Verifiers for every hash of ``names`` (``DERIVED``), each with its own salt."""
    return {name: derive_keys(password, name, iterations=iterations) for name in names}


def hash_name_of(keys: ScramKeys) -> str:
    """The hash a verifier was derived with, told by its StoredKey length."""
    for name, constructor in HASHES.items():
        if len(keys.stored_key) == constructor().digest_size:
            return name
    raise ValueError("StoredKey length matches no supported SCRAM hash")


def check_password(password: str, keys: ScramKeys) -> bool:
    """Whether ``password`` matches the verifier ``keys`` (constant-time compare)."""
    hash_name = hash_name_of(keys)
    try:
        prepared = prepare_password(password)
    except ValueError:
        return False
    salted = salted_password(hash_name, prepared, keys.salt, keys.iterations)
    candidate = stored_key(hash_name, client_key(hash_name, salted))
    return hmac.compare_digest(candidate, keys.stored_key)


def downgrade_hash(hash_name: str, mechanisms, channel_bindings) -> bytes:
    """The hash of XEP-0474 §6.1 over what the stream features showed: the
    SASL mechanism names sorted (i;octet, RFC 4790 §9.3) and joined by
    %x1E, then, if XEP-0440 listed channel-binding types, %x1F and those
    types sorted and joined alike."""
    text = b"\x1e".join(sorted(name.encode("utf-8") for name in mechanisms))
    if channel_bindings:
        text += b"\x1f" + b"\x1e".join(sorted(kind.encode("utf-8") for kind in channel_bindings))
    return hashlib.new(_digest_name(hash_name), text).digest()
