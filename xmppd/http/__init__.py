"""The web: one HTTP(S) listener (twisted.web) for WebSocket (RFC 7395),
connection discovery (XEP-0156) and the resources feature modules serve
(:meth:`xmppd.core.api.ModuleAPI.http_resource`); see docs/web.md.

What the core and the modules need without the listener is here: the
paths the listener keeps for itself and the external base URL of a host.
"""

import re

# Paths the listener serves itself; no module may take them.
RESERVED = ("xmpp-websocket", "http-bind", ".well-known")


def base_url(config, host):
    """The external base URL of the web for hosted domain ``host`` (ends
    with ``/``): ``[http] external_url`` with ``{host}`` replaced, else
    from the first listener, ``https://HOST:PORT/`` for ``ssl:PORT`` and
    ``https://HOST/`` for a plain loopback listener (a reverse proxy does
    TLS on 443); None without a listener."""
    http = config.http
    if http.external_url is not None:
        return http.external_url.replace("{host}", host)
    if not http.listen:
        return None
    port = re.match(r"ssl:(?:port=)?(\d+)(?::|$)", http.listen[0])
    if port is None or port.group(1) == "443":
        return f"https://{host}/"
    return f"https://{host}:{port.group(1)}/"


def path_segments(path):
    """The segments of a resource's path prefix (``"upload"``,
    ``"files/v1"``); ValueError for an empty or reserved one."""
    segments = tuple(path.strip("/").split("/"))
    if not all(segments) or any(s in (".", "..") for s in segments):
        raise ValueError(f"not a path prefix: {path!r}")
    if segments[0] in RESERVED:
        raise ValueError(f"/{segments[0]} is the HTTP listener's own")
    return segments
