"""Tests for the choice of SASL mechanisms in xmppd.core.sasl (the defaults
of a password and an anonymous host, checking configured names) and for
ANONYMOUS (RFC 4505, XEP-0175)."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from xmppd.core.sasl import (
    DEFAULT_MECHANISMS,
    MECHANISMS,
    SaslFailure,
    SaslServer,
    Success,
    check_mechanisms,
)
from xmppd.jid import normalize_localpart

DOMAIN = "anon.example.com"


class MechanismChoiceTests(SynchronousTestCase):
    def test_check_mechanisms(self):
        self.assertEqual(check_mechanisms(["SCRAM-SHA-1", "PLAIN"]), ("SCRAM-SHA-1", "PLAIN"))
        self.assertEqual(check_mechanisms(MECHANISMS), MECHANISMS)

    def test_check_mechanisms_errors(self):
        for names, message in (
            (["SCRAM-SHA-256", "DIGEST-MD5"], "unknown SASL mechanism 'DIGEST-MD5'"),
            (["scram-sha-256"], "unknown SASL mechanism 'scram-sha-256'"),
            (["PLAIN", "SCRAM-SHA-1", "PLAIN"], "SASL mechanism 'PLAIN' named twice"),
            ([], "no SASL mechanism"),
            ("PLAIN", "expected a list of SASL mechanisms, not 'PLAIN'"),
        ):
            with self.assertRaises(ValueError) as caught:
                check_mechanisms(names)
            self.assertTrue(str(caught.exception).startswith(message), caught.exception)

    def test_defaults(self):
        self.assertEqual(
            DEFAULT_MECHANISMS["password"],
            ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"),
        )
        self.assertEqual(DEFAULT_MECHANISMS["anonymous"], ("ANONYMOUS",))
        for names in DEFAULT_MECHANISMS.values():
            self.assertEqual(check_mechanisms(names), names)
            # Strongest first, as in MECHANISMS.
            self.assertEqual(sorted(names, key=MECHANISMS.index), list(names))

    def test_server_checks_its_mechanisms(self):
        with self.assertRaises(ValueError):
            SaslServer(DOMAIN, None, normalize_localpart, mechanisms=("PLAIN", "CRAM-MD5"))

    def test_configured_order(self):
        server = SaslServer(DOMAIN, None, normalize_localpart,
                            mechanisms=("PLAIN", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-512"),
                            channel_binding={"tls-exporter": b"x" * 32}.get)
        self.assertEqual(server.mechanisms, ("PLAIN", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-512"))

    def test_default_is_password(self):
        server = SaslServer(DOMAIN, None, normalize_localpart)
        self.assertEqual(server.mechanisms, ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"))
        with self.assertRaises(SaslFailure) as caught:
            server.start("ANONYMOUS")
        self.assertEqual(caught.exception.condition, "invalid-mechanism")


class AnonymousTests(SynchronousTestCase):
    def setUp(self):
        self.looked_up = []
        self.server = SaslServer(DOMAIN, self.lookup, normalize_localpart,
                                 mechanisms=DEFAULT_MECHANISMS["anonymous"],
                                 channel_binding={"tls-exporter": b"x" * 32}.get)

    def lookup(self, username):
        self.looked_up.append(username)
        return defer.succeed(None)

    def succeeds(self, data):
        success = self.successResultOf(self.server.start("ANONYMOUS").step(data))
        self.assertIsInstance(success, Success)
        self.assertTrue(success.anonymous)
        self.assertIsNone(success.additional_data)
        self.assertIsNone(success.channel_binding)
        return success.username

    def fails(self, data, text):
        failure = self.failureResultOf(self.server.start("ANONYMOUS").step(data), SaslFailure)
        self.assertEqual((failure.value.condition, failure.value.text), ("malformed-request", text))

    def test_offered_alone(self):
        # No -PLUS mechanism, so no binding type either (XEP-0440).
        self.assertEqual(self.server.mechanisms, ("ANONYMOUS",))
        self.assertEqual(self.server.channel_bindings, ())
        for name in ("PLAIN", "SCRAM-SHA-256"):
            with self.assertRaises(SaslFailure) as caught:
                self.server.start(name)
            self.assertEqual(caught.exception.condition, "invalid-mechanism")

    def test_fresh_usernames(self):
        # XEP-0175 §2: <auth/> without initial response succeeds at once.
        usernames = {self.succeeds(None) for _ in range(20)}
        self.assertEqual(len(usernames), 20)
        for username in usernames:
            self.assertEqual(normalize_localpart(username), username)
            self.assertGreaterEqual(len(username), 32)
        self.assertEqual(self.looked_up, [])

    def test_trace_ignored(self):
        usernames = set()
        for trace in (b"sirhc", b"user@example.org", "\u00e9t\u00e9".encode(),
                      "\u263a".encode() * 255, b""):
            usernames.add(self.succeeds(trace))
            self.assertFalse(trace and any(trace.decode() in u for u in usernames))
        self.assertEqual(len(usernames), 5)

    def test_trace_refused(self):
        self.fails("\u263a".encode() * 256, "trace information over 255 characters")
        self.fails(b"a" * 256, "trace information over 255 characters")
        for trace in (b"\xff\xfe", b"abc\xc3", b"\xed\xa0\x80"):
            self.fails(trace, "trace information not UTF-8")
        for trace in (b"a\x00b", b"line\n", b"\x7f", "\u0085".encode()):
            self.fails(trace, "control character in the trace information")

    def test_no_step_after_success(self):
        mechanism = self.server.start("ANONYMOUS")
        self.successResultOf(mechanism.step(b""))
        failure = self.failureResultOf(mechanism.step(b""), SaslFailure)
        self.assertEqual(failure.value.condition, "malformed-request")

    def test_success_fields_default(self):
        self.assertEqual(Success("user"), Success("user", None, anonymous=False,
                                                 channel_binding=None))
