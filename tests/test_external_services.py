"""External service discovery (XEP-0215), in memory: the services list,
TURN REST credentials on the injected clock, who is answered, the
feature, and the checked keys of [external_services]."""

import base64
import hashlib
import hmac

import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from tests.harness import Client, add_user, error_condition, make_server, reload
from xmppd.config import ConfigError, parse
from xmppd.modules import external_services

NS = "urn:xmpp:extdisco:2"
NS_INFO = "http://jabber.org/protocol/disco#info"
SECRET = "s3cret-shared-with-coturn"
SERVICES = """
[external_services]
secret = "s3cret-shared-with-coturn"
credentials_lifetime = 3600
services = [
  {type = "stun", host = "turn.example.com", port = 3478, transport = "udp"},
  {type = "turn", host = "turn.example.com", port = 3478, transport = "udp", restricted = true},
  {type = "turns", host = "turn.example.com", port = 5349, transport = "tcp", restricted = true},
]
"""
NOW = 1_700_000_000  # 2023-11-14T22:13:20Z


def make(tmp_path, extra=SERVICES, hosts=("example.com", "other.example")):
    server = make_server(tmp_path, hosts=hosts, modules=("bind", "disco", "external_services"),
                         extra=extra)
    server.clock.advance(NOW)
    add_user(server, "alice@example.com")
    add_user(server, "bob@other.example")
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


def ask(server, payload, user="alice@example.com", to="example.com"):
    client = Client(server, domain=user.split("@")[1])
    client.login(user)
    client.send(f"<iq type='get' id='x1' to='{to}'>{payload}</iq>")
    [answer] = client.take()
    return answer


def services(answer):
    assert answer["type"] == "result", answer.toXml()
    return [dict(service.attributes) for service in answer.firstChildElement().elements(NS,
                                                                                       "service")]


def expected_password(username):
    digest = hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def test_all_services_with_turn_credentials(server):
    stun, turn, turns = services(ask(server, f"<services xmlns='{NS}'/>"))
    assert stun == {"type": "stun", "host": "turn.example.com", "port": "3478",
                    "transport": "udp"}
    username = f"{NOW + 3600}:alice@example.com"
    assert turn == {"type": "turn", "host": "turn.example.com", "port": "3478",
                    "transport": "udp", "restricted": "true", "username": username,
                    "password": expected_password(username), "expires": "2023-11-14T23:13:20Z"}
    assert turns["port"] == "5349" and turns["transport"] == "tcp"
    assert turns["username"] == username and turns["password"] == turn["password"]


def test_credentials_follow_the_clock(server):
    server.clock.advance(60)
    [turn] = services(ask(server, f"<services xmlns='{NS}' type='turn'/>"))
    assert turn["username"] == f"{NOW + 3660}:alice@example.com"
    assert turn["expires"] == "2023-11-14T23:14:20Z"


def test_services_of_one_type(server):
    answer = ask(server, f"<services xmlns='{NS}' type='stun'/>")
    assert answer.firstChildElement()["type"] == "stun"
    assert [s["type"] for s in services(answer)] == ["stun"]
    assert services(ask(server, f"<services xmlns='{NS}' type='ftp'/>")) == []


def test_credentials_request(server):
    answer = ask(server, f"<credentials xmlns='{NS}'><service host='turn.example.com' "
                         f"type='turns'/></credentials>")
    [turns] = services(answer)
    assert answer.firstChildElement().name == "credentials"
    assert turns["port"] == "5349" and turns["username"] == f"{NOW + 3600}:alice@example.com"
    assert turns["password"] == expected_password(turns["username"])


@pytest.mark.parametrize("service, condition", [
    ("<service host='turn.example.com' type='turn' port='3479'/>", "item-not-found"),
    ("<service host='stun.example.net' type='turn'/>", "item-not-found"),
    ("<service host='turn.example.com'/>", "bad-request"),
    ("<service host='turn.example.com' type='turn' port='x'/>", "bad-request"),
    ("", "bad-request"),
])
def test_bad_credentials_requests(server, service, condition):
    answer = ask(server, f"<credentials xmlns='{NS}'>{service}</credentials>")
    assert answer["type"] == "error" and error_condition(answer) == condition


def test_credentials_by_port(server):
    answer = ask(server, f"<credentials xmlns='{NS}'><service host='turn.example.com' "
                         f"type='turn' port='3478'/></credentials>")
    assert [s["port"] for s in services(answer)] == ["3478"]


def test_only_the_hosts_own_accounts_are_answered(server):
    answer = ask(server, f"<services xmlns='{NS}'/>", user="bob@other.example")
    assert answer["type"] == "error" and error_condition(answer) == "forbidden"
    # bob's own server answers him, with credentials for his JID
    [_, turn, _] = services(ask(server, f"<services xmlns='{NS}'/>", user="bob@other.example",
                                to="other.example"))
    assert turn["username"] == f"{NOW + 3600}:bob@other.example"


def test_restricted_services_without_a_secret(tmp_path):
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        server = make(tmp_path, extra=SERVICES.replace(f'secret = "{SECRET}"', ""))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    errors = [formatEvent(e) for e in logged if e["log_level"] >= LogLevel.error]
    assert len(errors) == 2 and "example.com lists restricted services" in errors[0]
    _, turn, _ = services(ask(server, f"<services xmlns='{NS}'/>"))
    assert turn["restricted"] == "true" and "username" not in turn and "password" not in turn
    answer = ask(server, f"<credentials xmlns='{NS}'><service host='turn.example.com' "
                         f"type='turn'/></credentials>")
    assert error_condition(answer) == "service-unavailable"


def features(server, to="example.com"):
    answer = ask(server, f"<query xmlns='{NS_INFO}'/>", to=to)
    return [f["var"] for f in answer.firstChildElement().elements(NS_INFO, "feature")]


def test_the_feature_is_advertised_while_services_are_configured(tmp_path):
    server = make(tmp_path, extra="")
    assert NS not in features(server)
    assert services(ask(server, f"<services xmlns='{NS}'/>")) == []
    reload(server, tmp_path, SERVICES)
    assert NS in features(server)
    assert len(services(ask(server, f"<services xmlns='{NS}'/>"))) == 3
    reload(server, tmp_path)
    assert NS not in features(server)


def test_a_host_lists_its_own_services(tmp_path):
    server = make(tmp_path, extra=SERVICES + """
[hosts."other.example".external_services]
[[hosts."other.example".external_services.services]]
type = "turn"
host = "198.51.100.7"
restricted = true
name = "Relay"
""", hosts=("example.com",))
    [turn] = services(ask(server, f"<services xmlns='{NS}'/>", user="bob@other.example",
                          to="other.example"))
    assert (turn["host"], turn["username"]) == ("198.51.100.7", f"{NOW + 3600}:bob@other.example")
    assert turn["name"] == "Relay" and "port" not in turn and "transport" not in turn
    assert len(services(ask(server, f"<services xmlns='{NS}'/>"))) == 3


def test_the_secret_is_in_no_repr_nor_log(tmp_path):
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        server = make(tmp_path)
        ask(server, f"<services xmlns='{NS}'/>")
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert logged and not [e for e in logged if SECRET in formatEvent(e)]
    options = server.config.options("external_services")
    assert options.secret.value == SECRET
    assert SECRET not in repr(options) and SECRET not in repr(server.config)
    assert options.services[0] == external_services.Service(
        type="stun", host="turn.example.com", port=3478, transport="udp")


@pytest.mark.parametrize("section, message", [
    ('services = {type = "stun"}',
     "external_services.services: expected an array of tables, got a table"),
    ('services = [{host = "turn.example.com"}]', "external_services.services[0].type: required"),
    ('services = [{type = "turn"}]', "external_services.services[0].host: required"),
    ('services = [{type = "turn", host = "t.example", port = 70000}]',
     "external_services.services[0].port: expected a port number (1 to 65535), got 70000"),
    ('services = [{type = "turn", host = "t.example", transport = "sctp"}]',
     'external_services.services[0].transport: expected one of "udp", "tcp", got "sctp"'),
    ('services = [{type = "turn", host = "t example"}]',
     'external_services.services[0].host: expected a host name or address, got "t example"'),
    ('services = [{type = "TURN!", host = "t.example"}]',
     "external_services.services[0].type: expected a service type"),
    ('services = [{type = "turn", host = "t.example", restricted = "yes"}]',
     'external_services.services[0].restricted: expected true or false, got "yes"'),
    ('services = [{type = "turn", host = "t.example", username = "u"}]',
     "external_services.services[0].username: unknown key"),
    ("secret = 12345", "external_services.secret: expected a non-empty string"),
    ("credentials_lifetime = 0", "external_services.credentials_lifetime: expected an integer"),
])
def test_bad_keys_are_refused_naming_the_key(tmp_path, section, message):
    with pytest.raises(ConfigError) as info:
        parse(f'[external_services]\n{section}\n[hosts."example.com"]\n',
              str(tmp_path / "xmppd.toml"))
    assert message in str(info.value) and "12345" not in str(info.value)
