"""Server configuration: a TOML file read into frozen, validated dataclasses.

Every problem is reported as a :class:`ConfigError` whose message is one line
naming the file, the offending key and what is wrong with it.  Unknown keys are
refused.  Relative paths are resolved against the directory holding the file.

The core's sections are declared here.  Any other top-level table belongs to
the feature module of that name, which declares its keys itself (see
:mod:`xmppd.options`); a table no module declares is an unknown key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Mapping, TypeVar

from xmppd import domains, jid
from xmppd.options import (MODULE_NAME, Invalid, Table, boolean, choice, declared, expected,
                           integer, non_negative_number, optional_string, positive_number,
                           quote, string, strings)

LOG_LEVELS = ("debug", "info", "warn", "error")
# Feature modules a host may switch off with disabled_modules.
OPTIONAL_MODULES = ("disco", "ping", "version", "time", "last", "vcard",
                    "private", "blocking", "carbons", "offline", "stream_management", "csi",
                    "push", "mam", "client_caps", "pep", "pubsub", "bookmarks",
                    "avatar_conversion", "muc", "upload", "external_services",
                    "contact_addresses", "outage_status", "spam_reporting",
                    "domain_blocklist", "stranger_limits", "adhoc", "admin_commands",
                    "admin_api")
TLS_VERSIONS = ("1.2", "1.3")
AUTHENTICATION = ("password", "anonymous")  # hosts."DOMAIN".authentication

_T = TypeVar("_T")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``: where accounts and server state are kept."""

    url: str


@dataclass(frozen=True)
class TLSConfig:
    """``[tls]``: certificates and protocol versions."""

    certificates: str
    min_version: str


@dataclass(frozen=True)
class C2SConfig:
    """``[c2s]``: client-to-server listeners and limits."""

    listen: tuple[str, ...]
    direct_tls: tuple[str, ...]
    max_stanza_size: int
    max_resources: int
    auth_timeout: float
    handshake_timeout: float = 10.0
    max_output_buffer: int = 1048576
    resume_timeout: float = 300.0
    # Load balancers whose connections begin with a PROXY protocol header
    # (xmppd.core.proxy): normalised networks, such as "10.0.0.0/8".
    proxy_protocol_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the OpenMetrics HTTP endpoint (off by default)."""

    listen: tuple[str, ...] = ()


@dataclass(frozen=True)
class HTTPConfig:
    """``[http]``: the HTTP(S) listener of WebSocket, connection discovery
    and the modules' resources (see docs/web.md); off unless ``listen`` is set."""

    listen: tuple[str, ...] = ()
    # The base URL of the web for a hosted domain: "{host}" is replaced.
    external_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    max_request_size: int = 1048576
    timeout: float = 60.0  # an idle HTTP connection is closed
    websocket_ping_interval: float = 60.0
    websocket_idle_timeout: float = 300.0
    access_log: bool = False
    # BOSH (XEP-0124): the most a client may ask for, in seconds and requests
    bosh_max_wait: int = 60
    bosh_max_hold: int = 1
    bosh_max_inactivity: int = 60


@dataclass(frozen=True)
class AdminConfig:
    """``[admin]``: the control socket through which xmppctl reaches the
    running server (status, reload, sessions, kick, ending sessions)."""

    socket: str | None = None


@dataclass(frozen=True)
class LimitsConfig:
    """``[limits]``: connection, rate and authentication-failure limits."""

    max_connections: int = 10000
    max_connections_per_ip: int = 100
    c2s_read_rate: int = 65536
    c2s_read_burst: int = 262144
    s2s_read_rate: int = 1048576
    s2s_read_burst: int = 4194304
    auth_failure_delay: float = 2.0
    auth_ban_after: int = 10
    auth_ban_time: float = 300.0
    max_unauthenticated: int = 1000
    max_unauthenticated_per_ip: int = 10
    s2s_max_unauthenticated_per_ip: int = 10
    c2s_stanza_rate: float = 200.0
    c2s_stanza_burst: int = 1000
    auth_account_lock_after: int = 20
    auth_account_lock_time: float = 300.0


@dataclass(frozen=True)
class S2SConfig:
    """``[s2s]``: federation with the peer domains the operator lists."""

    listen: tuple[str, ...] = ()
    direct_tls: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    require_encryption: bool = True
    require_valid_certificates: bool = False
    ca_file: str | None = None
    dialback_secret: str | None = None
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    negotiation_timeout: float = 30.0
    idle_timeout: float = 600.0
    max_queue: int = 100
    max_stanza_size: int = 262144
    max_output_buffer: int = 4194304
    routes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ClusterConfig:
    """``[cluster]``: several xmppd processes serving the same domains
    (docs/cluster.md); off unless ``redis`` is set."""

    # redis://[USER:PASSWORD@]HOST:PORT/DB: a password is never in a repr
    redis: str | None = field(default=None, repr=False)
    node: str | None = None  # this process's name; None: host name and pid
    heartbeat: float = 15.0  # a node silent this long is dead
    prefix: str = "xmppd"  # of every Redis key and channel


@dataclass(frozen=True)
class ComponentConfig:
    """``[components."DOMAIN"]``: one external component (XEP-0114)."""

    domain: str
    host: str  # the hosted domain it belongs to
    secret: str = field(repr=False)  # never in a log line or a repr


@dataclass(frozen=True)
class ComponentsConfig:
    """``[components]``: the external component listener (plain TCP, on the
    loopback interface by default) and the components it accepts."""

    listen: tuple[str, ...] = ()
    auth_timeout: float = 10.0
    max_stanza_size: int = 262144
    max_output_buffer: int = 4194304
    domains: Mapping[str, ComponentConfig] = field(
        default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class HostConfig:
    """``[hosts."DOMAIN"]``: one hosted domain."""

    name: str
    cross_domain_messages: bool = False
    # "password": accounts log in with SASL (their passwords or tokens);
    # "anonymous": SASL ANONYMOUS only, a new account per session (XEP-0175).
    authentication: str = "password"
    # Accounts (normalised bare JIDs) that administer the host: its admin
    # commands (XEP-0133) and what else says so.
    admins: frozenset[str] = frozenset()
    disabled_modules: tuple[str, ...] = ()
    modules_enabled: tuple[str, ...] = ()  # more feature modules for this host only
    # [hosts."DOMAIN".MODULE]: module -> the keys this host sets, checked values
    module_options: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    """The whole configuration file."""

    path: str
    log_level: str
    storage: StorageConfig
    tls: TLSConfig
    c2s: C2SConfig
    hosts: dict[str, HostConfig]
    s2s: S2SConfig = S2SConfig()
    limits: LimitsConfig = LimitsConfig()
    admin: AdminConfig = AdminConfig()
    metrics: MetricsConfig = MetricsConfig()
    http: HTTPConfig = HTTPConfig()
    components: ComponentsConfig = ComponentsConfig()
    cluster: ClusterConfig = ClusterConfig()
    log_json: str | None = None
    modules_enabled: tuple[str, ...] | None = None  # None: the standard modules
    # The sections of feature modules the file has, by module name.
    module_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def options(self, module: str, host: str | None = None) -> Any:
        """The options of feature module ``module``: its section of the
        file, else the defaults it declares; for hosted domain ``host``,
        with what its ``[hosts."DOMAIN".MODULE]`` section sets instead."""
        values = self.module_options.get(module)
        if values is None:
            declaration = declared(module)
            if declaration is None:
                raise LookupError(f"xmppd.modules.{module} declares no OPTIONS")
            values = declaration.defaults
        if host is not None:
            own = self.hosts[host].module_options.get(module)
            if own:
                return replace(values, **own)
        return values


def load(path: str) -> Config:
    """Read and validate the configuration file at *path*."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse(text, path)


def parse(text: str, path: str) -> Config:
    """Validate TOML *text*; *path* names it in errors and anchors relative paths."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return _config(data, os.path.abspath(path))
    except Invalid as exc:
        raise ConfigError(f"{path}: {exc.key}: {exc.problem}") from None


# Sections.  Each takes its keys from a Table, with defaults, then refuses
# whatever is left over.


def _config(data: dict[str, Any], path: str) -> Config:
    base = os.path.dirname(path)
    root = Table(data, "")
    return root.done(Config(
        path=path,
        log_level=root.take("log_level", choice(LOG_LEVELS), "info"),
        log_json=_optional_path(root.take("log_json", optional_string, None), base),
        modules_enabled=root.take("modules_enabled", _optional_module_names, None),
        storage=(storage := _storage(root.table("storage"), base)),
        tls=_tls(root.table("tls"), base),
        c2s=_c2s(root.table("c2s")),
        hosts=(hosts := _hosts(root.table("hosts"))),
        s2s=(s2s := _s2s(root.table("s2s"), base)),
        limits=_section(root.table("limits"), LimitsConfig,
                        max_connections=integer(1), max_connections_per_ip=integer(1),
                        c2s_read_rate=integer(1024), c2s_read_burst=integer(10000),
                        s2s_read_rate=integer(1024), s2s_read_burst=integer(10000),
                        auth_failure_delay=non_negative_number, auth_ban_after=integer(1),
                        auth_ban_time=non_negative_number,
                        max_unauthenticated=integer(1), max_unauthenticated_per_ip=integer(1),
                        s2s_max_unauthenticated_per_ip=integer(1),
                        c2s_stanza_rate=positive_number, c2s_stanza_burst=integer(1),
                        auth_account_lock_after=integer(1),
                        auth_account_lock_time=non_negative_number),
        admin=_admin(root.table("admin"), base),
        metrics=_section(root.table("metrics"), MetricsConfig, listen=strings),
        http=_section(root.table("http"), HTTPConfig, listen=_http_listeners,
                      external_url=_external_url, cors_origins=_origins,
                      trusted_proxies=_addresses, max_request_size=integer(1024),
                      timeout=positive_number, websocket_ping_interval=positive_number,
                      websocket_idle_timeout=positive_number, access_log=boolean,
                      bosh_max_wait=integer(1), bosh_max_hold=integer(1),
                      bosh_max_inactivity=integer(1)),
        components=_components(root.table("components"), hosts),
        cluster=_cluster(root.table("cluster"), storage, s2s),
        module_options=_module_options(root),  # last: what the core left
    ))


def _module_options(root: Table) -> Mapping[str, Any]:
    """The top-level tables named after a feature module that declares
    options, each checked by its declaration."""
    found = {}
    for name in root.names():
        declaration = declared(name)
        if declaration is not None:
            found[name] = declaration.parse(root.table(name))
    return MappingProxyType(found)


def _section(table: Table, kind: type[_T], **checks: Callable[[Any, str], Any]) -> _T:
    """A section whose keys are the fields of *kind*, with its defaults."""
    defaults = kind()
    return table.done(kind(**{name: table.take(name, check, getattr(defaults, name))
                              for name, check in checks.items()}))


def _cluster(table: Table, storage: StorageConfig, s2s: S2SConfig) -> ClusterConfig:
    cluster = _section(table, ClusterConfig, redis=_redis_url, node=_node_name,
                       heartbeat=positive_number, prefix=_node_name)
    if cluster.redis is None:
        return cluster
    if storage.url.startswith("sqlite"):
        raise Invalid("cluster.redis", "the nodes of a cluster share their storage: "
                      "storage.url must name a PostgreSQL database, not SQLite")
    if (s2s.listen or s2s.direct_tls) and s2s.dialback_secret is None:
        raise Invalid("cluster.redis", "a peer's dialback verification may reach any node: "
                      "set the same s2s.dialback_secret on every node")
    return cluster


def _redis_url(value: Any, key: str) -> str | None:
    if value is not None and (not isinstance(value, str)
                              or not re.fullmatch(r"rediss?://[^/\s]+(/[0-9]*)?", value)):
        raise expected(key, 'a Redis URL such as "redis://127.0.0.1:6379/0"', value)
    return value


def _node_name(value: Any, key: str) -> str | None:
    if value is not None and (not isinstance(value, str)
                              or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value)):
        raise expected(key, "up to 64 letters, digits, '.', '_' or '-'", value)
    return value


def _storage(table: Table, base: str) -> StorageConfig:
    url = table.take("url", _database_url, "sqlite:///xmppd.sqlite")
    return table.done(StorageConfig(url=_resolve_sqlite(url, base)))


def _tls(table: Table, base: str) -> TLSConfig:
    return table.done(TLSConfig(
        certificates=os.path.join(base, table.take("certificates", string, "certs")),
        min_version=table.take("min_version", choice(TLS_VERSIONS), "1.2"),
    ))


def _c2s(table: Table) -> C2SConfig:
    return table.done(C2SConfig(
        listen=table.take("listen", strings, ["tcp:5222"]),
        direct_tls=table.take("direct_tls", strings, []),
        max_stanza_size=table.take("max_stanza_size", integer(10000), 262144),
        max_resources=table.take("max_resources", integer(1), 10),
        auth_timeout=table.take("auth_timeout", positive_number, 30.0),
        handshake_timeout=table.take("handshake_timeout", positive_number, 10.0),
        max_output_buffer=table.take("max_output_buffer", integer(65536), 1048576),
        resume_timeout=table.take("resume_timeout", non_negative_number, 300.0),
        proxy_protocol_from=table.take("proxy_protocol_from", _networks, []),
    ))


def _networks(value: Any, key: str) -> tuple[str, ...]:
    """IP addresses and networks (``"10.0.0.0/8"``), normalised."""
    networks = []
    for i, text in enumerate(strings(value, key)):
        try:
            networks.append(str(ipaddress.ip_network(text)))
        except ValueError:
            raise expected(f"{key}[{i}]", 'an IP address or network such as "10.0.0.0/8"',
                           text) from None
    return tuple(networks)


def _s2s(table: Table, base: str) -> S2SConfig:
    ca_file = table.take("ca_file", optional_string, None)
    routes = table.table("routes")
    pinned = tuple((_domain(name, routes.child(name)), routes.take(name, string, None))
                   for name in routes.names())
    routes.done(None)
    return table.done(S2SConfig(
        listen=table.take("listen", strings, []),
        direct_tls=table.take("direct_tls", strings, []),
        allow=tuple(_domain_pattern(p, f"{table.child('allow')}[{i}]")
                    for i, p in enumerate(table.take("allow", strings, []))),
        deny=tuple(_domain_pattern(p, f"{table.child('deny')}[{i}]")
                   for i, p in enumerate(table.take("deny", strings, []))),
        require_encryption=table.take("require_encryption", boolean, True),
        require_valid_certificates=table.take("require_valid_certificates", boolean, False),
        ca_file=ca_file and os.path.join(base, ca_file),
        dialback_secret=table.take("dialback_secret", optional_string, None),
        connect_timeout=table.take("connect_timeout", positive_number, 10.0),
        handshake_timeout=table.take("handshake_timeout", positive_number, 10.0),
        negotiation_timeout=table.take("negotiation_timeout", positive_number, 30.0),
        idle_timeout=table.take("idle_timeout", positive_number, 600.0),
        max_queue=table.take("max_queue", integer(1), 100),
        max_stanza_size=table.take("max_stanza_size", integer(10000), 262144),
        max_output_buffer=table.take("max_output_buffer", integer(65536), 4194304),
        routes=pinned,
    ))


# The component listener when components are configured and [components]
# names none: loopback only, for XEP-0114 streams are not encrypted.
COMPONENT_LISTEN = "tcp:5347:interface=127.0.0.1"


def _components(table: Table, hosts: dict[str, HostConfig]) -> ComponentsConfig:
    """``[components]``: the listener's keys, and one table per component."""
    listen = table.take("listen", lambda v, k: None if v is None else strings(v, k), None)
    auth_timeout = table.take("auth_timeout", positive_number, 10.0)
    max_stanza_size = table.take("max_stanza_size", integer(10000), 262144)
    max_output_buffer = table.take("max_output_buffer", integer(65536), 4194304)
    found: dict[str, ComponentConfig] = {}
    keys: dict[str, str] = {}
    for name in table.names():
        key = table.child(name)
        try:
            section = table.table(name)
        except Invalid:
            raise Invalid(key, 'unknown key (a component is a table: '
                               '[components."gateway.example.com"])') from None
        component = _component(name, section, hosts)
        if component.domain in found:
            raise Invalid(key, f"same domain as {keys[component.domain]}")
        found[component.domain], keys[component.domain] = component, key
    if listen is None:
        listen = (COMPONENT_LISTEN,) if found else ()
    return table.done(ComponentsConfig(
        listen=listen, auth_timeout=auth_timeout, max_stanza_size=max_stanza_size,
        max_output_buffer=max_output_buffer, domains=MappingProxyType(found)))


def _component(name: str, table: Table, hosts: dict[str, HostConfig]) -> ComponentConfig:
    domain = _domain(name, table.key)
    if domain in hosts:
        raise Invalid(table.key, f"{domain} is a hosted domain; a component needs its own")
    secret = table.take("secret", _secret, None)
    given = table.take("host", optional_string, None)
    # [components.gateway.example.com] without quotes nests tables.
    table.done(None, table_hint=' (quote domain names: [components."gateway.example.com"])')
    if secret is None:
        raise Invalid(table.child("secret"),
                      "required: the secret the component authenticates with")
    if given is None:
        host = _parent_host(domain, hosts)
        if host is None:
            raise Invalid(table.child("host"),
                          f"{domain} is not a subdomain of a hosted domain: "
                          "name the hosted domain it belongs to")
    else:
        host = _domain(given, table.child("host"))
        if host not in hosts:
            raise Invalid(table.child("host"), f"{host} is not a hosted domain")
    return ComponentConfig(domain=domain, host=host, secret=secret)


def _secret(value: Any, key: str) -> str | None:
    """A component's shared secret, never shown in an error (None: not given)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise Invalid(key, "expected a non-empty string")
    return value


def _parent_host(domain: str, hosts: Mapping[str, HostConfig]) -> str | None:
    """The hosted domain ``domain`` is a subdomain of (the longest, if
    several are), or None."""
    parents = [host for host in hosts if domain.endswith("." + host)]
    return max(parents, key=len, default=None)


def _http_listeners(value: Any, key: str) -> tuple[str, ...]:
    """HTTP listeners: ``ssl:PORT[:interface=...]`` (TLS with the hosts'
    certificates, chosen by SNI), or plain HTTP on a loopback interface or
    a UNIX socket only (for a reverse proxy that does TLS)."""
    descriptions = strings(value, key)
    for i, description in enumerate(descriptions):
        kind, _, rest = description.partition(":")
        if kind == "ssl" or kind == "unix":
            continue
        interface = re.search(r"(?:^|:)interface=((?:\\:|[^:])*)", rest)
        if kind in ("tcp", "tcp6") and interface and _loopback(interface.group(1)):
            continue
        raise Invalid(f"{key}[{i}]", f"{quote(description)}: plain HTTP only on a loopback "
                      'interface ("tcp:5280:interface=127.0.0.1", behind a proxy doing TLS); '
                      'use "ssl:5281" for HTTPS with the hosts\' certificates')
    return descriptions


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.replace("\\:", ":")).is_loopback
    except ValueError:
        return False


def _external_url(value: Any, key: str) -> str | None:
    if value is None:
        return None
    url = string(value, key)
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url.replace("{host}", "host")):
        raise expected(key, 'a URL such as "https://{host}:5281/"', value)
    return url if url.endswith("/") else url + "/"


def _origins(value: Any, key: str) -> tuple[str, ...]:
    """Web origins (RFC 6454) allowed to use the web by CORS, or "*"."""
    origins = strings(value, key)
    for i, origin in enumerate(origins):
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise expected(f"{key}[{i}]", 'an origin such as "https://chat.example.com" or "*"',
                           origin)
    return origins


def _addresses(value: Any, key: str) -> tuple[str, ...]:
    addresses = strings(value, key)
    for i, address in enumerate(addresses):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise expected(f"{key}[{i}]", "an IP address", address) from None
    return tuple(str(ipaddress.ip_address(a)) for a in addresses)


def _admin(table: Table, base: str) -> AdminConfig:
    value = table.take("socket", lambda v, k: v if v == "" else string(v, k), "xmppd.sock")
    return table.done(AdminConfig(socket=os.path.join(base, value) if value else None))


def _domain_pattern(pattern: str, key: str) -> str:
    """A domain, or ``*.domain`` for every subdomain of it."""
    if pattern.startswith("*."):
        return "*." + _domain(pattern[2:], key)
    return _domain(pattern, key)


def _hosts(table: Table) -> dict[str, HostConfig]:
    hosts: dict[str, HostConfig] = {}
    keys: dict[str, str] = {}
    for name in table.names():
        key = table.child(name)
        host = _host(name, table.table(name))
        if host.name in hosts:
            raise Invalid(key, f"same domain as {keys[host.name]}")
        hosts[host.name], keys[host.name] = host, key
    if not hosts:
        raise Invalid("hosts", "at least one hosted domain is required")
    return hosts


def _host(name: str, table: Table) -> HostConfig:
    # [hosts.example.com] without quotes nests a table "com" in host "example".
    return table.done(
        HostConfig(
            name=_domain(name, table.key),
            cross_domain_messages=table.take("cross_domain_messages", boolean, False),
            authentication=table.take("authentication", choice(AUTHENTICATION), "password"),
            admins=table.take("admins", _accounts, []),
            disabled_modules=tuple(
                choice(OPTIONAL_MODULES)(module, f"{table.child('disabled_modules')}[{i}]")
                for i, module in enumerate(table.take("disabled_modules", strings, []))),
            modules_enabled=table.take("modules_enabled", _module_names, ()),
            module_options=_host_module_options(table),
        ),
        table_hint=' (quote domain names: [hosts."example.com"])',
    )


def _host_module_options(table: Table) -> Mapping[str, Mapping[str, Any]]:
    """A host's tables named after a feature module that declares options:
    the keys each sets, checked by the declaration."""
    found = {}
    for name in table.names():
        declaration = declared(name)
        if declaration is not None:
            section = table.table(name)
            given = section.names()
            values = declaration.parse(section)
            found[name] = MappingProxyType({key: getattr(values, key) for key in given})
    return MappingProxyType(found)


# Checks of the config file's own.


def _optional_path(value: str | None, base: str) -> str | None:
    return None if value is None else os.path.join(base, value)


def _module_names(value: Any, key: str) -> tuple[str, ...]:
    """Feature module names (``xmppd.modules.NAME``); whether each exists
    is checked before start (:mod:`xmppd.preflight`)."""
    names = strings(value, key)
    for i, name in enumerate(names):
        if not MODULE_NAME.fullmatch(name):
            raise Invalid(f"{key}[{i}]", f"not a module name: {quote(name)}")
    return names


def _optional_module_names(value: Any, key: str) -> tuple[str, ...] | None:
    return None if value is None else _module_names(value, key)










def _database_url(value: Any, key: str) -> str:
    if not isinstance(value, str) or not re.match(r"[A-Za-z][\w+.-]*://", value):
        raise expected(key, 'a database URL such as "sqlite:///xmppd.sqlite"', value)
    return value


def _resolve_sqlite(url: str, base: str) -> str:
    """Anchor the file of a ``sqlite:///relative`` URL at *base*."""
    match = re.fullmatch(r"(sqlite(?:\+\w+)?:///)([^?]*)(.*)", url, re.DOTALL)
    if not match:
        return url
    scheme, file, query = match.groups()
    if file in ("", ":memory:") or os.path.isabs(file):
        return url
    return scheme + os.path.join(base, file) + query


def _accounts(value: Any, key: str) -> frozenset[str]:
    """An array of account JIDs (``user@domain``), normalised (RFC 7622)."""
    accounts = set()
    for i, text in enumerate(strings(value, key)):
        try:
            account = jid.JID.parse(text)
        except jid.InvalidJID as exc:
            raise Invalid(f"{key}[{i}]", f"not a valid JID: {exc}") from None
        if account.local is None or account.resource is not None:
            raise Invalid(f"{key}[{i}]", f"{text!r} is not an account JID (user@domain)")
        accounts.add(account.bare_str)
    return frozenset(accounts)


def _domain(name: str, key: str) -> str:
    """*name* normalised as JIDs are (:func:`xmppd.domains.normalize`), so that
    A-label and U-label spellings of one domain are the same host or peer."""
    try:
        domain = domains.normalize(name)
    except domains.InvalidDomain as exc:
        raise Invalid(key, f"not a valid domain name: {exc}") from None
    if len(domains.to_ascii(domain)) > 253:
        raise Invalid(key, "not a valid domain name: longer than 253 characters")
    return domain
