"""The HTTP admin API (xmppd.modules.admin_api) through the HTTP listener
in memory: bearer tokens (RFC 6750), scopes and domains, the routes for
accounts, sessions, invitations and statistics, the JSON errors, and the
OpenAPI document generated from the route table."""

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet import defer
from twisted.internet.address import IPv4Address

from tests.harness import Client, TLSStringTransport, add_user, error_condition, make_server
from xmppd import api_tokens, openapi
from xmppd.core.websocket import WebSocketFactory
from xmppd.http.listener import WebSite
from xmppd.modules import admin_api
from xmppd.storage import StorageError

HOSTS = '[hosts."example.com"]\n[hosts."example.net"]\n' \
        '[hosts."guest.example.com"]\nauthentication = "anonymous"\n'
LISTEN = '[http]\nlisten = ["ssl:5281"]\n'
NO_DELAY = "[limits]\nauth_failure_delay = 0.0\n"
MODULES = ("bind", "accounts", "register", "invites", "admin_api")


@dataclass
class Response:
    status: int
    headers: dict
    raw: bytes

    @property
    def json(self):
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.raw)

    @property
    def error(self):
        return self.json["error"]


class Web:
    """Requests to the server's HTTP listener over string transports."""

    def __init__(self, server):
        self.server = server
        self.site = WebSite(server, WebSocketFactory(server, tls=True))

    def send(self, method, path, body=None, token=None, headers=(), address="192.0.2.7",
             content_type="application/json"):
        """Send a request; its transport (the answer may come later)."""
        data = body if isinstance(body, bytes) else (
            b"" if body is None else json.dumps(body).encode())
        lines = [f"{method} {path} HTTP/1.1", "Host: example.com", "Connection: close"]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        if body is not None:
            lines += [f"Content-Length: {len(data)}"] + (
                [f"Content-Type: {content_type}"] if content_type else [])
        lines += [f"{name}: {value}" for name, value in headers]
        transport = TLSStringTransport(peerAddress=IPv4Address("TCP", address, 40000))
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        transport.channel = channel
        return transport

    def __call__(self, method, path, body=None, token=None, **options):
        transport = self.send(method, path, body, token, **options)
        assert transport.value(), f"no answer yet to {method} {path}"
        if transport.disconnecting:  # Connection: close, as a real transport reports it
            transport.channel.connectionLost(Failure(ConnectionDone()))
        return parse(transport.value())


def parse(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(status.split()[1]), headers, body)


def issue(server, scopes=api_tokens.SCOPES, domains=None, lifetime=None):
    """A token in the server's database, as xmppctl token create makes it."""
    secret, token = api_tokens.make(scopes, domains, server.clock.seconds(), lifetime)
    server.sql.open("hostval", api_tokens.STORE).add("", token.key, token.value())
    return secret


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=MODULES, extra=LISTEN + NO_DELAY + HOSTS)
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.net")
    return server


@pytest.fixture
def web(server):
    return Web(server)


@pytest.fixture
def token(server):
    return issue(server)


def closed_with(client):
    [error] = [e for e in client.take() if e.name == "error"]
    assert client.closed
    return error_condition(error)


def plain(server, user, password):
    """The outcome of a PLAIN login (``success``, or the failure's condition)."""
    client = Client(server, domain=user.split("@")[1])
    client.starttls()
    client.open()
    answer = client.auth_plain(user, password)
    return answer.name if answer.name == "success" else answer.firstChildElement().name


# Tokens


def test_without_a_token_the_answer_is_401_with_a_bearer_challenge(web):
    for headers in ((), (("Authorization", "Basic YWxpY2U6c2VjcmV0"),)):
        answer = web("GET", "/admin/v1/users", headers=headers)
        assert answer.status == 401
        assert answer.headers["www-authenticate"] == 'Bearer realm="xmppd"'
        assert answer.error == "unauthorized"


def test_unknown_revoked_and_expired_tokens_are_invalid(server, web, token):
    short = issue(server, lifetime=60)
    assert web("GET", "/admin/v1/stats", token=short).status == 200
    server.clock.advance(60)
    for secret in (short, "x" * 43, "x" * 500):
        answer = web("GET", "/admin/v1/stats", token=secret)
        assert answer.status == 401
        assert answer.headers["www-authenticate"] == 'Bearer realm="xmppd", error="invalid_token"'
    assert web("GET", "/admin/v1/stats", token=token).status == 200
    server.sql.open("hostval", api_tokens.STORE).delete("", hashlib.sha256(token.encode())
                                                         .hexdigest())
    assert web("GET", "/admin/v1/stats", token=token).status == 401


def test_the_database_keeps_only_the_hash_of_a_token(server, token):
    records = server.sql.open("hostval", api_tokens.STORE).items("")
    assert list(records) == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in json.dumps(records)


def test_a_token_without_the_scope_gets_403(server, web):
    secret = issue(server, scopes=("stats",))
    assert web("GET", "/admin/v1/stats", token=secret).status == 200
    answer = web("GET", "/admin/v1/users", token=secret)
    assert (answer.status, answer.error) == (403, "forbidden")
    assert answer.headers["www-authenticate"] == \
        'Bearer realm="xmppd", error="insufficient_scope", scope="users"'


def test_a_token_for_some_domains_manages_only_those(server, web):
    secret = issue(server, domains=("example.net",))
    assert web("GET", "/admin/v1/users", token=secret).json == {
        "users": [{"jid": "bob@example.net", "disabled": False}]}
    assert web("GET", "/admin/v1/users?domain=example.com", token=secret).status == 403
    assert web("GET", "/admin/v1/users/alice@example.com", token=secret).status == 403
    assert web("POST", "/admin/v1/users", {"jid": "eve@example.com", "password": "x"},
               token=secret).status == 403
    assert web("DELETE", "/admin/v1/users/alice@example.com", token=secret).status == 403
    assert plain(server, "alice@example.com", "secret") == "success"


def test_failed_tokens_are_delayed_then_the_address_is_banned(tmp_path):
    server = make_server(tmp_path, modules=MODULES, extra=LISTEN + "[limits]\n"
                         "auth_failure_delay = 2.0\nauth_ban_after = 3\nauth_ban_time = 300.0\n")
    web, token = Web(server), issue(server)
    assert web("GET", "/admin/v1/stats", token="wrong").status == 401  # the first at once
    waiting = web.send("GET", "/admin/v1/stats", token="wrong")
    assert waiting.value() == b""
    server.clock.advance(2)
    assert parse(waiting.value()).status == 401
    third = web.send("GET", "/admin/v1/stats", token="wrong")  # banned from now on
    server.clock.advance(4)
    assert parse(third.value()).status == 401
    answer = web("GET", "/admin/v1/stats", token=token)
    assert (answer.status, answer.error, answer.headers["retry-after"]) == (
        429, "too-many-requests", "300")
    assert web("GET", "/admin/v1/stats", token=token, address="192.0.2.8").status == 200
    assert web("GET", "/admin/v1/users", address="192.0.2.9").status == 401  # not counted
    server.clock.advance(300)
    assert web("GET", "/admin/v1/stats", token=token).status == 200


# Accounts


def test_list_create_and_read_accounts(server, web, token):
    answer = web("POST", "/admin/v1/users", {"jid": "Carol@Example.com", "password": "pässword"},
                 token=token)
    assert answer.status == 201
    assert answer.json == {"jid": "carol@example.com", "disabled": False}
    assert answer.headers["location"] == "/admin/v1/users/carol@example.com"
    assert plain(server, "carol@example.com", "pässword") == "success"
    assert web("GET", "/admin/v1/users?domain=example.com", token=token).json == {"users": [
        {"jid": "alice@example.com", "disabled": False},
        {"jid": "carol@example.com", "disabled": False}]}
    assert [u["jid"] for u in web("GET", "/admin/v1/users", token=token).json["users"]] == [
        "alice@example.com", "carol@example.com", "bob@example.net"]
    Client(server).login("carol@example.com", "laptop", password="pässword")
    assert web("GET", "/admin/v1/users/carol@example.com", token=token).json == {
        "jid": "carol@example.com", "disabled": False,
        "sessions": ["carol@example.com/laptop"]}


@pytest.mark.parametrize("body,status", [
    ({"jid": "alice@example.com", "password": "x"}, 409),
    ({"jid": "carol@example.org", "password": "x"}, 422),  # not hosted
    ({"jid": "example.com", "password": "x"}, 422),  # not an account
    ({"jid": "carol@example.com/res", "password": "x"}, 422),
    ({"jid": "a b@example.com", "password": "x"}, 422),
    ({"jid": "carol@example.com", "password": "bell\x07"}, 422),
    ({"jid": "carol@guest.example.com", "password": "x"}, 422),  # anonymous host
    ({"jid": "carol@example.com"}, 422),
    ({"jid": "carol@example.com", "password": "x", "admin": True}, 422),
    ({"jid": 5, "password": "x"}, 422),
    (["carol@example.com", "x"], 422),
    ({"jid": "carol@example.com", "password": "x" * 1025}, 422),
])
def test_accounts_that_cannot_be_created(server, web, token, body, status):
    answer = web("POST", "/admin/v1/users", body, token=token)
    assert (answer.status, answer.error) == (status, admin_api.ERROR_NAMES[status])
    assert answer.json["message"]
    assert server.sql.list_accounts("example.com") == [("alice", "example.com")]


@pytest.mark.parametrize("raw,content_type,status", [
    (b"{\"jid\": ", "application/json", 400),
    (b"{\"jid\": NaN}", "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    (b"[" * 5000 + b"]" * 5000, "application/json", 400),
    (b"", "application/json", 400),
    (b"jid=carol", "application/x-www-form-urlencoded", 415),
    (b"{}", None, 415),
    (b"{}", "application/json; charset=latin-1", 415),
    (b"{}", "Application/JSON; charset=UTF-8", 422),
])
def test_bodies_that_are_not_json_objects(web, token, raw, content_type, status):
    answer = web("POST", "/admin/v1/users", raw, token=token, content_type=content_type)
    assert (answer.status, answer.error) == (status, admin_api.ERROR_NAMES[status])


def test_a_body_over_64_kib_is_refused_before_it_is_read(web, token):
    body = {"jid": "carol@example.com", "password": "x" * admin_api.MAX_BODY}
    assert web("POST", "/admin/v1/users", body, token=token).status == 413


def test_delete_an_account_ends_its_sessions(server, web, token):
    phone = Client(server)
    phone.login("alice@example.com", "phone")
    answer = web("DELETE", "/admin/v1/users/alice@example.com", token=token)
    assert answer.json == {"jid": "alice@example.com", "ended": ["alice@example.com/phone"]}
    assert closed_with(phone) == "not-authorized"
    assert server.sql.list_accounts("example.com") == []
    assert web("DELETE", "/admin/v1/users/alice@example.com", token=token).status == 404


def test_set_a_password(server, web, token):
    phone = Client(server)
    phone.login("alice@example.com", "phone")
    answer = web("PUT", "/admin/v1/users/alice%40example.com/password", {"password": "new one"},
                 token=token)
    assert answer.json == {"jid": "alice@example.com", "ended": ["alice@example.com/phone"]}
    assert closed_with(phone) == "reset"
    assert plain(server, "alice@example.com", "new one") == "success"
    assert plain(server, "alice@example.com", "secret") == "not-authorized"
    assert web("PUT", "/admin/v1/users/nobody@example.com/password", {"password": "x"},
               token=token).status == 404
    assert web("PUT", "/admin/v1/users/alice@example.com/password", {"password": ""},
               token=token).status == 422


def test_disable_and_enable_an_account(server, web, token):
    phone = Client(server)
    phone.login("alice@example.com", "phone")
    answer = web("POST", "/admin/v1/users/alice@example.com/disable", {"reason": "spam"},
                 token=token)
    assert answer.json == {"jid": "alice@example.com", "ended": ["alice@example.com/phone"]}
    assert closed_with(phone) == "not-authorized"
    assert plain(server, "alice@example.com", "secret") == "account-disabled"
    assert web("GET", "/admin/v1/users/alice@example.com", token=token).json["disabled"]
    assert web("POST", "/admin/v1/users/alice@example.com/disable", token=token).status == 200
    answer = web("POST", "/admin/v1/users/alice@example.com/enable", token=token)
    assert answer.json == {"jid": "alice@example.com", "disabled": False}
    assert plain(server, "alice@example.com", "secret") == "success"
    for action in ("disable", "enable"):
        assert web("POST", f"/admin/v1/users/nobody@example.com/{action}",
                   token=token).status == 404


@pytest.mark.parametrize("path", [
    "/admin/v1/users/nobody@example.com", "/admin/v1/users/alice@example.org",
    "/admin/v1/users/example.com", "/admin/v1/users/alice@example.com%2Fres",
    "/admin/v1/users/%FF@example.com", "/admin/v1/users/a%00@example.com",
    "/admin/v1/users/%2E%2E", "/admin/v1/users/", "/admin/v1/nothing", "/admin/v1",
    "/admin/v1/users?domain=example.org", "/admin/v1/sessions?domain=-bad-",
])
def test_what_is_not_here_is_404(web, token, path):
    answer = web("GET", path, token=token)
    assert (answer.status, answer.error) == (404, "not-found")


# Sessions


def test_list_and_end_sessions(server, web, token):
    phone, laptop = Client(server, address="198.51.100.4"), Client(server)
    phone.login("alice@example.com", "phone")
    laptop.login("alice@example.com", "laptop")
    Client(server, domain="example.net").login("bob@example.net", "desk")
    sessions = web("GET", "/admin/v1/sessions?domain=example.com", token=token).json["sessions"]
    assert [s["jid"] for s in sessions] == ["alice@example.com/laptop",
                                            "alice@example.com/phone"]
    assert sessions[1]["address"] == "198.51.100.4:54321"
    assert sessions[1]["since"] == "1970-01-01T00:00:00Z"
    assert len(web("GET", "/admin/v1/sessions", token=token).json["sessions"]) == 3

    answer = web("DELETE", "/admin/v1/sessions/" + quote("alice@example.com/phone", safe=""),
                 token=token)
    assert answer.json == {"ended": ["alice@example.com/phone"]}
    assert closed_with(phone) == "policy-violation"
    phone.lose()
    assert not laptop.closed
    assert web("DELETE", "/admin/v1/sessions/alice@example.com%2Fphone", token=token).status \
        == 404
    answer = web("DELETE", "/admin/v1/sessions/alice@example.com", token=token)
    assert answer.json == {"ended": ["alice@example.com/laptop"]}
    assert web("DELETE", "/admin/v1/sessions/example.com", token=token).status == 404


def test_sessions_need_the_sessions_scope(server, web):
    secret = issue(server, scopes=("users",))
    assert web("GET", "/admin/v1/sessions", token=secret).status == 403
    assert web("DELETE", "/admin/v1/sessions/alice@example.com", token=secret).status == 403


# Invitations


def test_make_list_and_revoke_invitations(server, web, token):
    answer = web("POST", "/admin/v1/invites", {"domain": "example.com", "expires": 3600,
                                               "reusable": True}, token=token)
    assert answer.status == 201
    made = answer.json
    assert made["uri"] == f"xmpp:example.com?register;preauth={made['token']}"
    assert made["url"] == f"https://example.com:5281/invite/example.com/{made['token']}"
    assert (made["expires"], made["reusable"], made["inviter"]) == (
        "1970-01-01T01:00:00Z", True, None)
    assert server.services["invites"].find("example.com", made["token"]).result is not None
    listed = web("GET", "/admin/v1/invites", token=token).json["invites"]
    assert listed == [{key: made[key] for key in
                       ("id", "domain", "inviter", "created", "expires", "reusable")}]
    path = f"/admin/v1/invites/{made['id']}"
    assert web("DELETE", path, token=token).status == 400  # which domain?
    answer = web("DELETE", path + "?domain=example.com", token=token)
    assert (answer.status, answer.raw) == (204, b"")
    assert web("DELETE", path + "?domain=example.com", token=token).status == 404
    assert web("GET", "/admin/v1/invites", token=token).json == {"invites": []}


@pytest.mark.parametrize("body,status", [
    ({"domain": "example.org"}, 422),
    ({"domain": "guest.example.com"}, 422),
    ({"domain": "example.com", "expires": 10}, 422),
    ({"domain": "example.com", "expires": 1.5}, 422),
    ({"domain": "example.com", "reusable": "yes"}, 422),
    ({}, 422),
])
def test_invitations_that_cannot_be_made(web, token, body, status):
    assert web("POST", "/admin/v1/invites", body, token=token).status == status


def test_without_the_invites_module_invitations_are_404(tmp_path):
    server = make_server(tmp_path, modules=("accounts", "admin_api"), extra=LISTEN)
    answer = Web(server)("GET", "/admin/v1/invites", token=issue(server))
    assert (answer.status, answer.error) == (404, "not-found")


# Statistics


def test_stats(server, web, token):
    Client(server).login("alice@example.com", "phone")
    server.clock.advance(90)
    stats = web("GET", "/admin/v1/stats", token=token).json
    assert stats["hosts"] == {"example.com": {"accounts": 1, "sessions": 1},
                              "example.net": {"accounts": 1, "sessions": 0},
                              "guest.example.com": {"accounts": 0, "sessions": 0}}
    assert stats["uptime"] == 90.0
    metrics = {(m["name"], tuple(sorted(m["labels"].items()))): m["value"]
               for m in stats["metrics"]}
    assert metrics[("xmppd_sessions", ())] == 1
    assert metrics[("xmppd_logins_total", ())] == 1
    secret = issue(server, scopes=("stats",), domains=("example.net",))
    assert web("GET", "/admin/v1/stats", token=secret).json == {
        "hosts": {"example.net": {"accounts": 1, "sessions": 0}}}


# Errors, browsers, the document


def test_other_methods_get_405_with_allow(web, token):
    answer = web("PATCH", "/admin/v1/users", token=token)
    assert (answer.status, answer.headers["allow"]) == (405, "GET, POST")
    answer = web("PUT", "/admin/v1/users/alice@example.com", token=token)
    assert (answer.status, answer.headers["allow"]) == (405, "GET, DELETE")


def test_a_repeated_query_parameter_is_400(web, token):
    answer = web("GET", "/admin/v1/users?domain=example.com&domain=example.net", token=token)
    assert (answer.status, answer.error) == (400, "bad-request")
    assert web("GET", "/admin/v1/users?domain=", token=token).status == 400


def test_a_database_failure_is_503(server, web, token, monkeypatch):
    monkeypatch.setattr(server.services["accounts"], "list",
                        lambda domain: defer.fail(StorageError("the database is down")))
    answer = web("GET", "/admin/v1/users", token=token)
    assert (answer.status, answer.error) == (503, "unavailable")


def test_browsers_are_refused_and_no_cors_header_is_sent(tmp_path):
    server = make_server(tmp_path, modules=MODULES, extra=LISTEN + 'cors_origins = ["*"]\n')
    web, token = Web(server), issue(server)
    answer = web("POST", "/admin/v1/users", {"jid": "carol@example.com", "password": "x"},
                 token=token, headers=[("Origin", "https://evil.example")])
    assert (answer.status, answer.error) == (403, "forbidden")
    assert "access-control-allow-origin" not in answer.headers
    assert server.sql.list_accounts("example.com") == []
    answer = web("GET", "/admin/v1/openapi.json", headers=[("Origin", "https://example.com")])
    assert answer.status == 403 and "access-control-allow-origin" not in answer.headers
    # No preflight is granted either: the listener leaves /admin alone.
    answer = web("OPTIONS", "/admin/v1/users", headers=[
        ("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")])
    assert answer.status != 204 and "access-control-allow-methods" not in answer.headers
    # Nor when the path is percent-encoded: the listener decodes it as it routes.
    answer = web("OPTIONS", "/%61dmin/v1/users", headers=[
        ("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")])
    assert answer.status != 204 and "access-control-allow-methods" not in answer.headers


def test_answers_are_not_cached(web, token):
    answer = web("GET", "/admin/v1/stats", token=token)
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_the_openapi_document_is_public_and_generated_from_the_routes(web):
    document = web("GET", "/admin/v1/openapi.json").json
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "/admin/v1"}]
    operations = {(method.upper(), path): operation
                  for path, methods in document["paths"].items()
                  for method, operation in methods.items()}
    assert set(operations) == {(route.method, route.path) for route in admin_api.ROUTES}
    for route in admin_api.ROUTES:
        operation = operations[route.method, route.path]
        assert operation["operationId"] == route.handler
        if route.scope is None:
            assert operation["security"] == []
        else:
            assert operation["security"] == [{"bearer": [route.scope]}]
            assert {"401", "403", "429"} <= set(operation["responses"])
        if route.body is not None:
            assert operation["requestBody"]["content"]["application/json"]["schema"] \
                == route.body
            assert {"400", "413", "415", "422"} <= set(operation["responses"])
    create = operations["POST", "/users"]
    assert create["responses"]["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_request_schemas_use_only_what_is_enforced():
    with pytest.raises(ValueError, match="pattern"):
        openapi.Route("POST", "/x", "x", "x", "users", {},
                      body={"type": "object", "properties": {"a": {"pattern": "^a"}}})
    with pytest.raises(ValueError, match="not declared"):
        openapi.Route("GET", "/x/{id}", "x", "x", "users", {})
    body = admin_api.ROUTES[1].body
    assert openapi.problem(body, {"jid": "a@b", "password": "x"}) is None
    assert openapi.problem(body, {"jid": "a@b", "password": True}) == \
        "'password' must be a string"
    assert openapi.problem({"type": "integer"}, 2.0) is None
    assert openapi.problem({"type": "integer"}, True) == "the body must be an integer"


BODY_ROUTES = [route for route in admin_api.ROUTES if route.body is not None]
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(BODY_ROUTES),
       body=st.one_of(JSON, st.fixed_dictionaries({}, optional={
           "jid": st.text(), "password": st.text(max_size=30), "domain": st.text(),
           "expires": st.integers(), "reusable": st.booleans(), "reason": st.text()})),
       segment=st.sampled_from(["alice@example.com", "x", "%00", "%FF%FE", "a%2Fb"]))
def test_no_body_gets_a_server_error(web, token, route, body, segment):
    path = "/admin/v1" + route.path.replace("{jid}", segment)
    answer = web(route.method, path, body, token=token)
    assert answer.status < 500, answer.raw
    if answer.status >= 400:
        assert set(answer.json) == {"error", "message"}
