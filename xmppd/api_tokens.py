"""Bearer tokens (RFC 6750) of the HTTP admin API (``admin_api``, see
docs/admin-api.md), made, listed and revoked with ``xmppctl token``.

- A token is 256 random bits from :mod:`secrets`, URL-safe base64 (43
  characters), shown once, when it is made.  The ``hostval`` store
  ``api_tokens`` keeps, under domain ``""`` (the whole server), only its
  SHA-256 in hex (:func:`xmppd.invitations.key`) as the key, with its
  record as JSON: ``scopes`` (what it may do, of :data:`SCOPES`),
  ``domains`` (the hosts it may manage; null: every host), ``created``
  and ``expires`` (seconds since the epoch; null: never) and ``label``.
- A request's token is found by the hash of what it presents, one lookup
  of that key: no token is ever compared with what a client sent, so the
  time an answer takes tells nothing about how close a guess was.
- A token is listed and revoked by its *id*, the first 12 hex digits of
  the hash; revoking deletes it, and the next request with it fails.

``xmppctl token`` works on the database directly, whether the server runs
or not; this module imports nothing of the server.
"""

import json
import secrets
from dataclasses import dataclass

from xmppd.invitations import ID_LENGTH, duration, key, lookup_key, matching

__all__ = ("STORE", "SERVER", "SCOPES", "Token", "make", "parse", "lookup_key", "add_commands")

STORE = "api_tokens"  # the hostval store
SERVER = ""  # its domain: the tokens are the whole server's
SCOPES = ("users", "sessions", "invites", "stats")
MAX_LIFETIME = 10 * 366 * 86400  # seconds: --expires at most about 10 years


@dataclass(frozen=True)
class Token:
    """A token's record; ``key`` is the SHA-256 of the token, in hex."""

    key: str
    scopes: frozenset
    domains: frozenset | None  # None: every host
    created: float
    expires: float | None = None  # None: never
    label: str | None = None

    @property
    def id(self):
        return self.key[:ID_LENGTH]

    def value(self):
        """The record the store keeps (JSON)."""
        return json.dumps({
            "scopes": sorted(self.scopes),
            "domains": None if self.domains is None else sorted(self.domains),
            "created": self.created, "expires": self.expires, "label": self.label})

    def expired(self, now):
        return self.expires is not None and self.expires <= now

    def covers(self, domain):
        """Whether it may manage hosted ``domain``."""
        return self.domains is None or domain in self.domains


def make(scopes, domains, now, lifetime=None, label=None):
    """A new token for ``scopes`` on ``domains`` (None: every host), made
    at ``now`` and valid ``lifetime`` seconds (None: until revoked):
    ``(secret, Token)``; the secret is what the client presents."""
    secret = secrets.token_urlsafe(32)
    return secret, Token(key(secret), frozenset(scopes),
                         None if domains is None else frozenset(domains), now,
                         None if lifetime is None else now + lifetime, label)


def parse(key_, value):
    """The token the store keeps under ``key_``, or None if its record is
    not one."""
    try:
        record = json.loads(value)
        domains = record["domains"]
        expires = record["expires"]
        label = record.get("label")
        if not isinstance(label, (str, type(None))):
            return None
        return Token(key_, frozenset(map(str, record["scopes"])),
                     None if domains is None else frozenset(map(str, domains)),
                     float(record["created"]), None if expires is None else float(expires),
                     label)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return None


# xmppctl token


def add_commands(command):
    token = command("token", lambda args: args.token_run(args),
                    "make, list and revoke the bearer tokens of the HTTP admin API")
    actions = token.add_subparsers(title="actions", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="make a token (printed once)",
                                description="Make a token; it is printed alone on stdout, "
                                            "once: keep it, only its hash is stored.")
    create.set_defaults(token_run=cmd_create)
    create.add_argument("--scope", required=True, type=_scopes, metavar="SCOPE[,SCOPE...]",
                        help=f"what it may do: {', '.join(SCOPES)}")
    create.add_argument("--domain", action="append", metavar="DOMAIN",
                        help="a host it may manage (repeat for several; default: every host)")
    create.add_argument("--expires", type=_lifetime, metavar="TIME",
                        help="valid for this long: seconds, or with a unit s, m, h, d, w "
                             "(default: until revoked)")
    create.add_argument("--label", metavar="TEXT", help="what it is for, shown by list")

    listing = actions.add_parser("list", help="list the tokens (never the tokens themselves)")
    listing.set_defaults(token_run=cmd_list)
    listing.add_argument("--json", action="store_true", help="print JSON")

    revoke = actions.add_parser("revoke", help="revoke a token: it stops working at once")
    revoke.set_defaults(token_run=cmd_revoke)
    revoke.add_argument("id", metavar="ID", help="the token's id, as listed (or the token)")


def _scopes(text):
    import argparse

    unknown = [scope for scope in text.split(",") if scope.strip() not in SCOPES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scope {unknown[0].strip()!r} (scopes: {', '.join(SCOPES)})")
    return [scope.strip() for scope in text.split(",")]


def _lifetime(text):
    """``--expires``: seconds, or a number with a unit as invitations take
    them (``30d``), at most :data:`MAX_LIFETIME`."""
    import argparse

    try:
        return duration(text, MAX_LIFETIME)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration of at most 10 years: {text!r} "
                                         "(use e.g. 3600, 12h, 30d, 52w)") from None


def cmd_create(args):
    import sys
    import time

    from xmppd.ctl import Failure, _domain, _load_config, _store

    config = _load_config(args.config)
    domains = None
    if args.domain:
        domains = [_domain(text) for text in args.domain]
        for domain in domains:
            if domain not in config.hosts:
                raise Failure(f"{domain} is not a hosted domain in {config.path}")
    secret, token = make(args.scope, domains, time.time(), args.expires, args.label)
    with _store(config) as database:
        database.open("hostval", STORE).add(SERVER, token.key, token.value())
    print(f"token {token.id}: {_describe(token)}; it is shown only now", file=sys.stderr)
    print(secret)


def cmd_list(args):
    import time

    from xmppd.ctl import _count, _load_config, _store

    config = _load_config(args.config)
    with _store(config) as database:
        records = database.open("hostval", STORE).items(SERVER)
    tokens = sorted((token for key_, value in records.items()
                     if (token := parse(key_, value)) is not None),
                    key=lambda token: token.created)
    now = time.time()
    if args.json:
        print(json.dumps([{"id": token.id, "scopes": sorted(token.scopes),
                           "domains": None if token.domains is None else sorted(token.domains),
                           "created": _when(token.created),
                           "expires": None if token.expires is None else _when(token.expires),
                           "expired": token.expired(now), "label": token.label}
                          for token in tokens], indent=2))
        return
    for token in tokens:
        print(f"{token.id}  {_describe(token)}"
              + (" (expired)" if token.expired(now) else ""))
    print(_count(len(tokens), "token"))


def cmd_revoke(args):
    from xmppd.ctl import Failure, _load_config, _store

    config = _load_config(args.config)
    with _store(config) as database:
        store = database.open("hostval", STORE)
        found = matching(store.items(SERVER), args.id)
        if found is None or not store.delete(SERVER, found):
            raise Failure(f"no token {args.id!r}")
    print(f"revoked token {found[:ID_LENGTH]}")


def _describe(token):
    from xmppd.options import quote

    domains = "every host" if token.domains is None else ", ".join(sorted(token.domains))
    expires = "never" if token.expires is None else _when(token.expires)
    label = "" if token.label is None else f", {quote(token.label)}"
    return (f"{','.join(sorted(token.scopes))} on {domains}, made {_when(token.created)}, "
            f"expires {expires}{label}")


def _when(seconds):
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")
