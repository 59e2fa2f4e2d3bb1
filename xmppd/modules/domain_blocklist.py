"""Domains a host refuses, as Prosody's mod_s2s_blacklist and ejabberd's
s2s access rules do, but per hosted domain and per stanza.

``domain_blocklist.domains`` lists patterns, and a host's own list
(``[hosts."DOMAIN".domain_blocklist]``) replaces it for that host: a
domain, which covers that domain only, or ``*.domain``, which covers every
subdomain of it but not the domain itself (as ``s2s.allow`` and
``s2s.deny`` do, :func:`xmppd.s2s.policy.covers`).  Between a host (its
accounts, the host itself, its services and components) and a domain its
list covers:

- inbound, from the blocked domain: presence is dropped without an
  answer, and so are groupchat messages, iq responses and errors; other
  messages and iq requests are answered ``service-unavailable``, as for
  an account that does not exist (RFC 6120 §8.3.3.19, RFC 6121 §8.5.1),
  the way a user's block list answers (XEP-0191 §3.3);
- outbound, to the blocked domain: what a client sends is answered
  ``not-allowed`` (RFC 6120 §8.3.3.10: "sending to entities at a
  blacklisted domain") with a text naming the domain; what the server
  sends on the host's behalf (presence broadcasts and probes,
  subscription answers, iq results) is dropped, but not errors, which the
  sender of a refused stanza is owed.

Nothing within one host is refused, and a connection to a blocked domain
is not closed: its stanzas are stopped one by one.  The check runs on
every pre-event, after the closed-domain policy and before the users'
block lists, so a refused stanza is not stored, copied or delivered.  The
lists are read once, and again after every reload (``config/reloaded``).
"""

from xmppd.config import _domain_pattern
from xmppd.core.events import CONFIG_RELOADED, pre_events
from xmppd.options import Option, Options, strings
from xmppd.s2s.policy import covers

PRIORITY = 90  # after closed domains (100), before blocking (50)


def patterns(value, key):
    """An array of domains and ``*.domain`` patterns, normalised."""
    return tuple(_domain_pattern(pattern, f"{key}[{i}]")
                 for i, pattern in enumerate(strings(value, key)))


OPTIONS = Options(  # [domain_blocklist], and [hosts."DOMAIN".domain_blocklist]
    domains=Option((), patterns),
)


def setup(api):
    rules = None  # hosted domain -> its patterns (hosts that have some), read when needed

    def compiled():
        nonlocal rules
        if rules is None:
            rules = {host: api.options_for(host).domains for host in api.hosts
                     if api.options_for(host).domains and api.enabled(host)}
        return rules

    def forget(config):
        nonlocal rules
        rules = None

    def blocks(found, host, domain):
        """Whether hosted domain ``host`` refuses ``domain``."""
        listed = found.get(host)
        return bool(listed) and api.owner(domain) != host and any(
            covers(pattern, domain) for pattern in listed)

    def check(stanza):
        found = compiled()
        if not found or stanza.sender is None:
            return False
        sender, recipient = stanza.sender.domain, stanza.recipient.domain
        if blocks(found, api.owner(sender), recipient):
            return outbound(stanza)
        if blocks(found, api.owner(recipient), sender):
            return inbound(stanza)
        return False

    def outbound(stanza):
        if stanza.origin is not None:
            api.bounce(stanza, "not-allowed",
                       f"{stanza.recipient.domain} is blocked by this server")
            return True
        return stanza.type != "error"

    def inbound(stanza):
        api.log.debug("{kind} from blocked {sender} to {recipient} refused",
                      kind=stanza.kind, sender=stanza.sender, recipient=stanza.recipient)
        if stanza.kind != "presence" and stanza.type != "groupchat":
            api.bounce(stanza, "service-unavailable")
        return True

    api.hook(CONFIG_RELOADED, forget)
    for event in pre_events():
        api.hook(event, check, priority=PRIORITY)
