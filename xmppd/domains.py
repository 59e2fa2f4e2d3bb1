"""Domain names in the one form xmppd compares them in (RFC 7622 §3.2).

A domain is an IP literal or IPv4 address, or a fully qualified domain name
made of IDNA2008 labels (RFC 5890/5891), mapped as in RFC 5895 and kept in
Unicode form (U-labels; A-labels such as ``xn--bcher-kva`` are decoded),
lowercase, NFC, with one trailing dot stripped.

JIDs (:mod:`xmppd.jid`) and the configuration (hosted domains, the
federation allow and deny lists, pinned routes) both normalise through
:func:`normalize`, so ``xn--bcher-kva.example`` in the config and
``bücher.example`` in a JID name the same domain.  This module imports
nothing of xmppd.
"""

import ipaddress
import re
import unicodedata

import idna

_IPV4_SHAPE = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
# Label separators other than "." (RFC 5895 §2, step 4).
_DOTS = str.maketrans("\u3002\uff0e\uff61", "...")


class InvalidDomain(ValueError):
    """Not a domain name or IP address a JID may have as its domainpart."""


def _width_map(text: str) -> str:
    """Map fullwidth and halfwidth characters to their normal forms."""
    return "".join(
        unicodedata.normalize("NFKC", c)
        if unicodedata.decomposition(c).startswith(("<wide>", "<narrow>"))
        else c
        for c in text
    )


def normalize(text: str) -> str:
    """The normalised form of domain ``text``; InvalidDomain if it is none.

    IP addresses come back in canonical text form, domain names as lowercase
    NFC U-labels.
    """
    domain = text.removesuffix(".")
    if not domain:
        raise InvalidDomain("must not be empty")
    if domain.startswith("[") and domain.endswith("]"):
        try:
            address = ipaddress.IPv6Address(domain[1:-1])
        except ValueError as exc:
            raise InvalidDomain(str(exc)) from None
        if address.scope_id is not None:
            raise InvalidDomain("zone index not allowed")
        return f"[{address.compressed}]"
    if _IPV4_SHAPE.fullmatch(domain):
        try:
            return str(ipaddress.IPv4Address(domain))
        except ValueError as exc:
            raise InvalidDomain(str(exc)) from None
    domain = domain.lower()
    if not domain.isascii():
        domain = unicodedata.normalize("NFC", _width_map(domain)).translate(_DOTS)
    labels = []
    for label in domain.split("."):
        if not label:
            raise InvalidDomain("empty label")
        try:
            labels.append(idna.decode(idna.encode(label)))
        except (idna.IDNAError, UnicodeError) as exc:
            raise InvalidDomain(f"label {label!r}: {exc}") from None
    return ".".join(labels)


def to_ascii(domain: str) -> str:
    """The A-label (DNS) form of a :func:`normalize`\\ d ``domain``."""
    if domain.startswith("[") or _IPV4_SHAPE.fullmatch(domain):
        return domain
    return ".".join(idna.encode(label).decode("ascii") for label in domain.split("."))
