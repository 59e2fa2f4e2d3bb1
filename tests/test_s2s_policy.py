"""The federation allowlist (``s2s.allow`` / ``s2s.deny``)."""

from xmppd.s2s.policy import FederationPolicy


def test_exact_domains_only():
    policy = FederationPolicy(["partner.example"], [])
    assert policy.allows("partner.example")
    assert policy.allows("Partner.Example.")
    assert not policy.allows("chat.partner.example")
    assert not policy.allows("otherpartner.example")
    assert not policy.allows("example")


def test_wildcard_covers_subdomains_at_any_depth_not_the_domain():
    policy = FederationPolicy(["*.example.net"], [])
    assert policy.allows("chat.example.net")
    assert policy.allows("muc.chat.example.net")
    assert not policy.allows("example.net")
    assert not policy.allows("badexample.net")


def test_deny_wins():
    policy = FederationPolicy(["example.net", "*.example.net"], ["evil.example.net"])
    assert policy.allows("example.net")
    assert policy.allows("good.example.net")
    assert not policy.allows("evil.example.net")
    assert policy.allows("sub.evil.example.net")
    assert not FederationPolicy(["*.example.net"], ["*.example.net"]).allows("a.example.net")


def test_empty_allow_list_allows_nothing():
    policy = FederationPolicy([], [])
    assert not policy.allows("example.net")
    assert not policy.allows("localhost")


def test_internationalised_and_invalid_domains():
    policy = FederationPolicy(["bücher.example"], [])
    assert policy.allows("xn--bcher-kva.example")
    assert policy.allows("BÜCHER.example")
    assert not policy.allows("bad domain")
    assert not policy.allows("")
