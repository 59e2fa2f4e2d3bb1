"""Module-owned options (xmppd.options): the declaration, how the config
file finds it, and ``api.options`` following a reload.  Each module's own
tests show a reload applying its options (tests/test_ping.py,
test_roster.py, test_offline.py, test_vcard.py, test_private.py; version's
here, its other tests being in test_server_info.py)."""

import dataclasses

import pytest

from tests.harness import error_condition, make_server, reload
from tests.test_server_info import NS_VERSION, ask, children, disco_features, login, make, payload
from xmppd.config import parse
from xmppd.core.api import ModuleAPI
from xmppd.modules import ping
from xmppd.options import Invalid, Option, Options, Table, declared, integer, positive_number

OPTIONS = Options(size=Option(10, integer(1)), delay=Option(2, positive_number))


def test_defaults_are_checked_values():
    assert OPTIONS.defaults == OPTIONS.parse(Table({}, "demo"))
    assert (OPTIONS.defaults.size, OPTIONS.defaults.delay) == (10, 2.0)
    assert type(OPTIONS.defaults.delay) is float


def test_a_section_is_parsed_into_frozen_values():
    values = OPTIONS.parse(Table({"size": 3}, "demo"))
    assert (values.size, values.delay) == (3, 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        values.size = 4


@pytest.mark.parametrize("section, key, problem", [
    ({"size": 0}, "demo.size", "expected an integer >= 1, got 0"),
    ({"delay": "2"}, "demo.delay", 'expected a number > 0, got "2"'),
    ({"sizes": 1}, "demo.sizes", "unknown key"),
])
def test_a_bad_key_names_itself(section, key, problem):
    with pytest.raises(Invalid) as info:
        OPTIONS.parse(Table(section, "demo"))
    assert (info.value.key, info.value.problem) == (key, problem)


@pytest.mark.parametrize("name, found", [
    ("ping", ping.OPTIONS),
    ("disco", None),  # a module that declares none
    ("pong", None),  # no such module
    ("Ping", None),
    ("core.server", None),
    ("__init__", None),
])
def test_a_section_is_declared_by_the_module_of_its_name(name, found):
    assert declared(name) is found


def test_the_config_is_checked_without_setting_modules_up(monkeypatch, tmp_path):
    def setup(api):
        raise AssertionError("set up while the config was parsed")

    monkeypatch.setattr(ping, "setup", setup)
    config = parse('[ping]\ntimeout = 5\n[hosts."example.com"]\n', str(tmp_path / "x.toml"))
    assert config.options("ping").timeout == 5.0


def test_api_options_are_read_from_the_current_config(tmp_path):
    server = make_server(tmp_path, modules=())
    api = ModuleAPI(server, "ping")
    assert api.options == ping.OPTIONS.defaults
    reload(server, tmp_path, "[ping]\nidle_timeout = 0")
    assert (api.options.idle_timeout, api.options.timeout) == (0.0, 60.0)


# version.hidden and version.show_os follow a reload



def test_hiding_the_version_applies_on_reload(tmp_path):
    server = make(tmp_path)
    client = login(server)
    assert NS_VERSION in disco_features(client)
    reload(server, tmp_path, "[version]\nhidden = true")
    assert error_condition(ask(client, NS_VERSION)) == "service-unavailable"
    assert NS_VERSION not in disco_features(client)


def test_showing_the_version_again_applies_on_reload(tmp_path):
    server = make(tmp_path, "[version]\nhidden = true")
    client = login(server)
    assert NS_VERSION not in disco_features(client)
    reload(server, tmp_path, "[version]\nshow_os = true")
    assert NS_VERSION in disco_features(client)
    assert {"name", "version", "os"} <= set(children(payload(ask(client, NS_VERSION))))


def test_a_host_section_sets_some_keys_for_its_domain(tmp_path):
    config = parse('[ping]\nidle_timeout = 100\n[hosts."a.example"]\n'
                   '[hosts."b.example"]\n[hosts."b.example".ping]\ntimeout = 5\n',
                   str(tmp_path / "xmppd.toml"))
    a, b = config.options("ping", "a.example"), config.options("ping", "b.example")
    assert (a.idle_timeout, a.timeout) == (100.0, 60.0)
    assert (b.idle_timeout, b.timeout) == (100.0, 5.0)  # the rest from [ping]
    assert config.options("ping") == a


@pytest.mark.parametrize("section, problem", [
    ('[hosts."b.example".ping]\ntimeout = 0', 'hosts."b.example".ping.timeout: expected a '
                                              'number > 0, got 0'),
    ('[hosts."b.example".ping]\nsoon = 1', 'hosts."b.example".ping.soon: unknown key'),
    ('[hosts."b.example"]\nping = 1', 'hosts."b.example".ping: expected a table, got 1'),
])
def test_a_bad_host_section_names_its_key(tmp_path, section, problem):
    from xmppd.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse(section, str(tmp_path / "xmppd.toml"))
    assert str(info.value).endswith(problem)


@pytest.mark.parametrize("value, problem", [
    ("chat-rooms", None),
    ("Conference", 'expected a DNS label (lower-case letters, digits, hyphens), got "Conference"'),
    ("a.b", 'expected a DNS label (lower-case letters, digits, hyphens), got "a.b"'),
    ("-x", 'expected a DNS label (lower-case letters, digits, hyphens), got "-x"'),
    (3, "expected a DNS label (lower-case letters, digits, hyphens), got 3"),
])
def test_a_service_subdomain_is_a_dns_label(tmp_path, value, problem):
    text = f'[muc]\nsubdomain = {value!r}\n'.replace("'", '"') + '[hosts."example.com"]\n'
    if problem is None:
        assert parse(text, str(tmp_path / "xmppd.toml")).options("muc").subdomain == value
        return
    with pytest.raises(ValueError) as info:
        parse(text, str(tmp_path / "xmppd.toml"))
    assert str(info.value).endswith(f"muc.subdomain: {problem}")
