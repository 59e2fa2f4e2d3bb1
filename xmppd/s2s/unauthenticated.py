"""Incoming server streams that no domain has authenticated on yet, counted
per IP address (RFC 6120 §13.12: connection limits against denial of
service).

A stream counts from its first byte until SASL EXTERNAL (XEP-0178) or
dialback (XEP-0220) authenticates a domain on it, or until it closes; a
new stream from an address that already has
``limits.s2s_max_unauthenticated_per_ip`` of them is refused.  Together
with ``s2s.negotiation_timeout`` this bounds what a peer can hold open
without proving who it is.
"""


class UnauthenticatedStreams:
    """How many unauthenticated incoming streams each address has open."""

    def __init__(self):
        self._by_address = {}

    def admit(self, address, limit):
        """Count one more stream from ``address``; False (not counted) when
        it already has ``limit``."""
        count = self._by_address.get(address, 0)
        if count >= limit:
            return False
        self._by_address[address] = count + 1
        return True

    def release(self, address):
        """One stream of ``address`` is authenticated or gone."""
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]

    def count(self, address):
        return self._by_address.get(address, 0)
