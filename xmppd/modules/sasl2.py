"""SASL2, the extensible SASL profile (XEP-0388), for client streams.

- Discovery (§2.1): after TLS, beside RFC 6120's ``<mechanisms/>``, the
  feature ``<authentication xmlns='urn:xmpp:sasl:2'>`` lists the same
  mechanisms, the SCRAM hashes an account may be upgraded to
  (``<upgrade/>``, §2.8) and, in ``<inline/>``, what other modules let a
  client negotiate inside its ``<authenticate/>`` (:meth:`Sasl2.add_inline`:
  Bind2, stream resumption, FAST tokens).
- Initiation (§2.3): ``<authenticate mechanism [upgrade]>`` with an
  optional ``<initial-response/>`` (no element: no initial response; an
  empty one: empty data, §2.2) and the client's ``<user-agent id>`` with
  ``<software/>`` and ``<device/>``.  Mechanisms of other modules
  (:meth:`Sasl2.add_mechanism`, such as FAST's) are accepted beside the
  listed ones.  ``<challenge/>`` and ``<response/>`` carry the steps
  (§2.5), ``<abort/>`` ends the attempt (§3.5).
- Success (§2.6.1): the stream is authenticated, then the handlers of
  other modules run in order (:meth:`Sasl2.on_success`: resumption, then
  binding, token issue...) and add their elements to ``<success/>``,
  which has the mechanism's ``<additional-data/>`` and the
  ``<authorization-identifier/>`` (the full JID once a resource is
  bound); the features of the authenticated stream follow it, with no
  stream restart.
- Failure (§2.6.2): ``<failure/>`` with the RFC 6120 §6.5 condition and
  ``<text/>``.  Failures count as RFC 6120's do (delays, bans, locked
  accounts: the ``sasl`` module's :class:`~xmppd.modules.sasl.Authentication`
  is shared by both profiles).
- Continue (§2.6.3, §2.8): a client that asks ``upgrade='SCRAM-SHA-…'``
  for a hash its account has no verifier of gets ``<continue/>`` with the
  task ``UPGR-SCRAM-SHA-…`` after a successful exchange; ``<next task/>``
  is answered with the account's salt and iteration count for that hash
  (§2.8.1), the client's ``<response/>`` is its SaltedPassword, from which
  the new verifier is stored; then ``<success/>``.  An account that has
  the verifier already needs no task.
- After success, another ``<authenticate/>`` is a stream error (§3.8).
"""

import base64
import binascii
import secrets
from bisect import insort

from twisted.internet.defer import maybeDeferred
from twisted.words.xish import domish

from xmppd.core.api import ENCRYPTED
from xmppd.core import scram
from xmppd.core.sasl import SaslFailure, Success
from xmppd.storage import ScramKeys

NS_SASL2 = "urn:xmpp:sasl:2"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
ELEMENTS = ("authenticate", "response", "abort", "next")
# The attributes a client may give of itself (§2.3); longer values are cut.
MAX_USER_AGENT_ID = 128
MAX_USER_AGENT_TEXT = 256
UPGRADE_PREFIX = "UPGR-"


class Request:
    """What the other modules see of a client's ``<authenticate/>``."""

    __slots__ = ("element", "mechanism", "upgrade", "user_agent", "software", "device", "after")

    def __init__(self, element):
        self.element = element
        self.after = []  # calls to make once <success/> and the features are sent
        self.mechanism = element.getAttribute("mechanism", "")
        self.upgrade = element.getAttribute("upgrade")
        self.user_agent = self.software = self.device = None
        agent = next(element.elements(NS_SASL2, "user-agent"), None)
        if agent is not None:
            self.user_agent = (agent.getAttribute("id") or "")[:MAX_USER_AGENT_ID] or None
            self.software = _text(agent, "software")
            self.device = _text(agent, "device")


def _text(parent, name):
    child = next(parent.elements(NS_SASL2, name), None)
    return str(child).strip()[:MAX_USER_AGENT_TEXT] or None if child is not None else None


class Sasl2:
    """The service ``sasl2``: the feature, the exchanges, and what other
    modules add to them."""

    def __init__(self, api):
        self._api = api
        self._sasl = api.service("sasl")
        self._accounts = api.open_store("accounts")
        self._inline = []  # builders
        self._mechanisms = {}  # name -> factory(stream, request)
        self._success = []  # [(-priority, order, handler)]

    # What other modules add

    def add_inline(self, builder):
        """``builder(stream)``: an element (or None) inside ``<inline/>``."""
        self._inline.append(builder)

    def add_mechanism(self, name, factory):
        """Accept mechanism ``name`` (advertised by its module, not listed):
        ``factory(stream, request)`` gives its exchange (see
        :class:`~xmppd.core.sasl.Mechanism`) or raises SaslFailure."""
        self._mechanisms[name] = factory

    def on_success(self, handler, priority=0):
        """Call ``handler(stream, request, success)`` after each successful
        authentication, higher priority first, before ``<success/>`` is
        sent: it may add elements to it, and may return a Deferred; what
        must follow ``<success/>`` goes in ``request.after``."""
        insort(self._success, (-priority, len(self._success), handler))

    # The feature

    def feature(self, stream):
        authentication = self._sasl.authentication(stream)
        if authentication is None or not self._api.enabled(stream.domain):
            return None
        element = domish.Element((NS_SASL2, "authentication"))
        for name in authentication.sasl.mechanisms:
            element.addElement("mechanism", content=name)
        for name in _upgrades(authentication.sasl.mechanisms):
            element.addElement("upgrade", content=name)
        inline = [child for builder in self._inline if (child := builder(stream)) is not None]
        if inline:
            container = element.addElement("inline")
            for child in inline:
                container.addChild(child)
        return element

    # The exchange

    def received(self, stream, element):
        authentication = self._sasl.authentication(stream)
        if authentication is None:  # authenticated
            if element.name != "authenticate":
                return False
            stream.close("policy-violation", "already authenticated")  # §3.8
            return True
        profile = authentication.profile
        if authentication.busy and not isinstance(profile, Exchange):
            stream.close("policy-violation", "an RFC 6120 authentication is in progress")
            return True
        if element.name == "authenticate":
            exchange = Exchange(self, stream, authentication, Request(element))
            return authentication.begin(exchange, exchange.start) or True
        if not isinstance(profile, Exchange):
            return False  # nothing under way: the stream ends with not-authorized
        return profile.received(element) or True


def _upgrades(mechanisms):
    """The SCRAM mechanisms (without -PLUS) among ``mechanisms``: those an
    account can be upgraded to (§2.1)."""
    names = []
    for name in mechanisms:
        base = name.removesuffix("-PLUS")
        if base.startswith("SCRAM-") and base not in names:
            names.append(base)
    return names


class Exchange:
    """One ``<authenticate/>``: the profile of its
    :class:`~xmppd.modules.sasl.Authentication`, then its tasks and its
    success."""

    __slots__ = ("service", "stream", "authentication", "request", "_task", "_success")

    def __init__(self, service, stream, authentication, request):
        self.service = service
        self.stream = stream
        self.authentication = authentication
        self.request = request
        self._task = None  # the upgrade under way: (hash name, username, keys)
        self._success = None

    def start(self):
        """The mechanism and initial response (for Authentication.begin)."""
        request, sasl = self.request, self.authentication.sasl
        if request.upgrade is not None and request.upgrade not in _upgrades(sasl.mechanisms):
            raise SaslFailure("invalid-mechanism", "cannot upgrade to " + request.upgrade)
        factory = self.service._mechanisms.get(request.mechanism)
        mechanism = (factory(self.stream, request) if factory is not None
                     else sasl.start(request.mechanism))
        return mechanism, _payload(request.element, "initial-response")

    def received(self, element):
        authentication = self.authentication
        if element.name == "abort":
            self._task = None
            return authentication.fail("aborted")
        if element.name == "next" and self._task is not None and self._task[0] is None:
            return self._next(element)
        if element.name == "response" and self._task is not None and self._task[0]:
            return self._upgraded(element)
        if element.name == "response" and authentication.busy:
            try:
                data = _payload(element, None)
            except SaslFailure as e:
                return authentication.fail(e.condition, e.text)
            return authentication.step(data)
        return authentication.fail("malformed-request")

    # Profile (see xmppd.modules.sasl.Authentication)

    def challenge(self, data):
        self.stream.send(_data_element("challenge", data))

    @staticmethod
    def failure_element(condition, text=None):
        failure = domish.Element((NS_SASL2, "failure"))
        failure.addElement((NS_SASL, condition))
        if text:
            failure.addElement("text", content=text)
        return failure

    def succeeded(self, success):
        """The mechanism succeeded: an upgrade task if one is due, else the
        success."""
        upgrade = self.request.upgrade
        if upgrade is None:
            return self._authenticated(success)
        hash_name = upgrade.removeprefix("SCRAM-")
        d = self.service._accounts.get_credentials(success.username, self.stream.domain)
        return d.addCallback(self._offer_upgrade, success, hash_name)

    def _offer_upgrade(self, stored, success, hash_name):
        if stored is not None and hash_name in stored:
            return self._authenticated(success)
        self._success = success
        self._task = (None, hash_name)
        element = _data_element("continue", success.additional_data, "additional-data")
        tasks = element.addElement("tasks")
        tasks.addElement("task", content=UPGRADE_PREFIX + "SCRAM-" + hash_name)
        element.addElement("text", content="SCRAM-%s upgrade requested" % hash_name)
        self.stream.send(element)

    def _next(self, element):
        """``<next task='UPGR-SCRAM-…'/>``: the salt and iteration count (§2.8.1)."""
        hash_name = self._task[1]
        if element.getAttribute("task") != UPGRADE_PREFIX + "SCRAM-" + hash_name:
            self._task = None
            return self.authentication.fail("malformed-request", "not the task offered")
        salt = secrets.token_bytes(scram.SALT_LENGTH)
        self._task = (hash_name, salt)
        self.challenge(b"s=%s,i=%d" % (base64.b64encode(salt), scram.MIN_ITERATIONS))
        return None

    def _upgraded(self, element):
        """The client's SaltedPassword: store the new verifier, then succeed."""
        hash_name, salt = self._task
        self._task = None
        try:
            salted = _payload(element, None)
        except SaslFailure as e:
            return self.authentication.fail(e.condition, e.text)
        if salted is None or len(salted) != scram.HASHES[hash_name]().digest_size:
            return self.authentication.fail("malformed-request", "not a SaltedPassword")
        keys = ScramKeys(salt=salt, iterations=scram.MIN_ITERATIONS,
                         stored_key=scram.stored_key(hash_name,
                                                     scram.client_key(hash_name, salted)),
                         server_key=scram.server_key(hash_name, salted))
        success, self._success = self._success, None
        accounts, domain = self.service._accounts, self.stream.domain
        d = accounts.get_credentials(success.username, domain)
        d.addCallback(lambda stored: accounts.set_credentials(
            success.username, domain, {**(stored or {}), hash_name: keys}))
        d.addCallback(lambda _: self._authenticated(Success(success.username)))
        return d

    def _authenticated(self, success):
        """The stream is authenticated: the handlers, then ``<success/>``
        and the features of the authenticated stream."""
        stream, api = self.stream, self.service._api
        self.authentication.done()
        request = self.request
        if request.software is not None:
            stream.client = request.software + (f" ({request.device})" if request.device else "")
        api.streams.authenticated(stream, success.username)
        element = _data_element("success", success.additional_data, "additional-data")
        element.addElement("authorization-identifier")  # filled in when sent
        handlers = [handler for _, _, handler in self.service._success]
        return self._run(handlers, element)

    def _run(self, handlers, element):
        while handlers:
            result = handlers.pop(0)(self.stream, self.request, element)
            if result is not None:
                return maybeDeferred(lambda: result).addCallback(
                    lambda _: self._run(handlers, element))
        self._send_success(element)
        return None

    def _send_success(self, element):
        stream = self.stream
        if stream.carrier.closed:
            return
        jid = stream.session.jid if stream.session is not None else stream.user
        next(element.elements(NS_SASL2, "authorization-identifier")).addContent(jid.full)
        stream.send(element)
        stream.send_features()
        for call in self.request.after:
            call()


def _data_element(name, data, child=None):
    """``<name/>`` of SASL2 with base64 ``data``: as its text, or in a
    ``<child/>`` (absent for no data, §2.2)."""
    element = domish.Element((NS_SASL2, name))
    if data is not None:
        target = element.addElement(child) if child else element
        target.addContent(base64.b64encode(data).decode("ascii"))
    return element


def _payload(element, child):
    """The decoded data of ``element`` (or of its ``child``): None when the
    child is absent, b"" when it is empty (§2.2)."""
    if child is not None:
        element = next(element.elements(NS_SASL2, child), None)
        if element is None:
            return None
    text = "".join(str(element).split())
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("incorrect-encoding") from None


def setup(api):
    api.depends("sasl")
    service = Sasl2(api)
    api.provide("sasl2", service)
    api.stream_feature(service.feature, ENCRYPTED)
    for name in ELEMENTS:
        api.streams.on_element(NS_SASL2, name, service.received)
