"""External service discovery (XEP-0215), with TURN credentials.

The operator lists the services outside XMPP the host's clients may use,
STUN and TURN servers above all, in ``[external_services] services``
(a host may have its own, ``[hosts."DOMAIN".external_services]``).

- ``<services/>`` (§2 "Protocol", §3.1 "Requesting All Services") to the
  server gets every service, with ``type`` (§3.2 "Requesting Selected
  Services") those of that type, each as a ``<service/>`` with ``type``,
  ``host`` and what the config gives of ``port``, ``transport`` and
  ``name``.  Services pushed later (§3.2) are not offered: the list
  changes only with the config.
- A ``restricted`` service (§2: credentials are required) comes with
  credentials of the TURN REST API's shared-secret scheme
  (draft-uberti-behave-turn-rest-00 §2.2, coturn's ``use-auth-secret``
  with ``static-auth-secret``): ``username`` is ``EXPIRY:ACCOUNT``, the
  Unix time at which they expire (now plus
  ``external_services.credentials_lifetime`` seconds, on the server
  clock) and the account's bare JID, ``password`` the base64 of the
  HMAC-SHA1 of ``username`` keyed with ``external_services.secret``, and
  ``expires`` is that time as a XEP-0082 DateTime in UTC.  The TURN
  server needs nothing but the same secret to check them.
- ``<credentials/>`` with a ``<service host= type= [port=]/>`` (§3.3
  "Requesting Credentials") gets the matching services with fresh
  credentials; none matching is ``item-not-found``, a missing ``host`` or
  ``type`` ``bad-request``, a restricted one while no secret is set
  ``service-unavailable`` (the log says so at start and on reload).

Only the host's own accounts are answered; anyone else gets ``forbidden``
(§2).  The secret is never logged nor shown in an error or a repr.  The
feature ``urn:xmpp:extdisco:2`` is advertised (§5 "Determining Support")
while some host has services configured, following a reload.
"""

import base64
import dataclasses
import datetime
import hashlib
import hmac
import re

from twisted.words.xish import domish

from xmppd.core.events import CONFIG_RELOADED, HOST
from xmppd.core.stanzas import StanzaError
from xmppd.options import (Invalid, Option, Options, Table, boolean, choice, expected, integer,
                           optional_string)

NS_EXTDISCO = "urn:xmpp:extdisco:2"
# A service type of the registry (§8.3): stun, turn, turns, ftp...
TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]*")
# A host: a domain name or an IPv4 or IPv6 address (§2).
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]*")


@dataclasses.dataclass(frozen=True)
class Service:
    """One external service of the config."""

    type: str
    host: str
    port: int | None = None
    transport: str | None = None
    name: str | None = None
    restricted: bool = False


@dataclasses.dataclass(frozen=True)
class Secret:
    """The TURN shared secret, whose value no repr shows."""

    value: str = dataclasses.field(repr=False)


def _pattern(regex, what):
    def check(value, key):
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise expected(key, what, value)
        return value
    return check


def _port(value, key):
    if type(value) is not int or not 0 < value < 65536:
        raise expected(key, "a port number (1 to 65535)", value)
    return value


def _required(check):
    def take(value, key):
        if value is None:
            raise Invalid(key, "required")
        return check(value, key)
    return take


def _optional(check):
    return lambda value, key: None if value is None else check(value, key)


def _service(value, key):
    table = Table(value, key)
    return table.done(Service(
        type=table.take("type", _required(_pattern(TYPE, 'a service type such as "turn"')),
                        None),
        host=table.take("host", _required(_pattern(HOST_NAME, "a host name or address")), None),
        port=table.take("port", _optional(_port), None),
        transport=table.take("transport", _optional(choice(("udp", "tcp"))), None),
        name=table.take("name", optional_string, None),
        restricted=table.take("restricted", boolean, False),
    ))


def services(value, key):
    """An array of service tables."""
    if not isinstance(value, (list, tuple)):
        raise expected(key, "an array of tables", value)
    return tuple(_service(item, f"{key}[{i}]") for i, item in enumerate(value))


def secret(value, key):
    """The shared secret: never shown in an error (None: not set)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise Invalid(key, "expected a non-empty string")
    return Secret(value)


OPTIONS = Options(  # [external_services]
    services=Option((), services),
    secret=Option(None, secret),
    credentials_lifetime=Option(86400, integer(1)),  # seconds
)


def turn_credentials(secret_value, account, expiry):
    """``(username, password)`` of the TURN REST API for ``account`` (a
    bare JID) until Unix time ``expiry``."""
    username = f"{expiry}:{account}"
    digest = hmac.new(secret_value.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def datetime_utc(seconds):
    """Unix time ``seconds`` as a XEP-0082 DateTime in UTC."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class ExternalServices:
    """The answers of one server, from the current config."""

    def __init__(self, api):
        self._api = api

    def answer(self, stanza):
        sender, domain = stanza.sender, stanza.recipient.domain
        if sender is None or sender.local is None or sender.domain != domain:
            raise StanzaError("forbidden", "external services are for this server's accounts")
        request = stanza.payload
        if request.name == "services":
            return self._services(request, domain, sender.bare_str)
        if request.name == "credentials":
            return self._credentials(request, domain, sender.bare_str)
        raise StanzaError("feature-not-implemented")

    def _services(self, request, domain, account):
        options = self._api.options_for(domain)
        wanted = request.getAttribute("type")
        result = domish.Element((NS_EXTDISCO, "services"))
        if wanted is not None:
            result["type"] = wanted
        for service in options.services:
            if wanted is None or service.type == wanted:
                result.addChild(self._element(service, options, account))
        return result

    def _credentials(self, request, domain, account):
        options = self._api.options_for(domain)
        asked = next(request.elements(NS_EXTDISCO, "service"), None)
        if asked is None or not asked.getAttribute("host") or not asked.getAttribute("type"):
            raise StanzaError("bad-request", "a <service/> with host and type is required")
        port = asked.getAttribute("port")
        if port is not None and not port.isdigit():
            raise StanzaError("bad-request", "port is not a number")
        matches = [s for s in options.services
                   if (s.host, s.type) == (asked["host"], asked["type"])
                   and (port is None or s.port == int(port))]
        if not matches:
            raise StanzaError("item-not-found", "no such service")
        if options.secret is None and any(s.restricted for s in matches):
            raise StanzaError("service-unavailable", "no credentials are configured")
        result = domish.Element((NS_EXTDISCO, "credentials"))
        for service in matches:
            result.addChild(self._element(service, options, account))
        return result

    def _element(self, service, options, account):
        element = domish.Element((NS_EXTDISCO, "service"))
        element["type"], element["host"] = service.type, service.host
        if service.port is not None:
            element["port"] = str(service.port)
        for attribute in ("transport", "name"):
            if getattr(service, attribute) is not None:
                element[attribute] = getattr(service, attribute)
        if service.restricted:
            element["restricted"] = "true"
            if options.secret is not None:
                expiry = int(self._api.clock.seconds()) + options.credentials_lifetime
                element["username"], element["password"] = turn_credentials(
                    options.secret.value, account, expiry)
                element["expires"] = datetime_utc(expiry)
        return element

    def configured(self, _config=None):
        """Advertise the feature while some host has services, and say
        which restricted services get no credentials."""
        hosts = [host for host in self._api.hosts if self._api.enabled(host)]
        if any(self._api.options_for(host).services for host in hosts):
            self._api.disco_feature(NS_EXTDISCO)
        else:
            self._api.drop_disco_feature(NS_EXTDISCO)
        for host in hosts:
            options = self._api.options_for(host)
            if options.secret is None and any(s.restricted for s in options.services):
                self._api.log.error(
                    "external_services: {host} lists restricted services but no "
                    "external_services.secret: they get no credentials", host=host)


def setup(api):
    service = ExternalServices(api)
    service.configured()
    api.hook(CONFIG_RELOADED, service.configured)
    api.handle_iq("get", HOST, NS_EXTDISCO, service.answer)
