"""Which remote domains xmppd federates with (``s2s.allow``, ``s2s.deny``).

A pattern is a domain name, which covers that domain only, or
``*.domain``, which covers every subdomain of it (at any depth) but not the
domain itself.  A domain is allowed when an ``allow`` pattern covers it and
no ``deny`` pattern does: deny wins.  An empty ``allow`` list allows
nothing, so federation is off until the operator lists peers.

The decision is taken before any network activity: an outbound stanza to a
domain not allowed is bounced without a connection attempt, an inbound
stream or dialback request from one is refused with a stream error.
"""

from xmppd.jid import InvalidJID, normalize_domain


def covers(pattern, domain):
    """Whether ``pattern`` (``example.net`` or ``*.example.net``) covers
    ``domain``."""
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return domain == pattern


class FederationPolicy:
    """The allow and deny patterns of one configuration."""

    def __init__(self, allow, deny):
        self.allow = tuple(allow)
        self.deny = tuple(deny)

    def allows(self, domain):
        """Whether xmppd may exchange stanzas with remote ``domain`` (any
        spelling of it: it is normalised as a JID domainpart first)."""
        try:
            domain = normalize_domain(domain)
        except InvalidJID:
            return False
        return (any(covers(p, domain) for p in self.allow)
                and not any(covers(p, domain) for p in self.deny))
