"""Abuse limits for client connections (RFC 6120 §13.12).

- :class:`ConnectionCounter`: connections open in all and per IP address,
  and those not authenticated yet, with their own smaller budget.
- :class:`ReadThrottle`: a token bucket per connection, of bytes or of
  stanzas; when a client sends faster than its rate, reading pauses until
  the bucket refills (nothing is dropped, the client is simply slowed down,
  like Prosody's mod_limits).
- :class:`AuthThrottle`: failed authentications per IP address and per
  account; the answer to each failure after the first is delayed
  (doubling, at most 60 s); after ``auth_ban_after`` failures the address
  is refused for ``auth_ban_time`` seconds, after
  ``auth_account_lock_after`` the account refuses password logins for
  ``auth_account_lock_time`` seconds.
- :class:`CreationBuckets`: a token bucket per key (host and address) for
  what an address may create (anonymous accounts, registrations).

All take the server's clock, so tests drive them with ``task.Clock``.
"""

MAX_AUTH_DELAY = 60.0
MAX_TRACKED = 100000  # addresses, accounts: failures, bans and locks each


def address_of(peer):
    """The IP address of a transport's peer ("local" for UNIX sockets)."""
    return getattr(peer, "host", None) or "local"


class AddressCounter:
    """How many of something (connections) each IP address holds, and how
    many all hold."""

    def __init__(self):
        self.total = 0
        self._by_address = {}

    def admit(self, address, limit, per_address_limit):
        """Count one more for ``address``, or return the stream error
        condition refusing it: ``resource-constraint`` when ``limit`` are
        held in all, ``policy-violation`` when the address holds
        ``per_address_limit``."""
        if self.total >= limit:
            return "resource-constraint"
        if self._by_address.get(address, 0) >= per_address_limit:
            return "policy-violation"
        self.total += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return None

    def release(self, address):
        self.total -= 1
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]

    def count(self, address):
        return self._by_address.get(address, 0)


class ConnectionCounter:
    """Connections open (``limits.max_connections``, per address
    ``max_connections_per_ip``) and, among them, those that have not
    authenticated yet, which have their own smaller budget
    (``limits.max_unauthenticated`` in all; per address what the caller
    says: ``max_unauthenticated_per_ip`` for clients,
    ``s2s_max_unauthenticated_per_ip`` for servers).  Both are checked when
    a connection is accepted, before TLS, so connections that never finish
    a handshake or never authenticate cannot crowd out the others."""

    def __init__(self):
        self.open = AddressCounter()
        self.unauthenticated = AddressCounter()

    @property
    def total(self):
        return self.open.total

    def admit(self, address, limits):
        """Count a new connection from ``address``, or return the stream
        error condition refusing it."""
        return self.open.admit(address, limits.max_connections, limits.max_connections_per_ip)

    def release(self, address):
        self.open.release(address)

    def count(self, address):
        return self.open.count(address)

    def admit_unauthenticated(self, address, limits, per_address_limit):
        """Count a new connection from ``address`` as unauthenticated (it
        leaves the count with :meth:`release_unauthenticated` when it
        authenticates or closes), or return the condition refusing it."""
        return self.unauthenticated.admit(address, limits.max_unauthenticated,
                                          per_address_limit)

    def release_unauthenticated(self, address):
        self.unauthenticated.release(address)


class ReadThrottle:
    """Pause ``reader`` (anything with ``pause()`` and ``resume()``, such
    as a carrier) while what it reads exceeds ``rate`` units (bytes,
    stanzas) per second."""

    __slots__ = ("_reader", "_clock", "_rate", "_burst", "_tokens", "_last", "_resume")

    def __init__(self, reader, clock, rate, burst):
        self._reader = reader
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._last = clock.seconds()
        self._resume = None

    def consumed(self, size, now=None):
        """``size`` units were read (at clock time ``now``, if known)."""
        if now is None:
            now = self._clock.seconds()
        tokens = self._tokens + (now - self._last) * self._rate
        self._tokens = (tokens if tokens < self._burst else self._burst) - size
        self._last = now
        if self._tokens < 0 and self._resume is None:
            self._reader.pause()
            self._resume = self._clock.callLater(-self._tokens / self._rate, self._refilled)

    @property
    def paused(self):
        return self._resume is not None

    def _refilled(self):
        self._resume = None
        self._reader.resume()

    def stop(self):
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None


class FailureCounts:
    """Failed authentications per key (an address, an account): the answer
    to each failure after the first is delayed (doubling, at most
    ``MAX_AUTH_DELAY``); after ``block_after`` failures, each at most
    ``max(block_time, MAX_AUTH_DELAY)`` after the one before, the key is
    blocked for ``block_time`` seconds.  At most ``MAX_TRACKED`` keys are
    remembered; beyond that the one idle longest is forgotten first."""

    def __init__(self, clock):
        self._clock = clock
        self._failures = {}  # key -> (count, time of the last failure), oldest first
        self._blocked = {}  # key -> time the block ends, oldest first

    def __len__(self):
        return len(self._failures) + len(self._blocked)

    def blocked(self, key):
        until = self._blocked.get(key)
        if until is None:
            return False
        if self._clock.seconds() < until:
            return True
        del self._blocked[key]
        return False

    def failed(self, key, first_delay, block_after, block_time):
        """Record a failure; return how many seconds to delay its answer."""
        now = self._clock.seconds()
        count, last = self._failures.pop(key, (0, now))
        if now - last > max(block_time, MAX_AUTH_DELAY):
            count = 0  # quiet for long enough: start again
        count += 1
        if count >= block_after:
            _remember(self._blocked, key, now + block_time)
        else:
            _remember(self._failures, key, (count, now))
        if count < 2 or not first_delay:
            return 0.0
        return min(first_delay * 2 ** (count - 2), MAX_AUTH_DELAY)


def _remember(table, key, value):
    """Set ``table[key]`` as its newest entry, forgetting the oldest one
    when ``MAX_TRACKED`` are held."""
    table.pop(key, None)
    if len(table) >= MAX_TRACKED:
        del table[next(iter(table))]
    table[key] = value


class AuthThrottle:
    """Failed authentications per IP address (``limits.auth_failure_delay``,
    ``auth_ban_after``, ``auth_ban_time``) and per account
    (``auth_account_lock_after``, ``auth_account_lock_time``), so that
    guessing a password from many addresses is slowed down and stopped as
    well as guessing from one."""

    def __init__(self, clock):
        self.addresses = FailureCounts(clock)
        self.accounts = FailureCounts(clock)

    def banned(self, address):
        """Whether ``address`` may not authenticate now."""
        return self.addresses.blocked(address)

    def locked(self, account):
        """Whether ``account`` refuses password logins now."""
        return self.accounts.blocked(account)

    def failed(self, address, limits, account=None):
        """Record a failure from ``address`` and, unless it is locked
        already, for ``account`` (the one the client named, if any); return
        how many seconds to delay its answer (the longer of the two)."""
        delay = self.addresses.failed(address, limits.auth_failure_delay,
                                      limits.auth_ban_after, limits.auth_ban_time)
        if account is None or self.locked(account):
            return delay
        return max(delay, self.accounts.failed(account, limits.auth_failure_delay,
                                               limits.auth_account_lock_after,
                                               limits.auth_account_lock_time))


class CreationBuckets:
    """A token bucket per key (host and address): ``rate`` creations a
    second, at most ``burst`` at once.  A bucket full again is forgotten,
    and at most ``MAX_TRACKED`` are kept (the one used longest ago goes)."""

    def __init__(self, clock):
        self._clock = clock
        self._buckets = {}  # key -> (tokens, time, time it is full), least recently used first

    def take(self, key, rate, burst):
        """Take a token for ``key``; whether there was one."""
        now = self._clock.seconds()
        tokens, last, _ = self._buckets.pop(key, (burst, now, now))
        tokens = min(burst, tokens + (now - last) * rate)
        taken = tokens >= 1
        if taken:
            tokens -= 1
        while self._buckets:
            oldest = next(iter(self._buckets))
            if self._buckets[oldest][2] > now and len(self._buckets) < MAX_TRACKED:
                break
            del self._buckets[oldest]
        self._buckets[key] = (tokens, now, now + (burst - tokens) / rate)
        return taken
