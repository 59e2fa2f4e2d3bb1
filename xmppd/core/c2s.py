"""Client-to-server streams: TLS, SASL, then stanzas (RFC 6120 §4-§7, §10).

One :class:`ClientStream` per TCP connection, through these states:

1. ``plain``: the only feature offered is ``<starttls><required/></starttls>``
   (§5.3.1); anything but ``<starttls/>`` closes the stream with
   ``policy-violation`` (§5.4.2.1).  There is no plaintext mode.
   Direct TLS listeners (XEP-0368) start in the next state.
2. ``encrypted``: SASL (§6.4) with the mechanisms of
   :class:`~xmppd.core.sasl.SaslServer`; three failures close the stream with
   ``policy-violation``; anything else is ``not-authorized`` (§6.4.1).
   An unauthenticated stream is closed after ``c2s.auth_timeout``.
3. ``authenticated``: after the restart, only resource binding (§7) is
   processed; anything else is ``not-authorized`` (§7.1).
4. ``bound``: every stanza gets its ``from`` stamped with the session's full
   JID (§8.1.2.1: a client cannot spoof it), is validated, and goes to the
   router.

Each restart builds a new parser, and bytes that follow ``<starttls/>`` or a
SASL success in the same read are discarded (§5.4.3.3, §6.4.6), as are the
elements that arrived while the SASL step was pending.  While a step is
pending, at most :data:`MAX_BACKLOG` elements wait; more is
``policy-violation`` (§13.12).

A stream error sent before the requested domain is known has a response
header from the first configured host (:func:`default_host`).
"""

import base64
import binascii
import secrets

from OpenSSL import SSL
from twisted.internet import defer, task
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.words.xish import domish

from xmppd import logs
from xmppd.core.api import AUTHENTICATED, ENCRYPTED
from xmppd.core.limits import ReadThrottle, address_of
from xmppd.core.sasl import SaslFailure, SaslServer, Success
from xmppd.core.sessions import Session
from xmppd.core.stanzas import Stanza, StanzaError, error_reply
from xmppd.core.xmlstream import (
    NS_CLIENT, NS_STREAMS, NS_XML, StreamError, StreamParser, serialize,
    stream_error_element, stream_header)
from xmppd.jid import JID, InvalidJID, normalize_localpart

log = Logger()

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"

MAX_AUTH_FAILURES = 3
MAX_BACKLOG = 10  # elements received while a negotiation step is pending
STANZA_KINDS = ("message", "presence", "iq")
IQ_TYPES = ("get", "set", "result", "error")


def peer_text(peer):
    """A transport's peer as log lines write it, for operators' greps and
    fail2ban: ``127.0.0.1:57712``, ``[::1]:57712``, or ``local`` for a
    UNIX socket."""
    host = getattr(peer, "host", None)
    if not host:
        return "local"
    if ":" in host:
        host = f"[{host}]"
    port = getattr(peer, "port", None)
    return host if port is None else f"{host}:{port}"


def tls_failure(reason):
    """The OpenSSL reason a connection ended with (``reason`` is the Failure
    given to ``connectionLost``), or None if TLS did not fail."""
    if reason is None or not reason.check(SSL.Error):
        return None
    errors = reason.value.args[0] if reason.value.args else None
    if isinstance(errors, list) and errors:
        return "; ".join(str(error[-1]) for error in errors)
    return str(reason.value) or type(reason.value).__name__


def default_host(hosts):
    """The ``from`` of a response stream header sent before the requested
    domain is known (a stream error for ``host-unknown``, a bad header, or
    bytes that are not XML at all): the first configured host.  RFC 6120
    §4.7.1 has the receiving entity's header name a domain it serves, and
    §4.9.1.2 has it send a header even when the error comes first; clients
    such as aioxmpp report a header without ``from`` instead of the error."""
    return next(iter(hosts))


class ClientStream(Protocol):
    """One client connection."""

    def __init__(self, server, direct_tls=False):
        self.server = server
        self.encrypted = direct_tls
        self.state = "encrypted" if direct_tls else "plain"
        self.domain = None
        self.user = None  # bare JID once authenticated
        self.session = None
        self.stream_id = None
        self.lang = "en"
        self.peer = None
        self._parser = None
        self._header_sent = False
        self._closed = False
        self._sasl = None
        self._mechanism = None
        self._auth_failures = 0
        self._account = None  # the account named by the current SASL attempt
        self._busy = None  # Deferred of a pending negotiation step
        self._backlog = []
        self._auth_timer = None
        self._throttle = None
        self._counted = None  # the address counted in server.connections

    # Connection lifecycle

    def connectionMade(self):
        self.peer = self.transport.getPeer()
        self.server.streams.add(self)
        address = address_of(self.peer)
        log.info("c2s connection from {peer}", peer=peer_text(self.peer))
        self._new_parser()
        limits = self.server.config.limits
        refusal = self.server.connections.admit(address, limits)
        if refusal is None and self.server.auth_throttle.banned(address):
            self.server.connections.release(address)
            refusal = "policy-violation"
        if refusal is not None:
            self.stream_error(refusal, "too many connections or failed authentications")
            return
        self._counted = address
        self._throttle = ReadThrottle(self.transport, self.server.clock,
                                      limits.c2s_read_rate, limits.c2s_read_burst)
        timeout = self.server.config.c2s.auth_timeout
        self._auth_timer = self.server.clock.callLater(
            timeout, self.stream_error, "connection-timeout",
            "not authenticated in time")

    def dataReceived(self, data):
        if self._closed:
            return
        self._throttle.consumed(len(data))
        if self.session is not None:
            self.session.last_active = self.server.clock.seconds()
        try:
            self._parser.feed(data)
        except StreamError as e:
            self.stream_error(e.condition, e.text)

    def connectionLost(self, reason):
        self._closed = True
        self.server.streams.discard(self)
        self._cancel_auth_timer()
        if self._throttle is not None:
            self._throttle.stop()
        if self._counted is not None:
            self.server.connections.release(self._counted)
            self._counted = None
        if self.session is not None:
            session, self.session = self.session, None
            if self.server.sessions.remove(session):
                self.server.hooks.fire("session/unbound", session)
        problem = tls_failure(reason)
        if problem is not None:
            log.info("c2s TLS failure with {peer}: {problem}", peer=peer_text(self.peer),
                     problem=problem)
        if self.user is None:
            log.info("c2s connection from {peer} closed", peer=peer_text(self.peer))
        else:
            log.info("c2s connection from {peer} closed ({user})", peer=peer_text(self.peer),
                     user=self.user)

    def _cancel_auth_timer(self):
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None

    def _new_parser(self):
        self._parser = StreamParser(self._stream_started, self._element_received,
                                    self._stream_ended,
                                    self.server.config.c2s.max_stanza_size)

    def _restart(self, state):
        """Expect a new stream header (RFC 6120 §4.3.3)."""
        self._parser.stop()
        self._backlog = []
        self.state = state
        self._header_sent = False
        self._new_parser()

    # Output

    def send_element(self, element):
        if not self._closed:
            self.transport.write(serialize(element))

    send = send_element

    def send_stanza(self, element):
        """Deliver a stanza to this stream's session (counted)."""
        self.server.metrics.sent(element.name)
        if logs.tracing:
            log.debug("c2s out {jid}: {xml}", jid=self.session.jid, xml=element.toXml())
        self.send_element(element)

    def stream_error(self, condition, text=None):
        """Send a stream error and close (RFC 6120 §4.9.1.1)."""
        if self._closed:
            return
        log.info("c2s stream error to {peer}: {condition} {text}",
                 peer=peer_text(self.peer), condition=condition, text=text or "")
        self._send_header()
        self.transport.write(serialize(stream_error_element(condition, text)))
        self.close()

    def close(self):
        if self._closed:
            return
        if self._header_sent:
            self.transport.write(b"</stream:stream>")
        self._closed = True
        self._parser.stop()
        self.transport.loseConnection()

    def _send_header(self):
        if not self._header_sent:
            self._header_sent = True
            self.stream_id = secrets.token_urlsafe(12)
            self.transport.write(stream_header(
                NS_CLIENT, self.stream_id, lang=self.lang,
                from_=self.domain or default_host(self.server.hosts)))

    # Stream header and features

    def _stream_started(self, header):
        self.lang = header.getAttribute((NS_XML, "lang")) or self.lang
        if header.uri != NS_STREAMS or header.name != "stream":
            raise StreamError("invalid-namespace")
        if header.defaultUri != NS_CLIENT:
            raise StreamError("invalid-namespace", "expected jabber:client")
        domain = self._requested_domain(header.getAttribute("to"))
        if self.domain is not None and domain != self.domain:
            raise StreamError("host-unknown", "the domain changed on restart")
        self.domain = domain
        if self.domain is None:
            raise StreamError("host-unknown")
        if not header.getAttribute("version", "").startswith("1."):
            raise StreamError("unsupported-version")
        self._send_header()
        self.send_element(self._features())

    def _requested_domain(self, to):
        if to is None:
            return next(iter(self.server.hosts)) if len(self.server.hosts) == 1 else None
        try:
            jid = JID.parse(to)
        except InvalidJID:
            return None
        return jid.domain if jid.domain in self.server.hosts and jid.local is None else None

    def _features(self):
        features = domish.Element((NS_STREAMS, "features"))
        if self.state == "plain":
            features.addElement((NS_TLS, "starttls")).addElement("required")
            return features
        if self.state == "encrypted":
            self._sasl = SaslServer(self.domain, self._credentials, normalize_localpart,
                                    offload=self.server.offload)
            mechanisms = features.addElement((NS_SASL, "mechanisms"))
            for name in self._sasl.mechanisms:
                mechanisms.addElement("mechanism", content=name)
        for builder in self.server.stream_features[
                ENCRYPTED if self.state == "encrypted" else AUTHENTICATED]:
            feature = builder(self)
            if feature is not None:
                features.addChild(feature)
        return features

    def _stream_ended(self):
        self.close()

    # Elements

    def _element_received(self, element):
        if self._busy is not None:
            if len(self._backlog) >= MAX_BACKLOG:
                raise StreamError("policy-violation", "too much sent during authentication")
            self._backlog.append(element)
            return
        handler = getattr(self, f"_on_{self.state}")
        result = handler(element)
        if isinstance(result, defer.Deferred):
            self._busy = result
            result.addErrback(self._negotiation_failed)
            result.addBoth(self._resume)

    def _resume(self, _):
        """Handle the backlog until the next pending step or a restart."""
        self._busy = None
        try:
            while self._backlog and self._busy is None and not self._closed:
                self._element_received(self._backlog.pop(0))
        except StreamError as e:
            self.stream_error(e.condition, e.text)

    def _negotiation_failed(self, failure):
        log.failure("c2s negotiation step failed", failure)
        self.stream_error("internal-server-error")

    def _on_plain(self, element):
        if element.uri == NS_TLS and element.name == "starttls":
            context = self.server.certificates.context_factory(self.domain)
            if context is None:
                self.send_element(domish.Element((NS_TLS, "failure")))
                self.close()
                return
            self.send_element(domish.Element((NS_TLS, "proceed")))
            self._restart("encrypted")
            self.transport.startTLS(context)
            self.encrypted = True
            return
        raise StreamError("policy-violation", "STARTTLS is required")

    def _on_encrypted(self, element):
        if element.uri != NS_SASL:
            raise StreamError("not-authorized")
        if element.name == "auth":
            if self.server.auth_throttle.banned(self._counted):
                raise StreamError("policy-violation", "too many failed authentications")
            if self._mechanism is not None:
                return self._sasl_failure("malformed-request", "authentication in progress")
            self._account = None
            try:
                self._mechanism = self._sasl.start(element.getAttribute("mechanism", ""))
            except SaslFailure as e:
                return self._sasl_failure(e.condition, e.text)
            text = str(element).strip()
            return self._sasl_step(None if text == "" else text)
        if element.name == "response" and self._mechanism is not None:
            return self._sasl_step(str(element).strip())
        if element.name == "abort":
            return self._sasl_failure("aborted")
        return self._sasl_failure("malformed-request")

    def _credentials(self, username):
        self._account = JID(username, self.domain, None)
        return self.server.storage.get_credentials(username, self.domain)

    def _sasl_step(self, text):
        if text is None:
            data = None
        elif text == "=":
            data = b""
        else:
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                return self._sasl_failure("incorrect-encoding")
        d = self._mechanism.step(data)
        d.addCallbacks(self._sasl_stepped, self._sasl_failed)
        return d

    def _sasl_stepped(self, step):
        if isinstance(step, Success):
            self._authenticated(step)
            return
        self._sasl_element("challenge", step.data)

    def _sasl_failed(self, failure):
        failure.trap(SaslFailure)
        return self._sasl_failure(failure.value.condition, failure.value.text)

    def _sasl_element(self, name, data):
        element = domish.Element((NS_SASL, name))
        if data:
            element.addContent(base64.b64encode(data).decode("ascii"))
        elif data is not None:
            element.addContent("=")
        self.send_element(element)

    def _sasl_failure(self, condition, text=None):
        """Answer with a SASL failure: at once for an abort, else after the
        delay the address has earned (the stream waits meanwhile)."""
        self._mechanism = None
        failure = domish.Element((NS_SASL, "failure"))
        failure.addElement(condition)
        if text:
            failure.addElement("text", content=text)
        if condition == "aborted":
            self.send_element(failure)
            return None
        self._auth_failures += 1
        self.server.metrics.auth_failures.inc()
        if self._account is None:
            log.info("c2s authentication failure from {peer}: {condition}",
                     peer=peer_text(self.peer), condition=condition)
        else:
            log.info("c2s authentication failure for {account} from {peer}: {condition}",
                     account=self._account, peer=peer_text(self.peer), condition=condition)
        delay = self.server.auth_throttle.failed(self._counted, self.server.config.limits)
        if not delay:
            self._failed(failure)
            return None
        return task.deferLater(self.server.clock, delay, self._failed, failure)

    def _failed(self, failure):
        self.send_element(failure)
        if self._auth_failures >= MAX_AUTH_FAILURES or self.server.auth_throttle.banned(self._counted):
            self.stream_error("policy-violation", "too many failed authentication attempts")

    def _authenticated(self, success):
        self._mechanism = None
        self.user = JID(success.username, self.domain, None)
        self._cancel_auth_timer()
        self.server.metrics.logins.inc()
        log.info("c2s {peer} authenticated as {user}", peer=peer_text(self.peer), user=self.user)
        self._sasl_element("success", success.additional_data)
        self._restart("authenticated")

    def _on_authenticated(self, element):
        payload = next(element.elements(), None)
        if not (element.name == "iq" and element.uri == NS_CLIENT
                and element.getAttribute("type") == "set"
                and payload is not None and payload.uri == NS_BIND):
            raise StreamError("not-authorized", "bind a resource first")
        self._post(Stanza(element, self.user, JID(None, self.domain, None), self))

    def bind(self, resource):
        """Bind ``resource`` (already valid and chosen) for this stream and
        return the new session; a session bound to the same full JID is
        closed with ``conflict`` (RFC 6120 §7.7.2.2)."""
        self.session = Session(self.user.with_resource(resource), self,
                               self.server.clock.seconds())
        self.state = "bound"
        old = self.server.sessions.add(self.session)
        if old is not None:
            old.carrier.session = None
            self.server.hooks.fire("session/unbound", old)
            old.close("conflict", "replaced by a new session")
        self.server.hooks.fire("session/bound", self.session)
        return self.session

    def _on_bound(self, element):
        if element.uri != NS_CLIENT or element.name not in STANZA_KINDS:
            raise StreamError("unsupported-stanza-type")
        self.server.metrics.received(element.name)
        if logs.tracing:
            log.debug("c2s in {jid}: {xml}", jid=self.session.jid, xml=element.toXml())
        element["from"] = self.session.jid.full
        try:
            stanza = self._validate(element)
        except StanzaError as e:
            if element.getAttribute("type") != "error":
                self.session.send(error_reply(element, e))
            return
        self._post(stanza)

    def _validate(self, element):
        """Parse the addresses and check the iq rules of RFC 6120 §8.2.3."""
        to = element.getAttribute("to")
        try:
            recipient = self.user if to is None else JID.parse(to)
        except InvalidJID as e:
            raise StanzaError("jid-malformed", str(e))
        if element.name == "iq":
            type_ = element.getAttribute("type")
            if type_ not in IQ_TYPES or not element.getAttribute("id"):
                raise StanzaError("bad-request", "an iq needs an id and a valid type")
            if type_ in ("get", "set") and len(list(element.elements())) != 1:
                raise StanzaError("bad-request", "an iq request has exactly one payload")
        return Stanza(element, self.session.jid, recipient, self.session)

    def _post(self, stanza):
        with self.server.metrics.routing_seconds.time():
            self.server.router.dispatch(stanza)


class ClientStreamFactory(Factory):
    """Builds :class:`ClientStream` for a STARTTLS or direct-TLS listener."""

    noisy = False

    def __init__(self, server, direct_tls=False):
        self.server = server
        self.direct_tls = direct_tls

    def buildProtocol(self, addr):
        stream = ClientStream(self.server, self.direct_tls)
        stream.factory = self
        return stream
