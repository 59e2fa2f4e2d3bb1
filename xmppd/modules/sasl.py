"""SASL authentication of client streams (RFC 6120 §6, RFC 4422).

After TLS, the mechanisms of :class:`~xmppd.core.sasl.SaslServer` are
offered (§6.4.1) and ``<auth/>``, ``<response/>`` and ``<abort/>`` run the
exchange (§6.4.2-§6.4.5), with base64 payloads (``=`` for an empty one,
§6.4.2).  The stream's later elements wait while a step waits for the
credentials.  Each failure is a ``<failure/>`` with its §6.5 condition;
from one address, and for one account (the one the client named), each
failure after the first is answered later and later; too many ban the
address, or lock the account, for a while
(:class:`~xmppd.core.limits.AuthThrottle`).  A locked account refuses every
password login, the right password included, with the same
``<not-authorized/>`` (§6.5.10), so the answer tells nothing of the
password; its bound sessions go on.  The third failure on one stream, or a
banned address, ends it with ``policy-violation``.  Success restarts the
stream (§6.4.6).
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
LOCKED = "the account is temporarily locked after too many failed authentications"


class Authentication:
    """The SASL exchanges of one stream, until one succeeds."""

    __slots__ = ("api", "accounts", "stream", "sasl", "mechanism", "failures", "account")

    def __init__(self, api, accounts, stream):
        self.api = api
        self.accounts = accounts
        self.stream = stream
        self.sasl = SaslServer(stream.domain, self._credentials, normalize_localpart,
                               offload=api.streams.offload)
        self.mechanism = None
        self.failures = 0
        self.account = None  # the account named by the current attempt

    def _credentials(self, username):
        self.account = JID(username, self.stream.domain, None)
        return self.accounts.get_credentials(username, self.stream.domain)

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
            if self.api.streams.locked(self.account):
                return self._failure("not-authorized")
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
        delay the address and the account have earned (the stream waits
        meanwhile); for a locked account, always ``not-authorized``."""
        self.mechanism = None
        if condition == "aborted":
            self.stream.send(failure_element(condition))
            return None
        self.failures += 1
        streams, account, log = self.api.streams, self.account, self.api.log
        locked = account is not None and streams.locked(account)
        if locked:
            condition, text = "not-authorized", LOCKED
        if account is None:
            log.info("c2s authentication failure from {peer}: {condition}",
                     peer=self.stream.peer, condition=condition)
        else:
            log.info("c2s authentication failure for {account} from {peer}: {condition}",
                     account=account, peer=self.stream.peer,
                     condition=condition + " (account locked)" if locked else condition)
        delay = streams.failed(self.stream, account)
        if not locked and account is not None and streams.locked(account):
            limits = self.api.config.limits
            log.info("c2s account {account} locked for {time:g} s after {count} failed "
                     "authentications, the last from {peer}", account=account,
                     time=limits.auth_account_lock_time,
                     count=limits.auth_account_lock_after, peer=self.stream.peer)
        failure = failure_element(condition, text)
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


def failure_element(condition, text=None):
    """``<failure/>`` with a condition of RFC 6120 §6.5 and an optional text."""
    failure = domish.Element((NS_SASL, "failure"))
    failure.addElement(condition)
    if text:
        failure.addElement("text", content=text)
    return failure


def setup(api):
    accounts = api.open_store("accounts")

    def offer(stream):
        authentication = stream.state.get(api.name)
        if authentication is None:
            authentication = stream.state[api.name] = Authentication(api, accounts, stream)
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
