"""SASL authentication of client streams (RFC 6120 §6, RFC 4422).

After TLS, the mechanisms of :class:`~xmppd.core.sasl.SaslServer` are
offered (§6.4.1) and ``<auth/>``, ``<response/>`` and ``<abort/>`` run the
exchange (§6.4.2-§6.4.5), with base64 payloads (``=`` for an empty one,
§6.4.2).  The stream's later elements wait while a step waits for the
credentials.  Each failure is a ``<failure/>`` with its §6.5 condition;
from one address, each failure after the first is answered later and later
and too many ban the address for a while
(:class:`~xmppd.core.limits.AuthThrottle`); the third failure on one
stream, or a banned address, ends it with ``policy-violation``.  Success
restarts the stream (§6.4.6).
"""

import base64
import binascii

from twisted.internet import task
from twisted.words.xish import domish

from xmppd.core.api import ENCRYPTED
from xmppd.core.sasl import SaslFailure, SaslServer, Success
from xmppd.jid import JID, normalize_localpart

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
MAX_AUTH_FAILURES = 3
# The elements of the namespace (RFC 6120 §6.4); a client sends the first
# three, any other is a malformed request.
ELEMENTS = ("auth", "response", "abort", "challenge", "success", "failure")


class Authentication:
    """The SASL exchanges of one stream, until one succeeds."""

    __slots__ = ("api", "stream", "sasl", "mechanism", "failures", "account")

    def __init__(self, api, stream):
        self.api = api
        self.stream = stream
        self.sasl = SaslServer(stream.domain, self._credentials, normalize_localpart,
                               offload=api.streams.offload)
        self.mechanism = None
        self.failures = 0
        self.account = None  # the account named by the current attempt

    def _credentials(self, username):
        self.account = JID(username, self.stream.domain, None)
        return self.api.storage.get_credentials(username, self.stream.domain)

    def received(self, element):
        """Handle one SASL element: None, or a Deferred of its step."""
        if element.name == "auth":
            if self.api.streams.banned(self.stream):
                self.stream.close("policy-violation", "too many failed authentications")
                return None
            if self.mechanism is not None:
                return self._failure("malformed-request", "authentication in progress")
            self.account = None
            try:
                self.mechanism = self.sasl.start(element.getAttribute("mechanism", ""))
            except SaslFailure as e:
                return self._failure(e.condition, e.text)
            text = str(element).strip()
            return self._step(None if text == "" else text)
        if element.name == "response" and self.mechanism is not None:
            return self._step(str(element).strip())
        if element.name == "abort":
            return self._failure("aborted")
        return self._failure("malformed-request")

    def _step(self, text):
        if text is None:
            data = None
        elif text == "=":
            data = b""
        else:
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                return self._failure("incorrect-encoding")
        d = self.mechanism.step(data)
        d.addCallbacks(self._stepped, self._step_failed)
        return d

    def _stepped(self, step):
        if isinstance(step, Success):
            self._succeeded(step)
            return
        self._send("challenge", step.data)

    def _step_failed(self, failure):
        failure.trap(SaslFailure)
        return self._failure(failure.value.condition, failure.value.text)

    def _send(self, name, data):
        element = domish.Element((NS_SASL, name))
        if data:
            element.addContent(base64.b64encode(data).decode("ascii"))
        elif data is not None:
            element.addContent("=")
        self.stream.send(element)

    def _failure(self, condition, text=None):
        """Answer with a SASL failure: at once for an abort, else after the
        delay the address has earned (the stream waits meanwhile)."""
        self.mechanism = None
        failure = domish.Element((NS_SASL, "failure"))
        failure.addElement(condition)
        if text:
            failure.addElement("text", content=text)
        if condition == "aborted":
            self.stream.send(failure)
            return None
        self.failures += 1
        if self.account is None:
            self.api.log.info("c2s authentication failure from {peer}: {condition}",
                              peer=self.stream.peer, condition=condition)
        else:
            self.api.log.info(
                "c2s authentication failure for {account} from {peer}: {condition}",
                account=self.account, peer=self.stream.peer, condition=condition)
        delay = self.api.streams.failed(self.stream)
        if not delay:
            self._failed(failure)
            return None
        return task.deferLater(self.api.clock, delay, self._failed, failure)

    def _failed(self, failure):
        self.stream.send(failure)
        if self.failures >= MAX_AUTH_FAILURES or self.api.streams.banned(self.stream):
            self.stream.close("policy-violation", "too many failed authentication attempts")

    def _succeeded(self, success):
        self.mechanism = None
        del self.stream.state[self.api.name]
        self.api.streams.authenticated(self.stream, success.username)
        self._send("success", success.additional_data)
        self.stream.restart()


def setup(api):
    def offer(stream):
        authentication = stream.state.get(api.name)
        if authentication is None:
            authentication = stream.state[api.name] = Authentication(api, stream)
        mechanisms = domish.Element((NS_SASL, "mechanisms"))
        for name in authentication.sasl.mechanisms:
            mechanisms.addElement("mechanism", content=name)
        return mechanisms

    def received(stream, element):
        authentication = stream.state.get(api.name)
        if authentication is None or stream.user is not None:
            return False
        return authentication.received(element) or True

    api.stream_feature(offer, ENCRYPTED)
    for name in ELEMENTS:
        api.streams.on_element(NS_SASL, name, received)
