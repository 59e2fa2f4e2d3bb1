"""Dialback keys (XEP-0185) and dialback elements (XEP-0220)."""

import hashlib
import hmac

from xmppd.core.xmlstream import serialize
from xmppd.s2s.dialback import (
    S2S_PREFIXES, DialbackKeys, dialback_element, dialback_key, error_condition)


def test_key_of_the_xep_0185_example():
    # XEP-0185 §3: secret s3cr3tf0rd14lb4ck, stream id D60000229F.
    assert dialback_key("s3cr3tf0rd14lb4ck", "xmpp.example.com", "example.org",
                        "D60000229F") == \
        "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"


def test_keys_of_the_xep_0220_examples():
    # XEP-0220 §2.1.1 (capulet's secret) and §2.2.2 (montague's secret).
    assert dialback_key("s3cr3tf0rd14lb4ck", "montague.example", "capulet.example",
                        "D60000229F") == \
        "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3"
    assert dialback_key("d14lb4ck43v3r", "capulet.example", "montague.example",
                        "417GAF25") == \
        "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d"


def test_internationalised_domains_and_secret_are_utf8():
    secret, receiving, originating = "geheimnis-ß", "bücher.example", "straße.example"
    expected = hmac.new(hashlib.sha256(secret.encode("utf-8")).hexdigest().encode(),
                        f"{receiving} {originating} ID1".encode("utf-8"),
                        hashlib.sha256).hexdigest()
    assert dialback_key(secret, receiving, originating, "ID1") == expected


def test_keys_check_all_inputs():
    keys = DialbackKeys("s3cr3t")
    key = keys.make("b.example", "a.example", "id-1")
    assert keys.valid(key, "b.example", "a.example", "id-1")
    assert keys.valid(f"\n  {key}\n", "b.example", "a.example", "id-1")
    assert not keys.valid(key, "b.example", "a.example", "id-2")
    assert not keys.valid(key, "a.example", "b.example", "id-1")
    assert not keys.valid(key, "b.example", "a.example ", "id-1")
    assert not DialbackKeys("other").valid(key, "b.example", "a.example", "id-1")
    assert not keys.valid("not hex at all é", "b.example", "a.example", "id-1")


def test_elements_use_the_db_prefix_and_stanza_errors():
    result = dialback_element("result", "a.example", "b.example", key="abc")
    assert serialize(result, S2S_PREFIXES) == b"<db:result from='a.example' to='b.example'>abc</db:result>"
    error = dialback_element("verify", "b.example", "a.example", id_="X",
                             condition="item-not-found")
    assert serialize(error, S2S_PREFIXES) == (
        b"<db:verify from='b.example' to='a.example' id='X' type='error'>"
        b"<error type='cancel'><item-not-found "
        b"xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:verify>")
    assert error_condition(error) == "item-not-found"
    assert error_condition(dialback_element("result", "a", "b", type_="error")) == \
        "undefined-condition"
