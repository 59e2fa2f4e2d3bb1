"""Access models (XEP-0060 §4.5): who may retrieve a node's items and
receive its notifications.

- ``open``: anyone;
- ``presence`` (XEP-0163's default): the owner's contacts subscribed to
  its presence (subscription ``from`` or ``both``, RFC 6121 §3);
- ``roster``: the owner's contacts in one of the node's
  ``pubsub#roster_groups_allowed``;
- ``whitelist``: entities affiliated with the node as ``owner``,
  ``publisher``, ``publish-only`` or ``member``.

The owner always may; an ``outcast`` of a whitelist never.  A refusal is the error of
§6.5.9 (and §6.1.3 for subscriptions): ``not-authorized`` with
``presence-subscription-required`` or ``not-in-roster-group``,
``not-allowed`` with ``closed-node``, ``forbidden`` for an outcast.
"""

from xmppd.storage import SUBSCRIBERS

from . import error

ALLOWED_BY_WHITELIST = ("owner", "publisher", "publish-only", "member")


def refusal(config, contact, roster_item, affiliation):
    """None if ``contact`` (a bare JID text, not the owner) may read the node,
    else the StanzaError it gets; ``roster_item`` is the owner's roster item
    for the contact (or None), ``affiliation`` the contact's (or None)."""
    if affiliation == "outcast":
        return error("forbidden")
    model = config.get("pubsub#access_model")
    if model == "open" or affiliation in ("owner", "publisher"):
        return None
    if model == "presence":
        if roster_item is not None and roster_item.subscription in SUBSCRIBERS:
            return None
        return error("not-authorized", "presence-subscription-required")
    if model == "roster":
        allowed = set(config.get("pubsub#roster_groups_allowed") or ())
        if roster_item is not None and allowed.intersection(roster_item.groups):
            return None
        return error("not-authorized", "not-in-roster-group")
    if affiliation in ALLOWED_BY_WHITELIST:
        return None
    return error("not-allowed", "closed-node")
