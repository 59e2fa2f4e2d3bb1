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
login, the right password included, with the same ``<not-authorized/>``
(§6.5.10), so the answer tells nothing of the password; its bound sessions
go on.  The third failure on one stream, or a banned address, ends it with
``policy-violation``.  An account the ``accounts`` service disabled
refuses every login, of any mechanism, with ``<account-disabled/>``
(§6.5.1).  Success restarts the stream (§6.4.6).

:class:`Authentication` is the exchange of one stream whatever its
profile: this module's RFC 6120 framing (:class:`Rfc6120`), or SASL2's
(XEP-0388, module ``sasl2``), which reaches it through the service
``sasl`` (:meth:`Sasl.authentication`); failures of either count alike.
"""

import base64
import binascii

from twisted.internet import task
from twisted.words.xish import domish

from xmppd.core.api import ENCRYPTED
from xmppd.core.sasl import (DEFAULT_MECHANISMS, SaslFailure, SaslServer, Success,
                             channel_binding_feature, check_mechanisms)
from xmppd.jid import JID, normalize_localpart
from xmppd.options import Invalid, Option, Options, strings

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
MAX_AUTH_FAILURES = 3
# The elements of the namespace (RFC 6120 §6.4); a client sends the first
# three, any other is a malformed request.
ELEMENTS = ("auth", "response", "abort", "challenge", "success", "failure")
LOCKED = "the account is temporarily locked after too many failed authentications"
DISABLED = "the account is disabled"


def _mechanisms(value, key):
    """SASL mechanism names xmppd supports, strongest first."""
    if isinstance(value, (list, tuple)) and not value:
        return ()  # the defaults of the host's authentication
    try:
        return check_mechanisms(strings(value, key))
    except ValueError as e:
        raise Invalid(key, str(e)) from None


OPTIONS = Options(  # [sasl], and [hosts."DOMAIN".sasl]
    # Empty: the defaults of the host's authentication (DEFAULT_MECHANISMS).
    mechanisms=Option((), _mechanisms),
)


class Authentication:
    """The SASL exchanges of one stream, until one succeeds.  ``profile``
    frames the exchange under way: ``challenge(data)``,
    ``failure_element(condition, text)`` and ``succeeded(success)``."""

    __slots__ = ("api", "accounts", "stream", "sasl", "mechanism", "failures", "account",
                 "profile")

    def __init__(self, api, accounts, stream):
        self.api = api
        self.accounts = accounts
        self.stream = stream
        domain = stream.domain
        self.sasl = SaslServer(
            domain, self._credentials, normalize_localpart, offload=api.streams.offload,
            mechanisms=(api.options_for(domain).mechanisms or DEFAULT_MECHANISMS[
                api.config.hosts[domain].authentication]),
            channel_binding=stream.channel_binding, add_keys=self._add_keys)
        self.mechanism = None
        self.failures = 0
        self.account = None  # the account named by the current attempt
        self.profile = None

    def _credentials(self, username):
        self.account = JID(username, self.stream.domain, None)
        return self.accounts.get_credentials(username, self.stream.domain)

    def _add_keys(self, username, keys, current):
        d = self.accounts.add_credentials(username, self.stream.domain, keys, current)
        d.addCallback(lambda added: added and self.api.log.info(
            "{hashes} verifiers of {username}@{domain} derived at a PLAIN login",
            hashes=", ".join(keys), username=username, domain=self.stream.domain))
        return d

    def begin(self, profile, start):
        """Start an exchange framed by ``profile``: ``start()`` gives its
        mechanism and the initial response (None for none), or raises
        SaslFailure.  None, or a Deferred of the first step."""
        if self.api.streams.banned(self.stream):
            self.stream.close("policy-violation", "too many failed authentications")
            return None
        if self.mechanism is not None:
            return self.fail("malformed-request", "authentication in progress")
        self.profile = profile
        self.account = None
        try:
            self.mechanism, data = start()
        except SaslFailure as e:
            return self.fail(e.condition, e.text)
        return self.step(data)

    @property
    def busy(self):
        """Whether an exchange is under way: its mechanism's steps, or the
        tasks after them (SASL2's ``<continue/>``)."""
        return self.mechanism is not None or (self.profile is not None
                                              and self.profile.continuing)

    def step(self, data):
        """Feed the next client payload to the exchange under way."""
        d = self.mechanism.step(data)
        d.addCallbacks(self._stepped, self._step_failed)
        return d

    def _stepped(self, step):
        if not isinstance(step, Success):
            self.profile.challenge(step.data)
            return None
        if step.anonymous:
            return self._create_anonymous(step)
        self.account = JID(step.username, self.stream.domain, None)
        if self.api.streams.locked(self.account):
            return self.fail("not-authorized")
        accounts = self.api.service("accounts")
        waiting = accounts.loaded()
        if waiting is not None:
            return waiting.addCallbacks(lambda _: self._stepped(step), self._unknown)
        if accounts.disabled(self.account):
            return self.fail("account-disabled", DISABLED)
        self.mechanism = None
        return self.profile.succeeded(step)

    def _unknown(self, failure):
        """The disabled accounts cannot be read: the login cannot be let in."""
        return self.fail("temporary-auth-failure")

    def _create_anonymous(self, step):
        """SASL ANONYMOUS (XEP-0175): the account exists for the session."""
        accounts = self.api.service("anonymous")
        if accounts is None:
            return self.fail("invalid-mechanism")
        self.mechanism = None
        d = accounts.create(self.stream, step.username)
        d.addCallbacks(lambda _: self.profile.succeeded(step), self._step_failed)
        return d

    def _step_failed(self, failure):
        failure.trap(SaslFailure)
        return self.fail(failure.value.condition, failure.value.text)

    def fail(self, condition, text=None):
        """Answer with a SASL failure: at once for an abort, else after the
        delay the address and the account have earned (the stream waits
        meanwhile); for a locked account, always ``not-authorized``."""
        self.mechanism = None
        if condition == "aborted":
            self.stream.send(self.profile.failure_element(condition))
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
        failure = self.profile.failure_element(condition, text)
        if not delay:
            self._failed(failure)
            return None
        return task.deferLater(self.api.clock, delay, self._failed, failure)

    def _failed(self, failure):
        self.stream.send(failure)
        if self.failures >= MAX_AUTH_FAILURES or self.api.streams.banned(self.stream):
            self.stream.close("policy-violation", "too many failed authentications")

    def done(self):
        """The stream is authenticated: no more exchanges on it."""
        del self.stream.state["sasl"]


class Rfc6120:
    """The framing of RFC 6120 §6.4 for one stream's exchanges."""

    __slots__ = ("api", "authentication")
    continuing = False  # RFC 6120 has no tasks after success

    def __init__(self, api, authentication):
        self.api = api
        self.authentication = authentication

    def received(self, element):
        """Handle one SASL element: None, or a Deferred of its step."""
        authentication = self.authentication
        if element.name == "auth":
            return authentication.begin(self, lambda: (
                authentication.sasl.start(element.getAttribute("mechanism", "")),
                _payload(element)))
        if element.name == "response" and authentication.busy:
            return self._step(element)
        if element.name == "abort":
            return authentication.fail("aborted")
        return authentication.fail("malformed-request")

    def _step(self, element):
        try:
            data = _payload(element)
        except SaslFailure as e:
            return self.authentication.fail(e.condition, e.text)
        return self.authentication.step(data)

    def challenge(self, data):
        self._send("challenge", data)

    @staticmethod
    def failure_element(condition, text=None):
        return failure_element(condition, text)

    def succeeded(self, success):
        stream = self.authentication.stream
        self.authentication.done()
        self.api.streams.authenticated(stream, success.username)
        self._send("success", success.additional_data)
        stream.restart()

    def _send(self, name, data):
        element = domish.Element((NS_SASL, name))
        if data:
            element.addContent(base64.b64encode(data).decode("ascii"))
        elif data is not None:
            element.addContent("=")
        self.authentication.stream.send(element)


def _payload(element):
    """The decoded payload of ``<auth/>`` or ``<response/>``: None for none,
    ``=`` for an empty one (RFC 6120 §6.4.2)."""
    text = str(element).strip()
    if element.name == "auth" and text == "":
        return None
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("incorrect-encoding") from None


def failure_element(condition, text=None):
    """``<failure/>`` with a condition of RFC 6120 §6.5 and an optional text."""
    failure = domish.Element((NS_SASL, "failure"))
    failure.addElement(condition)
    if text:
        failure.addElement("text", content=text)
    return failure


class Sasl:
    """The service ``sasl``: the one :class:`Authentication` of a stream."""

    def __init__(self, api):
        self._api = api
        self._accounts = api.open_store("accounts")

    def authentication(self, stream):
        """The stream's Authentication (made at its first use); None before
        TLS (RFC 6120 §5.3.1: no SASL offered) and once authenticated."""
        if stream.user is not None or not stream.secure:
            return None
        authentication = stream.state.get("sasl")
        if authentication is None:
            authentication = stream.state["sasl"] = Authentication(
                self._api, self._accounts, stream)
        return authentication


def setup(api):
    api.depends("accounts")
    sasl = Sasl(api)
    api.provide("sasl", sasl)

    def offer(stream):
        mechanisms = domish.Element((NS_SASL, "mechanisms"))
        for name in sasl.authentication(stream).sasl.mechanisms:
            mechanisms.addElement("mechanism", content=name)
        return mechanisms

    def received(stream, element):
        authentication = sasl.authentication(stream)
        if authentication is None:
            return False
        profile = authentication.profile
        if not isinstance(profile, Rfc6120):
            if authentication.busy:
                stream.close("policy-violation", "a SASL2 authentication is in progress")
                return True
            profile = authentication.profile = Rfc6120(api, authentication)
        return profile.received(element) or True

    def channel_bindings(stream):
        """XEP-0440: the channel-binding types of the -PLUS mechanisms."""
        return channel_binding_feature(sasl.authentication(stream).sasl.channel_bindings)

    api.stream_feature(offer, ENCRYPTED)
    api.stream_feature(channel_bindings, ENCRYPTED)
    for name in ELEMENTS:
        api.streams.on_element(NS_SASL, name, received)
