"""The HTTP admin API: JSON (RFC 8259) under ``/admin/v1/`` on the HTTP
listener, to manage accounts, sessions and invitations and read
statistics with a bearer token (see docs/admin-api.md).

- Routes (:data:`ROUTES`): ``/users`` (list, create; one account: read,
  delete, new password, disable, enable), ``/sessions`` (list; end those
  of an account or one full JID), ``/invites`` (list, make, revoke; the
  ``invites`` service, XEP-0401), ``/stats``; the OpenAPI 3.1 document,
  generated from the routes (:mod:`xmppd.openapi`), is
  ``/admin/v1/openapi.json``, public: it is the same on every server.
- Tokens (:mod:`xmppd.api_tokens`, ``xmppctl token create``) come in
  ``Authorization: Bearer TOKEN`` (RFC 6750 §2.1).  No token: 401 with
  ``WWW-Authenticate: Bearer realm="xmppd"``; an unknown, revoked or
  expired one: 401 with ``error="invalid_token"``; a token without the
  route's scope, or for another host: 403 (``insufficient_scope`` for
  the scope, §3.1).  Failed tokens count per client address as failed
  logins do (``[limits] auth_failure_delay``, ``auth_ban_after``,
  ``auth_ban_time``): answers are delayed, then the address gets 429
  (RFC 6585 §4) with ``Retry-After`` for everything until the ban ends.
- Errors are ``{"error": NAME, "message": TEXT}`` with the status of RFC
  9110 §15.5: 400 a malformed query or body (not JSON, RFC 8259), 404 a
  path naming nothing here (an account, session, invitation; a query's
  ``domain`` not hosted), 405 with ``Allow`` (§15.5.6), 409 an account
  that exists, 413 a body over :data:`MAX_BODY` bytes (the listener's),
  415 a body that is not ``application/json``, 422 a body that does not
  fit the route's schema or names what is invalid (a JID, a password,
  a domain not hosted: RFC 9110 §15.5.21), 503 when the database fails.
- Not for browsers: a request with an ``Origin`` header (which browsers
  send with every cross-origin request, Fetch standard §3.1) is refused
  with 403 before anything is done, and no CORS header is ever sent.
  Answers are ``Cache-Control: no-store`` (invitation tokens).
- Times are RFC 3339 (``2025-01-31T12:00:00Z``).
"""

import datetime
import json
import math
from dataclasses import dataclass
from urllib.parse import quote

from twisted.internet import defer, task
from twisted.web import resource, server

from xmppd import __version__, api_tokens
from xmppd.admin import END_REASONS, describe_session
from xmppd.core.limits import FailureCounts, address_of
from xmppd.jid import JID, InvalidJID, domain_of
from xmppd.openapi import Parameter, Route, document, problem
from xmppd.storage import StorageError, UserExists, UserNotFound

PREFIX = "admin/v1"  # the path on the HTTP listener
MAX_BODY = 65536  # bytes of a request body
REALM = 'Bearer realm="xmppd"'
HEADERS = {
    b"cache-control": b"no-store",
    b"x-content-type-options": b"nosniff",
    b"content-security-policy": b"default-src 'none'; frame-ancestors 'none'",
}
ERROR_NAMES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "method-not-allowed", 409: "conflict", 413: "too-large",
               415: "unsupported-media-type", 422: "invalid", 429: "too-many-requests",
               500: "internal", 503: "unavailable"}
ERRORS = {  # status -> (description, headers): the errors of the OpenAPI document
    400: ("Malformed query parameters or body (not JSON)", {}),
    401: ("No token, or an unknown, revoked or expired one (RFC 6750 §3)",
          {"WWW-Authenticate": "Bearer realm=\"xmppd\", with error=\"invalid_token\" "
                               "for a token that is not valid"}),
    403: ("The token lacks the scope or may not manage the domain, or the request "
          "came from a browser (it has an Origin header)",
          {"WWW-Authenticate": "Bearer realm=\"xmppd\", error=\"insufficient_scope\", "
                               "scope=SCOPE when the token lacks the scope"}),
    404: ("Nothing of that name here (account, session, invitation, domain)", {}),
    409: ("The account exists", {}),
    413: ("The body is larger than 64 KiB", {}),
    415: ("The body is not application/json", {}),
    422: ("The body does not fit the schema, or names something invalid", {}),
    429: ("Too many failed tokens from this address: wait",
          {"Retry-After": "seconds the address is refused for (at most)"}),
    503: ("The database cannot be used now", {}),
}
ALWAYS = (403, 429, 503)  # any route may answer these

# Schemas

_JID = {"type": "string", "minLength": 3, "maxLength": 3071,
        "description": "a bare JID, user@domain", "examples": ["alice@example.com"]}
_PASSWORD = {"type": "string", "minLength": 1, "maxLength": 1024}
_DOMAIN = {"type": "string", "minLength": 1, "maxLength": 1023,
           "examples": ["example.com"]}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_ENDED = {"type": "array", "items": {"type": "string"},
          "description": "the JIDs of the streams ended (full JIDs when bound)"}


def _object(required, optional=None):
    properties = {**required, **(optional or {})}
    return {"type": "object", "required": sorted(required), "properties": properties,
            "additionalProperties": False}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


_INVITE = {"id": {"type": "string"}, "domain": {"type": "string"},
           "inviter": _NULLABLE_STRING, "created": _TIME, "expires": _TIME,
           "reusable": {"type": "boolean"}}
COMPONENTS = {"schemas": {
    "Error": _object({"error": {"type": "string"}, "message": {"type": "string"}}),
    "User": _object({"jid": {"type": "string"}, "disabled": {"type": "boolean"}}),
    "Ended": _object({"jid": {"type": "string"}, "ended": _ENDED}),
    "Session": _object({"jid": {"type": "string"}, "address": _NULLABLE_STRING,
                        "tls": _NULLABLE_STRING, "since": _TIME,
                        "client": _NULLABLE_STRING}),
    "Invite": _object(_INVITE),
    "NewInvite": _object({**_INVITE, "token": {"type": "string"}, "uri": {"type": "string"},
                          "url": _NULLABLE_STRING}),
}}
_ACCOUNT = {"jid": ("the account's bare JID, user@domain (percent-encoded in the path)",
                    {"type": "string", "minLength": 1, "examples": ["alice@example.com"]})}
_DOMAIN_QUERY = Parameter("domain", "only this hosted domain's (default: every host the "
                                    "token may manage)", _DOMAIN)


def _ok(description, schema, status=200, headers=None):
    return {status: (description, schema, headers or {})}


ROUTES = (
    Route("GET", "/users", "list_users", "List the accounts", "users",
          _ok("The accounts", _object({"users": {"type": "array", "items": _ref("User")}})),
          query=(_DOMAIN_QUERY,), errors=(404,)),
    Route("POST", "/users", "create_user", "Create an account", "users",
          _ok("Created", _ref("User"), 201, {"Location": "the account's URL"}),
          body=_object({"jid": _JID, "password": _PASSWORD}), errors=(409,)),
    Route("GET", "/users/{jid}", "get_user", "Read an account", "users",
          _ok("The account and its bound resources",
              _object({"jid": {"type": "string"}, "disabled": {"type": "boolean"},
                       "sessions": {"type": "array", "items": {"type": "string"}}})),
          path_schemas=_ACCOUNT),
    Route("DELETE", "/users/{jid}", "delete_user",
          "Delete an account and all it stores; its sessions end", "users",
          _ok("Deleted", _ref("Ended")), path_schemas=_ACCOUNT),
    Route("PUT", "/users/{jid}/password", "set_password",
          "Set an account's password; its sessions end (stream error reset)", "users",
          _ok("Changed", _ref("Ended")), path_schemas=_ACCOUNT,
          body=_object({"password": _PASSWORD})),
    Route("POST", "/users/{jid}/disable", "disable_user",
          "Disable an account: its logins fail, its sessions end", "users",
          _ok("Disabled", _ref("Ended")), path_schemas=_ACCOUNT,
          body=_object({}, {"reason": {"type": "string", "maxLength": 1000}}),
          body_required=False),
    Route("POST", "/users/{jid}/enable", "enable_user", "Let a disabled account log in again",
          "users", _ok("Enabled", _ref("User")), path_schemas=_ACCOUNT),
    Route("GET", "/sessions", "list_sessions", "List the bound sessions", "sessions",
          _ok("The sessions", _object({"sessions": {"type": "array",
                                                    "items": _ref("Session")}})),
          query=(_DOMAIN_QUERY,), errors=(404,)),
    Route("DELETE", "/sessions/{jid}", "end_sessions",
          "End the streams of an account (bare JID) or one resource (full JID) with the "
          "stream error policy-violation", "sessions",
          _ok("Ended", _object({"ended": _ENDED})),
          path_schemas={"jid": ("a bare or full JID (percent-encoded: the / of a full JID "
                                "is %2F)", {"type": "string", "minLength": 1,
                                            "examples": ["alice@example.com/phone"]})}),
    Route("GET", "/invites", "list_invites", "List the valid invitations (XEP-0401)",
          "invites",
          _ok("The invitations", _object({"invites": {"type": "array",
                                                      "items": _ref("Invite")}})),
          query=(_DOMAIN_QUERY,), errors=(404,)),
    Route("POST", "/invites", "create_invite",
          "Make an invitation to register on a domain (XEP-0401, XEP-0445)", "invites",
          _ok("Made: its token, URI and landing page are shown only now",
              _ref("NewInvite"), 201),
          body=_object({"domain": _DOMAIN},
                       {"expires": {"type": "integer", "minimum": 60, "maximum": 31622400,
                                    "description": "seconds it is valid (default: "
                                                   "[invites] expires)"},
                        "reusable": {"type": "boolean"}}),
          errors=(404,)),
    Route("DELETE", "/invites/{id}", "revoke_invite", "Revoke an invitation", "invites",
          {204: ("Revoked", None, {})},
          path_schemas={"id": ("the invitation's id, as listed (or its token)",
                               {"type": "string", "minLength": 1})},
          query=(Parameter("domain", "the invitation's domain", _DOMAIN, required=True),)),
    Route("GET", "/stats", "stats", "Accounts and sessions per host; uptime and metrics",
          "stats",
          _ok("Statistics: uptime and metrics only for a token of every host", _object(
              {"hosts": {"type": "object", "additionalProperties": _object(
                  {"accounts": {"type": "integer"}, "sessions": {"type": "integer"}})}},
              {"uptime": {"type": "number"},
               "metrics": {"type": "array", "items": _object(
                   {"name": {"type": "string"}, "value": {"type": "number"},
                    "labels": {"type": "object",
                               "additionalProperties": {"type": "string"}}})}}))),
    Route("GET", "/openapi.json", "openapi", "This API's OpenAPI document", None,
          _ok("The OpenAPI 3.1 document", {"type": "object"})),
)

OPENAPI = document(
    ROUTES,
    {"title": "xmppd admin API", "version": __version__,
     "description": "Manage the accounts, sessions and invitations of an xmppd server. "
                    "Tokens: xmppctl token create --scope SCOPES. See docs/admin-api.md."},
    f"/{PREFIX}",
    {"type": "http", "scheme": "bearer",
     "description": "a token of xmppctl token create; its scopes are the roles listed"},
    ERRORS, ALWAYS, COMPONENTS)


class Problem(Exception):
    """An error answer: ``{"error": ..., "message": ...}``."""

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers)


@dataclass(frozen=True)
class Answer:
    status: int
    body: object = None  # JSON, or None for no body
    headers: tuple = ()


@dataclass(frozen=True)
class Call:
    """What a handler gets: the token (None on a public route), the path
    and query parameters (text) and the JSON body (None if none)."""

    token: api_tokens.Token | None
    path: dict
    query: dict
    body: object


class AdminAPI:
    """The handlers of :data:`ROUTES`, and the token checks."""

    def __init__(self, api):
        self._api = api
        self._tokens = api.open_store("hostval", api_tokens.STORE)
        self._failures = FailureCounts(api.clock)
        self._started = api.clock.seconds()

    @property
    def _accounts(self):
        return self._api.service("accounts")

    @defer.inlineCallbacks
    def answer(self, request):
        """The :class:`Answer` to ``request`` (a Deferred); fails with
        :class:`Problem` for an error answer."""
        if request.getHeader(b"origin") is not None:
            raise Problem(403, "cross-origin requests are refused: the admin API is not "
                               "for browsers")
        address = address_of(request.getClientAddress())
        if self._failures.blocked(address):
            raise Problem(429, "too many failed tokens from this address",
                          {"Retry-After": str(math.ceil(self._api.config.limits.auth_ban_time))})
        route, path = _route(request)
        token = None if route.scope is None else (
            yield self._authenticate(request, route.scope, address))
        call = Call(token, path, _query(request, route), _body(request, route))
        if request.method != b"GET":
            self._api.log.info("admin API: {method} {path} with token {token}",
                               method=route.method, path=route.path, token=token.id)
        return (yield getattr(self, route.handler)(call))

    @defer.inlineCallbacks
    def _authenticate(self, request, scope, address):
        """The token of ``request`` if it has ``scope`` (RFC 6750)."""
        header = request.getHeader(b"authorization") or b""
        scheme, _, secret = header.decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Problem(401, "a bearer token is required", {"WWW-Authenticate": REALM})
        key = api_tokens.lookup_key(secret.strip())
        value = None if key is None else (
            yield self._tokens.get(api_tokens.SERVER, key))
        token = None if value is None else api_tokens.parse(key, value)
        if token is None or token.expired(self._api.clock.seconds()):
            limits = self._api.config.limits
            delay = self._failures.failed(address, limits.auth_failure_delay,
                                          limits.auth_ban_after, limits.auth_ban_time)
            self._api.log.warn("admin API: invalid token from {address}", address=address)
            if delay:
                yield task.deferLater(self._api.clock, delay)
            raise Problem(401, "the token is unknown, revoked or expired",
                          {"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
        if scope not in token.scopes:
            raise Problem(403, f"the token does not have the scope {scope!r}",
                          {"WWW-Authenticate": f'{REALM}, error="insufficient_scope", '
                                               f'scope="{scope}"'})
        return token

    # Domains and accounts the token names

    def _manages(self, domain):
        return domain in self._api.hosts and self._api.enabled(domain)

    def _domain(self, call, text, unknown):
        """Hosted domain ``text`` if the token may manage it: else 403, or
        ``unknown`` (404 or 422) if it is not hosted here."""
        domain = domain_of(text)
        if call.token.domains is not None and not call.token.covers(domain):
            raise Problem(403, f"the token may not manage {text}")
        if domain is None or not self._manages(domain):
            raise Problem(unknown, f"{text} is not a domain hosted here")
        return domain

    def _domains(self, call):
        """The query's domain, else every host the token may manage."""
        text = call.query.get("domain")
        if text is not None:
            return [self._domain(call, text, 404)]
        return sorted(d for d in self._api.hosts if self._manages(d) and call.token.covers(d))

    def _jid(self, call, text, unknown, full=False):
        """The account JID (or full JID, if allowed) ``text`` names, of a
        domain the token manages; else ``unknown`` (404 or 422), or 403."""
        try:
            jid = JID.parse(text)
        except InvalidJID as e:
            raise Problem(unknown, f"invalid JID {text!r}: {e}") from None
        if jid.local is None or (jid.resource is not None and not full):
            raise Problem(unknown, f"{text!r} is not an account's JID: expected user@domain"
                                   + ("[/resource]" if full else ""))
        self._domain(call, jid.domain, unknown)
        return jid

    def _account(self, call):
        return self._jid(call, call.path["jid"], 404)

    # Users

    @defer.inlineCallbacks
    def list_users(self, call):
        users = []
        for domain in self._domains(call):
            for username in (yield self._accounts.list(domain)):
                users.append(self._user(JID(username, domain, None)))
        return Answer(200, {"users": users})

    def _user(self, jid):
        return {"jid": jid.bare_str, "disabled": self._accounts.disabled(jid)}

    @defer.inlineCallbacks
    def create_user(self, call):
        jid = self._jid(call, call.body["jid"], 422)
        try:
            yield self._accounts.create(jid, call.body["password"])
        except UserExists:
            raise Problem(409, f"{jid.bare_str} exists") from None
        except ValueError as e:  # the password, or a host without password accounts
            raise Problem(422, str(e)) from None
        location = f"/{PREFIX}/users/{quote(jid.bare_str, safe='@')}"
        return Answer(201, self._user(jid), (("Location", location),))

    @defer.inlineCallbacks
    def get_user(self, call):
        jid = self._account(call)
        if not (yield self._accounts.exists(jid)):
            raise Problem(404, f"no account {jid.bare_str}")
        sessions = sorted(s.jid.full for s in self._api.sessions.resources(jid))
        return Answer(200, {**self._user(jid), "sessions": sessions})

    def delete_user(self, call):
        jid = self._account(call)
        return self._changed(jid, self._accounts.delete(jid))

    def set_password(self, call):
        jid = self._account(call)
        return self._changed(jid, self._accounts.set_password(jid, call.body["password"]))

    def disable_user(self, call):
        jid = self._account(call)
        reason = (call.body or {}).get("reason", "")
        return self._changed(jid, self._accounts.disable(jid, reason))

    @defer.inlineCallbacks
    def _changed(self, jid, change):
        """What ``change`` (a Deferred of the streams it ended) did."""
        try:
            ended = yield change
        except UserNotFound:
            raise Problem(404, f"no account {jid.bare_str}") from None
        except ValueError as e:  # the password, or a host without password accounts
            raise Problem(422, str(e)) from None
        return Answer(200, {"jid": jid.bare_str, "ended": sorted(ended)})

    @defer.inlineCallbacks
    def enable_user(self, call):
        jid = self._account(call)
        if not (yield self._accounts.exists(jid)):
            raise Problem(404, f"no account {jid.bare_str}")
        try:
            yield self._accounts.enable(jid)
        except ValueError as e:  # a host without password accounts
            raise Problem(422, str(e)) from None
        return Answer(200, self._user(jid))

    # Sessions: what xmppctl sessions and kick show and do (xmppd.admin)

    def list_sessions(self, call):
        domains = set(self._domains(call))
        sessions = [describe_session(s) for s in self._api.sessions.all()
                    if s.jid.domain in domains]
        for session in sessions:
            session["since"] = _time(session["since"])
        return Answer(200, {"sessions": sorted(sessions, key=lambda s: s["jid"])})

    def end_sessions(self, call):
        jid = self._jid(call, call.path["jid"], 404, full=True)
        ended = self._api.streams.end_account(jid, *END_REASONS["kicked"])
        if not ended:
            raise Problem(404, f"no open session of {jid}")
        return Answer(200, {"ended": sorted(ended)})

    # Invitations (the invites service)

    def _invites(self):
        invites = self._api.service("invites")
        if invites is None:
            raise Problem(404, "invitations are off: the invites module is not loaded")
        return invites

    @defer.inlineCallbacks
    def list_invites(self, call):
        invites = self._invites()
        found = []
        for domain in self._domains(call):
            found += [_invite(invite) for invite in (yield invites.list(domain))]
        return Answer(200, {"invites": found})

    @defer.inlineCallbacks
    def create_invite(self, call):
        invites = self._invites()
        domain = self._domain(call, call.body["domain"], 422)
        if self._api.hosts[domain].authentication != "password":
            raise Problem(422, f"{domain} has no password accounts to invite to")
        expires = call.body.get("expires")
        made = yield invites.create(domain, expires=None if expires is None else int(expires),
                                    reusable=call.body.get("reusable", False))
        return Answer(201, {**_invite(made), "token": made.token, "uri": made.uri,
                            "url": made.url})

    @defer.inlineCallbacks
    def revoke_invite(self, call):
        invites = self._invites()
        domain = self._domain(call, call.query["domain"], 404)
        if not (yield invites.revoke(domain, call.path["id"])):
            raise Problem(404, f"no invitation {call.path['id']!r} on {domain}")
        return Answer(204)

    # Statistics

    @defer.inlineCallbacks
    def stats(self, call):
        hosts = {}
        for domain in self._domains(call):
            accounts = yield self._accounts.list(domain)
            hosts[domain] = {"accounts": len(accounts), "sessions": 0}
        for session in self._api.sessions.all():
            if session.jid.domain in hosts:
                hosts[session.jid.domain]["sessions"] += 1
        answer = {"hosts": hosts}
        if call.token.domains is None:
            answer["uptime"] = round(self._api.clock.seconds() - self._started, 1)
            answer["metrics"] = list(_metrics(self._api.metrics.registry))
        return Answer(200, answer)

    def openapi(self, call):
        return Answer(200, OPENAPI)


def _route(request):
    """The route of ``request`` and its path parameters: else 404, or 405
    with ``Allow`` if the path is a route's with another method."""
    try:
        segments = tuple(s.decode("utf-8") for s in request.postpath)
    except UnicodeDecodeError:
        raise Problem(404, "no such path") from None
    found = [(route, path) for route in ROUTES
             if (path := route.match(segments)) is not None]
    if not found:
        raise Problem(404, "no such path")
    method = request.method.decode("latin-1")
    for route, path in found:
        if route.method == method:
            return route, path
    allowed = ", ".join(route.method for route, _ in found)
    raise Problem(405, f"{method} is not allowed here: {allowed}", {"Allow": allowed})


def _query(request, route):
    """The route's query parameters of ``request`` (text), checked."""
    values = {}
    for parameter in route.query:
        given = request.args.get(parameter.name.encode(), [])
        if len(given) > 1:
            raise Problem(400, f"{parameter.name!r} is given more than once")
        if not given:
            if parameter.required:
                raise Problem(400, f"the query parameter {parameter.name!r} is required")
            continue
        try:
            value = given[0].decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(400, f"{parameter.name!r} is not UTF-8") from None
        wrong = problem(parameter.schema, value, f"the query parameter {parameter.name!r}")
        if wrong is not None:
            raise Problem(400, wrong)
        values[parameter.name] = value
    return values


def _body(request, route):
    """The route's JSON body of ``request``, checked against its schema;
    None when the route takes none, or an optional one is absent."""
    if route.body is None:
        return None
    request.content.seek(0)
    raw = request.content.read()  # at most MAX_BODY bytes: the listener refuses more
    if not raw:
        if route.body_required:
            raise Problem(400, "a JSON body is required")
        return None
    media_type, _, parameters = (request.getHeader(b"content-type") or b"").decode(
        "latin-1").partition(";")
    charset = parameters.strip().lower().replace(" ", "")
    if media_type.strip().lower() != "application/json" or charset not in (
            "", "charset=utf-8", 'charset="utf-8"'):
        raise Problem(415, "the body must be application/json (UTF-8)")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Problem(400, f"the body is not JSON: {e}") from None
    wrong = problem(route.body, value)
    if wrong is not None:
        raise Problem(422, wrong)
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _time(seconds):
    """RFC 3339 (UTC) of ``seconds`` since the epoch, or of a datetime."""
    if not isinstance(seconds, datetime.datetime):
        seconds = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return seconds.strftime("%Y-%m-%dT%H:%M:%SZ")


def _invite(invite):
    return {"id": invite.id, "domain": invite.domain, "inviter": invite.inviter,
            "created": _time(invite.created), "expires": _time(invite.expires),
            "reusable": invite.reusable}


def _metrics(registry):
    """The counters and gauges of the Prometheus ``registry`` (xmppd's
    and the process's), as ``{name, labels, value}``."""
    for family in registry.collect():
        if family.type not in ("counter", "gauge", "info"):
            continue
        for sample in family.samples:
            if not sample.name.endswith("_created") and math.isfinite(sample.value):
                yield {"name": sample.name, "labels": dict(sample.labels),
                       "value": sample.value}


class AdminResource(resource.Resource):
    """``/admin/v1/...``: every method goes to :meth:`AdminAPI.answer`."""

    isLeaf = True

    def __init__(self, admin, log):
        super().__init__()
        self._admin = admin
        self._log = log

    def render(self, request):
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        gone = []
        request.notifyFinish().addBoth(gone.append)
        d = defer.maybeDeferred(self._admin.answer, request)
        d.addErrback(self._failed, request)
        d.addCallback(self._send, request, gone)
        return server.NOT_DONE_YET

    def _failed(self, failure, request):
        if failure.check(Problem):
            problem_ = failure.value
        elif failure.check(StorageError):
            self._log.failure("admin API: {uri}: storage failed", failure, uri=request.uri)
            problem_ = Problem(503, "the database cannot be used now: try again later")
        else:
            self._log.failure("admin API: {uri} failed", failure, uri=request.uri)
            problem_ = Problem(500, "the request failed")
        return Answer(problem_.status, {"error": ERROR_NAMES[problem_.status],
                                        "message": problem_.message},
                      tuple(problem_.headers.items()))

    @staticmethod
    def _send(answer, request, gone):
        if gone:
            return
        request.setResponseCode(answer.status)
        for name, value in answer.headers:
            request.setHeader(name, value)
        if answer.body is not None:
            body = json.dumps(answer.body).encode()
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
        request.finish()


def setup(api):
    api.depends("accounts")
    api.http_resource(PREFIX, AdminResource(AdminAPI(api), api.log),
                      max_request_size=MAX_BODY, cors=False)
