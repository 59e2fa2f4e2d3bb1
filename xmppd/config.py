"""Server configuration: a TOML file read into frozen, validated dataclasses.

Every problem is reported as a :class:`ConfigError` whose message is one line
naming the file, the offending key and what is wrong with it.  Unknown keys are
refused.  Relative paths are resolved against the directory holding the file.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from xmppd import domains

LOG_LEVELS = ("debug", "info", "warn", "error")
# Feature modules a host may switch off with disabled_modules.
OPTIONAL_MODULES = ("disco", "ping", "version", "time", "last", "vcard",
                    "private", "blocking", "carbons", "offline")
TLS_VERSIONS = ("1.2", "1.3")
_MODULE_NAME = re.compile(r"[a-z][a-z0-9_]*")

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


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the OpenMetrics HTTP endpoint (off by default)."""

    listen: tuple[str, ...] = ()


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
class HostConfig:
    """``[hosts."DOMAIN"]``: one hosted domain."""

    name: str
    cross_domain_messages: bool = False
    disabled_modules: tuple[str, ...] = ()
    modules_enabled: tuple[str, ...] = ()  # more feature modules for this host only


@dataclass(frozen=True)
class RosterConfig:
    """``[roster]``: RFC 6121 rosters."""

    max_items: int = 1000


@dataclass(frozen=True)
class OfflineConfig:
    """``[offline]``: messages stored for offline users (XEP-0160)."""

    max_messages: int = 1000


@dataclass(frozen=True)
class PingConfig:
    """``[ping]``: pinging idle clients (XEP-0199 §4.1)."""

    idle_timeout: float = 300.0
    timeout: float = 60.0


@dataclass(frozen=True)
class VersionConfig:
    """``[version]``: software version (XEP-0092)."""

    hidden: bool = False
    show_os: bool = False


@dataclass(frozen=True)
class SizesConfig:
    """Size limits of stored per-user XML, in bytes."""

    max_size: int = 65536


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
    roster: RosterConfig = RosterConfig()
    offline: OfflineConfig = OfflineConfig()
    ping: PingConfig = PingConfig()
    version: VersionConfig = VersionConfig()
    vcard: SizesConfig = SizesConfig()
    private: SizesConfig = SizesConfig()
    log_json: str | None = None
    modules_enabled: tuple[str, ...] | None = None  # None: the standard modules


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
    except _Invalid as exc:
        raise ConfigError(f"{path}: {exc.key}: {exc.problem}") from None


# Sections.  Each takes its keys from a _Table, with defaults, then refuses
# whatever is left over.


def _config(data: dict[str, Any], path: str) -> Config:
    base = os.path.dirname(path)
    root = _Table(data, "")
    return root.done(Config(
        path=path,
        log_level=root.take("log_level", _choice(LOG_LEVELS), "info"),
        log_json=_optional_path(root.take("log_json", _optional_string, None), base),
        modules_enabled=root.take("modules_enabled", _optional_module_names, None),
        storage=_storage(root.table("storage"), base),
        tls=_tls(root.table("tls"), base),
        c2s=_c2s(root.table("c2s")),
        hosts=_hosts(root.table("hosts")),
        s2s=_s2s(root.table("s2s"), base),
        limits=_section(root.table("limits"), LimitsConfig,
                        max_connections=_integer(1), max_connections_per_ip=_integer(1),
                        c2s_read_rate=_integer(1024), c2s_read_burst=_integer(10000),
                        s2s_read_rate=_integer(1024), s2s_read_burst=_integer(10000),
                        auth_failure_delay=_non_negative_number, auth_ban_after=_integer(1),
                        auth_ban_time=_non_negative_number,
                        max_unauthenticated=_integer(1), max_unauthenticated_per_ip=_integer(1),
                        s2s_max_unauthenticated_per_ip=_integer(1),
                        c2s_stanza_rate=_positive_number, c2s_stanza_burst=_integer(1),
                        auth_account_lock_after=_integer(1),
                        auth_account_lock_time=_non_negative_number),
        admin=_admin(root.table("admin"), base),
        metrics=_section(root.table("metrics"), MetricsConfig, listen=_strings),
        roster=_section(root.table("roster"), RosterConfig, max_items=_integer(1)),
        offline=_section(root.table("offline"), OfflineConfig, max_messages=_integer(0)),
        ping=_section(root.table("ping"), PingConfig, idle_timeout=_non_negative_number,
                      timeout=_positive_number),
        version=_section(root.table("version"), VersionConfig, hidden=_boolean,
                         show_os=_boolean),
        vcard=_section(root.table("vcard"), SizesConfig, max_size=_integer(1024)),
        private=_section(root.table("private"), SizesConfig, max_size=_integer(1024)),
    ))


def _section(table: _Table, kind: type[_T], **checks: Callable[[Any, str], Any]) -> _T:
    """A section whose keys are the fields of *kind*, with its defaults."""
    defaults = kind()
    return table.done(kind(**{name: table.take(name, check, getattr(defaults, name))
                              for name, check in checks.items()}))


def _storage(table: _Table, base: str) -> StorageConfig:
    url = table.take("url", _database_url, "sqlite:///xmppd.sqlite")
    return table.done(StorageConfig(url=_resolve_sqlite(url, base)))


def _tls(table: _Table, base: str) -> TLSConfig:
    return table.done(TLSConfig(
        certificates=os.path.join(base, table.take("certificates", _string, "certs")),
        min_version=table.take("min_version", _choice(TLS_VERSIONS), "1.2"),
    ))


def _c2s(table: _Table) -> C2SConfig:
    return table.done(C2SConfig(
        listen=table.take("listen", _strings, ["tcp:5222"]),
        direct_tls=table.take("direct_tls", _strings, []),
        max_stanza_size=table.take("max_stanza_size", _integer(10000), 262144),
        max_resources=table.take("max_resources", _integer(1), 10),
        auth_timeout=table.take("auth_timeout", _positive_number, 30.0),
        handshake_timeout=table.take("handshake_timeout", _positive_number, 10.0),
        max_output_buffer=table.take("max_output_buffer", _integer(65536), 1048576),
    ))


def _s2s(table: _Table, base: str) -> S2SConfig:
    ca_file = table.take("ca_file", _optional_string, None)
    routes = table.table("routes")
    pinned = tuple((_domain(name, routes.child(name)), routes.take(name, _string, None))
                   for name in routes.names())
    routes.done(None)
    return table.done(S2SConfig(
        listen=table.take("listen", _strings, []),
        direct_tls=table.take("direct_tls", _strings, []),
        allow=tuple(_domain_pattern(p, f"{table.child('allow')}[{i}]")
                    for i, p in enumerate(table.take("allow", _strings, []))),
        deny=tuple(_domain_pattern(p, f"{table.child('deny')}[{i}]")
                   for i, p in enumerate(table.take("deny", _strings, []))),
        require_encryption=table.take("require_encryption", _boolean, True),
        require_valid_certificates=table.take("require_valid_certificates", _boolean, False),
        ca_file=ca_file and os.path.join(base, ca_file),
        dialback_secret=table.take("dialback_secret", _optional_string, None),
        connect_timeout=table.take("connect_timeout", _positive_number, 10.0),
        handshake_timeout=table.take("handshake_timeout", _positive_number, 10.0),
        negotiation_timeout=table.take("negotiation_timeout", _positive_number, 30.0),
        idle_timeout=table.take("idle_timeout", _positive_number, 600.0),
        max_queue=table.take("max_queue", _integer(1), 100),
        max_stanza_size=table.take("max_stanza_size", _integer(10000), 262144),
        max_output_buffer=table.take("max_output_buffer", _integer(65536), 4194304),
        routes=pinned,
    ))


def _admin(table: _Table, base: str) -> AdminConfig:
    value = table.take("socket", lambda v, k: v if v == "" else _string(v, k), "xmppd.sock")
    return table.done(AdminConfig(socket=os.path.join(base, value) if value else None))


def _domain_pattern(pattern: str, key: str) -> str:
    """A domain, or ``*.domain`` for every subdomain of it."""
    if pattern.startswith("*."):
        return "*." + _domain(pattern[2:], key)
    return _domain(pattern, key)


def _hosts(table: _Table) -> dict[str, HostConfig]:
    hosts: dict[str, HostConfig] = {}
    keys: dict[str, str] = {}
    for name in table.names():
        key = table.child(name)
        host = _host(name, table.table(name))
        if host.name in hosts:
            raise _Invalid(key, f"same domain as {keys[host.name]}")
        hosts[host.name], keys[host.name] = host, key
    if not hosts:
        raise _Invalid("hosts", "at least one hosted domain is required")
    return hosts


def _host(name: str, table: _Table) -> HostConfig:
    # [hosts.example.com] without quotes nests a table "com" in host "example".
    return table.done(
        HostConfig(
            name=_domain(name, table.key),
            cross_domain_messages=table.take("cross_domain_messages", _boolean, False),
            disabled_modules=tuple(
                _choice(OPTIONAL_MODULES)(module, f"{table.child('disabled_modules')}[{i}]")
                for i, module in enumerate(table.take("disabled_modules", _strings, []))),
            modules_enabled=table.take("modules_enabled", _module_names, ()),
        ),
        table_hint=' (quote domain names: [hosts."example.com"])',
    )


# Validation machinery.


class _Invalid(Exception):
    """A problem with one key; parse() adds the file name."""

    def __init__(self, key: str, problem: str):
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


class _Table:
    """A TOML table under validation: keys are taken one by one, leftovers refused."""

    def __init__(self, value: Any, key: str):
        if not isinstance(value, dict):
            raise _expected(key, "a table", value)
        self.key = key
        self._items = dict(value)

    def child(self, name: str) -> str:
        """The dotted key of *name* within this table."""
        part = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _quote(name)
        return f"{self.key}.{part}" if self.key else part

    def names(self) -> list[str]:
        return list(self._items)

    def take(self, name: str, check: Callable[[Any, str], _T], default: Any) -> _T:
        """Remove *name* (or use *default*) and return it as converted by *check*."""
        return check(self._items.pop(name, default), self.child(name))

    def table(self, name: str) -> _Table:
        """Remove the sub-table *name* (empty if absent)."""
        return _Table(self._items.pop(name, {}), self.child(name))

    def done(self, result: _T, table_hint: str = "") -> _T:
        """Return *result* if every key was taken; *table_hint* explains stray tables."""
        for name, value in self._items.items():
            hint = table_hint if isinstance(value, dict) else ""
            raise _Invalid(self.child(name), "unknown key" + hint)
        return result


def _quote(text: str) -> str:
    """*text* as a one-line, double-quoted string."""
    return '"' + "".join(
        c if c.isprintable() and c not in '"\\' else json.dumps(c)[1:-1]
        for c in text
    ) + '"'


def _show(value: Any) -> str:
    """A short description of a TOML value for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _expected(key: str, what: str, value: Any) -> _Invalid:
    return _Invalid(key, f"expected {what}, got {_show(value)}")


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _expected(key, "a non-empty string", value)
    return value


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):  # a tuple: a dataclass default
        raise _expected(key, "an array of strings", value)
    return tuple(_string(item, f"{key}[{i}]") for i, item in enumerate(value))


def _choice(options: tuple[str, ...]) -> Callable[[Any, str], str]:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in options:
            raise _expected(key, "one of " + ", ".join(map(_quote, options)), value)
        return value
    return check


def _integer(minimum: int) -> Callable[[Any, str], int]:
    def check(value: Any, key: str) -> int:
        if type(value) is not int or value < minimum:
            raise _expected(key, f"an integer >= {minimum}", value)
        return value
    return check


def _optional_path(value: str | None, base: str) -> str | None:
    return None if value is None else os.path.join(base, value)


def _module_names(value: Any, key: str) -> tuple[str, ...]:
    """Feature module names (``xmppd.modules.NAME``); whether each exists
    is checked before start (:mod:`xmppd.preflight`)."""
    names = _strings(value, key)
    for i, name in enumerate(names):
        if not _MODULE_NAME.fullmatch(name):
            raise _Invalid(f"{key}[{i}]", f"not a module name: {_quote(name)}")
    return names


def _optional_module_names(value: Any, key: str) -> tuple[str, ...] | None:
    return None if value is None else _module_names(value, key)


def _optional_string(value: Any, key: str) -> str | None:
    return None if value is None else _string(value, key)


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _expected(key, "true or false", value)
    return value


def _non_negative_number(value: Any, key: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 <= value < math.inf):
        raise _expected(key, "a number >= 0", value)
    return float(value)


def _positive_number(value: Any, key: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 < value < math.inf):
        raise _expected(key, "a number > 0", value)
    return float(value)


def _database_url(value: Any, key: str) -> str:
    if not isinstance(value, str) or not re.match(r"[A-Za-z][\w+.-]*://", value):
        raise _expected(key, 'a database URL such as "sqlite:///xmppd.sqlite"', value)
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


def _domain(name: str, key: str) -> str:
    """*name* normalised as JIDs are (:func:`xmppd.domains.normalize`), so that
    A-label and U-label spellings of one domain are the same host or peer."""
    try:
        domain = domains.normalize(name)
    except domains.InvalidDomain as exc:
        raise _Invalid(key, f"not a valid domain name: {exc}") from None
    if len(domains.to_ascii(domain)) > 253:
        raise _Invalid(key, "not a valid domain name: longer than 253 characters")
    return domain
