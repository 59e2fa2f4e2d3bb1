"""SASL2, the extensible SASL profile (XEP-0388), for client streams.

- Discovery (§2.1): after TLS, beside RFC 6120's ``<mechanisms/>``, the
  feature ``<authentication xmlns='urn:xmpp:sasl:2'>`` lists the same
  mechanisms, the upgrade tasks of XEP-0480 (``<upgrade
  xmlns='urn:xmpp:sasl:upgrade:0'>UPGR-SCRAM-…</upgrade>``, one per SCRAM
  hash the server stores, offered or not) and, in ``<inline/>``, what
  other modules let a client negotiate inside its ``<authenticate/>``
  (:meth:`Sasl2.add_inline`: Bind2, stream resumption, FAST tokens).
- Initiation (§2.3): ``<authenticate mechanism>`` with an optional
  ``<initial-response/>`` (no element: no initial response; an empty one:
  empty data, §2.2), the client's ``<user-agent id>`` with
  ``<software/>`` and ``<device/>``, and the upgrades it asks for.
  Mechanisms of other modules (:meth:`Sasl2.add_mechanism`, such as
  FAST's) are accepted beside the listed ones.  ``<challenge/>`` and
  ``<response/>`` carry the steps (§2.5), ``<abort/>`` ends the attempt
  (§3.5).
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
- Upgrade tasks (§2.6.3, XEP-0480 §2, §3): after a successful exchange
  with a password (PLAIN or SCRAM; not a FAST token, whose holder may not
  set a password), each upgrade asked for whose hash the account has no
  verifier of is a ``<continue/>`` with that one task; ``<next task/>``
  gets ``<task-data><salt xmlns='urn:xmpp:scram-upgrade:0' iterations/>``
  (a new salt), and the client's ``<task-data><hash/>``, its
  SaltedPassword, gives the new verifier, stored before the next task or
  ``<success/>``.  Upgrades the server does not offer are not run.
- Another ``<authenticate/>`` (or RFC 6120 ``<auth/>``) once
  ``<continue/>`` or ``<success/>`` was sent is a stream error (§3.8).
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
NS_UPGRADE = "urn:xmpp:sasl:upgrade:0"  # XEP-0480
NS_SCRAM_UPGRADE = "urn:xmpp:scram-upgrade:0"
ELEMENTS = ("authenticate", "response", "abort", "next", "task-data")
# The attributes a client may give of itself (§2.3); longer values are cut.
MAX_USER_AGENT_ID = 128
MAX_USER_AGENT_TEXT = 256
# The upgrade tasks (XEP-0480 §3): one per SCRAM hash the server stores.
UPGRADES = {f"UPGR-SCRAM-{name}": name for name in scram.HASHES}
PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-")  # names, or their beginnings


class Request:
    """What the other modules see of a client's ``<authenticate/>``."""

    __slots__ = ("element", "mechanism", "upgrades", "user_agent", "software", "device",
                 "after")

    def __init__(self, element):
        self.element = element
        self.after = []  # calls to make once <success/> and the features are sent
        self.mechanism = element.getAttribute("mechanism", "")
        # The hashes of the upgrade tasks asked for that the server offers, in order.
        self.upgrades = list(dict.fromkeys(
            UPGRADES[task] for child in element.elements(NS_UPGRADE, "upgrade")
            if (task := str(child).strip()) in UPGRADES))
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
        for task in UPGRADES:
            element.addElement((NS_UPGRADE, "upgrade"), content=task)
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
            if isinstance(profile, Exchange) and profile.continuing:
                stream.close("policy-violation", "the authentication goes on with its tasks")
                return True
            exchange = Exchange(self, stream, authentication, Request(element))
            return authentication.begin(exchange, exchange.start) or True
        if not isinstance(profile, Exchange):
            return False  # nothing under way: the stream ends with not-authorized
        return profile.received(element) or True


class Exchange:
    """One ``<authenticate/>``: the profile of its
    :class:`~xmppd.modules.sasl.Authentication`, then its tasks and its
    success."""

    __slots__ = ("service", "stream", "authentication", "request", "_tasks", "_salt",
                 "_success")

    def __init__(self, service, stream, authentication, request):
        self.service = service
        self.stream = stream
        self.authentication = authentication
        self.request = request
        self._tasks = []  # the hashes of the upgrade tasks left, the first one offered
        self._salt = None  # the salt sent for the first task, once the client asked
        self._success = None

    @property
    def continuing(self):
        """Whether ``<continue/>`` was sent and its tasks are not over."""
        return bool(self._tasks)

    def start(self):
        """The mechanism and initial response (for Authentication.begin)."""
        request, sasl = self.request, self.authentication.sasl
        factory = self.service._mechanisms.get(request.mechanism)
        mechanism = (factory(self.stream, request) if factory is not None
                     else sasl.start(request.mechanism))
        return mechanism, _payload(request.element, "initial-response")

    def received(self, element):
        authentication = self.authentication
        if element.name == "abort":
            self._tasks = []
            return authentication.fail("aborted")
        if self._tasks:
            if element.name == "next" and self._salt is None:
                return self._next(element)
            if element.name == "task-data" and self._salt is not None:
                return self._upgraded(element)
            self._tasks = []
            return authentication.fail("malformed-request", "not the task under way")
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
        """The mechanism succeeded: the upgrade tasks due, else the success.
        Only a password login may give a new verifier."""
        upgrades = self.request.upgrades
        if not upgrades or not self.request.mechanism.startswith(PASSWORD_MECHANISMS):
            return self._authenticated(success)
        d = self.service._accounts.get_credentials(success.username, self.stream.domain)
        return d.addCallback(self._offer_upgrades, success, upgrades)

    def _offer_upgrades(self, stored, success, upgrades):
        self._tasks = [name for name in upgrades if name not in (stored or {})]
        if not self._tasks:
            return self._authenticated(success)
        self._success = success
        self._offer(success.additional_data)
        return None

    def _offer(self, additional_data=None):
        """``<continue/>`` with the first task left (XEP-0480 §2.2)."""
        task = "UPGR-SCRAM-" + self._tasks[0]
        element = _data_element("continue", additional_data, "additional-data")
        element.addElement("tasks").addElement("task", content=task)
        element.addElement("text", content=f"{task} as requested")
        self.stream.send(element)

    def _next(self, element):
        """``<next task='UPGR-SCRAM-…'/>``: the salt and iteration count
        (XEP-0480 §3)."""
        if element.getAttribute("task") != "UPGR-SCRAM-" + self._tasks[0]:
            self._tasks = []
            return self.authentication.fail("malformed-request", "not the task offered")
        self._salt = secrets.token_bytes(scram.SALT_LENGTH)
        data = domish.Element((NS_SASL2, "task-data"))
        salt = data.addElement((NS_SCRAM_UPGRADE, "salt"),
                               content=base64.b64encode(self._salt).decode("ascii"))
        salt["iterations"] = str(scram.MIN_ITERATIONS)
        self.stream.send(data)
        return None

    def _upgraded(self, element):
        """The client's SaltedPassword: store the new verifier, then the
        next task or the success."""
        hash_name, salt = self._tasks[0], self._salt
        self._salt = None
        try:
            salted = _payload(element, "hash", NS_SCRAM_UPGRADE)
        except SaslFailure as e:
            self._tasks = []
            return self.authentication.fail(e.condition, e.text)
        if salted is None or len(salted) != scram.HASHES[hash_name]().digest_size:
            self._tasks = []
            return self.authentication.fail("malformed-request", "not a SaltedPassword")
        keys = ScramKeys(salt=salt, iterations=scram.MIN_ITERATIONS,
                         stored_key=scram.stored_key(hash_name,
                                                     scram.client_key(hash_name, salted)),
                         server_key=scram.server_key(hash_name, salted))
        username, accounts, domain = self._success.username, self.service._accounts, \
            self.stream.domain
        d = accounts.get_credentials(username, domain)
        d.addCallback(lambda stored: accounts.set_credentials(
            username, domain, {**(stored or {}), hash_name: keys}))
        d.addCallback(self._task_done)
        return d

    def _task_done(self, _):
        self._tasks.pop(0)
        if self._tasks:
            self._offer()
            return None
        success, self._success = self._success, None
        return self._authenticated(Success(success.username))

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


def _payload(element, child, namespace=NS_SASL2):
    """The decoded data of ``element`` (or of its ``child`` in
    ``namespace``): None when the child is absent, b"" when it is empty
    (§2.2)."""
    if child is not None:
        element = next(element.elements(namespace, child), None)
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
