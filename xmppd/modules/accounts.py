"""Accounts on the running server, as the service ``accounts``: what
in-band registration (XEP-0077), invitations (XEP-0401), the admin
commands (XEP-0133) and the HTTP admin API share.

- :meth:`Accounts.create` makes an account with a password: its SCRAM
  verifiers (RFC 5802 §3) are derived off the reactor thread, never the
  password stored.
- :meth:`Accounts.set_password` replaces them and ends the account's other
  streams with ``reset`` (RFC 6120 §4.9.3.16: the credentials they were
  authenticated with are gone); FAST tokens, bound to the old StoredKey,
  stop working with them.
- :meth:`Accounts.delete` removes the account and all it stores, and ends
  its streams and hibernating sessions with ``not-authorized``
  (§4.9.3.12), as ``xmppctl deluser`` has the server do.
- :meth:`Accounts.is_admin`: an account of ``hosts."D".admins`` is an
  administrator of host D.

Accounts of anonymous hosts are made at login (``anonymous``), never here.
"""

from twisted.internet import defer

from xmppd.core.scram import derive_all, prepare_password

# The stream errors closing an account's streams, as xmppd.admin's.
PASSWORD_CHANGED = ("reset", "the password was changed")
DELETED = ("not-authorized", "the account was deleted")


class PasswordRefused(ValueError):
    """A password the OpaqueString profile (RFC 8265 §4.2) refuses, or an
    empty one."""


class NotAPasswordHost(ValueError):
    """A domain that is not hosted here, or whose accounts have no
    password (an anonymous host)."""


class Accounts:
    """The service ``accounts``."""

    def __init__(self, api):
        self._api = api
        self._store = api.open_store("accounts")

    def _check(self, user, password=None):
        host = self._api.hosts.get(user.domain)
        if host is None or host.authentication != "password":
            raise NotAPasswordHost(f"{user.domain} has no password accounts")
        if password is not None:
            try:
                prepare_password(password)
            except ValueError:
                raise PasswordRefused(
                    "the password is empty or has characters that are not allowed") from None

    def _keys(self, password):
        return self._api.streams.offload(derive_all, password)

    def exists(self, user):
        """Whether account ``user`` (a bare JID) exists: a Deferred."""
        return self._store.exists(user.local, user.domain)

    def list(self, domain):
        """The usernames of ``domain``'s accounts, sorted: a Deferred."""
        d = self._store.list(domain)
        d.addCallback(lambda accounts: sorted(username for username, _ in accounts))
        return d

    @defer.inlineCallbacks
    def create(self, user, password):
        """Create account ``user`` (a bare JID) with ``password``: a
        Deferred; it fails with UserExists if the account exists,
        PasswordRefused or NotAPasswordHost."""
        self._check(user, password)
        keys = yield self._keys(password)
        yield self._store.create(user.local, user.domain, keys)
        self._api.log.info("account {user} created", user=user.bare_str)

    @defer.inlineCallbacks
    def set_password(self, user, password, keep=None):
        """Give account ``user`` the new ``password`` and end its streams
        but ``keep`` (the stream that asked, which stays): a Deferred of
        the JIDs of the streams ended; it fails with UserNotFound if there
        is no such account, PasswordRefused or NotAPasswordHost."""
        self._check(user, password)
        keys = yield self._keys(password)
        yield self._store.set_credentials(user.local, user.domain, keys)
        self._api.log.info("password of {user} changed", user=user.bare_str)
        return self._api.streams.end_account(user.bare, *PASSWORD_CHANGED, keep=keep)

    @defer.inlineCallbacks
    def delete(self, user, keep=None):
        """Delete account ``user`` and all it stores, and end its sessions
        but ``keep`` (a stream the caller closes itself): a Deferred of the
        JIDs of the sessions ended; it fails with UserNotFound if there is
        no such account."""
        self._check(user)
        yield self._store.delete(user.local, user.domain)
        self._api.log.info("account {user} deleted", user=user.bare_str)
        return self._api.streams.end_account(user.bare, *DELETED, keep=keep)

    def is_admin(self, user, domain):
        """Whether ``user`` (a JID) administers hosted ``domain``."""
        host = self._api.hosts.get(domain)
        return host is not None and user.bare_str in host.admins


def setup(api):
    api.provide("accounts", Accounts(api))
