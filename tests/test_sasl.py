"""Tests for xmppd.core.scram and xmppd.core.sasl: the SCRAM test vectors of
RFC 5802 §5 and RFC 7677 §3, PLAIN (RFC 4616) and the failure conditions of
RFC 6120 §6.5.  The vectors predate XEP-0474, so these exchanges run without
its attribute (tests/test_scram_plus.py has it)."""

import base64

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from xmppd.core import scram
from xmppd.core.sasl import Challenge, SaslFailure, SaslServer, Success
from xmppd.storage.models import HASH_NAMES

DOMAIN = "example.com"

# RFC 5802 §5 (SCRAM-SHA-1)
SHA1_SALT = "QSXCR+Q6sek8bf92"
SHA1_CLIENT_FIRST = b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
SHA1_SERVER_NONCE = "3rfcNHYJY1ZVvWVs7j"
SHA1_SERVER_FIRST = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
SHA1_CLIENT_FINAL = (
    b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
)
SHA1_SERVER_FINAL = b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="

# RFC 7677 §3 (SCRAM-SHA-256)
SHA256_SALT = "W22ZaJ0SNY7soEsUEjb6gQ=="
SHA256_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SHA256_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SHA256_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
SHA256_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SHA256_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def vector_keys(hash_name, salt):
    return scram.derive_keys("pencil", hash_name, salt=base64.b64decode(salt))


def normalize(text):
    """Stand-in for the localpart normaliser: lower-case, and no "@"."""
    if "@" in text:
        raise ValueError("invalid localpart")
    return text.lower()


def client_final(hash_name, password, gs2_header, client_first_bare, server_first):
    """The client side of RFC 5802 §3, for exchanges without a test vector."""
    attributes = dict(field.split("=", 1) for field in server_first.decode().split(","))
    salted = scram.salted_password(
        hash_name,
        scram.prepare_password(password),
        base64.b64decode(attributes["s"]),
        int(attributes["i"]),
    )
    key = scram.client_key(hash_name, salted)
    without_proof = "c={},r={}".format(base64.b64encode(gs2_header).decode(), attributes["r"])
    auth_message = b",".join([client_first_bare, server_first, without_proof.encode()])
    signature = scram.client_signature(hash_name, scram.stored_key(hash_name, key), auth_message)
    proof = bytes(a ^ b for a, b in zip(key, signature))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


class ScramKeysTests(SynchronousTestCase):
    def test_random_salt(self):
        first = scram.derive_keys("pencil", "SHA-256")
        second = scram.derive_keys("pencil", "SHA-256")
        self.assertEqual(len(first.salt), 16)
        self.assertNotEqual(first.salt, second.salt)
        self.assertNotEqual(first.stored_key, second.stored_key)

    def test_minimum_iterations(self):
        self.assertRaises(ValueError, scram.derive_keys, "pencil", "SHA-256", iterations=4095)
        self.assertEqual(scram.derive_keys("pencil", "SHA-256", iterations=5000).iterations, 5000)

    def test_unknown_hash(self):
        self.assertRaises(ValueError, scram.derive_keys, "pencil", "MD5")

    def test_derive_all(self):
        # Every supported hash the account store keeps.
        keys = scram.derive_all("pencil")
        self.assertEqual(set(keys), set(scram.HASHES) & set(HASH_NAMES))
        self.assertLessEqual({"SHA-1", "SHA-256"}, set(keys))
        for hash_name, verifier in keys.items():
            self.assertEqual(scram.hash_name_of(verifier), hash_name)
            self.assertTrue(scram.check_password("pencil", verifier))

    def test_sha512(self):
        keys = scram.derive_keys("pencil", "SHA-512")
        self.assertEqual((len(keys.stored_key), len(keys.server_key)), (64, 64))
        self.assertEqual(scram.hash_name_of(keys), "SHA-512")

    def test_prepare_password(self):
        # RFC 8265 §4.2.1: non-ASCII spaces map to U+0020, then NFC.
        self.assertEqual(scram.prepare_password("a\u00a0b\u0065\u0301"), "a b\u00e9".encode())
        self.assertRaises(ValueError, scram.prepare_password, "")
        self.assertRaises(ValueError, scram.prepare_password, "pen\x00cil")

    def test_check_password(self):
        for hash_name in scram.HASHES:
            keys = scram.derive_keys("pencil", hash_name)
            self.assertTrue(scram.check_password("pencil", keys))
            self.assertFalse(scram.check_password("Pencil", keys))
            self.assertFalse(scram.check_password("", keys))

    def test_check_password_prepares(self):
        keys = scram.derive_keys("p\u00e9ncil", "SHA-256")
        self.assertTrue(scram.check_password("pe\u0301ncil", keys))


class SaslSteps:
    """What SaslServer tests share: ``accounts`` by username, the
    usernames looked up, and steps that must succeed or fail."""

    def lookup(self, username):
        self.looked_up.append(username)
        return defer.succeed(self.accounts.get(username))

    def step(self, mechanism, data):
        return self.successResultOf(mechanism.step(data))

    def step_fails(self, mechanism, data, condition):
        failure = self.failureResultOf(mechanism.step(data), SaslFailure)
        self.assertEqual(failure.value.condition, condition, data)
        return failure.value


class SaslTestCase(SaslSteps, SynchronousTestCase):
    def setUp(self):
        self.accounts = {
            "user": {
                "SHA-1": vector_keys("SHA-1", SHA1_SALT),
                "SHA-256": vector_keys("SHA-256", SHA256_SALT),
            }
        }
        self.looked_up = []
        self.server_nonce = SHA256_SERVER_NONCE
        self.server = SaslServer(DOMAIN, self.lookup, normalize, nonce=lambda: self.server_nonce,
                                 downgrade_protection=False)



class SaslServerTests(SaslTestCase):
    def test_mechanisms(self):
        self.assertEqual(self.server.mechanisms, ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"))
        for name in self.server.mechanisms:
            self.assertEqual(self.server.start(name).name, name)

    def test_invalid_mechanism(self):
        for name in ("DIGEST-MD5", "SCRAM-SHA-256-PLUS", "scram-sha-1", "SCRAM-MD5"):
            with self.assertRaises(SaslFailure) as caught:
                self.server.start(name)
            self.assertEqual(caught.exception.condition, "invalid-mechanism")

    def test_failure_text(self):
        failure = SaslFailure("malformed-request", "bad")
        self.assertEqual((failure.condition, failure.text), ("malformed-request", "bad"))
        self.assertIsNone(SaslFailure("aborted").text)

    def test_default_nonce(self):
        server = SaslServer(DOMAIN, self.lookup, normalize, downgrade_protection=False)
        nonces = []
        for _ in range(2):
            challenge = self.step(server.start("SCRAM-SHA-256"), SHA256_CLIENT_FIRST)
            nonce = challenge.data.split(b",")[0].removeprefix(b"r=rOprNGfwEbeRWgbNEkqO")
            self.assertGreaterEqual(len(nonce), 24)
            nonces.append(nonce)
        self.assertNotEqual(nonces[0], nonces[1])

    def test_lookup_errback(self):
        self.server = SaslServer(
            DOMAIN, lambda username: defer.fail(ConnectionError("database down")), normalize
        )
        for mechanism, data in (("SCRAM-SHA-1", SHA1_CLIENT_FIRST), ("PLAIN", b"\0user\0pencil")):
            self.step_fails(self.server.start(mechanism), data, "temporary-auth-failure")
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 2)

    def test_lookup_raises(self):
        def lookup(username):
            raise ConnectionError("database down")

        self.server = SaslServer(DOMAIN, lookup, normalize)
        mechanism = self.server.start("SCRAM-SHA-256")
        self.step_fails(mechanism, SHA256_CLIENT_FIRST, "temporary-auth-failure")
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)


class SaslScramTests(SaslTestCase):
    def test_rfc5802_sha1(self):
        self.server_nonce = SHA1_SERVER_NONCE
        mechanism = self.server.start("SCRAM-SHA-1")
        self.assertEqual(self.step(mechanism, SHA1_CLIENT_FIRST), Challenge(SHA1_SERVER_FIRST))
        self.assertEqual(
            self.step(mechanism, SHA1_CLIENT_FINAL), Success("user", SHA1_SERVER_FINAL)
        )

    def test_rfc7677_sha256(self):
        mechanism = self.server.start("SCRAM-SHA-256")
        self.assertEqual(self.step(mechanism, SHA256_CLIENT_FIRST), Challenge(SHA256_SERVER_FIRST))
        self.assertEqual(
            self.step(mechanism, SHA256_CLIENT_FINAL), Success("user", SHA256_SERVER_FINAL)
        )

    def test_no_initial_response(self):
        mechanism = self.server.start("SCRAM-SHA-256")
        self.assertEqual(self.step(mechanism, None), Challenge(b""))
        self.assertEqual(self.step(mechanism, SHA256_CLIENT_FIRST), Challenge(SHA256_SERVER_FIRST))
        self.assertEqual(
            self.step(mechanism, SHA256_CLIENT_FINAL), Success("user", SHA256_SERVER_FINAL)
        )

    def test_no_response_after_empty_challenge(self):
        mechanism = self.server.start("SCRAM-SHA-256")
        self.step(mechanism, None)
        self.step_fails(mechanism, None, "malformed-request")

    def test_no_step_after_success(self):
        mechanism = self.server.start("SCRAM-SHA-256")
        self.step(mechanism, SHA256_CLIENT_FIRST)
        self.step(mechanism, SHA256_CLIENT_FINAL)
        self.step_fails(mechanism, SHA256_CLIENT_FINAL, "malformed-request")

    def test_no_step_after_failure(self):
        mechanism = self.server.start("SCRAM-SHA-256")
        self.step(mechanism, SHA256_CLIENT_FIRST)
        self.step_fails(mechanism, SHA256_CLIENT_FINAL.replace(b"p=dH", b"p=dh"), "not-authorized")
        self.step_fails(mechanism, SHA256_CLIENT_FINAL, "malformed-request")

    def test_normalized_username(self):
        mechanism = self.server.start("SCRAM-SHA-256")
        client_first_bare = b"n=USER,r=clientnonce"
        server_first = self.step(mechanism, b"n,," + client_first_bare).data
        final = client_final("SHA-256", "pencil", b"n,,", client_first_bare, server_first)
        self.assertEqual(self.step(mechanism, final).username, "user")
        self.assertEqual(self.looked_up, ["user"])

    def test_wrong_proof(self):
        mechanism = self.server.start("SCRAM-SHA-256")
        client_first_bare = b"n=user,r=clientnonce"
        server_first = self.step(mechanism, b"n,," + client_first_bare).data
        final = client_final("SHA-256", "pen", b"n,,", client_first_bare, server_first)
        failure = self.step_fails(mechanism, final, "not-authorized")
        self.assertIsNone(failure.text)

    def test_nonce_mismatch(self):
        mechanism = self.server.start("SCRAM-SHA-256")
        self.step(mechanism, SHA256_CLIENT_FIRST)
        final = SHA256_CLIENT_FINAL.replace(b"hNlF$k0", b"hNlF$k1")
        self.step_fails(mechanism, final, "not-authorized")

    def test_channel_binding_mismatch(self):
        # The client said "n" in its GS2 header but "y" in the final message.
        mechanism = self.server.start("SCRAM-SHA-256")
        self.step(mechanism, SHA256_CLIENT_FIRST)
        final = SHA256_CLIENT_FINAL.replace(b"c=biws", b"c=eSws")
        self.step_fails(mechanism, final, "not-authorized")

    def test_client_supports_channel_binding(self):
        # "y": the client could bind but believes the server cannot; fine
        # since no -PLUS mechanism is advertised (RFC 5802 §6).
        mechanism = self.server.start("SCRAM-SHA-1")
        client_first_bare = b"n=user,r=clientnonce"
        server_first = self.step(mechanism, b"y,," + client_first_bare).data
        final = client_final("SHA-1", "pencil", b"y,,", client_first_bare, server_first)
        self.assertTrue(final.startswith(b"c=eSws,"))
        self.assertEqual(self.step(mechanism, final).username, "user")

    def test_channel_binding_refused(self):
        mechanism = self.server.start("SCRAM-SHA-256")
        failure = self.step_fails(mechanism, b"p=tls-exporter,,n=user,r=abc", "malformed-request")
        self.assertIn("channel binding", failure.text)
        self.assertEqual(self.looked_up, [])

    def test_unknown_user_fails_at_the_end(self):
        server_firsts = []
        for _ in range(2):
            mechanism = self.server.start("SCRAM-SHA-256")
            client_first_bare = b"n=nobody,r=clientnonce"
            server_first = self.step(mechanism, b"n,," + client_first_bare).data
            server_firsts.append(server_first)
            nonce, salt, iterations = server_first.split(b",")
            self.assertEqual(nonce, b"r=clientnonce" + SHA256_SERVER_NONCE.encode())
            self.assertEqual(len(base64.b64decode(salt.removeprefix(b"s="))), 16)
            self.assertEqual(iterations, b"i=4096")
            final = client_final("SHA-256", "pencil", b"n,,", client_first_bare, server_first)
            failure = self.step_fails(mechanism, final, "not-authorized")
            self.assertIsNone(failure.text)
        # The salt of a made-up account is stable, like a real one's.
        self.assertEqual(server_firsts[0], server_firsts[1])

    def test_unknown_users_get_different_salts(self):
        salts = set()
        for name in (b"alice", b"bob"):
            challenge = self.step(self.server.start("SCRAM-SHA-256"), b"n,,n=" + name + b",r=x")
            salts.add(challenge.data.split(b",")[1])
        self.assertEqual(len(salts), 2)

    def test_account_without_keys_for_hash(self):
        self.accounts["user"] = {"SHA-256": self.accounts["user"]["SHA-256"]}
        self.server_nonce = SHA1_SERVER_NONCE
        mechanism = self.server.start("SCRAM-SHA-1")
        self.step(mechanism, SHA1_CLIENT_FIRST)
        self.step_fails(mechanism, SHA1_CLIENT_FINAL, "not-authorized")

    def test_invalid_username(self):
        # The test normaliser rejects "@".
        self.step_fails(self.server.start("SCRAM-SHA-256"), b"n,,n=us@er,r=abc", "not-authorized")

    def test_escaped_username(self):
        self.accounts["a,b=c"] = scram.derive_all("pencil")
        mechanism = self.server.start("SCRAM-SHA-256")
        client_first_bare = b"n=a=2Cb=3Dc,r=clientnonce"
        server_first = self.step(mechanism, b"n,," + client_first_bare).data
        final = client_final("SHA-256", "pencil", b"n,,", client_first_bare, server_first)
        self.assertEqual(self.step(mechanism, final).username, "a,b=c")
        self.assertEqual(self.looked_up, ["a,b=c"])

    def test_authzid_own_jid(self):
        for authzid in (b"user@example.com", b"USER@Example.COM"):
            mechanism = self.server.start("SCRAM-SHA-1")
            gs2_header = b"n,a=" + authzid + b","
            client_first_bare = b"n=user,r=clientnonce"
            server_first = self.step(mechanism, gs2_header + client_first_bare).data
            final = client_final("SHA-1", "pencil", gs2_header, client_first_bare, server_first)
            self.assertEqual(self.step(mechanism, final).username, "user")

    def test_authzid_other(self):
        for authzid in (
            b"admin@example.com",
            b"user@example.org",
            b"user@example.com/resource",
            b"example.com",
            b"us=3Der@example.com",
        ):
            mechanism = self.server.start("SCRAM-SHA-256")
            data = b"n,a=" + authzid + b",n=user,r=abc"
            self.step_fails(mechanism, data, "invalid-authzid")
        self.assertEqual(self.looked_up, [])

    def test_malformed_client_first(self):
        for data in (
            b"",
            b"\xff\xfe",
            b"n,,n=us\xc3er,r=abc",
            b"n,n=user,r=abc",
            b"x,,n=user,r=abc",
            b"nn,,n=user,r=abc",
            b"n,b=user,n=user,r=abc",
            b"n,a=,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,,n=user",
            b"n,,n=,r=abc",
            b"n,,n=us=2Xer,r=abc",
            b"n,,n=user,r=",
            b"n,,n=user,r=a b",
            b"n,,m=ext,n=user,r=abc",
            b"n,,user,abc",
        ):
            self.step_fails(self.server.start("SCRAM-SHA-256"), data, "malformed-request")
        self.assertEqual(self.looked_up, [])

    def test_extensions_ignored(self):
        self.server_nonce = SHA1_SERVER_NONCE
        mechanism = self.server.start("SCRAM-SHA-1")
        challenge = self.step(mechanism, SHA1_CLIENT_FIRST + b",x=ext")
        self.assertEqual(challenge, Challenge(SHA1_SERVER_FIRST))

    def test_malformed_client_final(self):
        good = SHA256_CLIENT_FINAL
        for data in (
            b"",
            b"\xff",
            good.replace(b"c=", b"C="),
            good.replace(b",r=", b",n="),
            good.replace(b",p=", b",x="),
            good.replace(b"p=dH", b"p=*dH"),
            good.replace(b"c=biws", b"c=b!ws"),
            good[:-4] + b"====",
            good.replace(b"p=", b"p=AAAA"),
            good.split(b",p=")[0],
        ):
            mechanism = self.server.start("SCRAM-SHA-256")
            self.step(mechanism, SHA256_CLIENT_FIRST)
            self.step_fails(mechanism, data, "malformed-request")


class SaslPlainTests(SaslTestCase):
    def test_success(self):
        mechanism = self.server.start("PLAIN")
        self.assertEqual(self.step(mechanism, b"\0User\0pencil"), Success("user", None))
        self.assertEqual(self.looked_up, ["user"])

    def test_key_derivation_is_offloaded(self):
        pending = []

        def offload(fn, *args):
            pending.append((defer.Deferred(), fn, args))
            return pending[-1][0]

        server = SaslServer(DOMAIN, self.lookup, normalize, offload=offload)
        d = server.start("PLAIN").step(b"\0user\0pencil")
        self.assertNoResult(d)  # waits for the thread pool
        [(result, fn, args)] = pending
        self.assertIs(fn, scram.check_password)
        result.callback(fn(*args))
        self.assertEqual(self.successResultOf(d), Success("user", None))

    def test_no_initial_response(self):
        mechanism = self.server.start("PLAIN")
        self.assertEqual(self.step(mechanism, None), Challenge(b""))
        self.assertEqual(self.step(mechanism, b"\0user\0pencil").username, "user")

    def test_sha1_only_account(self):
        self.accounts["user"] = {"SHA-1": self.accounts["user"]["SHA-1"]}
        self.assertEqual(self.step(self.server.start("PLAIN"), b"\0user\0pencil").username, "user")

    def test_verifiers_an_account_lacks_are_derived_and_stored(self):
        sha1_only = {"SHA-1": self.accounts["user"]["SHA-1"]}
        self.accounts["user"] = dict(sha1_only)
        added = []
        server = SaslServer(DOMAIN, self.lookup, normalize,
                            add_keys=lambda *args: added.append(args) or defer.succeed(True))
        self.step_fails(server.start("PLAIN"), b"\0user\0Pencil", "not-authorized")
        self.assertEqual(added, [])

        self.assertEqual(self.step(server.start("PLAIN"), b"\0user\0pencil").username, "user")

        [(username, keys, current)] = added
        self.assertEqual((username, current), ("user", sha1_only))
        self.assertEqual(set(keys), set(scram.DERIVED) - {"SHA-1"})
        for name, verifier in keys.items():
            self.assertEqual(scram.hash_name_of(verifier), name)
            self.assertTrue(scram.check_password("pencil", verifier))
        self.accounts["user"] = scram.derive_all("pencil")
        self.step(server.start("PLAIN"), b"\0user\0pencil")
        self.assertEqual(len(added), 1)  # nothing lacks

    def test_password_is_prepared(self):
        self.accounts["user"] = scram.derive_all("p\u00e9ncil")
        data = "\0user\0pe\u0301ncil".encode()
        self.assertEqual(self.step(self.server.start("PLAIN"), data).username, "user")

    def test_bad_password(self):
        for password in (b"Pencil", b"pencil ", b"pen\x07cil"):
            self.step_fails(self.server.start("PLAIN"), b"\0user\0" + password, "not-authorized")

    def test_unknown_user(self):
        self.step_fails(self.server.start("PLAIN"), b"\0nobody\0pencil", "not-authorized")

    def test_account_without_keys(self):
        self.accounts["user"] = {}
        self.step_fails(self.server.start("PLAIN"), b"\0user\0pencil", "not-authorized")

    def test_invalid_username(self):
        self.step_fails(self.server.start("PLAIN"), b"\0us@er\0pencil", "not-authorized")
        self.assertEqual(self.looked_up, [])

    def test_authzid(self):
        mechanism = self.server.start("PLAIN")
        self.assertEqual(self.step(mechanism, b"user@example.com\0user\0pencil").username, "user")
        for authzid in (b"admin@example.com", b"user@example.net", b"user"):
            data = authzid + b"\0user\0pencil"
            self.step_fails(self.server.start("PLAIN"), data, "invalid-authzid")

    def test_malformed(self):
        for data in (
            b"",
            b"user\0pencil",
            b"\0user\0pencil\0",
            b"\0\0pencil",
            b"\0user\0",
            b"\0user\0pen\xffcil",
        ):
            self.step_fails(self.server.start("PLAIN"), data, "malformed-request")
        self.assertEqual(self.looked_up, [])

    def test_no_step_after_success(self):
        mechanism = self.server.start("PLAIN")
        self.step(mechanism, b"\0user\0pencil")
        self.step_fails(mechanism, b"\0user\0pencil", "malformed-request")
