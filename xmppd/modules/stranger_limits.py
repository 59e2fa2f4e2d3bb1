"""Rate limits on subscription requests from strangers (RFC 6120 §13.12),
as ejabberd's mod_block_strangers and Prosody's mod_limits keep spam bots
in check.

A subscription request (``<presence type='subscribe'/>``, RFC 6121 §3.1.3)
to an account of a host, from a JID that is not in the account's roster,
counts against token buckets of that host, first:

- its sender's (bare JID, local or remote): ``stranger_limits.per_sender``
  requests an hour to the host's accounts;
- then, if that one had room, its sender's domain's, when that domain is
  not hosted here: ``stranger_limits.per_domain`` requests an hour (so a
  sender over its own limit does not use up its domain's).

A bucket holds at most its hourly number and refills evenly over the hour
(:class:`xmppd.core.limits.CreationBuckets`, on the server's clock).  A
request that finds a bucket empty is dropped without an answer and not
stored, as the contact's server may silently ignore a request for an
account that does not exist (RFC 6121 §8.5.1), so the sender learns
nothing (RFC 6120 §13.11); the first refusal of each bucket in an hour is
logged.  Requests from contacts in the roster (such as a re-subscription
or one the account pre-approved, RFC 6121 §3.4) are never counted or
dropped.  ``0`` turns a limit off.  Both may be set per host
(``[hosts."DOMAIN".stranger_limits]``); a reload applies them.  The
buckets are kept in memory.

Runs on the recipient's ``presence/bare`` and ``presence/full`` events,
ahead of push notifications (XEP-0357) and of the ``subscription`` module,
which then handle what passes.
"""

from xmppd.core.events import BARE, FULL, presence_event
from xmppd.core.limits import CreationBuckets, _remember
from xmppd.options import Option, Options, integer

WINDOW = 3600.0  # seconds: the limits are per hour
PRIORITY = 20  # before the push module (10) and the subscription module (0)

OPTIONS = Options(  # [stranger_limits], and [hosts."DOMAIN".stranger_limits]
    per_sender=Option(10, integer(0)),
    per_domain=Option(100, integer(0)),
)


def setup(api):
    buckets = CreationBuckets(api.clock)
    warned = {}  # bucket key -> when a refusal was last logged
    roster = api.open_store("roster")

    def limits(host, sender):
        """The ``(key, hourly rate)`` buckets, in order, a request from
        ``sender`` to an account of ``host`` counts against."""
        options = api.options_for(host)
        found = [((host, "sender", sender.full), options.per_sender)]
        if api.owner(sender.domain) is None:
            found.append(((host, "domain", sender.domain), options.per_domain))
        return [(key, rate) for key, rate in found if rate]

    def inbound(stanza):
        if stanza.type != "subscribe" or stanza.sender is None:
            return False
        user, contact = stanza.recipient.bare, stanza.sender.bare
        if contact == user or not api.enabled(user.domain):
            return False
        counted = limits(user.domain, contact)
        if not counted:
            return False
        d = roster.get_item(user.local, user.domain, contact.full)
        d.addCallback(lambda item: item is None and over(counted, contact, user))
        return d.addErrback(lambda failure: api.log.failure(
            "cannot read the roster of {user}", failure, user=user) or False)

    def over(counted, contact, user):
        """Count a stranger's request; True (dropped) at the first empty bucket."""
        for key, rate in counted:
            if not buckets.take(key, rate / WINDOW, rate):
                warn(key, contact, user)
                return True
        return False

    def warn(key, contact, user):
        """Log the refusal if none of ``key`` was logged in the last hour."""
        now = api.clock.seconds()
        if now - warned.get(key, now - WINDOW) < WINDOW:
            return
        _remember(warned, key, now)
        host, what, name = key
        api.log.info("subscription requests to {host} from the {what} {name} are over the "
                     "hourly limit: dropped (first: {contact} to {user})",
                     host=host, what=what, name=name, contact=contact, user=user)

    for target in (BARE, FULL):
        api.hook(presence_event(target), inbound, priority=PRIORITY)
