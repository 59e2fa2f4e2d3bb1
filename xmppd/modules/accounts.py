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
  administrator of host D, and so is an account registered with an admin
  invitation (``xmppctl invite --admin``, :meth:`Accounts.make_admin`),
  kept in the ``hostval`` store ``admins`` until ``xmppctl admins
  --revoke`` or the account's deletion.
- :meth:`Accounts.disable` keeps an account but refuses its logins, with
  any mechanism (SASL ``account-disabled``, RFC 6120 §6.5.1), and ends its
  sessions with ``not-authorized``, until :meth:`Accounts.enable`.  The
  disabled accounts are kept in the ``hostval`` store ``disabled`` (the
  reason) and in memory (:class:`Marks`), so that a login pays no lookup;
  the other nodes of a cluster are told of each change of a mark.

Accounts of anonymous hosts are made at login (``anonymous``), never here.
"""

import json

from twisted.internet import defer

from xmppd.core.events import CONFIG_RELOADED

from xmppd.core.scram import derive_all, prepare_password
from xmppd.storage import UserNotFound

# The stream errors closing an account's streams, as xmppd.admin's.
PASSWORD_CHANGED = ("reset", "the password was changed")
DELETED = ("not-authorized", "the account was deleted")
DISABLED = ("not-authorized", "the account was disabled")
DISABLED_STORE = "disabled"  # the hostval store of the disabled accounts
ADMINS_STORE = "admins"  # ... of the admins made by invitations (xmppctl invite --admin)
MARKS = (DISABLED_STORE, ADMINS_STORE)  # what goes with a deleted account
# Told to the other nodes of a cluster (api.tell_cluster), which keep the
# marks in memory too; argument: JSON [store, bare JID, marked].
MARK_CHANGED = "accounts/mark"


class PasswordRefused(ValueError):
    """A password the OpaqueString profile (RFC 8265 §4.2) refuses, or an
    empty one."""


class NotAPasswordHost(ValueError):
    """A domain that is not hosted here, or whose accounts have no
    password (an anonymous host)."""


class Marks:
    """Accounts marked in a ``hostval`` store (the account's domain, its
    localpart, a JSON record), also kept in memory, so that asking costs no
    lookup: read at start and after every reload (which may add hosts).
    Until the first reading succeeds, :meth:`loaded` has callers wait; if
    it fails, they fail, and the next caller reads again."""

    def __init__(self, api, name):
        self._api = api
        self.name = name
        self.store = api.open_store("hostval", name)
        self._marked = None  # bare JIDs (text), once read
        self._waiting = []  # Deferreds of callers of loaded() before then
        self._loading = None  # the Deferred of the reading under way
        self._added = set()  # marked while it was under way: it may not see them

    def load(self):
        domains = [domain for domain, host in self._api.hosts.items()
                   if host.authentication == "password"]
        self._added = set()
        self._loading = defer.gatherResults(
            [self.store.items(domain) for domain in domains], consumeErrors=True)

        def read(found):
            self._marked = self._added | {f"{local}@{domain}" for domain, locals_
                                          in zip(domains, found) for local in locals_}
            self._release(lambda d: d.callback(None))

        def failed(failure):
            self._api.log.failure("cannot read the {name} accounts", failure, name=self.name)
            self._release(lambda d: d.errback(failure))

        self._loading.addCallbacks(read, failed)
        self._loading.addBoth(lambda _: setattr(self, "_loading", None))

    def _release(self, fire):
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            fire(d)

    def loaded(self):
        """None if the marked accounts are known, else a Deferred that
        fires once they are (it fails if they cannot be read)."""
        if self._marked is not None:
            return None
        d = defer.Deferred()
        self._waiting.append(d)
        if self._loading is None:
            self.load()
        return d

    def __contains__(self, user):
        """Whether account ``user`` (a JID) is marked (False until read)."""
        return self._marked is not None and user.bare_str in self._marked

    def add(self, user, **record):
        """Mark account ``user``, with ``record`` (and the time): a Deferred."""
        record["time"] = self._api.clock.seconds()
        d = self.store.set(user.domain, user.local, json.dumps(record))
        d.addCallback(lambda _: self._mark(user.bare_str))
        return d.addCallback(lambda _: self._tell(user, True))

    def _mark(self, jid):
        if self._loading is not None:
            self._added.add(jid)
        if self._marked is not None:
            self._marked.add(jid)

    def discard(self, user):
        """Unmark account ``user``: a Deferred of whether it was marked."""
        self._unmark(user.bare_str)
        d = self.store.delete(user.domain, user.local)
        return d.addCallback(lambda was: self._tell(user, False) or bool(was))

    def forget(self, user):
        """Unmark account ``user`` in memory only (``xmppctl`` changed the
        database), here and on the other nodes of a cluster."""
        self._unmark(user.bare_str)
        self._tell(user, False)

    def _unmark(self, jid):
        if self._marked is not None:
            self._marked.discard(jid)

    def _tell(self, user, marked):
        """The other nodes of a cluster keep the marks in memory too."""
        self._api.tell_cluster(MARK_CHANGED, json.dumps([self.name, user.bare_str, marked]))

    def told(self, jid, marked):
        """Another node of the cluster marked (or unmarked) ``jid`` (text)."""
        if marked:
            self._mark(jid)
        else:
            self._unmark(jid)


class Accounts:
    """The service ``accounts``.  Its users, which do not import this
    module, find the refusal and the stream error of a deletion on it."""

    PasswordRefused = PasswordRefused
    DELETED = DELETED

    def __init__(self, api):
        self._api = api
        self._store = api.open_store("accounts")
        self._disabled = Marks(api, DISABLED_STORE)
        self._admins = Marks(api, ADMINS_STORE)

    def load(self):
        """Read the disabled accounts and the admins made by invitations."""
        self._disabled.load()
        self._admins.load()

    def loaded(self):
        """None if the disabled accounts are known, else a Deferred that
        fires once they are (logins wait for it)."""
        return self._disabled.loaded()

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
        # The marks first: a failure then leaves an account without rights,
        # never an admin mark that a new account of the name would inherit.
        yield self._disabled.discard(user)
        yield self._admins.discard(user)
        yield self._store.delete(user.local, user.domain)
        self._api.log.info("account {user} deleted", user=user.bare_str)
        return self._api.streams.end_account(user.bare, *DELETED, keep=keep)

    def disabled(self, user):
        """Whether account ``user`` (a JID) is disabled (False until the
        disabled accounts are read: see :meth:`loaded`)."""
        return user in self._disabled

    @defer.inlineCallbacks
    def disable(self, user, reason="", by=None):
        """Disable account ``user`` and end its sessions: a Deferred of the
        JIDs of the sessions ended; it fails with UserNotFound if there is
        no such account."""
        self._check(user)
        if not (yield self.exists(user)):
            raise UserNotFound(user.bare_str)
        yield self._disabled.add(user, reason=reason, by=None if by is None else by.bare_str)
        self._api.log.info("account {user} disabled{reason}", user=user.bare_str,
                           reason=f": {reason}" if reason else "")
        return self._api.streams.end_account(user.bare, *DISABLED)

    @defer.inlineCallbacks
    def enable(self, user):
        """Let disabled account ``user`` log in again: a Deferred of whether
        it was disabled."""
        self._check(user)
        was = yield self._disabled.discard(user)
        if was:
            self._api.log.info("account {user} enabled", user=user.bare_str)
        return was

    def is_admin(self, user, domain):
        """Whether ``user`` (a JID) administers hosted ``domain``: one of
        its ``admins``, or an account an admin invitation made."""
        host = self._api.hosts.get(domain)
        return host is not None and (user.bare_str in host.admins
                                     or (user.domain == domain and user in self._admins))

    def forget(self, user, admin_only=False):
        """``xmppctl`` deleted account ``user`` (or, ``admin_only``, revoked
        its admin invitation) in the database: forget it in memory."""
        self._admins.forget(user)
        if not admin_only:
            self._disabled.forget(user)

    def mark_changed_elsewhere(self, argument):
        """Another node of the cluster changed a mark (:data:`MARK_CHANGED`)."""
        name, jid, marked = json.loads(argument)
        for marks in (self._disabled, self._admins):
            if marks.name == name:
                marks.told(jid, marked)

    @defer.inlineCallbacks
    def make_admin(self, user, invitation):
        """Make account ``user`` an admin of its host, as admin invitation
        ``invitation`` (its id) says: a Deferred."""
        self._check(user)
        yield self._admins.add(user, invitation=invitation)
        self._api.log.info("account {user} made an admin by invitation {id}",
                           user=user.bare_str, id=invitation)


def setup(api):
    accounts = Accounts(api)
    api.provide("accounts", accounts)
    accounts.load()
    api.hook(CONFIG_RELOADED, lambda config: accounts.load())
    api.hook(MARK_CHANGED, accounts.mark_changed_elsewhere)
