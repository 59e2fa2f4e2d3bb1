"""Closed domains, as in the Vines server.

A hosted domain is a closed system unless its ``hosts."DOMAIN"`` section sets
``cross_domain_messages = true``.  Every stanza (message, presence, iq) that
goes between two different domains, at least one of them hosted here, must be
allowed by both ends; a hosted domain's services (such as
``conference.example.com``) are inside it:

- a hosted domain allows it only with ``cross_domain_messages = true``, and
  this holds between two domains hosted on this same server too;
- a remote domain counts as allowing it: which peers may federate at all is
  the server-to-server allowlist's decision, taken later.  So a stanza
  between a local user and a remote domain needs only the local host's flag.

A refused stanza is answered with ``service-unavailable`` (RFC 6120 §8.3.3.19),
as if the other end did not exist, and logged at info; an error, or an iq result, is dropped
without an answer (RFC 6120 §8.3.1).  What the server generates as itself
(no sender, or a hosted domain as sender) passes, and so do the errors it
generates on a local account's behalf (such as the answer to a refused
stanza from a remote domain, which the remote sender needs), the answers
(iq results and errors) to what the server asked as itself (such as a
push service's answer to a notification, XEP-0357: only the module
waiting for one takes it), and anything within one domain.

The check runs on the pre-events ahead of the other policies, so a refused
stanza is never carbon-copied, stored or delivered.
"""

from xmppd.core.events import pre_events

PRIORITY = 100


def setup(api):
    def allows(domain):
        host = api.hosts.get(domain)
        return host is None or host.cross_domain_messages

    def home(domain):
        """The hosted domain of ``domain`` (itself, or a service's host)."""
        return api.owner(domain) or domain

    def from_server(stanza):
        sender = stanza.sender
        if sender is None:
            return True
        if api.owner(sender.domain) is None:
            return False
        as_itself = sender.local is None and sender.resource is None
        return as_itself or (stanza.origin is None and stanza.type == "error")

    def answers_server(stanza):
        recipient = stanza.recipient
        return (stanza.kind == "iq" and stanza.type in ("result", "error")
                and recipient.local is None and recipient.resource is None)

    def check(stanza):
        sender, recipient = stanza.sender, stanza.recipient
        if ((sender is not None and sender.domain == recipient.domain) or from_server(stanza)
                or answers_server(stanza)):
            return False
        sender_home, recipient_home = home(sender.domain), home(recipient.domain)
        if sender_home == recipient_home or (allows(sender_home) and allows(recipient_home)):
            return False
        api.log.info("closed domain: {kind} from {sender} to {recipient} refused",
                     kind=stanza.kind, sender=sender, recipient=recipient)
        api.bounce(stanza, "service-unavailable")
        return True

    for event in pre_events():
        api.hook(event, check, priority=PRIORITY)
