"""Affiliations and roles (XEP-0045 §5): what each may do, the role an
affiliation gives on entering, and who may change whose role (§8, §9) or
affiliation (§9, §10).

A refused change is a :class:`~xmppd.core.stanzas.StanzaError`:
``forbidden`` when the actor lacks the privilege, ``not-allowed`` when the
target's affiliation protects it (§8.2, §9.1), ``conflict`` when the last
owner would go (§10.7)."""

from xmppd.core.stanzas import StanzaError

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")  # §5.2
ROLES = ("moderator", "participant", "visitor", "none")  # §5.1
_AFFILIATION_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}
_ROLE_RANK = {"none": 0, "visitor": 1, "participant": 2, "moderator": 3}


def affiliation_rank(affiliation):
    return _AFFILIATION_RANK[affiliation]


def role_rank(role):
    return _ROLE_RANK[role]


def entry_role(affiliation, moderated):
    """The role of an occupant entering with ``affiliation`` (§5.1.1): owners
    and admins moderate, members take part, others take part unless the
    room is moderated."""
    if affiliation in ("owner", "admin"):
        return "moderator"
    if affiliation == "member" or not moderated:
        return "participant"
    return "visitor"


def check_role_change(actor_affiliation, actor_role, target_affiliation, target_role, role):
    """Whether an occupant (``actor_*``) may give another (``target_*``)
    ``role``: moderators kick (``none``) and grant or revoke voice, never
    to one whose affiliation is admin or owner, nor, not being an admin or
    owner, to another moderator (§8.2, §8.4); admins and owners grant and
    revoke moderator (§9.6, §9.7), but not from one of at least their own
    affiliation."""
    if role not in ROLES:
        raise StanzaError("bad-request", f"no role {role!r}")
    if actor_role != "moderator":
        raise StanzaError("forbidden", "only moderators change roles")
    if role == "moderator" or target_role == "moderator":
        if actor_affiliation not in ("admin", "owner"):
            raise StanzaError("forbidden" if role == "moderator" else "not-allowed",
                              "only admins and owners grant or revoke moderator")
    if role != "moderator" and target_affiliation in ("admin", "owner"):
        raise StanzaError("not-allowed", f"an {target_affiliation} stays a moderator")
    if (target_role == "moderator" and role != "moderator"
            and _AFFILIATION_RANK[target_affiliation] >= _AFFILIATION_RANK[actor_affiliation]):
        raise StanzaError("not-allowed", "the moderator's affiliation protects it")


def check_affiliation_change(actor_affiliation, target_affiliation, affiliation, owners=None):
    """Whether ``actor_affiliation`` may change ``target_affiliation`` into
    ``affiliation``: admins manage members and outcasts (§9), owners
    everything (§10); ``owners`` counts the room's owners, and the last
    may not go (§10.7)."""
    if affiliation not in AFFILIATIONS:
        raise StanzaError("bad-request", f"no affiliation {affiliation!r}")
    if actor_affiliation == "owner":
        if target_affiliation == "owner" and affiliation != "owner" and owners == 1:
            raise StanzaError("conflict", "a room keeps at least one owner")
        return
    if actor_affiliation != "admin":
        raise StanzaError("forbidden", "only admins and owners change affiliations")
    if affiliation in ("admin", "owner"):
        raise StanzaError("forbidden", "only owners grant admin or owner")
    if target_affiliation in ("admin", "owner"):
        raise StanzaError("not-allowed", f"an admin cannot change an {target_affiliation}")
