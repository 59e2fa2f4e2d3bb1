"""What can be found wrong with a configuration before the server starts.

:func:`problems` checks what the config file alone does not say: that the
database driver is installed, that ``log_json`` can be written, that the
admin socket's directory exists and no other xmppd answers on it, that
every listener's address is free (by binding it for a moment), that the
pinned ``[s2s.routes]`` are usable endpoints and that every hosted domain
has its certificate.  Each problem is one line naming the file and the key.
``twistd xmppd`` refuses to start on any of them; ``xmppctl check`` lists
them.  Nothing here runs or needs the reactor; the database and TLS
libraries are imported only when checked.
"""

import errno
import os
import socket
import stat
import warnings

from xmppd.errors import StartupError

# The longest path a UNIX socket address holds (sun_path, with its NUL).
MAX_SOCKET_PATH = 107

LISTENERS = ("c2s.listen", "c2s.direct_tls", "s2s.listen", "s2s.direct_tls", "components.listen",
             "metrics.listen", "http.listen")


def problems(config):
    """Every problem found with ``config`` (a loaded
    :class:`xmppd.config.Config`), as one-line messages; empty if none."""
    found = []
    for check in (_storage, _cluster, _log_json, _admin_socket, _listeners, _routes,
                  _certificates, _modules):
        found.extend(f"{config.path}: {problem}" for problem in check(config))
    return found


def listen_settings(config):
    """``(key, description)`` of every configured listener, in start order."""
    return [(key, description) for key in LISTENERS
            for description in setting(config, key)]


def server_endpoint(config, key, description, reactor):
    """The server endpoint of listener ``description`` (setting ``key``);
    StartupError if it is not a valid endpoint string."""
    from twisted.internet.endpoints import serverFromString
    try:
        return serverFromString(reactor, tls_listener(key, description)[0])
    except IndexError:
        reason = "no such socket was passed by systemd"
    except Exception as e:  # the endpoint parsers raise what their arguments do
        reason = e
    raise StartupError(f"{config.path}: {key}: bad endpoint {description!r}: {reason}")


def tls_listener(key, description):
    """``(endpoint description, tls)``: an HTTP listener's ``ssl:ARGS`` is
    a TCP endpoint ``tcp:ARGS`` whose connections start TLS with the
    hosts' certificates (chosen by SNI), as c2s direct TLS does."""
    if key == "http.listen" and description.startswith("ssl:"):
        return "tcp:" + description.removeprefix("ssl:"), True
    return description, False


def load_certificates(config):
    """The :class:`~xmppd.core.tls.CertificateStore` of ``config``, with a
    certificate for every hosted domain, or StartupError."""
    from xmppd.core.tls import CertificateError, CertificateStore
    directory = config.tls.certificates
    try:
        store = CertificateStore(directory, config.hosts, config.tls.min_version)
    except CertificateError as e:
        raise StartupError(f"{config.path}: tls.certificates: {e}") from None
    missing = store.missing(config.hosts)
    if missing:
        raise StartupError(
            f"{config.path}: tls.certificates: no certificate for {', '.join(missing)} "
            f"in {directory} (expected DOMAIN.crt and DOMAIN.key; "
            f"'xmppctl cert DOMAIN' makes a self-signed one)")
    return store


def socket_answers(path):
    """Whether a server accepts connections on the UNIX socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def setting(config, dotted):
    """The value of setting ``dotted`` (``"c2s.listen"``) of ``config``."""
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _storage(config):
    from sqlalchemy import exc, make_url
    url = config.storage.url
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (exc.ArgumentError, exc.NoSuchModuleError) as e:
        return [f"storage.url: not a database URL this xmppd knows: {e}"]
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        return ["storage.url: an in-memory SQLite database cannot hold accounts across "
                "starts, nor can xmppctl reach it; name a file, such as "
                "\"sqlite:///xmppd.sqlite\""]
    try:
        dialect.import_dbapi()
    except ImportError as e:
        return [f"storage.url: the driver for {parsed.drivername} is not installed ({e})"]
    return []


def _cluster(config):
    """The cluster's Redis answers (a TCP connection and, unless over TLS,
    a PING: any answer, "-NOAUTH" too, shows a Redis)."""
    url = config.cluster.redis
    if url is None:
        return []
    from xmppd.cluster.node import redis_address
    host, port, _, _, _, tls = redis_address(url)
    try:
        with socket.create_connection((host, port), timeout=5) as connection:
            if not tls:
                connection.sendall(b"PING\r\n")
                if connection.recv(64)[:1] not in (b"+", b"-"):
                    return [f"cluster.redis: {host}:{port} does not answer as Redis does"]
    except OSError as e:
        return [f"cluster.redis: cannot reach Redis at {host}:{port}: "
                f"{e.strerror or e}".rstrip()]
    return []


def _log_json(config):
    path = config.log_json
    if path is None:
        return []
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        return [f"log_json: cannot write {path}: the directory {directory} does not exist"]
    if os.path.isdir(path):
        return [f"log_json: cannot write {path}: it is a directory"]
    writable = (os.access(path, os.W_OK) if os.path.exists(path)
                else os.access(directory, os.W_OK | os.X_OK))
    return [] if writable else [f"log_json: cannot write {path}: permission denied"]


def _admin_socket(config):
    path = config.admin.socket
    if path is None:
        return []
    directory = os.path.dirname(path)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return [f"admin.socket: {path} is longer than the {MAX_SOCKET_PATH} bytes "
                "a UNIX socket path may have"]
    if not os.path.isdir(directory):
        return [f"admin.socket: the directory {directory} does not exist"]
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        return [f"admin.socket: {path} exists and is not a socket"]
    if os.path.exists(path) and socket_answers(path):
        return [f"admin.socket: another xmppd is running: {path} answers"]
    return []


def _listeners(config):
    found = []
    seen = {}
    for key, description in listen_settings(config):
        try:
            endpoint = server_endpoint(config, key, description, None)
        except StartupError as e:
            found.append(str(e).removeprefix(f"{config.path}: "))
            continue
        address = _tcp_address(endpoint)
        if address is None or address[2] == 0:  # not TCP, or any free port
            continue
        if address in seen:
            found.append(f"{key}: {description} is the address of {seen[address]} too")
            continue
        seen[address] = f"{key} {description}"
        problem = _bind_problem(*address)
        if problem:
            found.append(f"{key}: cannot listen on {description}: {problem}")
    return found


def _tcp_address(endpoint):
    """``(family, interface, port)`` of a TCP server endpoint, else None."""
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
    if isinstance(endpoint, TCP6ServerEndpoint):
        return socket.AF_INET6, endpoint._interface, endpoint._port
    if isinstance(endpoint, TCP4ServerEndpoint):
        return socket.AF_INET, endpoint._interface, endpoint._port
    return None


def _bind_problem(family, interface, port):
    """Why a listening socket cannot be bound there (None if it can), as
    Twisted binds it: with SO_REUSEADDR."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((interface, port))
        except OverflowError:
            return "the port must be 0-65535"
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return "address already in use"
            return (e.strerror or str(e)).lower()
    return None


def _modules(config):
    """Every module named in ``modules_enabled`` (global or per host) exists."""
    from importlib.util import find_spec
    named = [("modules_enabled", config.modules_enabled or ())]
    named += [(f'hosts."{host.name}".modules_enabled', host.modules_enabled)
              for host in config.hosts.values()]
    return [f"{key}[{i}]: no feature module {name!r} (xmppd/modules/{name}.py)"
            for key, names in named for i, name in enumerate(names)
            if find_spec(f"xmppd.modules.{name}") is None]


def _routes(config):
    from twisted.internet.endpoints import clientFromString
    found = []
    for domain, description in config.s2s.routes:
        key = f's2s.routes."{domain}"'
        try:
            with warnings.catch_warnings():
                # No reactor here: a TLS endpoint warns that None resolves no names.
                warnings.simplefilter("ignore", DeprecationWarning)
                endpoint = clientFromString(None, description)
        except Exception as e:  # the endpoint parsers raise what their arguments do
            found.append(f"{key}: bad endpoint {description!r}: {e}")
            continue
        port = getattr(endpoint, "_port", None)
        if getattr(endpoint, "_host", None) == "" or (port is not None and not 0 < port < 65536):
            found.append(f"{key}: bad endpoint {description!r}: "
                         "a host and a port (1-65535) are needed")
    return found


def _certificates(config):
    try:
        load_certificates(config)
    except StartupError as e:
        return [str(e).removeprefix(f"{config.path}: ")]
    return []
