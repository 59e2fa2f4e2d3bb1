"""Invitations (XEP-0401, XEP-0445, XEP-0379): what the ``invites``
module and ``xmppctl invite`` share.

- A token is 144 random bits, URL-safe base64 (XEP-0379 §5.1: from a
  cryptographically secure generator, long enough that it cannot be
  guessed).  It is shown once, when the invitation is made: the
  ``hostval`` store ``invites`` of the domain keeps only its SHA-256
  (:func:`key`), with the record of the invitation as JSON (who invited,
  when it was made and expires, whether it may be used more than once).
  An invitation is listed by its *id*, the first hex digits of that hash.
- Every invitation expires (XEP-0379 §5.2), at most :data:`MAX_LIFETIME`
  after it is made.
- The URI (XEP-0401 §5.1, §5.4; XEP-0445 §2): an operator's invitation
  is ``xmpp:DOMAIN?register;preauth=TOKEN`` (register an account of the
  domain); a user's is ``xmpp:USER@DOMAIN?roster;preauth=TOKEN;ibr=y``
  (add the user as a contact, XEP-0379 §3.2, registering an account of
  the domain if needed, XEP-0445 §2.3), without ``ibr=y`` where
  registration is off (XEP-0401 §5.1: MUST omit it).
- The landing page (XEP-0401 §5.2, XEP-0379 §3.3: a web page for whoever
  has no client yet) is ``BASE/invite/DOMAIN/TOKEN`` on the HTTP
  listener: the domain is in the path, as one external URL may serve
  several hosts.
"""

import argparse
import hashlib
import json
import re
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from xmppd import http
from xmppd.options import expected

STORE = "invites"  # the hostval store
PATH = "invite"  # the landing pages' path prefix on the HTTP listener
ID_LENGTH = 12  # hex digits of an invitation's id
MAX_TOKEN = 100  # characters: anything longer is no token of ours
DURATION = re.compile(r"([0-9]{1,12})([smhdw]?)")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DEFAULT_LIFETIME = 7 * 86400.0  # seconds: [invites] expires
MAX_LIFETIME = 366 * 86400  # seconds: the longest an invitation may be valid


@dataclass(frozen=True)
class Invite:
    """One invitation.  ``token``, ``uri`` and ``url`` (the landing page,
    None without an HTTP listener) are known only when it is made or
    presented; a listed invitation has None.  ``ibr``: whether its domain
    takes registrations with it, when it was presented."""

    key: str  # the SHA-256 of the token, in hex: the store's key
    domain: str
    inviter: str | None  # the inviting account's bare JID; None: the operator
    created: datetime
    expires: datetime
    reusable: bool = False
    token: str | None = None
    uri: str | None = None
    url: str | None = None
    ibr: bool = False
    admin: bool = False  # the account registered with it becomes an admin of the domain

    @property
    def id(self):
        return self.key[:ID_LENGTH]

    def value(self):
        """The record the store keeps (JSON)."""
        return json.dumps({"inviter": self.inviter, "created": self.created.timestamp(),
                           "expires": self.expires.timestamp(), "reusable": self.reusable,
                           "admin": self.admin})

    def expired(self, now):
        """Whether it has expired at ``now`` (seconds since the epoch)."""
        return self.expires.timestamp() <= now


def new_token():
    return secrets.token_urlsafe(18)


def key(token):
    """The store's key of ``token``: its SHA-256 in hex."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _moment(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc)


def make(domain, now, lifetime, inviter=None, reusable=False, base_url=None, ibr=True,
         admin=False):
    """A new invitation of ``domain`` with a fresh token, made at ``now``
    and valid ``lifetime`` seconds (see :func:`presented`)."""
    token = new_token()
    invite = Invite(key(token), domain, inviter, _moment(now), _moment(now + lifetime),
                    reusable, admin=admin)
    return presented(invite, token, base_url, ibr)


def presented(invite, token, base_url=None, ibr=True):
    """``invite`` with its ``token``, URI and landing page URL (from
    ``base_url``, the HTTP listener's; None without); ``ibr``: whether the
    domain takes registrations with it (``ibr=y`` in a user's URI)."""
    if invite.inviter is None:
        uri = f"xmpp:{quote(invite.domain, safe='')}?register;preauth={token}"
    else:
        uri = (f"xmpp:{quote(invite.inviter, safe='@')}?roster;preauth={token}"
               + (";ibr=y" if ibr else ""))
    url = None if base_url is None else \
        f"{base_url}{PATH}/{quote(invite.domain, safe='')}/{token}"
    return Invite(invite.key, invite.domain, invite.inviter, invite.created, invite.expires,
                  invite.reusable, token, uri, url, ibr, invite.admin)


def parse(domain, key_, value):
    """The invitation the store keeps under ``key_``; None if its record
    is not one (nothing of ours)."""
    try:
        record = json.loads(value)
        return Invite(key_, domain, record["inviter"], _moment(record["created"]),
                      _moment(record["expires"]), bool(record["reusable"]),
                      admin=bool(record.get("admin")))
    except (ValueError, TypeError, KeyError, OverflowError):
        return None


def lookup_key(token):
    """The store key to look ``token`` up by, or None for what cannot be a
    token (empty, too long)."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN:
        return None
    return key(token)


def matching(keys, token_or_id):
    """The key among ``keys`` that ``token_or_id`` (a token, or an id as
    listed: at least :data:`ID_LENGTH` hex digits) names, or None."""
    hashed = lookup_key(token_or_id)
    if hashed in keys:
        return hashed
    if re.fullmatch(f"[0-9a-f]{{{ID_LENGTH},64}}", token_or_id or ""):
        found = [k for k in keys if k.startswith(token_or_id)]
        if len(found) == 1:
            return found[0]
    return None


def duration(text, maximum=MAX_LIFETIME):
    """Seconds in ``text``: a number with an optional unit s, m, h, d or w
    (``7d``); ValueError if it is none, zero or more than ``maximum``
    (an invitation's :data:`MAX_LIFETIME`)."""
    match = DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 3600, 12h, 7d, 2w)")
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if seconds > maximum:
        raise ValueError(f"{text!r} is longer than {maximum // 86400}d")
    return seconds


def lifetime(value, key_):
    """The option check of ``[invites] expires``: seconds (a number), or a
    duration as :func:`duration` reads it (``"7d"``)."""
    if isinstance(value, str):
        try:
            return float(duration(value))
        except ValueError:
            pass
    elif (not isinstance(value, bool) and isinstance(value, (int, float))
          and 0 < value <= MAX_LIFETIME):
        return float(value)
    raise expected(key_, f"seconds (a number > 0, at most {MAX_LIFETIME}) or a duration "
                   f"such as \"7d\"", value)


# xmppctl invite


def add_commands(command):
    invite = command("invite", cmd_invite, "make an invitation to register on a domain "
                     "(XEP-0401), list or revoke them")
    invite.add_argument("domain", metavar="DOMAIN")
    invite.add_argument("--expires", metavar="TIME", type=_duration,
                        help="valid for this long: seconds, or with a unit s, m, h, d, w "
                             "(default: [invites] expires, 7d; at most 366d)")
    invite.add_argument("--reusable", action="store_true",
                        help="may be used for several accounts until it expires")
    invite.add_argument("--inviter", metavar="JID",
                        help="an invitation from this account of DOMAIN: the new account "
                             "and it become contacts (XEP-0379)")
    invite.add_argument("--admin", action="store_true",
                        help="the account registered with it becomes an admin of DOMAIN "
                             "(single use; see 'xmppctl admins')")
    action = invite.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list the valid invitations")
    action.add_argument("--revoke", metavar="TOKEN",
                        help="revoke the invitation of this token (or id, as listed)")


    admins = command("admins", cmd_admins, "list the admins of a domain; take an admin "
                     "invitation's rights back")
    admins.add_argument("domain", metavar="DOMAIN")
    admins.add_argument("--revoke", metavar="JID",
                        help="this account, made an admin by an invitation, is one no more")


def _duration(text):
    try:
        return duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_invite(args):
    from xmppd.ctl import Failure, _account_jid, _domain, _load_config, _store

    config = _load_config(args.config)
    domain = _domain(args.domain)
    host = config.hosts.get(domain)
    if host is None or host.authentication != "password":
        raise Failure(f"{domain} is not a hosted domain with password accounts in {config.path}")
    making = (args.expires is not None or args.reusable or args.inviter is not None
              or args.admin)
    if making and (args.list or args.revoke is not None):
        raise Failure("--expires, --reusable, --inviter and --admin make an invitation: "
                      "not with --list or --revoke")
    if args.admin and (args.reusable or args.inviter is not None):
        raise Failure("an --admin invitation is the operator's, for one account: "
                      "not with --reusable or --inviter")
    inviter = None if args.inviter is None else _account_jid(config, args.inviter)
    if inviter is not None and inviter.domain != domain:
        raise Failure(f"the inviter {inviter.bare_str} is not an account of {domain}")
    with _store(config) as store:
        invites = store.open("hostval", STORE)
        if args.list:
            _list(invites, domain, time.time())
        elif args.revoke is not None:
            found = matching(invites.items(domain), args.revoke)
            if found is None or not invites.delete(domain, found):
                raise Failure(f"no invitation {args.revoke!r} on {domain}")
            print(f"revoked invitation {found[:ID_LENGTH]} on {domain}")
        else:
            if inviter is not None and not store.account_exists(inviter.local, domain):
                raise Failure(f"no account {inviter.bare_str}")
            register = config.options("register", domain)
            made = make(domain, time.time(), args.expires or config.options("invites", domain)
                        .expires, None if inviter is None else inviter.bare_str, args.reusable,
                        http.base_url(config, domain), register.allow, args.admin)
            invites.add(domain, made.key, made.value())
            _show(made)


def _list(invites, domain, now):
    """Print the valid invitations of ``domain``; delete the expired ones."""
    listed = []
    for key_, value in invites.items(domain).items():
        invite = parse(domain, key_, value)
        if invite is not None and invite.expired(now):
            invites.delete(domain, key_)
        elif invite is not None:
            listed.append(invite)
    for invite in sorted(listed, key=lambda invite: invite.created):
        print(f"{invite.id}  expires {_when(invite.expires)}  "
              f"{'reusable' if invite.reusable else 'single use'}  "
              f"by {invite.inviter or 'the operator'}{'  admin' if invite.admin else ''}")
    if not listed:
        print(f"no valid invitations on {domain}")


def _when(moment):
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _show(invite):
    print(f"invitation {invite.id} to {invite.domain}, "
          f"{'reusable' if invite.reusable else 'single use'}, "
          f"{'for an admin, ' if invite.admin else ''}expires {_when(invite.expires)}")
    print(invite.uri)
    print(invite.url or "(no landing page: there is no [http] listener)")
    if not invite.ibr:
        print(f"xmppctl: warning: registration is off on {invite.domain}: set "
              f"[hosts.\"{invite.domain}\".register] allow = true (or [register]) "
              f"for the invitation to work", file=sys.stderr)


# xmppctl admins


def cmd_admins(args):
    from xmppd.ctl import Failure, _account_jid, _ask_server, _domain, _load_config, _store
    from xmppd.modules.accounts import ADMINS_STORE

    config = _load_config(args.config)
    domain = _domain(args.domain)
    host = config.hosts.get(domain)
    if host is None:
        raise Failure(f"{domain} is not a hosted domain in {config.path}")
    with _store(config) as store:
        granted = store.open("hostval", ADMINS_STORE)
        if args.revoke is None:
            for jid in host.admins:
                print(f"{jid}  (configuration)")
            for local, value in sorted(granted.items(domain).items()):
                print(f"{local}@{domain}  (invitation {json.loads(value).get('invitation')})")
            return
        jid = _account_jid(config, args.revoke)
        if jid.domain != domain or not granted.delete(domain, jid.local):
            raise Failure(f"{jid.bare_str} is no admin of {domain} by invitation"
                          + (" (it is one in the configuration)"
                             if jid.bare_str in host.admins else ""))
    print(f"{jid.bare_str} is no admin of {domain} any more")
    try:
        _ask_server(config, "admin-revoked", jid=jid.bare_str)
    except Failure as e:
        print(f"xmppctl: note: {e}: a server started later knows", file=sys.stderr)
