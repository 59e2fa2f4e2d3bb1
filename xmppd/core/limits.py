"""Abuse limits for client connections (RFC 6120 §13.12).

- :class:`ConnectionCounter`: connections open in all and per IP address,
  and those not authenticated yet, with their own smaller budget.
- :class:`ReadThrottle`: a token bucket per connection, of bytes or of
  stanzas; when a client sends faster than its rate, reading pauses until
  the bucket refills (nothing is dropped, the client is simply slowed down,
  like Prosody's mod_limits).
- :class:`AuthThrottle`: failed authentications per IP address; the answer
  to each failure after the first is delayed (doubling, at most 60 s) and
  after ``auth_ban_after`` failures the address is refused for
  ``auth_ban_time`` seconds.

All take the server's clock, so tests drive them with ``task.Clock``.
"""

MAX_AUTH_DELAY = 60.0
MAX_TRACKED_ADDRESSES = 100000


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

    def consumed(self, size):
        now = self._clock.seconds()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate) - size
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


class AuthThrottle:
    def __init__(self, clock):
        self._clock = clock
        self._failures = {}  # address -> (count, time of the last failure)
        self._banned = {}  # address -> time the ban ends

    def banned(self, address):
        until = self._banned.get(address)
        if until is None:
            return False
        if self._clock.seconds() < until:
            return True
        del self._banned[address]
        return False

    def failed(self, address, limits):
        """Record a failure; return how many seconds to delay its answer."""
        now = self._clock.seconds()
        count, last = self._failures.get(address, (0, now))
        if now - last > max(limits.auth_ban_time, MAX_AUTH_DELAY):
            count = 0  # quiet for long enough: start again
        count += 1
        if len(self._failures) >= MAX_TRACKED_ADDRESSES:
            self._failures.clear()
        self._failures[address] = (count, now)
        if count >= limits.auth_ban_after:
            self._banned[address] = now + limits.auth_ban_time
            del self._failures[address]
        if count < 2 or not limits.auth_failure_delay:
            return 0.0
        return min(limits.auth_failure_delay * 2 ** (count - 2), MAX_AUTH_DELAY)
