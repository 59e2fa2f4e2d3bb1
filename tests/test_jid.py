"""Tests for xmppd.jid (RFC 7622 XMPP addresses)."""

import pytest

from xmppd.jid import (
    JID,
    InvalidJID,
    normalize_domain,
    normalize_localpart,
    normalize_resourcepart,
)

# RFC 7622 §3.5, Table 1: valid JIDs, with their expected normalised parts.
RFC_VALID = [
    ("juliet@example.com", ("juliet", "example.com", None)),
    ("juliet@example.com/foo", ("juliet", "example.com", "foo")),
    ("juliet@example.com/foo bar", ("juliet", "example.com", "foo bar")),
    ("juliet@example.com/foo@bar", ("juliet", "example.com", "foo@bar")),
    ("foo\\20bar@example.com", ("foo\\20bar", "example.com", None)),
    ("fussball@example.com", ("fussball", "example.com", None)),
    ("fu\u00dfball@example.com", ("fu\u00dfball", "example.com", None)),
    ("\u03c0@example.com", ("\u03c0", "example.com", None)),
    ("\u03a3@example.com/foo", ("\u03c3", "example.com", "foo")),
    ("\u03c3@example.com/foo", ("\u03c3", "example.com", "foo")),
    ("\u03c2@example.com/foo", ("\u03c2", "example.com", "foo")),
    ("king@example.com/\u265a", ("king", "example.com", "\u265a")),
    ("example.com", (None, "example.com", None)),
    ("example.com/foobar", (None, "example.com", "foobar")),
    ("a.example.com/b@example.net", (None, "a.example.com", "b@example.net")),
]

# RFC 7622 §3.5, Table 2: invalid JIDs.  The "leading space in resourcepart"
# example is left out: OpaqueString allows it (RFC 7622 erratum 4560).
RFC_INVALID = [
    '"juliet"@example.com',  # quotation marks in localpart
    "foo bar@example.com",  # space in localpart
    "@example.com/",  # empty localpart and resourcepart
    "henry\u2163@example.com",  # ROMAN NUMERAL FOUR in localpart
    "\u265a@example.com",  # BLACK CHESS KING in localpart
    "juliet@",  # no domainpart
    "/foobar",  # resourcepart without domainpart
]


@pytest.mark.parametrize(("text", "parts"), RFC_VALID)
def test_rfc_valid(text, parts):
    jid = JID.parse(text)
    assert (jid.local, jid.domain, jid.resource) == parts


@pytest.mark.parametrize("text", RFC_INVALID)
def test_rfc_invalid(text):
    with pytest.raises(InvalidJID):
        JID.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "@example.com",
        "juliet@example.com/",
        "",
        "example..com",
        ".example.com",
        "juliet@exa mple.com",
        "a@b@example.com",
        "-example.com",
        "exa_mple.com",
    ],
)
def test_invalid(text):
    with pytest.raises(InvalidJID):
        JID.parse(text)


@pytest.mark.parametrize("char", "\"&'/:<>@")
def test_localpart_forbidden_characters(char):
    with pytest.raises(InvalidJID, match="localpart"):
        JID.make(f"a{char}b", "example.com")


def test_error_names_part():
    with pytest.raises(InvalidJID, match="localpart"):
        JID.parse("foo bar@example.com")
    with pytest.raises(InvalidJID, match="domainpart"):
        JID.parse("juliet@exa_mple.com")
    with pytest.raises(InvalidJID, match="resourcepart"):
        JID.parse("juliet@example.com/\x07")
    with pytest.raises(InvalidJID, match="resourcepart must not be empty"):
        JID.parse("juliet@example.com/")


def test_invalid_jid_is_value_error():
    assert issubclass(InvalidJID, ValueError)


def test_parse_splits_at_first_slash_then_first_at():
    jid = JID.parse("juliet@example.com/a/b@c")
    assert (jid.local, jid.domain, jid.resource) == ("juliet", "example.com", "a/b@c")


def test_localpart_case_mapped():
    assert JID.parse("JuLiEt@example.com") == JID.parse("juliet@example.com")
    assert normalize_localpart("\u00c9MILE") == "\u00e9mile"


def test_resourcepart_case_preserved():
    jid = JID.parse("juliet@example.com/Balcony")
    assert jid.resource == "Balcony"
    assert jid != JID.parse("juliet@example.com/balcony")


def test_width_mapping():
    assert normalize_localpart("\uff2a\uff55\uff4c\uff49\uff45\uff54") == "juliet"
    assert normalize_domain("\uff25\uff38\uff0e\uff43\uff4f\uff4d") == "ex.com"


def test_nfc_normalisation():
    assert normalize_localpart("e\u0301") == "\u00e9"
    assert normalize_resourcepart("e\u0301") == "\u00e9"
    assert normalize_domain("caf\u0065\u0301.example") == "caf\u00e9.example"


def test_resourcepart_spaces_mapped():
    assert normalize_resourcepart("foo\u00a0bar") == "foo bar"


def test_domain_lowercased_and_trailing_dot_stripped():
    assert normalize_domain("Example.COM.") == "example.com"
    assert JID.parse("juliet@example.com.") == JID.parse("juliet@example.com")
    with pytest.raises(InvalidJID):
        normalize_domain(".")
    with pytest.raises(InvalidJID):
        normalize_domain("example.com..")


def test_idn_domain_kept_in_unicode():
    assert normalize_domain("B\u00dcCHER.example") == "b\u00fccher.example"
    assert normalize_domain("xn--bcher-kva.example") == "b\u00fccher.example"
    assert JID.parse("a@xn--bcher-kva.example") == JID.parse("a@b\u00fccher.example")
    # IDEOGRAPHIC FULL STOP separates labels (RFC 5895 §2).
    assert normalize_domain("\u4f8b\u3002\u30c6\u30b9\u30c8") == (
        "\u4f8b.\u30c6\u30b9\u30c8"
    )


@pytest.mark.parametrize("domain", ["xn--a.example", "ab--c.example", "\u265a.example"])
def test_invalid_idn_labels(domain):
    with pytest.raises(InvalidJID, match="domainpart"):
        normalize_domain(domain)


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("[::1]", "[::1]"),
        ("[FE80:0:0::1]", "[fe80::1]"),
        ("127.0.0.1", "127.0.0.1"),
        ("192.0.2.10.", "192.0.2.10"),
    ],
)
def test_ip_literal_domains(text, domain):
    assert normalize_domain(text) == domain
    assert JID.parse(f"user@{text}/res").domain == domain


@pytest.mark.parametrize(
    "text", ["[::1", "[127.0.0.1]", "[fe80::1%eth0]", "[::g]", "256.0.0.1", "01.2.3.4"]
)
def test_invalid_ip_literals(text):
    with pytest.raises(InvalidJID, match="domainpart"):
        normalize_domain(text)


def test_label_length():
    assert normalize_domain("a" * 63 + ".example")
    with pytest.raises(InvalidJID):
        normalize_domain("a" * 64 + ".example")


def test_part_lengths():
    local = "a" * 1023
    resource = "r" * 1023
    domain = ".".join(["d" * 63] * 16)  # 1023 octets
    jid = JID.make(local, domain, resource)
    assert len(jid.full) == 3071
    with pytest.raises(InvalidJID, match="localpart is longer than 1023"):
        JID.make(local + "a", "example.com")
    with pytest.raises(InvalidJID, match="resourcepart is longer than 1023"):
        JID.make(None, "example.com", resource + "r")
    with pytest.raises(InvalidJID, match="domainpart is longer than 1023"):
        JID.make(None, domain + ".d")


def test_length_counts_octets():
    assert normalize_localpart("\u00e9" * 511)  # 1022 octets
    with pytest.raises(InvalidJID):
        normalize_localpart("\u00e9" * 512)  # 1024 octets


def test_bare_and_full():
    full = JID.parse("Juliet@Example.com/Balcony")
    assert not full.is_bare
    assert full.full == str(full) == "juliet@example.com/Balcony"
    assert full.bare_str == "juliet@example.com"
    assert full.bare == JID("juliet", "example.com", None)
    assert full.bare.is_bare
    bare = JID.parse("juliet@example.com")
    assert bare.bare is bare
    assert str(bare) == bare.full == bare.bare_str == "juliet@example.com"
    domain = JID.parse("example.com/x")
    assert domain.bare_str == "example.com"
    assert domain.full == "example.com/x"


def test_with_resource():
    bare = JID.parse("juliet@example.com")
    jid = bare.with_resource("Foo\u00a0Bar")
    assert jid == JID.parse("juliet@example.com/Foo Bar")
    assert jid.bare == bare
    with pytest.raises(InvalidJID):
        bare.with_resource("")


def test_make():
    assert JID.make("Juliet", "EXAMPLE.com", "r") == JID.parse("juliet@example.com/r")
    assert JID.make(None, "example.com") == JID.parse("example.com")
    with pytest.raises(InvalidJID):
        JID.make("", "example.com")


def test_equality_and_hash_use_normalised_parts():
    a = JID.parse("JULIET@EXAMPLE.COM/r")
    b = JID.make("juliet", "example.com.", "r")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, a.bare}) == 2


def test_frozen():
    jid = JID.parse("juliet@example.com")
    with pytest.raises(AttributeError):
        jid.local = "romeo"


def test_parse_is_cached():
    text = "cached@example.com/res"
    first = JID.parse(text)
    second = JID.parse("".join(text))
    assert first == second
    assert first is second


def test_domain_normaliser_shared_with_the_configuration():
    """The one normaliser: A-labels and U-labels give the same domain."""
    from xmppd import domains
    assert domains.normalize("xn--bcher-kva.example") == "bücher.example"
    assert normalize_domain("xn--bcher-kva.example") == domains.normalize("Bücher.Example.")
    assert domains.to_ascii("bücher.example") == "xn--bcher-kva.example"
    with pytest.raises(domains.InvalidDomain, match="empty label"):
        domains.normalize("a..b")


def test_normalised_text_is_split_without_normalising_again():
    jid = JID.normalised("alice@example.com/phone/1")
    assert (jid.local, jid.domain, jid.resource) == ("alice", "example.com", "phone/1")
    assert jid == JID.parse("alice@example.com/phone/1")
    assert JID.normalised("example.com").local is None
    with pytest.raises(InvalidJID):
        JID.normalised("alice@")
