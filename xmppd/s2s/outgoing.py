"""Outgoing server streams: xmppd as initiating server.

RFC 6120 §3.2, §4-§6 for the stream, XEP-0178 for SASL EXTERNAL,
XEP-0220 §2.1 for dialback.  One :class:`OutgoingLink` per pair of hosted
domain and remote domain carries the stanzas between them over one stream,
reused until it closes.  Setting it up is bounded by ``s2s.connect_timeout``:

1. The candidates of :mod:`xmppd.s2s.resolve` are tried in order until one
   accepts the TCP connection and completes TLS: a TLS failure (or a
   handshake not finished within ``s2s.handshake_timeout``) with one target
   moves on to the next (RFC 6120 §3.2.1 step 8 lets the initiating
   entity go on after a failure), as a refused connection does.
2. The stream header names both domains and says ``version='1.0'``.
   STARTTLS when offered (a peer without it fails the link when
   ``s2s.require_encryption``); direct TLS targets start encrypted.  Our
   certificate for the local domain is the TLS client certificate.
3. If the peer's certificate is valid for the remote domain and the peer
   offers SASL EXTERNAL: EXTERNAL with the local domain as authorization
   identity (XEP-0178 §3).  Otherwise, unless
   ``s2s.require_valid_certificates``: dialback, sending the XEP-0185 key
   for the peer's stream id and waiting for ``valid``, if the peer supports
   it (its header declares the dialback namespace or it offers the dialback
   feature: XEP-0220 §2.4).  A peer that offers dialback only, or sends no
   features at all (pre-1.0, only without required encryption), gets
   dialback.  A peer may refuse EXTERNAL although it offered it (ejabberd
   offers it even when it cannot verify our certificate): then, unless
   ``s2s.require_valid_certificates``, dialback follows on the same stream
   if the peer supports it.  That is what Prosody and ejabberd do as
   initiating servers, and what they expect as receiving servers, which
   keep the stream open after the SASL failure (RFC 6120 §6.4.5 lets the
   initiating entity go on).  XEP-0178 §3 has the receiving server close
   the stream after the failure instead; a peer that does so ends the link
   (``remote-server-timeout``) without a second connection, since such a
   peer would not have offered EXTERNAL for a certificate it cannot accept.
4. Ready: queued stanzas go out in order, later ones at once.

Stanzas waiting meanwhile (at most ``s2s.max_queue``; more get
``resource-constraint``) are never lost: if the link fails, each is bounced
to its sender (RFC 6120 §8.3.3) with

- ``remote-server-not-found``: no server found, no candidate accepted the
  connection, or the peer refused us (stream error, no STARTTLS, TLS or
  SASL failure, certificate not valid where required, no dialback);
- ``remote-server-timeout``: ``connect_timeout`` elapsed, the connection
  dropped, or a dialback error (XEP-0220 §2.1.1);
- ``internal-server-error``: the peer found our dialback key invalid
  (XEP-0220 §2.1.1).

The link also carries dialback verification requests (``<db:verify/>``)
for keys that the remote domain's servers sent us (XEP-0220 §2.1.2): they
go out once the stream is past TLS, without waiting for our own
authentication, and each is answered within ``connect_timeout``.

A link that fails or closes (idle streams close after ``s2s.idle_timeout``)
is forgotten: the next stanza opens a new one.
"""

import base64

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.words.xish import domish

from xmppd.core.c2s import NS_SASL, NS_TLS
from xmppd.core.stream import cancelled
from xmppd.core.xmlstream import NS_STREAMS, StreamError
from xmppd.s2s.dialback import (
    NS_DIALBACK, NS_DIALBACK_FEATURE, DialbackError, dialback_element, error_condition)
from xmppd.jid import domain_of
from xmppd.s2s.incoming import EXTERNAL
from xmppd.s2s.stream import ServerStream, check_header

log = Logger(namespace="xmppd.s2s")


class OutgoingLink:
    """Stanzas and dialback verifications from ``local`` to ``remote``."""

    def __init__(self, federation, local, remote):
        self.federation = federation
        self.local = local
        self.remote = remote
        self.stream = None
        self.ready = False
        self.failure = None  # (condition, text) once the link has ended
        self._queue = []
        self._verifications = {}  # stream id -> _Verification
        self._can_verify = False
        self._attempt = None
        self._timer = None
        self._connect_error = None
        self._untried = []  # the candidates after the one being tried

    def __repr__(self):
        return f"<OutgoingLink {self.local} -> {self.remote}>"

    @property
    def _reactor(self):
        return self.federation.reactor

    # Setting up

    def start(self):
        timeout = self.federation.config.connect_timeout
        self._timer = self._reactor.callLater(
            timeout, self.fail, "remote-server-timeout",
            f"no connection to {self.remote} within {timeout:g} s")
        log.info("s2s outgoing {local} -> {remote}: connecting", local=self.local,
                 remote=self.remote)
        self._attempt = self.federation.locator.locate(self.remote)
        self._attempt.addCallbacks(self._connect, self._unexpected)

    @property
    def finished(self):
        return self.failure is not None

    def _connect(self, candidates):
        if self.finished:
            return
        if not candidates:
            self.fail("remote-server-not-found", self._connect_error
                      or f"no XMPP server found for {self.remote}")
            return
        target, self._untried = candidates[0], candidates[1:]
        log.info("s2s outgoing {local} -> {remote}: connecting to {target}",
                 local=self.local, remote=self.remote, target=target)
        factory = OutgoingStreamFactory(self, target.direct_tls)
        if target.direct_tls:
            creator = self.federation.tls.client_tls(self.local, self.remote, direct_tls=True)
            factory = TLSMemoryBIOFactory(creator, True, factory, clock=self._reactor)
        endpoint = target.endpoint(self._reactor, self.federation.config.connect_timeout)
        self._attempt = endpoint.connect(factory)
        self._attempt.addCallbacks(self._connected, self._connect_failed,
                                   errbackArgs=(target,))

    def _connected(self, protocol):
        self._attempt = None

    def _connect_failed(self, failure, target):
        if self.finished:
            return
        self._connect_error = f"cannot connect to {target}: {failure.getErrorMessage()}"
        log.info("s2s outgoing {local} -> {remote}: {error}", local=self.local,
                 remote=self.remote, error=self._connect_error)
        self._connect(self._untried)

    def _unexpected(self, failure):
        if self.finished:
            return
        log.failure("s2s outgoing {link}: setting up failed", failure, link=self)
        self.fail("remote-server-not-found", "internal error")

    # Called by the stream

    def opened(self, stream):
        self.stream = stream

    def negotiated(self):
        """The stream is past TLS: dialback verifications may go out."""
        self._can_verify = True
        for stream_id in list(self._verifications):
            self._send_verification(stream_id)

    def authenticated(self, method):
        """The remote domain accepts our stanzas: send the queue."""
        self.ready = True
        self._cancel_timer()
        log.info("s2s outgoing {local} -> {remote}: authenticated ({method}), "
                 "{count} stanza(s) queued", local=self.local, remote=self.remote,
                 method=method, count=len(self._queue))
        queue, self._queue = self._queue, []
        for stanza in queue:
            self.stream.send(stanza.element)

    def closed(self, stream):
        """The stream ended (its ``failure`` says why); if TLS failed before
        it got past TLS, the next candidate is tried."""
        if stream is not self.stream:
            return
        if stream.tls_problem is not None and not self._can_verify and self._untried:
            self.stream = None
            self._connect_error = f"TLS failure: {stream.tls_problem}"
            log.info("s2s outgoing {local} -> {remote}: {error}; trying the next server",
                     local=self.local, remote=self.remote, error=self._connect_error)
            self._connect(self._untried)
            return
        self.fail(*stream.failure)

    # Use

    def send(self, stanza):
        """Send ``stanza`` (a routed Stanza) now or once ready; bounce it if
        the queue is full or the link has already failed."""
        if self.finished:
            self.federation.api.bounce(stanza, *self.failure)
        elif self.ready:
            self.stream.send(stanza.element)
        elif len(self._queue) >= self.federation.config.max_queue:
            self.federation.api.bounce(stanza, "resource-constraint",
                                       f"too many stanzas waiting for {self.remote}")
        else:
            self._queue.append(stanza)

    def verify(self, stream_id, key):
        """Ask the remote domain whether ``key``, received on our incoming
        stream ``stream_id``, is genuine: a Deferred of ``"valid"`` or
        ``"invalid"``, failing with :class:`DialbackError`."""
        if self.finished:
            return defer.fail(DialbackError(_verification_condition(self.failure[0])))
        timeout = self.federation.config.connect_timeout
        verification = _Verification(key, self._reactor.callLater(
            timeout, self._verification_failed, stream_id, "remote-server-timeout"))
        self._verifications[stream_id] = verification
        if self._can_verify:
            self._send_verification(stream_id)
        return verification.deferred

    def _send_verification(self, stream_id):
        verification = self._verifications[stream_id]
        if not verification.sent:
            verification.sent = True
            self.stream.send(dialback_element("verify", self.local, self.remote,
                                              key=verification.key, id_=stream_id))

    def verification_answered(self, element):
        """A ``<db:verify/>`` answer; one we did not ask for is ignored
        (XEP-0220 §3.1, unsolicited dialback)."""
        stream_id = element.getAttribute("id")
        verification = self._verifications.get(stream_id)
        if (verification is None or not verification.sent
                or domain_of(element.getAttribute("from")) != self.remote
                or domain_of(element.getAttribute("to")) != self.local):
            log.warn("s2s outgoing {local} -> {remote}: ignoring an unsolicited "
                     "dialback verification", local=self.local, remote=self.remote)
            return
        type_ = element.getAttribute("type")
        if type_ in ("valid", "invalid"):
            del self._verifications[stream_id]
            verification.timer.cancel()
            verification.deferred.callback(type_)
        else:
            # XEP-0220 §2.5: an error reaching the authoritative server.
            log.info("s2s outgoing {local} -> {remote}: verification error {condition}",
                     local=self.local, remote=self.remote, condition=error_condition(element))
            self._verification_failed(stream_id, "remote-server-not-found")

    def _verification_failed(self, stream_id, condition):
        verification = self._verifications.pop(stream_id, None)
        if verification is not None:
            if verification.timer.active():
                verification.timer.cancel()
            verification.deferred.errback(DialbackError(condition))

    # Ending

    def fail(self, condition, text=None):
        """End the link: bounce what waits with ``condition``, fail pending
        verifications, close the stream, and be forgotten."""
        if self.finished:
            return
        self.failure = (condition, text)
        self._cancel_timer()
        if self._attempt is not None:
            attempt, self._attempt = self._attempt, None
            attempt.cancel()
        self.federation.forget(self)
        queue, self._queue = self._queue, []
        if self.ready:
            log.info("s2s outgoing {local} -> {remote}: closed", local=self.local,
                     remote=self.remote)
        else:
            log.warn("s2s outgoing {local} -> {remote} failed: {condition} ({text}); "
                     "bouncing {count} stanza(s)", local=self.local, remote=self.remote,
                     condition=condition, text=text or "", count=len(queue))
        for stanza in queue:
            self.federation.api.bounce(stanza, condition, text)
        for stream_id in list(self._verifications):
            self._verification_failed(stream_id, _verification_condition(condition))
        if self.stream is not None:
            self.stream.close()

    def _cancel_timer(self):
        self._timer = cancelled(self._timer)


def _verification_condition(condition):
    """The dialback error for a verification lost with the link (XEP-0220
    §2.4): a timeout, or the authoritative server not reached."""
    if condition == "remote-server-timeout":
        return condition
    return "remote-server-not-found"


class _Verification:
    __slots__ = ("key", "timer", "deferred", "sent")

    def __init__(self, key, timer):
        self.key = key
        self.timer = timer
        self.deferred = defer.Deferred()
        self.sent = False


class OutgoingStream(ServerStream):
    """The stream of an :class:`OutgoingLink`, through the states
    ``opening`` (until features), ``starttls``, ``sasl``,
    ``authenticated`` (after SASL), ``dialback`` and ``ready``."""

    direction = "outgoing"

    def __init__(self, federation, link, direct_tls=False):
        super().__init__(federation, direct_tls)
        self.link = link
        self.state = "opening"
        self.peer_stream_id = None
        self.peer_dialback = False  # the peer declared or offers dialback
        # Why the stream ended, for the link's bounces; set by each refusal.
        self.failure = ("remote-server-timeout", "the connection closed")

    def describe(self):
        return f"to {self.peer} ({self.link.local} -> {self.link.remote})"

    def connectionMade(self):
        super().connectionMade()
        self.link.opened(self)
        self.open_stream()

    def open_stream(self):
        self.send_header(self.link.local, self.link.remote)

    def close(self, condition=None, text=None):
        if condition is not None:
            self.stream_error(condition, text)
        elif not self.closed:
            super().close()
            self.link.closed(self)

    def lost(self, reason):
        if self.tls_problem is not None and self.state != "ready":
            self.failure = ("remote-server-not-found", f"TLS failure: {self.tls_problem}")
        self.link.closed(self)

    def stream_error(self, condition, text=None):
        if not self.closed:
            self.failure = ("remote-server-timeout", f"stream error {condition}")
        super().stream_error(condition, text)

    def peer_stream_error(self, condition):
        self.failure = ("remote-server-not-found", f"the peer sent stream error {condition}")
        super().peer_stream_error(condition)

    def refused(self, text, condition="remote-server-not-found"):
        """End the stream because the peer cannot take our stanzas."""
        self.failure = (condition, text)
        self.close()

    # Negotiation

    def header_received(self, header):
        check_header(header)
        self.peer_stream_id = header.getAttribute("id")
        # XEP-0220 §2.4.1: the namespace declaration announces dialback.
        self.peer_dialback = NS_DIALBACK in (header.localPrefixes or {}).values()
        if not header.getAttribute("version", "").startswith("1."):
            self._features(None)  # no features follow (RFC 6120 §4.7.5)

    def negotiate(self, element):
        if element.uri == NS_STREAMS and element.name == "features":
            self._features(element)
        elif element.uri == NS_TLS and self.state == "starttls":
            if element.name != "proceed":
                return self.refused("the peer refused STARTTLS")
            self.start_tls(self.federation.tls.client_tls(self.link.local, self.link.remote))
            self.state = "opening"
            self.open_stream()
        elif element.uri == NS_SASL and self.state == "sasl":
            if element.name != "success":
                condition = next((c.name for c in element.elements()), element.name)
                return self._external_refused(condition)
            self.restart()
            self.state = "authenticated"
            self.open_stream()
        elif element.uri == NS_DIALBACK and element.name == "result":
            self._dialback_result(element)
        elif element.uri == NS_DIALBACK and element.name == "verify":
            self.link.verification_answered(element)
        else:
            raise StreamError("unsupported-stanza-type")

    def _features(self, features):
        if self.state not in ("opening", "authenticated"):
            log.warn("s2s {stream}: ignoring unexpected stream features", stream=self.describe())
            return
        if self.state == "authenticated":
            self.link.negotiated()
            self._ready("SASL EXTERNAL")
            return
        if offers(features, NS_DIALBACK_FEATURE, "dialback"):
            self.peer_dialback = True  # XEP-0220 §2.4.2
        if not self.secure:
            if offers(features, NS_TLS, "starttls"):
                self.state = "starttls"
                self.send(domish.Element((NS_TLS, "starttls")))
            elif self.federation.config.require_encryption:
                self.refused("the peer does not offer STARTTLS")
            else:
                self._dialback()
            return
        problem = self.federation.tls.peer_problem(self.transport, self.link.remote)
        if problem is None and EXTERNAL in mechanisms(features):
            self.state = "sasl"
            auth = domish.Element((NS_SASL, "auth"))
            auth["mechanism"] = EXTERNAL
            auth.addContent(base64.b64encode(self.link.local.encode("utf-8")).decode("ascii"))
            self.send(auth)
        elif self.federation.config.require_valid_certificates:
            self.refused(problem or "the peer does not offer SASL EXTERNAL")
        else:
            if problem is not None:
                log.info("s2s {stream}: certificate of {remote} not valid ({problem}); "
                         "using dialback", stream=self.describe(), remote=self.link.remote,
                         problem=problem)
            self._dialback()

    def _external_refused(self, condition):
        text = f"the peer refused SASL EXTERNAL ({condition})"
        if self.federation.config.require_valid_certificates:
            return self.refused(text)
        log.info("s2s {stream}: {text}; trying dialback", stream=self.describe(), text=text)
        self._dialback()

    def _dialback(self):
        if not self.peer_dialback:
            return self.refused("the peer supports neither SASL EXTERNAL for us nor dialback")
        if not self.peer_stream_id:
            return self.refused("the peer's stream has no id, dialback is impossible")
        key = self.federation.keys.make(self.link.remote, self.link.local, self.peer_stream_id)
        self.send(dialback_element("result", self.link.local, self.link.remote, key=key))
        self.state = "dialback"
        self.link.negotiated()

    def _dialback_result(self, element):
        type_ = element.getAttribute("type")
        if (self.state != "dialback" or type_ is None
                or domain_of(element.getAttribute("from")) != self.link.remote
                or domain_of(element.getAttribute("to")) != self.link.local):
            log.warn("s2s {stream}: ignoring an unsolicited dialback result",
                     stream=self.describe())
        elif type_ == "valid":
            self._ready("dialback")
        elif type_ == "invalid":
            self.refused("the peer found our dialback key invalid", "internal-server-error")
        else:
            self.refused(f"dialback error {error_condition(element)}", "remote-server-timeout")

    def _ready(self, method):
        self.state = "ready"
        self.link.authenticated(method)


def offers(features, uri, name):
    """Whether ``features`` (or None) has the feature ``uri`` ``name``."""
    return features is not None and next(features.elements(uri, name), None) is not None


def mechanisms(features):
    """The SASL mechanism names offered in ``features`` (RFC 6120 §6.4.1)."""
    if features is None:
        return []
    return [str(m).strip() for c in features.elements(NS_SASL, "mechanisms")
            for m in c.elements(NS_SASL, "mechanism")]


class OutgoingStreamFactory(Factory):
    """Builds the :class:`OutgoingStream` of one connection attempt."""

    noisy = False

    def __init__(self, link, direct_tls=False):
        self.link = link
        self.direct_tls = direct_tls

    def buildProtocol(self, addr):
        stream = OutgoingStream(self.link.federation, self.link, self.direct_tls)
        stream.factory = self
        return stream
