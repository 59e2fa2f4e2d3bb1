"""XMPP addresses (JIDs) per RFC 7622.

A JID is ``[ localpart "@" ] domainpart [ "/" resourcepart ]`` (RFC 7622
§3.1).  Each part is prepared and enforced separately:

* localpart: PRECIS UsernameCaseMapped profile (§3.3; the profile is now
  defined by RFC 8265, which obsoletes RFC 7613), minus the characters
  ``" & ' / : < > @`` that §3.3.1 forbids;
* domainpart: an IP literal or IPv4 address, or a fully qualified domain
  name made of IDNA2008 labels (RFC 5890/5891), mapped as in RFC 5895 and
  kept in Unicode form, with one trailing dot stripped (§3.2);
* resourcepart: PRECIS OpaqueString profile (§3.4).

Each part is 1 to 1023 octets long after preparation (§3.2-§3.4).

This module exists because twisted.words.protocols.jabber.jid implements the
stringprep profiles of the obsolete RFC 3920 (Nodeprep, Nameprep,
Resourceprep), not PRECIS.  Domainparts are normalised by
:mod:`xmppd.domains`, which the configuration uses too.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from precis_i18n import get_profile

from xmppd import domains

MAX_PART_OCTETS = 1023

_LOCALPART = get_profile("UsernameCaseMapped")
_RESOURCEPART = get_profile("OpaqueString")
_LOCALPART_FORBIDDEN = frozenset("\"&'/:<>@")


class InvalidJID(ValueError):
    """A JID, or one of its parts, violates RFC 7622."""


def _precis(profile, part: str, text: str) -> str:
    """Enforce a PRECIS profile, reporting failures as InvalidJID."""
    try:
        prepared = profile.enforce(text)
    except UnicodeEncodeError as exc:
        kind = exc.reason.removeprefix("DISALLOWED/")
        if kind == "empty":
            raise InvalidJID(f"{part} must not be empty") from None
        if exc.end - exc.start == 1:
            char = ord(exc.object[exc.start])
            kind = f"character U+{char:04X} not allowed ({kind})"
        raise InvalidJID(f"invalid {part} {text!r}: {kind}") from None
    return _check_length(part, prepared)


def _check_length(part: str, prepared: str) -> str:
    if len(prepared.encode("utf-8")) > MAX_PART_OCTETS:
        raise InvalidJID(f"{part} is longer than {MAX_PART_OCTETS} octets")
    return prepared


# PRECIS enforcement is pure and costs 3 to 7 us a part: parts seen
# recently (the usernames and resources of logins) are remembered, as
# JID.parse remembers whole addresses.
@functools.lru_cache(maxsize=16384)
def normalize_localpart(text: str) -> str:
    """Prepare and enforce a localpart (RFC 7622 §3.3)."""
    prepared = _precis(_LOCALPART, "localpart", text)
    forbidden = sorted(_LOCALPART_FORBIDDEN.intersection(prepared))
    if forbidden:
        raise InvalidJID(
            f"invalid localpart {text!r}: character {forbidden[0]!r} not allowed"
        )
    return prepared


@functools.lru_cache(maxsize=16384)
def normalize_resourcepart(text: str) -> str:
    """Prepare and enforce a resourcepart (RFC 7622 §3.4)."""
    return _precis(_RESOURCEPART, "resourcepart", text)


def normalize_domain(text: str) -> str:
    """Prepare and enforce a domainpart (RFC 7622 §3.2), as
    :func:`xmppd.domains.normalize` does for every domain xmppd compares.

    IP addresses come back in canonical text form, domain names as lowercase
    NFC U-labels (A-labels are decoded).
    """
    try:
        domain = domains.normalize(text)
    except domains.InvalidDomain as exc:
        raise InvalidJID(f"invalid domainpart {text!r}: {exc}") from None
    return _check_length("domainpart", domain)


def domain_of(text: str | None) -> str | None:
    """The normalised domain ``text`` names, or None."""
    try:
        return normalize_domain(text) if text else None
    except InvalidJID:
        return None


@dataclass(frozen=True, slots=True)
class JID:
    """An XMPP address whose parts are already normalised.

    Build instances with parse() or make(); the constructor trusts its
    arguments.  Equality and hashing compare the normalised parts.
    """

    local: str | None
    domain: str
    resource: str | None
    # Derived forms, computed once: routing asks for them on every stanza.
    _bare: JID | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _full: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @classmethod
    @functools.lru_cache(maxsize=16384)
    def parse(cls, text: str) -> JID:
        """Parse and normalise a JID's text form (RFC 7622 §3.1)."""
        rest, slash, resource = text.partition("/")
        local, at, domain = rest.partition("@")
        if not at:
            local, domain = None, rest
        return cls.make(local, domain, resource if slash else None)

    @classmethod
    def normalised(cls, text: str) -> JID:
        """A JID from the text form of one xmppd normalised already (a
        cluster node's records and streams): split, not normalised again
        (the first normalisation of a JID costs tens of microseconds)."""
        rest, slash, resource = text.partition("/")
        local, at, domain = rest.partition("@")
        if not at:
            local, domain = None, rest
        if not domain:
            raise InvalidJID("empty domainpart")
        return cls(local, domain, resource if slash else None)

    @classmethod
    def make(
        cls, local: str | None, domain: str, resource: str | None = None
    ) -> JID:
        """Build a JID from its parts, normalising each one given."""
        return cls(
            None if local is None else normalize_localpart(local),
            normalize_domain(domain),
            None if resource is None else normalize_resourcepart(resource),
        )

    @property
    def bare(self) -> JID:
        """This JID without its resourcepart."""
        if self.resource is None:
            return self
        bare = self._bare
        if bare is None:
            bare = JID(self.local, self.domain, None)
            object.__setattr__(self, "_bare", bare)
        return bare

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    @property
    def bare_str(self) -> str:
        """Text form without the resourcepart."""
        if self.local is None:
            return self.domain
        return f"{self.local}@{self.domain}"

    @property
    def full(self) -> str:
        """Text form, including the resourcepart if there is one."""
        full = self._full
        if full is None:
            full = self.bare_str if self.resource is None else f"{self.bare_str}/{self.resource}"
            object.__setattr__(self, "_full", full)
        return full

    def with_resource(self, resource: str) -> JID:
        """This JID with the given resourcepart, normalised."""
        return dataclasses.replace(self, resource=normalize_resourcepart(resource))

    def __str__(self) -> str:
        return self.full
