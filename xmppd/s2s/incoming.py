"""Incoming server streams: xmppd as receiving and authoritative server.

RFC 6120 §4-§6 and §8 for a stream from a peer server, XEP-0178 and
XEP-0220 §2.2.  States:

1. ``plain``: features ``<starttls/>``, ``<required/>`` with
   ``s2s.require_encryption`` (the default) or
   ``s2s.require_valid_certificates``; then anything but STARTTLS is a
   ``policy-violation``.  Otherwise the dialback feature is offered too, and
   a peer whose header has no version (pre-RFC 6120) may go straight to
   dialback.  Direct TLS listeners (XEP-0368) start in the next state.
2. ``encrypted``: SASL EXTERNAL (XEP-0178) is offered when the header names
   the peer's domain (``from``) and its certificate is valid for it; server
   dialback (XEP-0220, feature with ``<errors/>``) unless
   ``s2s.require_valid_certificates``, which instead refuses a peer without
   such a certificate with ``policy-violation``.
3. ``authenticated``: after SASL, a restart with empty features.

Until a domain is authenticated on it (SASL EXTERNAL, or dialback for one
domain pair), a stream is *unauthenticated*: it must get there within
``s2s.negotiation_timeout`` seconds of its connection, whatever it sends
meanwhile (whitespace keeps only authenticated streams alive), else it is
closed with ``connection-timeout`` (RFC 6120 §4.9.3.4); and an address may
have at most ``limits.s2s_max_unauthenticated_per_ip`` of them open, and
all peers together ``limits.max_unauthenticated``
(:class:`~xmppd.core.limits.ConnectionCounter`); more are refused
(``policy-violation``, ``resource-constraint``) as soon as they connect,
before TLS.  A stream that only asks us to verify dialback keys
(``<db:verify/>``) authenticates nothing and is closed the same way.

Our side of a stream is a hosted domain or a service domain of one (such
as ``conference.example.com``, :meth:`~xmppd.core.router.Router.add_service`):
both are served here (RFC 6120 §4.7.1 ``to``), with the certificate of
:mod:`xmppd.s2s.tls`, SASL EXTERNAL and dialback alike.  A domain that is
not allowed (:mod:`xmppd.s2s.policy`), in the header or in a dialback
request, is refused with a ``policy-violation`` stream error, logged with
the peer's address; a ``to`` that is not served here is ``host-unknown``.
A stream error sent before our domain is known comes after a header from
the first configured host (RFC 6120 §4.7.1, §4.9.1.2).

Dialback (receiving server, §2.2.1): each ``<db:result/>`` asks to
authenticate one sender domain, so one stream carries several
(multiplexing, §2.6).  The key is checked with the authoritative server of
the sender domain through the federation's outgoing stream to it
(``<db:verify/>``); a certificate valid for the sender domain is accepted
instead of dialing back (§1.2).  ``invalid`` closes the stream; problems
are dialback errors (§2.5), which leave the stream open.

Dialback (authoritative server, §2.2.2): a ``<db:verify/>`` is answered
with the key of our own secret (XEP-0185), on any stream.

Stanzas (RFC 6120 §8.1.1.1, §4.9.3): the ``from`` domain must be
authenticated on this stream (else ``invalid-from``; ``not-authorized``
before any is), ``to`` a domain served here (``host-unknown``); both must be
present (``improper-addressing``).  Valid stanzas go to the router like
those of local clients, without an origin session.
"""

import base64
import binascii

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd.core.c2s import NS_SASL, NS_TLS, default_host
from xmppd.core.events import STANZA_KINDS
from xmppd.core.stanzas import Stanza, error_reply, iq_problem
from xmppd.core.xmlstream import NS_CLIENT, NS_STREAMS, StreamError
from xmppd.jid import JID, InvalidJID, domain_of
from xmppd.s2s.dialback import (
    NS_DIALBACK, NS_DIALBACK_FEATURE, DialbackError, dialback_element)
from xmppd.core.stream import cancelled, new_stream_id
from xmppd.s2s.stream import ServerStream, check_header

log = Logger(namespace="xmppd.s2s")

EXTERNAL = "EXTERNAL"


class IncomingStream(ServerStream):
    """A stream a peer server opened to us."""

    direction = "incoming"

    def __init__(self, federation, direct_tls=False):
        super().__init__(federation, direct_tls)
        self.state = "encrypted" if direct_tls else "plain"
        self.domain = None  # the domain served here of the header's 'to'
        self.remote = None  # the peer's domain from the header's 'from', if given
        self.stream_id = None
        self.authenticated = {}  # remote domain -> how it was authenticated
        self._counted = None  # the address counted in federation.connections
        self._unauthenticated = None  # the address counted as unauthenticated
        self._negotiation_timer = None
        self._certificate_problems = {}  # domain -> problem or None
        self._external_offered = False
        self._sasl_pending = False

    def describe(self):
        return f"from {self.peer} ({self.remote or '?'} -> {self.domain or '?'})"

    def connectionMade(self):
        super().connectionMade()
        log.info("s2s incoming connection from {peer}", peer=self.peer)
        limits = self.federation.server.config.limits
        refusal = self.federation.connections.admit(self.address, limits)
        if refusal is not None:
            self.stream_error(refusal, "too many connections")
            return
        self._counted = self.address
        self.federation.incoming.add(self)
        refusal = self.federation.connections.admit_unauthenticated(
            self.address, limits, limits.s2s_max_unauthenticated_per_ip)
        if refusal is not None:
            log.warn("s2s refused a stream from {peer}: too many unauthenticated streams "
                     "({condition})", peer=self.peer, condition=refusal)
            self.stream_error(refusal, "too many unauthenticated streams")
            return
        self._unauthenticated = self.address
        self._negotiation_timer = self.clock.callLater(self.config.negotiation_timeout,
                                                       self._negotiation_expired)

    def _negotiation_expired(self):
        self._negotiation_timer = None
        log.info("s2s {stream}: not authenticated within {timeout:g} s, closing",
                 stream=self.describe(), timeout=self.config.negotiation_timeout)
        self.stream_error("connection-timeout", "not authenticated in time")

    def _no_longer_unauthenticated(self):
        self._negotiation_timer = cancelled(self._negotiation_timer)
        if self._unauthenticated is not None:
            self.federation.connections.release_unauthenticated(self._unauthenticated)
            self._unauthenticated = None

    def lost(self, reason):
        self._no_longer_unauthenticated()
        if self._counted is not None:
            self.federation.connections.release(self._counted)
            self._counted = None
        self.federation.incoming.discard(self)
        log.info("s2s incoming stream {stream} closed", stream=self.describe())

    def open_stream(self):
        self.stream_id = new_stream_id()
        self.send_header(self.domain or default_host(self.federation.server.hosts),
                         self.remote, self.stream_id)

    # Stream header and features

    def header_received(self, header):
        check_header(header)
        domain = domain_of(header.getAttribute("to"))
        if not self.federation.serves(domain):
            raise StreamError("host-unknown")
        if self.domain is not None and domain != self.domain:
            raise StreamError("host-unknown", "the domain changed on restart")
        self.domain = domain
        sender = header.getAttribute("from")
        if sender is not None:
            remote = domain_of(sender)
            if remote is None:
                raise StreamError("invalid-from")
            self._check_allowed(remote)
            self.remote = remote
        self.open_stream()
        if not header.getAttribute("version", "").startswith("1."):
            if self._tls_required:
                raise StreamError("unsupported-version", "TLS is required (XMPP 1.0)")
            return  # a pre-1.0 peer: no features, dialback only (RFC 6120 §4.7.5)
        if self.state == "encrypted" and self.config.require_valid_certificates:
            problem = ("no 'from' in the stream header" if self.remote is None
                       else self.certificate_problem(self.remote))
            if problem is not None:
                log.warn("s2s {stream}: refused, a valid certificate is required: {problem}",
                         stream=self.describe(), problem=problem)
                raise StreamError("policy-violation", "a valid certificate is required")
        self.send(self._features())

    @property
    def _tls_required(self):
        """Encryption is required, and so are certificates."""
        return self.config.require_encryption or self.config.require_valid_certificates

    def _check_allowed(self, remote):
        if not self.federation.policy.allows(remote):
            log.warn("s2s refused {remote} from {peer}: not a federation peer",
                     remote=remote, peer=self.peer)
            raise StreamError("policy-violation", f"{remote} is not a federation peer")

    def _features(self):
        features = domish.Element((NS_STREAMS, "features"))
        dialback = not self.config.require_valid_certificates
        if self.state == "plain":
            starttls = features.addElement((NS_TLS, "starttls"))
            if self._tls_required:
                starttls.addElement("required")
                dialback = False
        elif self.state == "encrypted":
            self._external_offered = (self.remote is not None
                                      and self.certificate_problem(self.remote) is None)
            if self._external_offered:
                mechanisms = features.addElement((NS_SASL, "mechanisms"))
                mechanisms.addElement("mechanism", content=EXTERNAL)
        else:
            dialback = False
        if dialback:
            features.addElement((NS_DIALBACK_FEATURE, "dialback")).addElement("errors")
        return features

    def certificate_problem(self, domain):
        """Why the peer's certificate is not valid for ``domain`` (None if
        it is); checked once per domain."""
        if not self.secure:
            return "no TLS"
        if domain not in self._certificate_problems:
            problem = self.federation.tls.peer_problem(self.transport, domain)
            self._certificate_problems[domain] = problem
            if problem is not None:
                log.info("s2s {stream}: certificate not valid for {domain}: {problem}",
                         stream=self.describe(), domain=domain, problem=problem)
        return self._certificate_problems[domain]

    # Elements

    def negotiate(self, element):
        if element.uri == NS_TLS and element.name == "starttls" and self.state == "plain":
            self._starttls()
        elif self.state == "plain" and self._tls_required:
            raise StreamError("policy-violation", "STARTTLS is required")
        elif element.uri == NS_SASL:
            self._sasl(element)
        elif element.uri == NS_DIALBACK and element.name == "result":
            self._dialback_request(element)
        elif element.uri == NS_DIALBACK and element.name == "verify":
            self._verify_request(element)
        elif element.uri == NS_CLIENT and element.name in STANZA_KINDS:
            self._stanza(element)
        else:
            raise StreamError("unsupported-stanza-type")

    def _starttls(self):
        context = self.federation.tls.server_tls(self.domain)
        if context is None:
            self.send(domish.Element((NS_TLS, "failure")))
            self.close()
            return
        self.send(domish.Element((NS_TLS, "proceed")))
        self.start_tls(context)
        self.state = "encrypted"

    # SASL EXTERNAL (XEP-0178)

    def _sasl(self, element):
        if self.state != "encrypted" or not self._external_offered:
            raise StreamError("not-authorized", "SASL is not offered")
        if element.name == "auth":
            if element.getAttribute("mechanism") != EXTERNAL:
                return self._sasl_failure("invalid-mechanism")
            text = str(element).strip()
            if not text:  # no initial response (RFC 6120 §6.4.2): ask for it
                self._sasl_pending = True
                self.send(domish.Element((NS_SASL, "challenge")))
                return
            return self._external(text)
        if element.name == "response" and self._sasl_pending:
            return self._external(str(element).strip())
        if element.name == "abort":
            return self._sasl_failure("aborted")
        return self._sasl_failure("malformed-request")

    def _external(self, text):
        self._sasl_pending = False
        try:
            authzid = "" if text == "=" else base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return self._sasl_failure("incorrect-encoding")
        domain = domain_of(authzid) if authzid else self.remote
        if domain is None or (self.remote is not None and domain != self.remote):
            return self._sasl_failure("invalid-authzid")
        self._check_allowed(domain)
        problem = self.certificate_problem(domain)
        if problem is not None:
            return self._sasl_failure("not-authorized", problem)
        self.send(domish.Element((NS_SASL, "success")))
        self._authenticated(domain, "SASL EXTERNAL")
        self.restart()
        self.state = "authenticated"

    def _sasl_failure(self, condition, text=None):
        """XEP-0178 §3: a failure ends the stream."""
        log.info("s2s {stream}: SASL EXTERNAL failed: {condition} {text}",
                 stream=self.describe(), condition=condition, text=text or "")
        failure = domish.Element((NS_SASL, "failure"))
        failure.addElement(condition)
        self.send(failure)
        self.close()

    def _authenticated(self, domain, method):
        self.authenticated[domain] = method
        self._no_longer_unauthenticated()
        log.info("s2s {stream}: {domain} authenticated ({method})",
                 stream=self.describe(), domain=domain, method=method)

    # Dialback (XEP-0220 §2.2)

    def _dialback_addresses(self, element):
        """The remote and hosted domain of a dialback request, or a dialback
        error answered; a remote domain not allowed ends the stream."""
        remote = domain_of(element.getAttribute("from"))
        if remote is None:
            raise StreamError("invalid-from", "a dialback request needs a valid 'from'")
        self._check_allowed(remote)
        local = domain_of(element.getAttribute("to"))
        if not self.federation.serves(local):
            self._dialback_answer(element, "item-not-found")
            return None
        return remote, local

    def _dialback_answer(self, request, condition=None, type_=None):
        self.send(dialback_element(
            request.name, request.getAttribute("to", ""), request.getAttribute("from", ""),
            type_=type_, id_=request.getAttribute("id"), condition=condition))

    def _dialback_request(self, element):
        if element.getAttribute("type") is not None:
            log.warn("s2s {stream}: ignoring an unsolicited dialback result",
                     stream=self.describe())
            return
        addresses = self._dialback_addresses(element)
        if addresses is None:
            return
        remote, local = addresses
        if self.config.require_valid_certificates:
            log.info("s2s {stream}: dialback from {remote} refused: valid certificates "
                     "are required", stream=self.describe(), remote=remote)
            self._dialback_answer(element, "not-authorized")
            return
        if self.secure and self.certificate_problem(remote) is None:
            self._dialback_verified("valid", element, remote, "dialback, valid certificate")
            return
        d = self.federation.verify_key(local, remote, self.stream_id, str(element).strip())
        d.addCallbacks(self._dialback_verified, self._dialback_failed,
                       callbackArgs=(element, remote, "dialback"), errbackArgs=(element, remote))

    def _dialback_verified(self, result, request, remote, method):
        if self.closed:
            return
        self._dialback_answer(request, type_=result)
        if result == "valid":
            self._authenticated(remote, method)
            return
        log.warn("s2s {stream}: dialback key of {remote} is invalid (spoofing?)",
                 stream=self.describe(), remote=remote)
        self.close()

    def _dialback_failed(self, failure, request, remote):
        if failure.check(DialbackError):
            condition = failure.value.condition
        else:
            log.failure("s2s {stream}: dialback verification failed", failure,
                        stream=self.describe())
            condition = "remote-server-not-found"
        log.info("s2s {stream}: could not verify the dialback key of {remote}: {condition}",
                 stream=self.describe(), remote=remote, condition=condition)
        if not self.closed:
            self._dialback_answer(request, condition)

    def _verify_request(self, element):
        if element.getAttribute("type") is not None or not element.getAttribute("id"):
            log.warn("s2s {stream}: ignoring a malformed or unsolicited dialback verification",
                     stream=self.describe())
            return
        addresses = self._dialback_addresses(element)
        if addresses is None:
            return
        receiving, originating = addresses
        valid = self.federation.keys.valid(str(element), receiving, originating,
                                           element["id"])
        log.info("s2s {stream}: {receiving} verified a dialback key of {originating}: "
                 "{result}", stream=self.describe(), receiving=receiving,
                 originating=originating, result="valid" if valid else "invalid")
        self._dialback_answer(element, type_="valid" if valid else "invalid")

    # Stanzas (RFC 6120 §8)

    def _stanza(self, element):
        if not self.authenticated:
            raise StreamError("not-authorized", "no domain is authenticated on this stream")
        sender, to = element.getAttribute("from"), element.getAttribute("to")
        if not sender or not to:
            raise StreamError("improper-addressing")
        try:
            sender = JID.parse(sender)
        except InvalidJID:
            raise StreamError("invalid-from") from None
        if sender.domain not in self.authenticated:
            raise StreamError("invalid-from", f"{sender.domain} is not authenticated")
        try:
            recipient = JID.parse(to)
        except InvalidJID as e:
            return self._refuse(element, "jid-malformed", str(e))
        if not self.federation.serves(recipient.domain):
            raise StreamError("host-unknown", f"{recipient.domain} is not served here")
        problem = iq_problem(element)
        if problem is not None:
            return self._refuse(element, "bad-request", problem)
        self.dispatch(Stanza(element, sender, recipient))

    def _refuse(self, element, condition, text):
        """Answer a stanza that cannot be routed (never an error)."""
        if element.getAttribute("type") == "error":
            return
        reply = error_reply(element, condition, text)
        reply["from"] = self.domain
        self.federation.api.route(reply)


class IncomingStreamFactory(Factory):
    """Builds :class:`IncomingStream` for a STARTTLS or direct TLS listener."""

    noisy = False

    def __init__(self, federation, direct_tls=False):
        self.federation = federation
        self.direct_tls = direct_tls

    def buildProtocol(self, addr):
        stream = IncomingStream(self.federation, self.direct_tls)
        stream.factory = self
        return stream
