"""Tests for SCRAM-SHA-512, the SCRAM -PLUS mechanisms (RFC 5802 §6, RFC 7677,
XEP-0440) and XEP-0474's downgrade protection in xmppd.core.sasl.

Clients are independent of xmppd: the ``scramp`` library (which binds with
tls-server-end-point but not tls-exporter), the RFC 5802 §3 formulas written
out with hashlib below, and the full example of XEP-0474 §6.3.
"""

import base64
import hashlib
import hmac

import scramp
from twisted.trial.unittest import SynchronousTestCase

from tests.test_sasl import SaslSteps
from xmppd.core import scram
from xmppd.core.sasl import (
    NS_SASL_CB,
    Offer,
    SaslFailure,
    SaslServer,
    Success,
    channel_binding_feature,
)

DOMAIN = "example.com"
EXPORTER = b"E" * 32  # stand-ins for a stream's binding data
END_POINT = b"P" * 32
ALL = (
    "SCRAM-SHA-512-PLUS",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-512",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "PLAIN",
)
DIGESTS = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}

# XEP-0474 §6.3: SCRAM-SHA-1-PLUS over SASL2 with tls-exporter ("THIS IS FAKE
# CB DATA" as the binding data), password "pencil", the salt of RFC 5802 §5.
SSDP_OFFER = Offer(("SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"), ("tls-server-end-point", "tls-exporter"))
SSDP_CB_DATA = b"THIS IS FAKE CB DATA"
SSDP_SALT = "QSXCR+Q6sek8bf92"
SSDP_CLIENT_FIRST = b"p=tls-exporter,,n=user,r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6"
SSDP_SERVER_NONCE = "a09117a6-ac50-4f2f-93f1-93799c2bddf6"
SSDP_SERVER_FIRST = (
    b"r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6a09117a6-ac50-4f2f-93f1-93799c2bddf6,"
    b"s=QSXCR+Q6sek8bf92,i=4096,h=G6k/rBLDqgOhRRaCuuatSDFkJ08="
)
SSDP_CLIENT_FINAL = (
    b"c=cD10bHMtZXhwb3J0ZXIsLFRISVMgSVMgRkFLRSBDQiBEQVRB,"
    b"r=12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6a09117a6-ac50-4f2f-93f1-93799c2bddf6,"
    b"x=19C6532F-1CF4-4A27-A18D-DC9CEA41BBB3,p=M/SIDjT+dfcxUh89jZEypRvFxB4="
)
SSDP_SERVER_FINAL = b"v=MQrMPvv7yv4x4Cq4W4Ih25EqS2c="


def rfc5802_final(hash_name, password, cbind_input, client_first_bare, server_first):
    """client-final-message from the formulas of RFC 5802 §3, with hashlib."""
    digest = DIGESTS[hash_name]
    attributes = dict(field.split("=", 1) for field in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac(
        digest, password.encode(), base64.b64decode(attributes["s"]), int(attributes["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", digest)
    stored_key = hashlib.new(digest, client_key).digest()
    without_proof = b"c=" + base64.b64encode(cbind_input) + b",r=" + attributes["r"].encode()
    auth_message = b",".join([client_first_bare, server_first, without_proof])
    signature = hmac.digest(stored_key, auth_message, digest)
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    server_key = hmac.digest(salted, b"Server Key", digest)
    server_final = b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, digest))
    return without_proof + b",p=" + base64.b64encode(proof), server_final


def ssdp(hash_name, text):
    return b"h=" + base64.b64encode(hashlib.new(DIGESTS[hash_name], text).digest())


class PlusTestCase(SaslSteps, SynchronousTestCase):
    def setUp(self):
        self.accounts = {"user": scram.derive_all("pencil")}
        self.accounts["user"]["SHA-512"] = scram.derive_keys("pencil", "SHA-512")
        self.bindings = {"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT}
        self.looked_up = []
        self.server = self.make_server()

    def make_server(self, **kwargs):
        kwargs.setdefault("mechanisms", ALL)
        kwargs.setdefault("channel_binding", self.bindings.get)
        return SaslServer(DOMAIN, self.lookup, str.lower, **kwargs)


    def scramp_final(self, client, mechanism):
        """Feed ``client``'s first message; its final message."""
        challenge = self.step(mechanism, client.get_client_first().encode())
        client.set_server_first(challenge.data.decode())
        return client.get_client_final().encode()

    def scramp_exchange(self, client, server=None):
        """Run ``client`` against the server; the server's result."""
        mechanism = (server or self.server).start(client.mechanism_name)
        success = self.step(mechanism, self.scramp_final(client, mechanism))
        client.set_server_final(success.additional_data.decode())  # checks the signature
        return success

    def bound_exchange(self, name, kind, data, password="pencil"):
        """A -PLUS exchange by the RFC 5802 formulas; the mechanism, the
        client-final-message and the server-final-message it expects."""
        mechanism = self.server.start(name)
        gs2_header = f"p={kind},,".encode()
        client_first_bare = b"n=user,r=clientnonce"
        server_first = self.step(mechanism, gs2_header + client_first_bare).data
        hash_name = name.removeprefix("SCRAM-").removesuffix("-PLUS")
        final, server_final = rfc5802_final(
            hash_name, password, gs2_header + data, client_first_bare, server_first
        )
        return mechanism, final, server_final


class OfferTests(PlusTestCase):
    def test_plus_offered_with_bindings(self):
        self.assertEqual(self.server.mechanisms, ALL)
        self.assertEqual(self.server.channel_bindings, ("tls-exporter", "tls-server-end-point"))
        self.assertEqual(self.server.offer(), Offer(ALL, ("tls-exporter", "tls-server-end-point")))

    def test_only_bindings_the_stream_has(self):
        # TLS 1.2: no tls-exporter (RFC 9266 §2).
        del self.bindings["tls-exporter"]
        self.assertEqual(self.server.channel_bindings, ("tls-server-end-point",))
        self.assertEqual(self.server.mechanisms, ALL)

    def test_no_plus_without_bindings(self):
        # A proxy terminates TLS: the stream has no binding data.
        self.bindings.clear()
        self.assertEqual(self.server.offer(), Offer(ALL[3:], ()))
        for server in (self.server, self.make_server(channel_binding=None)):
            self.assertEqual(server.mechanisms, ALL[3:])
            with self.assertRaises(SaslFailure) as caught:
                server.start("SCRAM-SHA-256-PLUS")
            self.assertEqual(caught.exception.condition, "invalid-mechanism")

    def test_tls_unique_not_offered(self):
        self.bindings["tls-unique"] = b"U" * 12
        self.assertNotIn("tls-unique", self.server.channel_bindings)

    def test_no_bindings_without_plus_mechanisms(self):
        # XEP-0440 types without a -PLUS mechanism would look like a downgrade.
        server = self.make_server(mechanisms=("SCRAM-SHA-256", "PLAIN"))
        self.assertEqual(server.offer(), Offer(("SCRAM-SHA-256", "PLAIN"), ()))

    def test_feature(self):
        feature = channel_binding_feature(self.server.channel_bindings)
        self.assertEqual((feature.uri, feature.name), (NS_SASL_CB, "sasl-channel-binding"))
        children = list(feature.elements())
        self.assertEqual([(c.uri, c.name) for c in children], [(NS_SASL_CB, "channel-binding")] * 2)
        self.assertEqual([c["type"] for c in children], ["tls-exporter", "tls-server-end-point"])
        self.assertEqual(
            feature.toXml(),
            "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
            "<channel-binding type='tls-exporter'/>"
            "<channel-binding type='tls-server-end-point'/></sasl-channel-binding>",
        )

    def test_no_feature_without_bindings(self):
        self.assertIsNone(channel_binding_feature(()))

    def test_start_checks_the_offer(self):
        offer = Offer(("SCRAM-SHA-256", "SCRAM-SHA-1"), ())
        self.assertEqual(self.server.start("SCRAM-SHA-1", offer).name, "SCRAM-SHA-1")
        for name in ("SCRAM-SHA-512", "SCRAM-SHA-1-PLUS"):
            with self.assertRaises(SaslFailure) as caught:
                self.server.start(name, offer)
            self.assertEqual(caught.exception.condition, "invalid-mechanism")
        # An offer cannot bring in a mechanism the host does not have.
        server = self.make_server(mechanisms=("SCRAM-SHA-256",))
        with self.assertRaises(SaslFailure):
            server.start("PLAIN", Offer(("SCRAM-SHA-256", "PLAIN")))


class ScramPlusTests(PlusTestCase):
    def test_scramp_tls_server_end_point(self):
        for name in ("SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS"):
            client = scramp.ScramClient(
                [name], "user", "pencil", channel_binding=("tls-server-end-point", END_POINT)
            )
            self.assertEqual(client.mechanism_name, name)
            success = self.scramp_exchange(client)
            self.assertEqual(success.username, "user")
            self.assertEqual(success.channel_binding, "tls-server-end-point")

    def test_tls_exporter(self):
        for name in ("SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS"):
            mechanism, final, server_final = self.bound_exchange(name, "tls-exporter", EXPORTER)
            self.assertEqual(
                self.step(mechanism, final),
                Success("user", server_final, channel_binding="tls-exporter"),
            )

    def test_tls_server_end_point_by_hand(self):
        mechanism, final, server_final = self.bound_exchange(
            "SCRAM-SHA-256-PLUS", "tls-server-end-point", END_POINT
        )
        self.assertEqual(self.step(mechanism, final).additional_data, server_final)

    def test_xep0474_example(self):
        # The full example of XEP-0474 §6.3, over an offer given explicitly
        # as SASL2's <authentication/> would show it.
        self.accounts["user"] = {
            "SHA-1": scram.derive_keys("pencil", "SHA-1", salt=base64.b64decode(SSDP_SALT))
        }
        self.bindings["tls-exporter"] = SSDP_CB_DATA
        server = self.make_server(nonce=lambda: SSDP_SERVER_NONCE)
        mechanism = server.start("SCRAM-SHA-1-PLUS", SSDP_OFFER)
        self.assertEqual(self.step(mechanism, SSDP_CLIENT_FIRST).data, SSDP_SERVER_FIRST)
        self.assertEqual(
            self.step(mechanism, SSDP_CLIENT_FINAL),
            Success("user", SSDP_SERVER_FINAL, channel_binding="tls-exporter"),
        )

    def test_wrong_binding_data(self):
        for kind, other in (("tls-exporter", END_POINT), ("tls-server-end-point", EXPORTER)):
            mechanism, final, _ = self.bound_exchange("SCRAM-SHA-256-PLUS", kind, other)
            failure = self.step_fails(mechanism, final, "not-authorized")
            self.assertEqual(failure.text, "channel binding mismatch")

    def test_scramp_wrong_binding_data(self):
        client = scramp.ScramClient(
            ["SCRAM-SHA-256-PLUS"], "user", "pencil",
            channel_binding=("tls-server-end-point", b"another certificate's hash"),
        )
        mechanism = self.server.start("SCRAM-SHA-256-PLUS")
        self.step_fails(mechanism, self.scramp_final(client, mechanism), "not-authorized")

    def test_binding_type_not_offered(self):
        del self.bindings["tls-exporter"]  # TLS 1.2
        self.bindings["tls-unique"] = b"U" * 12  # never offered
        for kind in ("tls-exporter", "tls-unique", "tls-foo", ""):
            mechanism = self.server.start("SCRAM-SHA-256-PLUS")
            data = f"p={kind},,n=user,r=abc".encode()
            failure = self.step_fails(mechanism, data, "malformed-request")
            self.assertEqual(failure.text, "unsupported channel binding type")
        self.assertEqual(self.looked_up, [])

    def test_binding_type_offered_but_gone(self):
        offer = self.server.offer()
        self.bindings.clear()
        mechanism = self.server.start("SCRAM-SHA-256-PLUS", offer)
        self.step_fails(mechanism, b"p=tls-exporter,,n=user,r=abc", "malformed-request")

    def test_plus_needs_binding(self):
        for flag in (b"n", b"y"):
            mechanism = self.server.start("SCRAM-SHA-256-PLUS")
            failure = self.step_fails(mechanism, flag + b",,n=user,r=abc", "malformed-request")
            self.assertIn("channel binding", failure.text)
        self.assertEqual(self.looked_up, [])

    def test_binding_needs_plus(self):
        mechanism = self.server.start("SCRAM-SHA-256")
        self.step_fails(mechanism, b"p=tls-exporter,,n=user,r=abc", "malformed-request")

    def test_y_when_plus_offered_is_a_downgrade(self):
        # RFC 5802 §6: the client could bind but saw no -PLUS mechanism, yet
        # one was offered: someone removed them on the way.
        client = scramp.ScramClient(
            ["SCRAM-SHA-256"], "user", "pencil", channel_binding=("tls-server-end-point", END_POINT)
        )
        first = client.get_client_first()
        self.assertTrue(first.startswith("y,,"))
        failure = self.step_fails(self.server.start("SCRAM-SHA-256"), first.encode(),
                                  "not-authorized")
        self.assertEqual(failure.text, "channel binding was offered")
        self.assertEqual(self.looked_up, [])

    def test_y_when_no_plus_offered(self):
        self.bindings.clear()
        client = scramp.ScramClient(
            ["SCRAM-SHA-256"], "user", "pencil", channel_binding=("tls-server-end-point", END_POINT)
        )
        self.assertEqual(self.scramp_exchange(client).channel_binding, None)

    def test_n_when_plus_offered(self):
        # A client that cannot bind may use a non-PLUS mechanism.
        for name in ("SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            success = self.scramp_exchange(scramp.ScramClient([name], "user", "pencil"))
            self.assertEqual((success.username, success.channel_binding), ("user", None))

    def test_authzid_with_binding(self):
        mechanism = self.server.start("SCRAM-SHA-256-PLUS")
        gs2_header = b"p=tls-exporter,a=user@example.com,"
        client_first_bare = b"n=user,r=clientnonce"
        server_first = self.step(mechanism, gs2_header + client_first_bare).data
        final, _ = rfc5802_final("SHA-256", "pencil", gs2_header + EXPORTER, client_first_bare,
                                 server_first)
        self.assertEqual(self.step(mechanism, final).channel_binding, "tls-exporter")

    def test_unknown_user_fails_at_the_end(self):
        self.accounts.clear()
        for name in ("SCRAM-SHA-512-PLUS", "SCRAM-SHA-1-PLUS"):
            mechanism, final, _ = self.bound_exchange(name, "tls-exporter", EXPORTER)
            self.assertIsNone(self.step_fails(mechanism, final, "not-authorized").text)


class Sha512Tests(PlusTestCase):
    def test_scramp_round_trip(self):
        success = self.scramp_exchange(scramp.ScramClient(["SCRAM-SHA-512"], "user", "pencil"))
        self.assertEqual(success, Success("user", success.additional_data))
        self.assertEqual(len(base64.b64decode(success.additional_data[2:])), 64)

    def test_wrong_password(self):
        client = scramp.ScramClient(["SCRAM-SHA-512"], "user", "pen")
        mechanism = self.server.start("SCRAM-SHA-512")
        failure = self.step_fails(mechanism, self.scramp_final(client, mechanism), "not-authorized")
        self.assertIsNone(failure.text)

    def test_account_without_sha512_verifier(self):
        # Offered to everyone: an account without the verifier fails like a
        # wrong password, with a stable made-up salt of the right size.
        del self.accounts["user"]["SHA-512"]
        server_firsts = []
        for _ in range(2):
            mechanism = self.server.start("SCRAM-SHA-512")
            client = scramp.ScramClient(["SCRAM-SHA-512"], "user", "pencil")
            server_first = self.step(mechanism, client.get_client_first().encode()).data
            server_firsts.append(server_first.split(b",", 1)[1])
            client.set_server_first(server_first.decode())
            failure = self.step_fails(mechanism, client.get_client_final().encode(),
                                      "not-authorized")
            self.assertIsNone(failure.text)
        self.assertEqual(server_firsts[0], server_firsts[1])

    def test_plain_checks_sha512_only_account(self):
        self.accounts["user"] = {"SHA-512": self.accounts["user"]["SHA-512"]}
        self.assertEqual(self.step(self.server.start("PLAIN"), b"\0user\0pencil").username, "user")
        self.step_fails(self.server.start("PLAIN"), b"\0user\0pen", "not-authorized")


class DowngradeProtectionTests(PlusTestCase):
    def server_first(self, name, server=None, offer=None):
        mechanism = (server or self.server).start(name, offer)
        return self.step(mechanism, b"n,,n=user,r=abc").data

    def test_example_hash(self):
        # XEP-0474 §6.3's value, from the lists in any order.
        digest = scram.downgrade_hash(
            "SHA-1", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"], ["tls-exporter", "tls-server-end-point"]
        )
        self.assertEqual(base64.b64encode(digest), b"G6k/rBLDqgOhRRaCuuatSDFkJ08=")

    def test_attribute_over_the_offer(self):
        # The mechanisms and the binding types, each sorted by octet.
        text = (
            b"PLAIN\x1eSCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS\x1eSCRAM-SHA-256\x1eSCRAM-SHA-256-PLUS"
            b"\x1eSCRAM-SHA-512\x1eSCRAM-SHA-512-PLUS\x1ftls-exporter\x1etls-server-end-point"
        )
        for hash_name in ("SHA-1", "SHA-256", "SHA-512"):
            server_first = self.server_first("SCRAM-" + hash_name)
            self.assertEqual(server_first.split(b",")[3:], [ssdp(hash_name, text)])

    def test_without_channel_binding_feature(self):
        # No XEP-0440 types shown: no %x1F part.
        self.bindings.clear()
        server_first = self.server_first("SCRAM-SHA-256")
        text = b"PLAIN\x1eSCRAM-SHA-1\x1eSCRAM-SHA-256\x1eSCRAM-SHA-512"
        self.assertEqual(server_first.split(b",")[3], ssdp("SHA-256", text))

    def test_explicit_offer(self):
        # SASL2 shows its own list: that one is hashed.
        offer = Offer(("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"), ("tls-server-end-point",))
        server_first = self.server_first("SCRAM-SHA-256", offer=offer)
        text = b"SCRAM-SHA-256\x1eSCRAM-SHA-256-PLUS\x1ftls-server-end-point"
        self.assertEqual(server_first.split(b",")[3], ssdp("SHA-256", text))

    def test_unknown_user_has_it_too(self):
        self.accounts.clear()
        known = self.make_server()
        self.assertEqual(self.server_first("SCRAM-SHA-256").split(b",")[3],
                         self.server_first("SCRAM-SHA-256", known).split(b",")[3])
        self.assertTrue(self.server_first("SCRAM-SHA-256").split(b",")[3].startswith(b"h="))

    def test_signed_by_the_proof(self):
        # A client that computes its proof over another server-first-message
        # (one without the attribute, as a man in the middle would relay it)
        # fails.
        mechanism = self.server.start("SCRAM-SHA-256")
        server_first = self.step(mechanism, b"n,,n=user,r=abc").data
        stripped = server_first.rsplit(b",", 1)[0]
        final, _ = rfc5802_final("SHA-256", "pencil", b"n,,", b"n=user,r=abc", stripped)
        self.step_fails(mechanism, final, "not-authorized")

    def test_off(self):
        server = self.make_server(downgrade_protection=False)
        self.assertEqual(len(self.server_first("SCRAM-SHA-256", server).split(b",")), 3)
