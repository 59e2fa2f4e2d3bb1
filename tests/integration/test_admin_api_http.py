"""The HTTP admin API on the real server over real HTTPS: a token made by
``xmppctl token create`` manages accounts, sessions (of slixmpp clients)
and invitations; ``xmppctl token revoke`` stops it at once.  Then
schemathesis tests every operation of the served OpenAPI document with
generated inputs: no answer is a server error, and every answer is one
the document declares (status, content type, headers, schema).

Requests go to the test domain, which is 127.0.0.1 in process, and verify
the server's certificate for it against the test CA."""

import asyncio
import json
from urllib.parse import quote

import pytest
import requests
import schemathesis
import urllib3
from hypothesis import HealthCheck, settings
from schemathesis.config import HttpBearerAuthConfig, PositiveDataAcceptanceConfig

from tests.integration.conftest import DOMAIN, prepare_web, run_xmppctl
from tests.integration.test_upload_http import fetch
from xmppd.modules import admin_api

ALL_SCOPES = "users,sessions,invites,stats"
EXAMPLES = 25  # generated requests per operation and phase: the whole run stays under 60 s
ANSWERED = {}  # "METHOD /path" -> the statuses of its generated requests


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The module's server with an HTTPS listener and the admin API."""
    deployment, port = prepare_web(tmp_path_factory.mktemp("xmppd-admin-api"))
    config = deployment.process.config_path
    config.write_text(config.read_text() + 'modules_enabled = ["admin_api"]\n')
    deployment.process.start()
    yield deployment, port
    deployment.process.check_clean_exit()


def new_token(deployment, *arguments):
    return run_xmppctl("-c", deployment.process.config_path, "token", "create",
                       *arguments).strip()


class Admin:
    """Requests to the admin API with a token (blocking)."""

    def __init__(self, deployment, port, token):
        self.deployment = deployment
        self.base = f"https://{DOMAIN}:{port}/admin/v1"
        self.token = token

    def __call__(self, method, path, body=None, token=None):
        headers = {"Authorization": f"Bearer {token or self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        status, headers, raw = fetch(self.deployment, method, self.base + path, data, headers)
        return status, headers, json.loads(raw) if raw else None


def test_manage_accounts_sessions_and_invitations(web, run):
    deployment, port = web
    admin = Admin(deployment, port, new_token(deployment, "--scope", ALL_SCOPES))

    async def body(clients):
        call = lambda *args, **kwargs: asyncio.to_thread(admin, *args, **kwargs)  # noqa: E731
        status, headers, _ = await asyncio.to_thread(
            fetch, deployment, "GET", admin.base + "/users")
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="xmppd"')

        status, headers, user = await call("POST", "/users", {"jid": f"carol@{DOMAIN}",
                                                              "password": "carol-secret-1"})
        assert (status, user) == (201, {"jid": f"carol@{DOMAIN}", "disabled": False})
        assert headers["Location"] == f"/admin/v1/users/carol@{DOMAIN}"
        deployment.passwords["carol"] = "carol-secret-1"
        carol = await clients.login("carol", "phone")

        status, _, listed = await call("GET", f"/sessions?domain={DOMAIN}")
        [session] = [s for s in listed["sessions"] if s["jid"] == carol.jid]
        host, client_port = carol.xmpp.transport.get_extra_info("sockname")[:2]
        assert session["address"] == f"{host}:{client_port}"
        assert session["tls"] == carol.tls.version()

        status, _, ended = await call("DELETE", "/sessions/" + quote(carol.jid, safe=""))
        assert (status, ended) == (200, {"ended": [carol.jid]})
        await carol.wait_disconnected()
        assert carol.stream_errors == ["policy-violation"]

        status, _, changed = await call("PUT", f"/users/carol@{DOMAIN}/password",
                                        {"password": "carol-secret-2"})
        assert (status, changed["ended"]) == (200, [])
        deployment.passwords["carol"] = "carol-secret-2"
        await clients.login("carol", "laptop")

        status, _, invite = await call("POST", "/invites", {"domain": DOMAIN, "expires": 3600})
        assert status == 201
        assert invite["url"] == f"https://{DOMAIN}:{port}/invite/{DOMAIN}/{invite['token']}"
        page_status, _, page = await asyncio.to_thread(fetch, deployment, "GET", invite["url"])
        assert page_status == 200 and invite["uri"].encode() in page.replace(b"&amp;", b"&")

        status, _, stats = await call("GET", "/stats")
        assert stats["hosts"][DOMAIN] == {"accounts": 3, "sessions": 1}

        status, _, deleted = await call("DELETE", f"/users/carol@{DOMAIN}")
        assert status == 200 and len(deleted["ended"]) == 1

    run(deployment, body)


def test_scopes_and_revocation(web):
    deployment, port = web
    stats_only = Admin(deployment, port, new_token(deployment, "--scope", "stats"))
    assert stats_only("GET", "/stats")[0] == 200
    status, _, error = stats_only("GET", "/users")
    assert (status, error["error"]) == (403, "forbidden")
    other_domain = new_token(deployment, "--scope", "users", "--domain", DOMAIN)
    assert stats_only("GET", "/users", token=other_domain)[0] == 200

    listed = run_xmppctl("-c", deployment.process.config_path, "token", "list", "--json")
    [token_id] = [t["id"] for t in json.loads(listed) if t["scopes"] == ["stats"]]
    run_xmppctl("-c", deployment.process.config_path, "token", "revoke", token_id)
    status, headers, _ = stats_only("GET", "/stats")
    assert (status, headers["WWW-Authenticate"]) == (
        401, 'Bearer realm="xmppd", error="invalid_token"')


# Generated requests (schemathesis)

# The document the server serves is the one its code generates (checked
# below); schemathesis makes one test per operation of it at collection.
schema = schemathesis.openapi.from_dict(json.loads(json.dumps(admin_api.OPENAPI)))
# A JID or a password can fit the schema and still be refused (PRECIS,
# RFC 7622 §3, RFC 8265): 422 is then the right answer to data the schema allows.
schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
    expected_statuses=["2xx", "401", "403", "404", "409", "422"])


@pytest.fixture
def loopback(monkeypatch):
    """The test domain is 127.0.0.1 for requests (urllib3): TLS checks the
    certificate for the domain, and nothing asks a name server."""
    create = urllib3.util.connection.create_connection

    def connect(address, *args, **kwargs):
        host, port = address
        return create(("127.0.0.1" if host == DOMAIN else host, port), *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", connect)


@pytest.fixture(scope="module")
def api(web):
    """The base URL and the CA file; schemathesis sends a token of every
    scope (the bearer scheme), but not in requests it makes without."""
    deployment, port = web
    schema.config.auth.openapi.schemes["bearer"] = HttpBearerAuthConfig(
        bearer=new_token(deployment, "--scope", ALL_SCOPES))
    return f"https://{DOMAIN}:{port}/admin/v1", str(deployment.ca_file)


def test_the_served_document_is_the_generated_one(api, loopback):
    base, ca_file = api
    response = requests.get(base + "/openapi.json", verify=ca_file, timeout=10)
    assert response.status_code == 200
    assert response.json() == schema.raw_schema


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests(case, api, loopback):
    base, ca_file = api
    response = case.call_and_validate(base_url=base, verify=ca_file, timeout=10)
    ANSWERED.setdefault(case.operation.label, set()).add(response.status_code)


def test_generated_requests_reached_every_operation():
    """The token worked: every operation answered something else than
    401, and those that read answered 200."""
    if not ANSWERED:
        pytest.skip("test_generated_requests did not run")
    assert set(ANSWERED) == {f"{route.method} {route.path}" for route in admin_api.ROUTES}
    for operation, statuses in ANSWERED.items():
        assert statuses - {401}, operation
        if operation.startswith("GET ") and "{" not in operation:
            assert 200 in statuses, operation
