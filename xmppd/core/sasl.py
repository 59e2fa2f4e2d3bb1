"""Server-side SASL (RFC 6120 §6, RFC 4422), for the stream's SASL and for
XEP-0388's.

Mechanisms, strongest first (``MECHANISMS``): SCRAM-SHA-512-PLUS,
SCRAM-SHA-256-PLUS, SCRAM-SHA-1-PLUS (RFC 5802 §6, RFC 7677), SCRAM-SHA-512,
SCRAM-SHA-256, SCRAM-SHA-1, PLAIN (RFC 4616) and ANONYMOUS (RFC 4505,
XEP-0175).  The caller chooses which a host offers (``DEFAULT_MECHANISMS``
for a password or an anonymous host; ``check_mechanisms`` for configured
names).

Channel binding: the -PLUS variants are offered only when the stream has a
binding type (``CHANNEL_BINDINGS``: tls-exporter, RFC 9266, and
tls-server-end-point, RFC 5929 §4).  tls-unique is not offered: TLS 1.3 has
none, and in TLS 1.2 without the extended master secret (RFC 7627), which
the stream cannot check, it is open to the triple handshake attack (RFC 9266
§1).  The types are shown with XEP-0440's ``<sasl-channel-binding/>``
(``channel_binding_feature``).  As RFC 5802 §6 requires, a client that says
``y`` (it could bind but believes the server cannot) fails when a -PLUS
mechanism was offered: that is a downgrade.  Unless turned off, every SCRAM
server-first-message carries the ``h`` attribute of XEP-0474 §6.1, the hash
of the mechanisms and binding types shown, which the client proof signs.

Each mechanism is a small state machine fed with the decoded payloads of
<auth/> and <response/>; the stream does the XML and base64 (RFC 6120
§6.4.2) and turns a ``SaslFailure`` into <failure/> with its RFC 6120 §6.5
condition.  As RFC 6120 §6.3.10 allows, the SCRAM server-final message is
returned as the additional data of the ``Success`` rather than as a last
challenge.

An unknown account, or one without a verifier for the hash, is not revealed
before the end of a SCRAM exchange: the server answers with a salt derived
from the username and a per-process secret, and fails with not-authorized
once the client proof arrives, exactly as for a wrong password.  An
authentication identity the normaliser rejects fails at once with
not-authorized: that reveals nothing about accounts.
"""

import base64
import binascii
import hmac
import re
import secrets
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass
from functools import cached_property
from typing import Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd.core import scram
from xmppd.storage import ScramKeys, StorageError

log = Logger()

NS_SASL_CB = "urn:xmpp:sasl-cb:0"  # XEP-0440
# Strongest first: channel binding, then the hash.
MECHANISMS = (
    "SCRAM-SHA-512-PLUS",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-512",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "PLAIN",
    "ANONYMOUS",
)
# By hosts.DOMAIN.authentication.  SCRAM-SHA-512 is left out of the
# password default: mechanisms are offered before the client names its
# account, so a client that picks it fails on every account stored without
# a SHA-512 verifier.
DEFAULT_MECHANISMS = {
    "password": (
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ),
    "anonymous": ("ANONYMOUS",),
}
# The binding types offered, strongest first (XEP-0440 prefers tls-exporter).
CHANNEL_BINDINGS = ("tls-exporter", "tls-server-end-point")
# RFC 4505 §3: the trace information is at most 255 characters.
MAX_TRACE_LENGTH = 255

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
    """Send <success/>, with ``additional_data`` if any (RFC 6120 §6.3.10;
    XEP-0388's <additional-data/>)."""

    username: str  # normalised localpart
    additional_data: bytes | None = None
    _: KW_ONLY
    anonymous: bool = False  # ANONYMOUS: a fresh username for a transient session
    channel_binding: str | None = None  # the binding type the exchange was bound to


@dataclass(frozen=True)
class Offer:
    """What the stream features showed: the SASL mechanisms (RFC 6120
    §6.4.1, or XEP-0388's <authentication/>) and XEP-0440's channel-binding
    types (none when no <sasl-channel-binding/> was shown)."""

    mechanisms: tuple[str, ...]
    channel_bindings: tuple[str, ...] = ()


class Mechanism(Protocol):
    """One authentication exchange."""

    name: str

    def step(self, data: bytes | None) -> Deferred:
        """Feed the next client payload; ``None`` when <auth/> carried no
        initial response.  Fires with a ``Challenge`` or a ``Success``, or
        fails with a ``SaslFailure``."""


Lookup = Callable[[str], Deferred]  # username -> Deferred[dict[str, ScramKeys] | None]
ChannelBinding = Callable[[str], bytes | None]  # binding type -> data, None if unavailable


def check_mechanisms(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple, in order; ValueError naming the first that is
    not in ``MECHANISMS``, or one named twice, or none at all."""
    if isinstance(names, str):
        raise ValueError(f"expected a list of SASL mechanisms, not {names!r}")
    names = tuple(names)
    if not names:
        raise ValueError("no SASL mechanism")
    for i, name in enumerate(names):
        if name not in MECHANISMS:
            raise ValueError(f"unknown SASL mechanism {name!r}; supported: {', '.join(MECHANISMS)}")
        if name in names[:i]:
            raise ValueError(f"SASL mechanism {name!r} named twice")
    return names


def channel_binding_feature(types: Sequence[str]) -> domish.Element | None:
    """XEP-0440 §2's <sasl-channel-binding/> stream feature listing ``types``
    (``SaslServer.channel_bindings``); None when there is none, as the
    element must list one or more."""
    if not types:
        return None
    feature = domish.Element((NS_SASL_CB, "sasl-channel-binding"))
    for kind in types:
        feature.addElement("channel-binding")["type"] = kind
    return feature


class SaslServer:
    """The SASL mechanisms of one stream's domain.

    ``mechanisms`` are those the host offers (checked with
    ``check_mechanisms``); ``channel_binding`` gives the stream's binding
    data by type (``stream.channel_binding``), without which no -PLUS
    mechanism is offered; ``downgrade_protection`` adds XEP-0474's
    attribute to SCRAM exchanges.  ``add_keys(username, keys, current)``
    stores the verifiers a PLAIN login derives for an account that lacks
    some of ``scram.DERIVED`` (one imported with SCRAM-SHA-1 keys only),
    if its verifiers are still ``current``: SCRAM with every hash works
    for it from then on.
    """

    def __init__(
        self,
        domain: str,
        lookup: Lookup,
        normalize_username: Callable[[str], str],
        nonce: Callable[[], str] | None = None,
        offload: Callable[..., Deferred] = maybeDeferred,
        mechanisms: Sequence[str] = DEFAULT_MECHANISMS["password"],
        channel_binding: ChannelBinding | None = None,
        downgrade_protection: bool = True,
        add_keys: Callable[[str, dict, dict], Deferred] | None = None,
    ):
        self.domain = domain
        self._lookup = lookup
        self._normalize = normalize_username
        self._new_nonce = nonce or _random_nonce
        # Runs PLAIN's key derivation (PBKDF2, ~1 ms): the server gives a
        # thread pool, so other connections are not held up meanwhile.
        self._offload = offload
        self._configured = check_mechanisms(mechanisms)
        self._channel_binding = channel_binding
        self.downgrade_protection = downgrade_protection
        self._add_keys = add_keys

    @cached_property
    def channel_bindings(self) -> tuple[str, ...]:
        """The binding types this stream has, strongest first; none unless
        a -PLUS mechanism is configured.  Asked once: the server is made
        for a stream whose TLS is established."""
        if self._channel_binding is None or not any(map(_plus, self._configured)):
            return ()
        return tuple(kind for kind in CHANNEL_BINDINGS if self._channel_binding(kind))

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The mechanisms to offer on this stream: the configured ones, the
        -PLUS variants only if the stream has a binding type."""
        return self.offer().mechanisms

    def offer(self) -> Offer:
        """What to show in the stream features: the mechanisms, and the
        binding types for ``channel_binding_feature``."""
        return self._offer

    @cached_property
    def _offer(self) -> Offer:
        bindings = self.channel_bindings
        mechanisms = tuple(m for m in self._configured if bindings or not _plus(m))
        return Offer(mechanisms, bindings)

    def start(self, mechanism: str, offer: Offer | None = None) -> Mechanism:
        """A new exchange with the mechanism the client selected; ``offer``
        is what the stream features showed (``offer()`` when omitted): the
        client must have picked from it, and XEP-0474 hashes it."""
        if offer is None:
            offer = self.offer()
        if mechanism not in offer.mechanisms or mechanism not in self._configured:
            raise SaslFailure("invalid-mechanism")
        if mechanism == "PLAIN":
            return PlainMechanism(self)
        if mechanism == "ANONYMOUS":
            return AnonymousMechanism(self)
        return ScramMechanism(self, mechanism, offer)

    def _binding_data(self, kind: str, offer: Offer) -> bytes | None:
        """The stream's binding data of ``kind`` if it was offered."""
        if kind not in offer.channel_bindings or kind not in CHANNEL_BINDINGS:
            return None
        return self._channel_binding(kind) if self._channel_binding else None

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

    def _complete(self, username: str, password: str, current: dict) -> None:
        """PLAIN checked ``password``: derive the verifiers of the hashes of
        ``scram.DERIVED`` the account lacks and store them, in the
        background (the login does not wait)."""
        missing = [name for name in scram.DERIVED if name not in current]
        if not missing or self._add_keys is None:
            return
        d = self._offload(scram.derive_all, password, scram.MIN_ITERATIONS, missing)
        d.addCallback(lambda keys: self._add_keys(username, keys, current))
        d.addErrback(lambda failure: log.failure(
            "Storing the new verifiers of {username!r} failed", failure, username=username))

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
    """SCRAM-SHA-1, -SHA-256 and -SHA-512 (RFC 5802 §5, RFC 7677), and their
    -PLUS variants with channel binding (RFC 5802 §6)."""

    def __init__(self, server: SaslServer, name: str, offer: Offer):
        super().__init__(server)
        self.name = name
        self._plus = _plus(name)
        self._hash = name.removeprefix("SCRAM-").removesuffix("-PLUS")
        self._offer = offer

    def _first(self, data):
        """client-first-message = gs2-header client-first-message-bare"""
        message = _utf8(data)
        fields = message.split(",", 2)
        if len(fields) < 3:
            raise _malformed("incomplete client-first-message")
        cbind_flag, authzid_field, bare = fields
        binding, binding_data = self._binding(cbind_flag)
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
        # RFC 5802 §7: c= carries base64(gs2-header [cbind-data]).
        self._cbind_input = message[: len(message) - len(bare)].encode("utf-8") + binding_data
        self._bound = binding
        d = self._server._lookup_keys(username)
        d.addCallback(self._server_first, username, bare, client_nonce)
        return d

    def _binding(self, cbind_flag):
        """The binding type and data the GS2 flag asks for (RFC 5802 §6)."""
        if cbind_flag.startswith("p="):
            if not self._plus:
                raise _malformed("channel binding needs a -PLUS mechanism")
            kind = cbind_flag[2:]
            data = self._server._binding_data(kind, self._offer)
            if not data:
                raise _malformed("unsupported channel binding type")
            return kind, data
        if cbind_flag not in ("n", "y"):
            raise _malformed("invalid GS2 header")
        if self._plus:
            raise _malformed(f"{self.name} needs channel binding")
        if cbind_flag == "y" and any(map(_plus, self._offer.mechanisms)):
            # The client can bind and was told the server cannot: someone
            # removed the -PLUS mechanisms on the way.
            raise SaslFailure("not-authorized", "channel binding was offered")
        return None, b""

    def _server_first(self, stored, username, client_first_bare, client_nonce):
        keys = (stored or {}).get(self._hash)
        self._known = keys is not None
        self._keys = keys if self._known else _fake_keys(self._hash, username)
        self._username = username
        self._nonce = client_nonce + self._server._new_nonce()
        salt = base64.b64encode(self._keys.salt).decode("ascii")
        server_first = f"r={self._nonce},s={salt},i={self._keys.iterations}"
        if self._server.downgrade_protection:
            offer = self._offer
            digest = scram.downgrade_hash(self._hash, offer.mechanisms, offer.channel_bindings)
            server_first += ",h=" + base64.b64encode(digest).decode("ascii")
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
        if not hmac.compare_digest(channel_binding, self._cbind_input):
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
        return Success(self._username, b"v=" + base64.b64encode(server_signature),
                       channel_binding=self._bound)


class PlainMechanism(_Exchange):
    """PLAIN (RFC 4616): message = [authzid] NUL authcid NUL passwd."""

    name = "PLAIN"
    # The verifier checked, when the account has several: the first present.
    HASHES = ("SHA-256", "SHA-512", "SHA-1")

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
        keys = next((stored[name] for name in self.HASHES if name in stored), None)
        # An unknown user costs the same key derivation as a known one.
        d = self._server._offload(scram.check_password, password,
                                  keys or _fake_keys("SHA-256", username))
        return d.addCallback(self._checked, username, password,
                             None if keys is None else stored)

    def _checked(self, matches, username, password, stored):
        if not (matches and stored):
            raise SaslFailure("not-authorized")
        self._server._complete(username, password, stored)
        return Success(username)


class AnonymousMechanism(_Exchange):
    """ANONYMOUS (RFC 4505): message = [trace], accepted and ignored; the
    client gets a fresh random username (XEP-0175: a unique bare JID).
    <auth/> without an initial response succeeds at once (XEP-0175 §2)."""

    name = "ANONYMOUS"

    def _initial(self, data):
        return self._first(data)

    def _first(self, data):
        if data:
            try:
                trace = data.decode("utf-8")
            except UnicodeDecodeError:
                raise _malformed("trace information not UTF-8") from None
            if len(trace) > MAX_TRACE_LENGTH:
                raise _malformed(f"trace information over {MAX_TRACE_LENGTH} characters")
            if any(unicodedata.category(c) == "Cc" for c in trace):
                raise _malformed("control character in the trace information")
        return Success(self._server._normalize(str(uuid.uuid4())), anonymous=True)


def _plus(mechanism: str) -> bool:
    return mechanism.endswith("-PLUS")


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
