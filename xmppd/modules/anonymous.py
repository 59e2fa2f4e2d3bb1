"""Anonymous hosts (SASL ANONYMOUS, RFC 4505; XEP-0175): accounts that
last as long as their session, and limits on how many there are.

A host with ``authentication = "anonymous"`` keeps everything its accounts
store in memory (:mod:`xmppd.storage.memory`, set up at start), never in
the database: ``xmppctl users`` never lists them, a restart forgets them.

- Creation: when SASL ANONYMOUS succeeds, the SASL modules have the service
  ``anonymous`` (:meth:`AnonymousAccounts.create`) create the account under
  the random username the mechanism chose (XEP-0175 §3: a temporary,
  unique bare JID).  XEP-0175 §3 has the server restrict anonymous users
  against abuse (XEP-0205): an address creates at most
  ``max_per_ip_per_minute`` accounts a minute on a host (a token bucket
  holding ``max_per_ip_burst``), and a host has at most ``max_sessions``
  anonymous accounts at once.  Past either the login fails with
  ``temporary-auth-failure`` (RFC 6120 §6.5.11: a condition of the server,
  worth trying again later).
- End: the account, with all it stored (roster, archive, PEP nodes,
  uploads' slots...), is deleted when its session is unbound
  (``session/unbound``), after the other modules' handlers, so its
  unavailable presence still goes out.  A session hibernating for stream
  management (XEP-0198 §5) is still bound: its account stays until it
  ends.  An account whose stream binds no resource within
  ``c2s.auth_timeout`` seconds of its creation is deleted, and the stream
  closed.
- No offline storage (XEP-0160): the account never comes back for its
  messages.  A message for an account of an anonymous host without a
  bound session (ended, or never there) is refused with
  ``service-unavailable`` (RFC 6121 §8.5.2.2.1), a headline aside (the
  message module drops it); so are the unacknowledged messages of an
  ending session (XEP-0198 §4), which would otherwise go to offline
  storage.
- Other domains: as every host, an anonymous host talks to no other domain,
  remote or hosted here, unless ``cross_domain_messages = true``
  (``closed_domain``; XEP-0175 §3: no communication with remote servers).

The anonymous hosts are those of the configuration at start: a reload that
makes a host anonymous, or no longer anonymous, is logged as a warning
and applies at the next restart.
"""

from twisted.internet import defer

from xmppd.core.events import (CONFIG_RELOADED, MESSAGE_OFFLINE, SESSION_BOUND,
                               SESSION_UNBOUND)
from xmppd.core.limits import CreationBuckets
from xmppd.core.sasl import SaslFailure
from xmppd.core.stream import cancelled
from xmppd.jid import JID
from xmppd.options import Option, Options, integer, positive_number
from xmppd.storage.memory import MemoryRouted

OPTIONS = Options(  # [anonymous]
    max_per_ip_per_minute=Option(10.0, positive_number),  # accounts created from one address
    max_per_ip_burst=Option(10, integer(1)),
    max_sessions=Option(1000, integer(1)),  # anonymous accounts of one host at once
)

UNBOUND_PRIORITY = -100  # after the other handlers, which may still read the account
OFFLINE_PRIORITY = 20  # before push notifications and offline storage


class AnonymousAccounts:
    """The service ``anonymous``: the accounts of anonymous hosts, from
    their creation at login to the end of their session."""

    def __init__(self, api):
        self._api = api
        self._store = api.open_store("accounts")
        self._buckets = CreationBuckets(api.clock)
        # hosted domain -> username -> the call that ends it unless it binds
        # in time, or None once bound
        self._accounts = {}

    def _kept_in_memory(self):
        storage = self._api.storage
        return storage.hosts if isinstance(storage, MemoryRouted) else frozenset()

    def serves(self, domain):
        """Whether ``domain`` takes anonymous logins: it was an anonymous
        host at start and still is, and this module is enabled there."""
        host = self._api.hosts.get(domain)
        return (host is not None and host.authentication == "anonymous"
                and domain in self._kept_in_memory() and self._api.enabled(domain))

    def create(self, stream, username):
        """Create the account ``username`` (a fresh random name) of the
        domain of ``stream``, the stream that authenticates as it (from
        ``stream.address``); a Deferred that fires with ``username`` once
        the account exists, or fails with :class:`SaslFailure`:
        ``temporary-auth-failure`` when a limit refuses it or the storage
        fails, ``invalid-mechanism`` when the domain takes no anonymous
        logins."""
        domain, api = stream.domain, self._api
        if not self.serves(domain):
            return defer.fail(SaslFailure("invalid-mechanism"))
        options = api.options_for(domain)
        count = len(self._accounts.get(domain, ()))
        if count >= options.max_sessions:
            api.log.warn("{host} has {count} anonymous sessions: refusing {peer}",
                         host=domain, count=count, peer=stream.peer)
            return defer.fail(SaslFailure("temporary-auth-failure",
                                          "too many anonymous sessions; try again later"))
        if not self._buckets.take((domain, stream.address), options.max_per_ip_per_minute / 60,
                                  options.max_per_ip_burst):
            api.log.info("too many anonymous logins to {host} from {address}", host=domain,
                         address=stream.address)
            return defer.fail(SaslFailure(
                "temporary-auth-failure",
                "too many anonymous logins from your address; try again later"))
        user = JID(username, domain, None)
        self._accounts.setdefault(domain, {})[username] = api.clock.callLater(
            api.config.c2s.auth_timeout, self._not_bound, stream, user)
        d = self._store.create(username, domain, {})
        d.addCallbacks(lambda _: username, self._not_created, errbackArgs=(user,))
        return d

    def _not_created(self, failure, user):
        self._forget(user)
        self._api.log.error("cannot create the anonymous account {user}: {error}",
                            user=user, error=failure.value)
        raise SaslFailure("temporary-auth-failure", "cannot create the account")

    def bound(self, session):
        accounts = self._accounts.get(session.jid.domain)
        if accounts is not None and accounts.get(session.jid.local) is not None:
            accounts[session.jid.local] = cancelled(accounts[session.jid.local])

    def unbound(self, session):
        user = session.jid.bare
        if not self._api.sessions.count(user):
            self._delete(user)

    def _not_bound(self, stream, user):
        stream.close("connection-timeout", "no resource bound in time")
        self._delete(user)

    def _delete(self, user):
        """Delete the account and everything stored for it, once."""
        if user.local not in self._accounts.get(user.domain, ()):
            return
        self._forget(user)
        self._store.delete(user.local, user.domain).addErrback(
            lambda failure: self._api.log.error("cannot delete the anonymous account {user}: "
                                                "{error}", user=user, error=failure.value))

    def _forget(self, user):
        accounts = self._accounts[user.domain]
        cancelled(accounts.pop(user.local))
        if not accounts:
            del self._accounts[user.domain]

    def offline(self, stanza):
        """Refuse a message that would be kept for an anonymous account
        with no session (True: claimed)."""
        user = stanza.recipient.bare
        if (stanza.type == "headline" or not self.serves(user.domain)
                or self._api.sessions.count(user)):
            return False
        return self._api.bounce(stanza, "service-unavailable")

    def reloaded(self, config):
        kept = self._kept_in_memory()
        anonymous = {name for name, host in config.hosts.items()
                     if host.authentication == "anonymous"}
        for name in sorted(anonymous ^ kept):
            if name in config.hosts:
                self._api.log.warn("hosts.{host}.authentication changed; it takes effect "
                                   "after a restart", host=name)


def setup(api):
    accounts = AnonymousAccounts(api)
    api.provide("anonymous", accounts)
    api.hook(SESSION_BOUND, accounts.bound)
    api.hook(SESSION_UNBOUND, accounts.unbound, priority=UNBOUND_PRIORITY)
    api.hook(MESSAGE_OFFLINE, accounts.offline, priority=OFFLINE_PRIORITY)
    api.hook(CONFIG_RELOADED, accounts.reloaded)
