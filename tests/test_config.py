"""Tests for xmppd.config."""

import dataclasses
from pathlib import Path

import pytest

from xmppd.config import (
    AdminConfig,
    C2SConfig,
    Config,
    ConfigError,
    HostConfig,
    LimitsConfig,
    S2SConfig,
    StorageConfig,
    TLSConfig,
    load,
    parse,
)
from xmppd.options import declared

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "xmppd.example.toml"
HOST = '[hosts."example.com"]\n'


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "xmppd.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def error(tmp_path: Path, text: str) -> str:
    """Load *text* from a file, expecting a one-line error naming that file."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message[len(path) + 2:]


def test_defaults(tmp_path):
    path = write(tmp_path, HOST)
    assert load(path) == Config(
        path=path,
        log_level="info",
        storage=StorageConfig(url=f"sqlite:///{tmp_path}/xmppd.sqlite"),
        tls=TLSConfig(certificates=f"{tmp_path}/certs", min_version="1.2"),
        c2s=C2SConfig(
            listen=("tcp:5222",),
            direct_tls=(),
            max_stanza_size=262144,
            max_resources=10,
            auth_timeout=30.0,
        ),
        hosts={"example.com": HostConfig(name="example.com")},
        admin=AdminConfig(socket=f"{tmp_path}/xmppd.sock"),
    )


def test_every_key(tmp_path):
    config = load(write(tmp_path, """
        log_level = "debug"
        [storage]
        url = "postgresql+psycopg://xmppd:secret@db/xmppd"
        [tls]
        certificates = "/etc/xmppd/certs"
        min_version = "1.3"
        [c2s]
        listen = ["tcp:5222:interface=127.0.0.1", "tcp6:5222"]
        direct_tls = ["tcp:5223"]
        max_stanza_size = 10000
        max_resources = 1
        auth_timeout = 5
        [hosts."example.com"]
        [hosts."example.org"]
    """))
    assert config.log_level == "debug"
    assert config.storage == StorageConfig(url="postgresql+psycopg://xmppd:secret@db/xmppd")
    assert config.tls == TLSConfig(certificates="/etc/xmppd/certs", min_version="1.3")
    assert config.c2s == C2SConfig(
        listen=("tcp:5222:interface=127.0.0.1", "tcp6:5222"),
        direct_tls=("tcp:5223",),
        max_stanza_size=10000,
        max_resources=1,
        auth_timeout=5.0,
    )
    assert type(config.c2s.auth_timeout) is float
    assert list(config.hosts) == ["example.com", "example.org"]


def test_example_file_parses():
    config = load(str(EXAMPLE))
    assert config.path == str(EXAMPLE)
    assert config.hosts == {"example.com": HostConfig(name="example.com")}
    assert config.c2s.direct_tls == ("tcp:5223",)
    # Its other values are the defaults, as it says.
    assert config.limits == LimitsConfig() and config.s2s == S2SConfig()
    assert set(config.module_options) == {"roster", "offline", "ping", "version", "vcard",
                                          "private", "pep", "pubsub", "muc", "upload", "sasl",
                                          "fast", "anonymous"}
    assert all(values == declared(name).defaults
               for name, values in config.module_options.items())
    assert (config.c2s.handshake_timeout, config.c2s.max_output_buffer) == (10.0, 1048576)


def test_config_is_frozen(tmp_path):
    config = load(write(tmp_path, HOST))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.log_level = "debug"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.c2s.max_resources = 1


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


# Relative paths


def test_path_is_made_absolute(tmp_path, monkeypatch):
    write(tmp_path, HOST)
    monkeypatch.chdir(tmp_path)
    assert load("xmppd.toml").path == str(tmp_path / "xmppd.toml")


def test_parse_resolves_against_given_path():
    config = parse(HOST + '[tls]\ncertificates = "tls/certs"\n', "/etc/xmppd/xmppd.toml")
    assert config.path == "/etc/xmppd/xmppd.toml"
    assert config.tls.certificates == "/etc/xmppd/tls/certs"
    assert config.storage.url == "sqlite:////etc/xmppd/xmppd.sqlite"


def test_absolute_certificates_kept():
    config = parse(HOST + '[tls]\ncertificates = "/srv/certs"\n', "/etc/xmppd/xmppd.toml")
    assert config.tls.certificates == "/srv/certs"


@pytest.mark.parametrize("url, resolved", [
    ("sqlite:///data/x.db", "sqlite:////etc/xmppd/data/x.db"),
    ("sqlite:///../x.db", "sqlite:////etc/xmppd/../x.db"),
    ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:////etc/xmppd/x.db"),
    ("sqlite:///x.db?timeout=10", "sqlite:////etc/xmppd/x.db?timeout=10"),
    ("sqlite:////var/lib/xmppd/x.db", "sqlite:////var/lib/xmppd/x.db"),
    ("sqlite://", "sqlite://"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("postgresql+psycopg://u:p@host/db", "postgresql+psycopg://u:p@host/db"),
])
def test_sqlite_url_resolution(url, resolved):
    config = parse(HOST + f'[storage]\nurl = "{url}"\n', "/etc/xmppd/xmppd.toml")
    assert config.storage.url == resolved


# Hosts


@pytest.mark.parametrize("name, normalised", [
    ("example.com", "example.com"),
    ("Example.COM.", "example.com"),
    ("localhost", "localhost"),
    ("a-b.x1.example", "a-b.x1.example"),
    ("xn--bcher-kva.example", "bücher.example"),
    ("Bücher.example", "bücher.example"),
])
def test_host_names_normalised(tmp_path, name, normalised):
    config = load(write(tmp_path, f'[hosts."{name}"]\n'))
    assert config.hosts == {normalised: HostConfig(name=normalised)}


@pytest.mark.parametrize("name, problem", [
    ("exa mple.com", "label 'exa mple': Codepoint U+0020"),
    ("under_score.com", "label 'under_score': Codepoint U+005F"),
    ("-lead.com", "label '-lead': Label must not start or end with a hyphen"),
    ("trail-.com", "label 'trail-': Label must not start or end with a hyphen"),
    ("a..b", "empty label"),
    (".", "must not be empty"),
    ("", "must not be empty"),
    ("x" * 64 + ".com", "Label too long"),
    (".".join(["a" * 63] * 4), "longer than 253 characters"),
    ("bü☃.example", "label 'bü☃': Codepoint U+2603"),
])
def test_invalid_host_names(tmp_path, name, problem):
    message = error(tmp_path, f'[hosts."{name}"]\n')
    assert message.startswith(f'hosts."{name}": not a valid domain name: ')
    assert problem in message


def test_duplicate_host(tmp_path):
    message = error(tmp_path, '[hosts."example.com"]\n[hosts."EXAMPLE.com."]\n')
    assert message == 'hosts."EXAMPLE.com.": same domain as hosts."example.com"'


def test_no_hosts(tmp_path):
    assert error(tmp_path, "") == "hosts: at least one hosted domain is required"
    assert error(tmp_path, "[hosts]\n") == "hosts: at least one hosted domain is required"


def test_unquoted_dotted_host(tmp_path):
    message = error(tmp_path, "[hosts.example.com]\n")
    assert message.startswith("hosts.example.com: unknown key (quote domain names")


# Errors


@pytest.mark.parametrize("text, message", [
    ("bogus = 1\n" + HOST, "bogus: unknown key"),
    ('"odd key" = 1\n' + HOST, '"odd key": unknown key'),
    ("[c2s]\nmax_stanza = 10000\n" + HOST, "c2s.max_stanza: unknown key"),
    ("[storage]\npath = 'x'\n" + HOST, "storage.path: unknown key"),
    ("[tls.extra]\n" + HOST, "tls.extra: unknown key"),
    (HOST + "foo = 1\n", 'hosts."example.com".foo: unknown key'),
])
def test_unknown_keys(tmp_path, text, message):
    assert error(tmp_path, text) == message


def test_documented_message(tmp_path):
    path = write(tmp_path, HOST + '[c2s]\nmax_stanza_size = "big"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        f'{path}: c2s.max_stanza_size: expected an integer >= 10000, got "big"'
    )


@pytest.mark.parametrize("text, message", [
    ('log_level = "verbose"',
     'log_level: expected one of "debug", "info", "warn", "error", got "verbose"'),
    ("log_level = 1", 'log_level: expected one of "debug", "info", "warn", "error", got 1'),
    ('storage = "x"', 'storage: expected a table, got "x"'),
    ("[storage]\nurl = 5",
     'storage.url: expected a database URL such as "sqlite:///xmppd.sqlite", got 5'),
    ('[storage]\nurl = "xmppd.sqlite"',
     'storage.url: expected a database URL such as "sqlite:///xmppd.sqlite",'
     ' got "xmppd.sqlite"'),
    ('[tls]\ncertificates = ""', 'tls.certificates: expected a non-empty string, got ""'),
    ("[tls]\ncertificates = []", "tls.certificates: expected a non-empty string, got an array"),
    ("[tls]\nmin_version = 1.2", 'tls.min_version: expected one of "1.2", "1.3", got 1.2'),
    ('[tls]\nmin_version = "1.1"', 'tls.min_version: expected one of "1.2", "1.3", got "1.1"'),
    ('[c2s]\nlisten = "tcp:5222"',
     'c2s.listen: expected an array of strings, got "tcp:5222"'),
    ('[c2s]\nlisten = ["tcp:5222", ""]', 'c2s.listen[1]: expected a non-empty string, got ""'),
    ("[c2s]\ndirect_tls = [5223]", "c2s.direct_tls[0]: expected a non-empty string, got 5223"),
    ("[c2s]\ndirect_tls = [{}]", "c2s.direct_tls[0]: expected a non-empty string, got a table"),
    ("[c2s]\nmax_stanza_size = 9999",
     "c2s.max_stanza_size: expected an integer >= 10000, got 9999"),
    ("[c2s]\nmax_stanza_size = 20000.0",
     "c2s.max_stanza_size: expected an integer >= 10000, got 20000.0"),
    ("[c2s]\nmax_resources = 0", "c2s.max_resources: expected an integer >= 1, got 0"),
    ("[c2s]\nmax_resources = true", "c2s.max_resources: expected an integer >= 1, got true"),
    ("[c2s]\nauth_timeout = 0", "c2s.auth_timeout: expected a number > 0, got 0"),
    ("[c2s]\nauth_timeout = -1.5", "c2s.auth_timeout: expected a number > 0, got -1.5"),
    ("[c2s]\nauth_timeout = inf", "c2s.auth_timeout: expected a number > 0, got inf"),
    ("[c2s]\nauth_timeout = nan", "c2s.auth_timeout: expected a number > 0, got nan"),
    ('[c2s]\nauth_timeout = "30"', 'c2s.auth_timeout: expected a number > 0, got "30"'),
    ("[c2s]\nauth_timeout = false", "c2s.auth_timeout: expected a number > 0, got false"),
    ("[c2s]\nauth_timeout = 1979-05-27",
     "c2s.auth_timeout: expected a number > 0, got a date/time"),
])
def test_invalid_values(tmp_path, text, message):
    assert error(tmp_path, text + "\n" + HOST) == message


def test_module_sections(tmp_path):
    config = load(write(tmp_path, """
        [roster]
        max_items = 50
        [offline]
        max_messages = 0
        [ping]
        idle_timeout = 0
        timeout = 5
        [version]
        hidden = true
        show_os = true
        [vcard]
        max_size = 2048
        [private]
        max_size = 4096
        [hosts."example.com"]
        cross_domain_messages = true
        disabled_modules = ["vcard", "version"]
    """))
    options = config.options
    assert (options("roster").max_items, options("offline").max_messages) == (50, 0)
    assert (options("ping").idle_timeout, options("ping").timeout) == (0.0, 5.0)
    assert options("version").hidden and options("version").show_os
    assert (options("vcard").max_size, options("private").max_size) == (2048, 4096)
    host = config.hosts["example.com"]
    assert host.cross_domain_messages and host.disabled_modules == ("vcard", "version")


def test_module_sections_default(tmp_path):
    config = load(write(tmp_path, HOST))
    assert config.module_options == {}
    assert (config.options("roster").max_items, config.options("offline").max_messages) == (
        1000, 1000)
    assert (config.options("ping").idle_timeout, config.options("ping").timeout) == (300.0, 60.0)
    assert not config.options("version").hidden and not config.options("version").show_os
    assert config.options("vcard").max_size == config.options("private").max_size == 65536
    assert type(config.options("ping").timeout) is float
    with pytest.raises(LookupError):
        config.options("disco")  # declares none


def test_module_sections_are_frozen(tmp_path):
    config = load(write(tmp_path, HOST + "[ping]\ntimeout = 5\n"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.options("ping").timeout = 1.0
    with pytest.raises(TypeError):
        config.module_options["ping"] = None


@pytest.mark.parametrize("text, message", [
    ("[roster]\nmax_items = 0", "roster.max_items: expected an integer >= 1, got 0"),
    ("[ping]\nidle_timeout = -1", "ping.idle_timeout: expected a number >= 0, got -1"),
    ("[version]\nhidden = 1", "version.hidden: expected true or false, got 1"),
    ("[vcard]\nmax_size = 10", "vcard.max_size: expected an integer >= 1024, got 10"),
    ("[private]\nsize = 10", "private.size: unknown key"),
    ("[offline]\nmax_messages = -1", "offline.max_messages: expected an integer >= 0, got -1"),
    ("[ping]\ntimeout = 0", "ping.timeout: expected a number > 0, got 0"),
    ("[ping.extra]", "ping.extra: unknown key"),
    ("ping = 300", "ping: expected a table, got 300"),
    # A section no feature module declares: none of that name, or one without OPTIONS.
    ("[pong]\nidle_timeout = 1", "pong: unknown key"),
    ("[disco]", "disco: unknown key"),
])
def test_invalid_module_values(tmp_path, text, message):
    assert error(tmp_path, text + "\n" + HOST) == message


@pytest.mark.parametrize("text, message", [
    ("cross_domain_messages = 1",
     'hosts."example.com".cross_domain_messages: expected true or false, got 1'),
    ('disabled_modules = ["roster"]',
     'hosts."example.com".disabled_modules[0]: expected one of "disco", "ping", "version",'
     ' "time", "last", "vcard", "private", "blocking", "carbons", "offline",'
     ' "stream_management", "csi", "push", "mam", "client_caps", "pep", "pubsub",'
     ' "bookmarks", "avatar_conversion", "muc", "upload", "external_services",'
     ' "contact_addresses", "outage_status", "spam_reporting", "domain_blocklist",'
     ' "stranger_limits", "adhoc", "admin_commands", "admin_api", got "roster"'),
])
def test_invalid_host_keys(tmp_path, text, message):
    assert error(tmp_path, HOST + text) == message


@pytest.mark.parametrize("text, message", [
    ('hosts = ["example.com"]', "hosts: expected a table, got an array"),
    ('hosts."example.com" = 1', 'hosts."example.com": expected a table, got 1'),
])
def test_invalid_hosts_table(tmp_path, text, message):
    assert error(tmp_path, text) == message


def test_control_characters_escaped(tmp_path):
    message = error(tmp_path, 'log_level = "in\\nfo\\u2028"\n' + HOST)
    assert message.endswith('got "in\\nfo\\u2028"')


def test_long_values_shortened(tmp_path):
    message = error(tmp_path, f'log_level = "{"x" * 100}"\n' + HOST)
    assert message.endswith('got "' + "x" * 57 + '..."')


def test_missing_file(tmp_path):
    path = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_directory(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path}: cannot read: ")


def test_not_utf8(tmp_path):
    path = tmp_path / "xmppd.toml"
    path.write_bytes(b'log_level = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(info.value).startswith(f"{path}: cannot read: ")
    assert "utf-8" in str(info.value)


def test_syntax_error(tmp_path):
    message = error(tmp_path, HOST + "[c2s]\nlisten = \n")
    assert message.startswith("invalid TOML: ")
    assert "(at line 3, column 10)" in message


def test_parse_names_given_path():
    with pytest.raises(ConfigError) as info:
        parse("log_level = 1\n" + HOST, "relative/xmppd.toml")
    assert str(info.value).startswith("relative/xmppd.toml: log_level: ")


def test_s2s_section(tmp_path):
    config = load(write(tmp_path, """
        [s2s]
        listen = ["tcp:5269"]
        allow = ["Partner.Example.org", "*.example.net"]
        deny = ["bad.example.net"]
        ca_file = "peers.pem"
        require_valid_certificates = true
        [s2s.routes]
        "partner.example.org" = "tcp:host=127.0.0.2:port=5269"
    """ + HOST))
    s2s = config.s2s
    assert s2s.listen == ("tcp:5269",)
    assert s2s.allow == ("partner.example.org", "*.example.net")
    assert s2s.deny == ("bad.example.net",)
    assert s2s.ca_file == str(tmp_path / "peers.pem")
    assert s2s.require_encryption and s2s.require_valid_certificates
    assert s2s.routes == (("partner.example.org", "tcp:host=127.0.0.2:port=5269"),)


def test_federation_off_by_default(tmp_path):
    s2s = load(write(tmp_path, HOST)).s2s
    assert (s2s.listen, s2s.allow, s2s.dialback_secret) == ((), (), None)


@pytest.mark.parametrize("text, message", [
    ('[s2s]\nallow = ["*."]', "s2s.allow[0]: not a valid domain name: must not be empty"),
    ('[s2s]\nallow = "x.org"', 's2s.allow: expected an array of strings, got "x.org"'),
    ('[s2s.routes]\n"x.org" = 5', 's2s.routes."x.org": expected a non-empty string, got 5'),
    ("[s2s]\nmax_queue = 0", "s2s.max_queue: expected an integer >= 1, got 0"),
])
def test_invalid_s2s(tmp_path, text, message):
    assert error(tmp_path, text + "\n" + HOST) == message


# Domains are spelt as JIDs spell them


@pytest.mark.parametrize("spelling", ["xn--bcher-kva.example", "bücher.example",
                                      "BÜCHER.example."])
def test_domains_match_jids_in_either_spelling(tmp_path, spelling):
    from xmppd.jid import JID
    config = load(write(tmp_path, f'[s2s]\nallow = ["{spelling}", "*.{spelling}"]\n'
                                  f'[s2s.routes]\n"{spelling}" = "tcp:host=192.0.2.1:port=5269"\n'
                                  f'[hosts."{spelling}"]\n'))
    for jid in ("user@xn--bcher-kva.example", "user@bücher.example"):
        domain = JID.parse(jid).domain
        assert domain in config.hosts
        assert config.s2s.allow == (domain, f"*.{domain}")
        assert dict(config.s2s.routes) == {domain: "tcp:host=192.0.2.1:port=5269"}


# Settings follow a reload (the modules' own: tests/test_module_options.py and
# the modules' tests)


def test_max_resources_follows_a_reload(tmp_path):
    from tests.harness import Client, add_user, make_server, reload
    server = make_server(tmp_path, modules=("bind",), extra="[c2s]\nmax_resources = 1")
    add_user(server, "alice@example.com")
    Client(server).login("alice@example.com", "one")
    with pytest.raises(AssertionError, match="resource-constraint"):
        Client(server).login("alice@example.com", "two")
    reload(server, tmp_path, "[c2s]\nmax_resources = 2")
    assert Client(server).login("alice@example.com", "two") == "alice@example.com/two"


def test_hostile_load_limits_have_defaults_and_are_checked(tmp_path):
    base = '[hosts."example.com"]\n'
    defaults = parse(base, str(tmp_path / "x.toml"))
    assert (defaults.c2s.handshake_timeout, defaults.c2s.max_output_buffer) == (10.0, 1048576)
    assert (defaults.s2s.handshake_timeout, defaults.s2s.negotiation_timeout) == (10.0, 30.0)
    assert (defaults.limits.max_unauthenticated, defaults.limits.max_unauthenticated_per_ip,
            defaults.limits.auth_account_lock_after) == (1000, 10, 20)
    with pytest.raises(ConfigError, match="limits.c2s_stanza_rate"):
        parse(base + "[limits]\nc2s_stanza_rate = 0\n", str(tmp_path / "x.toml"))


# External components (XEP-0114)

COMPONENT_HOSTS = '[hosts."example.com"]\n[hosts."chat.example.org"]\n'


def test_components_default_to_none_and_no_listener(tmp_path):
    config = parse(COMPONENT_HOSTS, str(tmp_path / "x.toml"))
    assert (config.components.listen, dict(config.components.domains)) == ((), {})


def test_a_component_belongs_to_the_host_it_is_a_subdomain_of(tmp_path):
    config = parse('[components."irc.chat.example.org"]\nsecret = "s"\n'
                   '[components."Bot.Example.COM"]\nsecret = "t"\n' + COMPONENT_HOSTS,
                   str(tmp_path / "x.toml"))
    domains = config.components.domains
    assert {d: (c.host, c.secret) for d, c in domains.items()} == {
        "irc.chat.example.org": ("chat.example.org", "s"), "bot.example.com": ("example.com", "t")}
    assert config.components.listen == ("tcp:5347:interface=127.0.0.1",)


def test_a_component_with_an_explicit_host_and_listener(tmp_path):
    config = parse('[components]\nlisten = ["tcp:6000:interface=::1"]\nauth_timeout = 3\n'
                   '[components."bridge.elsewhere.net"]\nsecret = "s"\nhost = "example.com"\n'
                   + COMPONENT_HOSTS, str(tmp_path / "x.toml"))
    assert config.components.domains["bridge.elsewhere.net"].host == "example.com"
    assert (config.components.listen, config.components.auth_timeout) == \
        (("tcp:6000:interface=::1",), 3.0)


@pytest.mark.parametrize("text, key, problem", [
    ('[components."gw.elsewhere.net"]\nsecret = "s"\n', 'components."gw.elsewhere.net".host',
     "not a subdomain of a hosted domain"),
    ('[components."gw.elsewhere.net"]\nsecret = "s"\nhost = "nope.net"\n',
     'components."gw.elsewhere.net".host', "nope.net is not a hosted domain"),
    ('[components."gw.example.com"]\n', 'components."gw.example.com".secret', "required"),
    ('[components."gw.example.com"]\nsecret = ""\n', 'components."gw.example.com".secret',
     "expected a non-empty string"),
    ('[components."gw.example.com"]\nsecret = "s"\nport = 1\n',
     'components."gw.example.com".port', "unknown key"),
    ('[components.gw.example.com]\nsecret = "s"\n', "components.gw.example",
     'quote domain names'),
    ('[components]\nlisen = ["tcp:1"]\n', "components.lisen", "a component is a table"),
    ('[components."example.com"]\nsecret = "s"\n', 'components."example.com"',
     "is a hosted domain"),
    ('[components."bad..domain"]\nsecret = "s"\n', 'components."bad..domain"',
     "not a valid domain name"),
    ('[components]\nauth_timeout = 0\n', "components.auth_timeout", "a number > 0"),
    ('[components]\nlisten = "tcp:1"\n', "components.listen", "an array of strings"),
])
def test_component_errors_name_the_file_and_key(tmp_path, text, key, problem):
    path = str(tmp_path / "x.toml")
    with pytest.raises(ConfigError) as caught:
        parse(text + COMPONENT_HOSTS, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: ") and problem in message
    assert "\n" not in message


def test_a_secret_is_never_shown(tmp_path):
    path = str(tmp_path / "x.toml")
    config = parse('[components."gw.example.com"]\nsecret = "do-not-show"\n' + COMPONENT_HOSTS,
                   path)
    assert "do-not-show" not in repr(config)
    with pytest.raises(ConfigError) as caught:
        parse('[components."gw.example.com"]\nsecret = 123456789\n' + COMPONENT_HOSTS, path)
    assert "123456789" not in str(caught.value)


def test_http_is_off_by_default(tmp_path):
    http = load(write(tmp_path, HOST)).http
    assert http.listen == () and http.cors_origins == () and http.trusted_proxies == ()
    assert http.access_log is False and http.max_request_size == 1048576


def test_http_listeners_tls_or_loopback(tmp_path):
    http = load(write(tmp_path, '[http]\nlisten = ["ssl:5281", "tcp:5280:interface=127.0.0.1", '
                      "'tcp6:5280:interface=\\:\\:1', \"unix:/run/xmppd-http.sock\"]\n"
                      'external_url = "https://{host}"\ntrusted_proxies = ["::1", "127.0.0.1"]\n'
                      'cors_origins = ["https://chat.example.com"]\n' + HOST)).http
    assert http.listen[0] == "ssl:5281" and len(http.listen) == 4
    assert http.external_url == "https://{host}/"
    assert http.trusted_proxies == ("::1", "127.0.0.1")


@pytest.mark.parametrize("text,key,problem", [
    ('listen = ["tcp:5280"]', "http.listen[0]", "plain HTTP only on a loopback interface"),
    ('listen = ["tcp:5280:interface=0.0.0.0"]', "http.listen[0]", "plain HTTP only on a loopback"),
    ('listen = ["ssl:5281", "tcp:80:interface=192.0.2.1"]', "http.listen[1]", "loopback"),
    ('cors_origins = ["chat.example.com"]', "http.cors_origins[0]", "expected an origin"),
    ('trusted_proxies = ["proxy.example.com"]', "http.trusted_proxies[0]", "an IP address"),
    ('external_url = "ftp://example.com"', "http.external_url", "a URL"),
    ('max_request_size = 10', "http.max_request_size", "1024"),
    ('websocket_idle_timeout = 0', "http.websocket_idle_timeout", "> 0"),
    ('listen_on = []', "http.listen_on", "unknown key"),
])
def test_http_errors_name_the_file_and_key(tmp_path, text, key, problem):
    message = error(tmp_path, f"[http]\n{text}\n{HOST}")
    assert message.startswith(f"{key}: ") and problem in message


def test_http_bosh_limits(tmp_path):
    http = load(write(tmp_path, HOST)).http
    assert (http.bosh_max_wait, http.bosh_max_hold, http.bosh_max_inactivity) == (60, 1, 60)
    http = load(write(tmp_path, "[http]\nbosh_max_wait = 120\nbosh_max_hold = 2\n"
                      "bosh_max_inactivity = 30\n" + HOST)).http
    assert (http.bosh_max_wait, http.bosh_max_hold, http.bosh_max_inactivity) == (120, 2, 30)
    message = error(tmp_path, f"[http]\nbosh_max_hold = 0\n{HOST}")
    assert message.startswith("http.bosh_max_hold: ") and ">= 1" in message


def test_host_admins_are_normalised_account_jids(tmp_path):
    config = load(write(tmp_path, HOST + 'admins = ["Alice@Example.COM", "bob@other.example"]\n'))
    assert config.hosts["example.com"].admins == {"alice@example.com", "bob@other.example"}


@pytest.mark.parametrize("value, problem", [
    ('"alice@example.com"', "expected an array of strings"),
    ('["example.com"]', "'example.com' is not an account JID (user@domain)"),
    ('["alice@example.com/phone"]', "is not an account JID"),
    ('["a@b@c"]', "not a valid JID"),
])
def test_invalid_host_admins(tmp_path, value, problem):
    message = error(tmp_path, HOST + f"admins = {value}\n")
    assert message.startswith('hosts."example.com".admins')
    assert problem in message


PG = '[storage]\nurl = "postgresql+psycopg://xmppd@db/xmppd"\n'


def test_cluster_section(tmp_path):
    config = load(write(tmp_path, PG + '[cluster]\nredis = "redis://10.0.0.5:6380/2"\n'
                        'node = "xmppd-1"\nheartbeat = 5\nprefix = "chat"\n' + HOST))
    assert (config.cluster.redis, config.cluster.node, config.cluster.heartbeat,
            config.cluster.prefix) == ("redis://10.0.0.5:6380/2", "xmppd-1", 5, "chat")
    assert load(write(tmp_path, HOST)).cluster.redis is None


@pytest.mark.parametrize("text, message", [
    ('[cluster]\nredis = "redis://127.0.0.1"\n',
     "cluster.redis: the nodes of a cluster share their storage: storage.url must name "
     "a PostgreSQL database, not SQLite"),
    (PG + '[cluster]\nredis = "http://127.0.0.1"\n',
     'cluster.redis: expected a Redis URL such as "redis://127.0.0.1:6379/0", '
     'got "http://127.0.0.1"'),
    (PG + '[cluster]\nredis = "redis://r"\nnode = "a b"\n',
     "cluster.node: expected up to 64 letters, digits, '.', '_' or '-', got \"a b\""),
    (PG + '[cluster]\nredis = "redis://r"\nheartbeat = 0\n',
     "cluster.heartbeat: expected a number > 0, got 0"),
    (PG + '[s2s]\nlisten = ["tcp:5269"]\n[cluster]\nredis = "redis://r"\n',
     "cluster.redis: a peer's dialback verification may reach any node: set the same "
     "s2s.dialback_secret on every node"),
])
def test_invalid_cluster(tmp_path, text, message):
    assert error(tmp_path, text + HOST) == message


def test_the_redis_password_is_never_shown(tmp_path):
    config = load(write(tmp_path, PG + '[cluster]\nredis = "redis://u:hunter2@r:6379/1"\n' + HOST))
    assert "hunter2" not in repr(config)
    assert error(tmp_path, PG + '[cluster]\nredis = "redis://r/one"\n' + HOST).startswith(
        "cluster.redis: expected a Redis URL")
