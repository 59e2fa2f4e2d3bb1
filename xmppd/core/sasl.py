"""Server-side SASL (RFC 6120 §6, RFC 4422).

Mechanisms, in the order they are advertised: SCRAM-SHA-256 (RFC 7677),
SCRAM-SHA-1 (RFC 5802) and PLAIN (RFC 4616).  Channel binding (the -PLUS
variants) is not offered.

Each mechanism is a small state machine fed with the decoded payloads of
<auth/> and <response/>; the stream does the XML and base64 (RFC 6120
§6.4.2) and turns a ``SaslFailure`` into <failure/> with its RFC 6120 §6.5
condition.  As RFC 6120 §6.3.10 allows, the SCRAM server-final message is
returned as the additional data of the ``Success`` rather than as a last
challenge.

An unknown account is not revealed before the end of a SCRAM exchange: the
server answers with a salt derived from the username and a per-process
secret, and fails with not-authorized once the client proof arrives, exactly
as for a wrong password.  An authentication identity the normaliser rejects
fails at once with not-authorized: that reveals nothing about accounts.
"""

import base64
import binascii
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from xmppd.core import scram
from xmppd.storage import ScramKeys, StorageError

log = Logger()

_FAKE_SALT_SECRET = secrets.token_bytes(32)

# RFC 5802 §7: printable = %x21-2B / %x2D-7E (no comma).
_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
# RFC 5802 §7: in a saslname, "=" only starts "=2C" (",") or "=3D" ("=").
_BAD_ESCAPE = re.compile(r"=(?!2C|3D)")


class SaslFailure(Exception):
    """Authentication failed with an RFC 6120 §6.5 condition."""

    def __init__(self, condition: str, text: str | None = None):
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text


@dataclass(frozen=True)
class Challenge:
    """Send <challenge/> with ``data`` and wait for the next response."""

    data: bytes


@dataclass(frozen=True)
class Success:
    """Send <success/>, with ``additional_data`` if any (RFC 6120 §6.3.10)."""

    username: str  # normalised localpart
    additional_data: bytes | None = None


class Mechanism(Protocol):
    """One authentication exchange."""

    name: str

    def step(self, data: bytes | None) -> Deferred:
        """Feed the next client payload; ``None`` when <auth/> carried no
        initial response.  Fires with a ``Challenge`` or a ``Success``, or
        fails with a ``SaslFailure``."""


Lookup = Callable[[str], Deferred]  # username -> Deferred[dict[str, ScramKeys] | None]


class SaslServer:
    """The SASL mechanisms of one domain."""

    mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")

    def __init__(
        self,
        domain: str,
        lookup: Lookup,
        normalize_username: Callable[[str], str],
        nonce: Callable[[], str] | None = None,
        offload: Callable[..., Deferred] = maybeDeferred,
    ):
        self.domain = domain
        self._lookup = lookup
        self._normalize = normalize_username
        self._new_nonce = nonce or _random_nonce
        # Runs PLAIN's key derivation (PBKDF2, ~1 ms): the server gives a
        # thread pool, so other connections are not held up meanwhile.
        self._offload = offload

    def start(self, mechanism: str) -> Mechanism:
        """A new exchange with the mechanism the client selected."""
        if mechanism not in self.mechanisms:
            raise SaslFailure("invalid-mechanism")
        if mechanism == "PLAIN":
            return PlainMechanism(self)
        return ScramMechanism(self, mechanism.removeprefix("SCRAM-"))

    def _username(self, text: str) -> str:
        """The normalised authentication identity; not-authorized if invalid."""
        try:
            return self._normalize(text)
        except ValueError:
            raise SaslFailure("not-authorized") from None

    def _check_authzid(self, authzid: str, username: str) -> None:
        """An authorization identity, if any, must be the user's own bare JID
        (RFC 6120 §6.3.8): no one may act on behalf of another account."""
        if not authzid:
            return
        localpart, at, domainpart = authzid.partition("@")
        try:
            own = bool(at) and self._normalize(localpart) == username
        except ValueError:
            own = False
        if not (own and domainpart.lower() == self.domain.lower()):
            raise SaslFailure("invalid-authzid")

    def _lookup_keys(self, username: str) -> Deferred:
        """The user's SCRAM verifiers by hash name, or ``None`` for an unknown
        user; temporary-auth-failure if the lookup itself fails."""

        def failed(failure):
            if failure.check(StorageError):
                log.error("cannot look up the credentials of {username!r}: {error}",
                          username=username, error=failure.value)
            else:
                log.failure("Looking up the credentials of {username!r} failed", failure,
                            username=username)
            raise SaslFailure("temporary-auth-failure")

        return maybeDeferred(self._lookup, username).addErrback(failed)


class _Exchange:
    """The step machinery shared by the mechanisms: ``_next`` is the handler
    of the next payload, starting with ``_first`` (the initial response)
    which each mechanism defines; once an exchange has succeeded or failed,
    any further step fails."""

    name: str

    def __init__(self, server: SaslServer):
        self._server = server
        self._next = self._initial

    def step(self, data: bytes | None) -> Deferred:
        handler, self._next = self._next, self._finished
        return maybeDeferred(handler, data)

    def _initial(self, data):
        if data is None:
            # RFC 6120 §6.4.2: no initial response, so an empty challenge.
            self._next = self._first
            return Challenge(b"")
        return self._first(data)

    def _finished(self, data):
        raise SaslFailure("malformed-request", "the authentication exchange is over")


class ScramMechanism(_Exchange):
    """SCRAM-SHA-1 / SCRAM-SHA-256 without channel binding (RFC 5802 §5)."""

    def __init__(self, server: SaslServer, hash_name: str):
        super().__init__(server)
        self.name = f"SCRAM-{hash_name}"
        self._hash = hash_name

    def _first(self, data):
        """client-first-message = gs2-header client-first-message-bare"""
        message = _utf8(data)
        fields = message.split(",", 2)
        if len(fields) < 3:
            raise _malformed("incomplete client-first-message")
        cbind_flag, authzid_field, bare = fields
        if cbind_flag.startswith("p="):
            raise _malformed("channel binding is not supported")
        if cbind_flag not in ("n", "y"):
            raise _malformed("invalid GS2 header")
        authzid = _saslname(_attribute(authzid_field, "a")) if authzid_field else ""
        attributes = bare.split(",")
        if attributes[0].startswith("m="):
            raise _malformed("unsupported mandatory extension")
        if len(attributes) < 2:
            raise _malformed("incomplete client-first-message")
        username = self._server._username(_saslname(_attribute(attributes[0], "n")))
        client_nonce = _attribute(attributes[1], "r")
        if not _NONCE.fullmatch(client_nonce):
            raise _malformed("invalid nonce")
        self._server._check_authzid(authzid, username)
        gs2_header = message[: len(message) - len(bare)]
        d = self._server._lookup_keys(username)
        d.addCallback(self._server_first, username, gs2_header, bare, client_nonce)
        return d

    def _server_first(self, stored, username, gs2_header, client_first_bare, client_nonce):
        keys = (stored or {}).get(self._hash)
        self._known = keys is not None
        self._keys = keys if self._known else _fake_keys(self._hash, username)
        self._username = username
        self._gs2_header = gs2_header
        self._nonce = client_nonce + self._server._new_nonce()
        salt = base64.b64encode(self._keys.salt).decode("ascii")
        server_first = f"r={self._nonce},s={salt},i={self._keys.iterations}"
        self._auth_prefix = f"{client_first_bare},{server_first}"
        self._next = self._final
        return Challenge(server_first.encode("ascii"))

    def _final(self, data):
        """client-final-message = channel-binding "," nonce ["," extensions] "," proof"""
        message = _utf8(data)
        attributes = message.split(",")
        if len(attributes) < 3:
            raise _malformed("incomplete client-final-message")
        channel_binding = _base64(_attribute(attributes[0], "c"))
        nonce = _attribute(attributes[1], "r")
        proof = _base64(_attribute(attributes[-1], "p"))
        if len(proof) != len(self._keys.stored_key):
            raise _malformed("client proof of the wrong length")
        if channel_binding != self._gs2_header.encode("utf-8"):
            raise SaslFailure("not-authorized", "channel binding mismatch")
        if nonce != self._nonce:
            raise SaslFailure("not-authorized", "nonce mismatch")

        without_proof = message[: len(message) - len(attributes[-1]) - 1]
        auth_message = f"{self._auth_prefix},{without_proof}".encode("utf-8")
        signature = scram.client_signature(self._hash, self._keys.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        verified = hmac.compare_digest(
            scram.stored_key(self._hash, client_key), self._keys.stored_key
        )
        if not (verified and self._known):
            raise SaslFailure("not-authorized")
        server_signature = scram.server_signature(self._hash, self._keys.server_key, auth_message)
        return Success(self._username, b"v=" + base64.b64encode(server_signature))


class PlainMechanism(_Exchange):
    """PLAIN (RFC 4616): message = [authzid] NUL authcid NUL passwd."""

    name = "PLAIN"

    def _first(self, data):
        fields = _utf8(data).split("\0")
        if len(fields) != 3 or not fields[1] or not fields[2]:
            raise _malformed("expected authzid NUL authcid NUL password")
        authzid, authcid, password = fields
        username = self._server._username(authcid)
        self._server._check_authzid(authzid, username)
        return self._server._lookup_keys(username).addCallback(self._verify, username, password)

    def _verify(self, stored, username, password):
        stored = stored or {}
        keys = stored.get("SHA-256") or stored.get("SHA-1")
        # An unknown user costs the same key derivation as a known one.
        d = self._server._offload(scram.check_password, password,
                                  keys or _fake_keys("SHA-256", username))
        return d.addCallback(self._checked, username, keys is not None)

    @staticmethod
    def _checked(matches, username, known):
        if not (matches and known):
            raise SaslFailure("not-authorized")
        return Success(username)


def _random_nonce() -> str:
    """18 random bytes in URL-safe base64: 24 printable characters, no comma."""
    return secrets.token_urlsafe(18)


def _fake_keys(hash_name: str, username: str) -> ScramKeys:
    """A stand-in verifier for an unknown user: a salt stable for the life
    of the process, so that repeated attempts look like a real account, and
    random keys that no proof matches."""
    salt = hmac.digest(_FAKE_SALT_SECRET, f"{hash_name}\0{username}".encode("utf-8"), "sha256")
    size = scram.HASHES[hash_name]().digest_size
    return ScramKeys(
        salt=salt[: scram.SALT_LENGTH],
        iterations=scram.MIN_ITERATIONS,
        stored_key=secrets.token_bytes(size),
        server_key=secrets.token_bytes(size),
    )


def _malformed(text: str) -> SaslFailure:
    return SaslFailure("malformed-request", text)


def _utf8(data: bytes | None) -> str:
    if not data:
        raise _malformed("empty response")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("not UTF-8") from None


def _attribute(field: str, name: str) -> str:
    """The value of ``name=value``; malformed-request for any other attribute."""
    if not field.startswith(f"{name}="):
        raise _malformed(f"expected attribute {name!r}")
    return field[len(name) + 1 :]


def _saslname(value: str) -> str:
    """Decode a SCRAM saslname (RFC 5802 §5.1: "=2C" is ",", "=3D" is "=")."""
    if not value or _BAD_ESCAPE.search(value):
        raise _malformed("invalid saslname")
    return value.replace("=2C", ",").replace("=3D", "=")


def _base64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise _malformed("invalid base64") from None
