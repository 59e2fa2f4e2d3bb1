"""Who a request comes from when a reverse proxy forwards it.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` (the de facto headers;
RFC 7239 §5.2 and §5.4 give their meaning) are believed only from the
addresses of ``[http] trusted_proxies`` and from a UNIX socket listener
(whose file permissions say who may connect): from anyone else they are
ignored, or any client could claim any address and escape the limits and
bans counted by address.
"""

import ipaddress

from xmppd.core.limits import address_of


def trusted(peer, proxies):
    """Whether the transport ``peer`` is a trusted proxy."""
    host = getattr(peer, "host", None)
    return not host or _normal(host) in proxies


def client_address(peer, forwarded_for, proxies):
    """The client's IP address: the rightmost hop of ``forwarded_for``
    that is not itself a trusted proxy, if ``peer`` is one; else the
    peer's own.  A malformed header is ignored."""
    own = address_of(peer)
    if not forwarded_for or not trusted(peer, proxies):
        return own
    hops = [_normal(hop.strip()) for hop in forwarded_for.split(",")]
    if None in hops:
        return own
    for hop in reversed(hops):
        if hop not in proxies:
            return hop
    return hops[0]


def forwarded_secure(peer, forwarded_proto, proxies):
    """Whether a trusted proxy says it received the request over TLS."""
    return (forwarded_proto or "").strip().lower() == "https" and trusted(peer, proxies)


def _normal(address):
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
