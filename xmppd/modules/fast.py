"""Fast Authentication Streamlining Tokens (XEP-0484) over SASL2
(XEP-0388), with the Hashed Token mechanisms (draft-schmaus-kitten-sasl-ht-09,
"HT").

- §3.1: the SASL2 ``<inline/>`` of a password host (not an anonymous
  one) offers ``<fast xmlns='urn:xmpp:fast:0'/>`` with HT-SHA-256-EXPR
  and -ENDP where the stream has that channel binding (tls-exporter,
  tls-server-end-point), and HT-SHA-256-NONE.  Not -UNIQ: tls-unique is
  not offered (see :mod:`xmppd.core.sasl`).  These are not listed as
  SASL2 ``<mechanism/>``: they take no password.
- §3.2, §3.3: an ``<authenticate/>`` with a ``<user-agent id=.../>`` and
  ``<request-token mechanism=.../>`` (an offered one) that succeeds, by
  password or by token, gets ``<token expiry=... token=.../>`` in its
  ``<success/>``, valid for ``fast.token_lifetime`` days, for that
  account, user agent and mechanism only.  No user agent id: no token.
- §3.4, HT §3: the initial response is ``authcid NUL HMAC-SHA-256(token,
  "Initiator" || cb-data)``; the success carries ``HMAC-SHA-256(token,
  "Responder" || cb-data)``.  The ``<fast/>`` element must come with it.
  A wrong or revoked token, another mechanism, an unknown user agent or
  account fail alike: not-authorized.  A right token the server no longer
  trusts (§4.2: expired, issued before the password changed, or with a
  replayed ``count``: once a token was used with a count, each use needs
  a higher one) fails with credentials-expired, so the client falls back
  to its password.
  They count as failed logins of the address and of the account named,
  as a wrong password does; a locked account refuses tokens too.
- §3.5, §5.1: each user agent has a "new" and a "current" token; a use of
  the new one makes it current (the old current is gone).  A token used
  more than ``fast.rotate_after`` days after its issue is replaced by a
  new one in the success, the used one staying valid until the new one
  is used.  A new token replaces an unused new one.
- §3.6: ``invalidate='true'`` revokes the user agent's tokens once the
  authentication succeeds (a new one only if also requested).
- A token is bound to the account's credentials: a password changed by
  any path makes every token of the account fail.

Nothing in the database gives a token: the ``keyval`` store ``fast``
keeps, per account and SHA-256 of the user agent id, each token's random
nonce, mechanism, issue and expiry times, a digest of the account's
SCRAM StoredKey and the last count; the token is HMAC-SHA-256 of all that
with a server secret of 32 random bytes kept in ``fast.secret_file``
(0600, made the first time).  Replacing the file revokes every token.
An account keeps tokens for at most ``fast.max_clients`` user agents.
``xmppctl kick --tokens`` deletes an account's tokens.
"""

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.sasl import CHANNEL_BINDINGS, SaslFailure, Success
from xmppd.core.stanzas import xep0082_stamp
from xmppd.datafiles import data_path, load_secret
from xmppd.jid import JID, normalize_localpart
from xmppd.options import Option, Options, integer, non_negative_number, optional_string
from xmppd.options import positive_number
from xmppd.storage import StorageError

NS_FAST = "urn:xmpp:fast:0"
# HT §2: the cb-type of each channel binding type in a mechanism's name.
CB_TYPES = {"tls-exporter": "EXPR", "tls-server-end-point": "ENDP", "tls-unique": "UNIQ"}
# The mechanisms by preference, with their channel binding: those SASL
# offers (no tls-unique), then none.
MECHANISMS = {**{f"HT-SHA-256-{CB_TYPES[kind]}": kind for kind in CHANNEL_BINDINGS},
              "HT-SHA-256-NONE": None}
SLOTS = ("new", "current")  # §5.1, checked in this order
DAY = 86400.0
_COUNT = re.compile(r"[0-9]{1,18}")

OPTIONS = Options(  # [fast]
    token_lifetime=Option(21.0, positive_number),  # days a token is valid
    rotate_after=Option(1.0, non_negative_number),  # days; a token used later is replaced
    max_clients=Option(32, integer(1)),  # user agents with tokens per account
    # The server secret tokens derive from; default: "fast.secret" beside
    # the SQLite database, else beside the config file.  Relative to the
    # config file's directory.
    secret_file=Option(None, optional_string),
)


def secret_path(config):
    """The secret file ``config`` gives (see ``fast.secret_file``)."""
    return data_path(config, config.options("fast").secret_file, "fast.secret")


def agent_key(agent):
    """The store key of user agent id ``agent``."""
    return hashlib.sha256(agent.encode("utf-8")).hexdigest()


def fingerprint(credentials, name=None):
    """``NAME:DIGEST`` of the account's SCRAM StoredKey for hash ``name``
    (default: SHA-256, else the first it has): it changes with the
    password, not when a verifier for another hash is added (an upgrade,
    XEP-0388 §2.8).  None if there is no such verifier."""
    if name is None:
        name = "SHA-256" if "SHA-256" in credentials else min(credentials)
    keys = credentials.get(name)
    if keys is None:
        return None
    return name + ":" + hashlib.sha256(keys.stored_key).hexdigest()


def _bound(record, credentials):
    """Whether ``record`` was issued for the account's current password."""
    name = record["credentials"].partition(":")[0]
    return record["credentials"] == fingerprint(credentials, name)


def ht(token, message):
    """HMAC-SHA-256 keyed with the token's UTF-8 octets (HT §3.1, §3.3)."""
    return hmac.digest(token.encode("utf-8"), message, "sha256")


def _not_authorized():
    return SaslFailure("not-authorized")


@dataclass
class Use:
    """A token that proved right: what its authentication changes."""

    username: str
    domain: str
    key: str
    slot: str
    record: dict
    credentials: dict  # the account's SCRAM verifiers by hash name
    count: int | None
    responder: bytes


class Tokens:
    """The tokens of every account, in a key/value store: one entry per
    user agent, ``{"new": RECORD, "current": RECORD}``."""

    def __init__(self, store, accounts, secret, clock, options):
        self._store = store
        self._accounts = accounts
        self._secret = secret
        self._clock = clock
        self._options = options  # domain -> the [fast] options of that host

    def token(self, username, domain, key, record):
        """The token of ``record``: it needs the secret."""
        bound = [domain, username, key, record["nonce"], record["mechanism"],
                 record["expiry"], record["credentials"]]
        mac = hmac.digest(self._secret, json.dumps(bound).encode("utf-8"), "sha256")
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    @defer.inlineCallbacks
    def verify(self, username, domain, agent, mechanism, proof, cb_data, count):
        """The :class:`Use` of the token whose initiator message is
        ``proof``, or not-authorized."""
        key = agent_key(agent)
        credentials = yield self._accounts.get_credentials(username, domain)
        if not credentials:
            raise _not_authorized()
        entry = _entry((yield self._store.get(username, domain, key)))
        for slot in SLOTS:
            record = entry.get(slot)
            if record is None or record["mechanism"] != mechanism:
                continue
            token = self.token(username, domain, key, record)
            if hmac.compare_digest(ht(token, b"Initiator" + cb_data), proof):
                break
        else:
            raise _not_authorized()
        used = record.get("count")
        if (self._clock.seconds() >= record["expiry"]
                or not _bound(record, credentials)
                or (used is not None and (count is None or count <= used))):
            raise SaslFailure("credentials-expired", "this token is no longer trusted")
        return Use(username, domain, key, slot, record, credentials, count,
                   ht(token, b"Responder" + cb_data))

    def rotation_due(self, use):
        return (self._clock.seconds() - use.record["issued"]
                >= self._options(use.domain).rotate_after * DAY)

    @defer.inlineCallbacks
    def used(self, use, invalidate, mechanism):
        """After a successful authentication with ``use``: the new token
        becomes current, the count is kept; with ``invalidate``, the user
        agent's tokens go.  A token for ``mechanism`` (None: none) is
        issued: its ``(token, expiry)``, else None."""
        if not (mechanism or invalidate or use.slot == "new" or use.count is not None):
            return None

        def change(entry):
            if invalidate:
                return {}
            current = entry.get(use.slot)
            if current is None or current["nonce"] != use.record["nonce"]:
                return entry  # changed meanwhile: left as it is
            record = dict(use.record)
            if use.count is not None:
                record["count"] = use.count
            return {"current": record} if use.slot == "new" else {**entry, "current": record}

        issued = yield self._save(use.username, use.domain, use.key, change, mechanism,
                                  use.credentials)
        return issued

    @defer.inlineCallbacks
    def issue(self, username, domain, agent, mechanism):
        """A new token of ``agent`` for ``mechanism`` (§3.3): ``(token,
        expiry)``, or None if the account has no credentials."""
        credentials = yield self._accounts.get_credentials(username, domain)
        if not credentials:
            return None
        issued = yield self._save(username, domain, agent_key(agent), lambda entry: entry,
                                  mechanism, credentials)
        return issued

    @defer.inlineCallbacks
    def _save(self, username, domain, key, change, mechanism, credentials):
        """Write ``change(entry)`` for user agent ``key``, with a new token
        for ``mechanism`` if given; drop the account's dead entries, and the
        oldest past ``fast.max_clients``."""
        now = self._clock.seconds()
        entries = {k: _entry(v) for k, v in (yield self._store.get_all(username, domain)).items()}
        entry = {slot: record for slot, record in change(entries.pop(key, {})).items()
                 if record is not None}
        issued = None
        if mechanism:
            options = self._options(domain)
            expiry = int(now + options.token_lifetime * DAY)
            entry["new"] = record = {
                "nonce": base64.b64encode(secrets.token_bytes(16)).decode("ascii"),
                "mechanism": mechanism, "issued": now, "expiry": expiry,
                "credentials": fingerprint(credentials)}
            issued = (self.token(username, domain, key, record), expiry)
        updates = {key: json.dumps(entry) if entry else None}
        live = []
        for other, value in entries.items():
            records = [r for r in value.values()
                       if r is not None and r["expiry"] > now and _bound(r, credentials)]
            if records:
                live.append((max(r["issued"] for r in records), other))
            else:
                updates[other] = None
        live.sort(reverse=True)
        for _, other in live[self._options(domain).max_clients - bool(entry):]:
            updates[other] = None
        yield self._store.set_many(username, domain, updates)
        return issued


# The fields of a stored token and their types.
FIELDS = {"nonce": str, "mechanism": str, "issued": (int, float), "expiry": int,
          "credentials": str}


def _entry(value):
    """A stored entry: its well-formed records by slot."""
    try:
        entry = json.loads(value) if value else {}
    except ValueError:
        return {}
    if not isinstance(entry, dict):
        return {}
    return {slot: record for slot in SLOTS
            if isinstance(record := entry.get(slot), dict)
            and all(isinstance(record.get(name), kind) for name, kind in FIELDS.items())
            and isinstance(record.get("count", 0), int)}


class HashedToken:
    """One HT exchange (HT §3): a single client-first message."""

    def __init__(self, fast, name, stream, request):
        self.name = name
        self._fast = fast
        self._stream = stream
        self._request = request
        self._over = False

    def step(self, data):
        return defer.maybeDeferred(self._step, data)

    def _step(self, data):
        if self._over:
            raise SaslFailure("malformed-request", "the authentication exchange is over")
        self._over = True
        fast, stream, request = self._fast, self._stream, self._request
        if self.name not in fast.offered(stream):
            raise SaslFailure("invalid-mechanism")
        element = _child(request.element, "fast")
        if element is None:
            raise SaslFailure("malformed-request",
                              f"a token needs <fast xmlns='{NS_FAST}'/> (XEP-0484 §3.4)")
        count = element.getAttribute("count")
        if count is not None and not _COUNT.fullmatch(count):
            raise SaslFailure("malformed-request", "count is not a non-negative integer")
        authcid, nul, proof = (data or b"").partition(b"\0")
        if not nul or not authcid or len(proof) != hashlib.sha256().digest_size:
            raise SaslFailure("malformed-request", "expected authcid NUL HMAC-SHA-256")
        try:
            authcid = authcid.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslFailure("malformed-request", "the authcid is not UTF-8") from None
        try:
            username = normalize_localpart(authcid)
        except ValueError:
            raise _not_authorized() from None
        fast.named(stream, username)
        if not request.user_agent:
            raise _not_authorized()
        kind = MECHANISMS[self.name]
        cb_data = b"" if kind is None else stream.channel_binding(kind)
        d = fast.tokens.verify(username, stream.domain, request.user_agent, self.name, proof,
                               cb_data, None if count is None else int(count))
        d.addCallbacks(self._verified, self._failed)
        return d

    def _verified(self, use):
        self._stream.state[self._fast.name] = (self._request, use)
        return Success(use.username, use.responder)

    def _failed(self, failure):
        if failure.check(StorageError):
            self._fast.log.error("cannot read the FAST tokens: {error}", error=failure.value)
            raise SaslFailure("temporary-auth-failure")
        return failure


def _child(element, name):
    return next(element.elements(NS_FAST, name), None)


class Fast:
    """The SASL2 side: the inline feature, the HT mechanisms, the tokens
    added to successes."""

    def __init__(self, api, tokens):
        self.name = api.name
        self.log = api.log
        self.tokens = tokens
        self._api = api

    def named(self, stream, username):
        """The attempt names account ``username``: its failure counts for
        that account too, as a password's does (delays, locking)."""
        authentication = self._api.service("sasl").authentication(stream)
        if authentication is not None:
            authentication.account = JID(username, stream.domain, None)

    def offered(self, stream):
        """The HT mechanisms offered on ``stream`` (none on an anonymous
        host, or before TLS)."""
        api = self._api
        host = api.config.hosts.get(stream.domain)
        if (host is None or host.authentication != "password" or not stream.secure
                or not api.enabled(stream.domain)):
            return ()
        return tuple(name for name, kind in MECHANISMS.items()
                     if kind is None or stream.channel_binding(kind) is not None)

    def inline(self, stream):
        mechanisms = self.offered(stream)
        if not mechanisms:
            return None
        element = domish.Element((NS_FAST, "fast"))
        for name in mechanisms:
            element.addElement("mechanism", content=name)
        return element

    def mechanism(self, name):
        return lambda stream, request: HashedToken(self, name, stream, request)

    def succeeded(self, stream, request, success):
        """Apply a token's use, and add a new token to ``success`` if the
        client asked for one or the used one is due for rotation."""
        used = stream.state.pop(self.name, None)
        use = used[1] if used is not None and used[0] is request else None
        requested = _child(request.element, "request-token")
        mechanism = None
        if requested is not None and request.user_agent:
            mechanism = requested.getAttribute("mechanism")
            if mechanism not in self.offered(stream):
                mechanism = None
        if use is None:
            if mechanism is None:
                return None
            d = self.tokens.issue(stream.user.local, stream.domain, request.user_agent,
                                  mechanism)
        else:
            invalidate = _child(request.element, "fast").getAttribute("invalidate") in (
                "1", "true")
            if mechanism is None and not invalidate and self.tokens.rotation_due(use):
                mechanism = request.mechanism
            d = self.tokens.used(use, invalidate, mechanism)
        d.addCallbacks(self._issued, self._not_saved, callbackArgs=(stream, success))
        return d

    def _issued(self, issued, stream, success):
        if issued is None:
            return
        token, expiry = issued
        element = success.addElement((NS_FAST, "token"))
        element["expiry"] = xep0082_stamp(expiry)
        element["token"] = token
        self.log.debug("FAST token issued to {user}", user=stream.user)

    def _not_saved(self, failure):
        failure.trap(StorageError)
        self.log.error("cannot save a FAST token: {error}", error=failure.value)


def setup(api):
    api.depends("sasl2")
    sasl2 = api.service("sasl2")
    tokens = Tokens(api.open_store("keyval"), api.open_store("accounts"),
                    load_secret(secret_path(api.config)), api.clock, api.options_for)
    fast = Fast(api, tokens)
    sasl2.add_inline(fast.inline)
    for name in MECHANISMS:
        sasl2.add_mechanism(name, fast.mechanism(name))
    sasl2.on_success(fast.succeeded, priority=100)
