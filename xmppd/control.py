"""Running-server control: reload, graceful shutdown, the admin socket.

- SIGHUP (and ``xmppctl reload``) re-reads the config file and applies what
  can change without dropping connections: the log level, certificates (new
  TLS handshakes use them), hosts and their settings, federation allow/deny
  lists, limits and module settings.  Listeners (metrics too), the storage
  URL, the admin socket and ``log_json`` need a restart; a change to them is
  logged as a warning naming the key, and ``xmppctl reload`` prints it.  An
  invalid new config is refused with the reason logged and the running one
  kept.  systemd is told
  ``RELOADING=1`` ... ``READY=1`` around it.
- SIGTERM / SIGINT stop the server gracefully: listeners close, every
  session ends and every stream gets a ``system-shutdown`` stream error
  (RFC 6120 §4.9.3.20; a session kept for resumption, XEP-0198, ends too
  and its messages are stored offline), pending storage writes finish,
  and the process exits with status 0.

The admin socket that reaches a Controller from xmppctl is in
:mod:`xmppd.admin`.
"""

import signal

from twisted.application import service
from twisted.logger import Logger

from xmppd import config as configuration
from xmppd import logs, systemd
from xmppd.core.events import SERVER_STOPPING
from xmppd.errors import StartupError
from xmppd.preflight import LISTENERS, load_certificates, setting

log = Logger()

# Settings read only at start.
RESTART_ONLY = ("storage.url", *LISTENERS, "admin.socket", "log_json", "cluster.redis",
                "cluster.node", "cluster.heartbeat", "cluster.prefix")


class Controller(service.Service):
    """Signal handlers, reload and status for one running server."""

    def __init__(self, server, reactor):
        self.server = server
        self.reactor = reactor
        self.started = reactor.seconds()

    def startService(self):
        super().startService()
        self.reactor.callWhenRunning(self._install_signal_handlers)

    def stopService(self):
        """Tell the modules (``server/stopping``: group chat rooms say
        goodbye), end every session (a hibernating one too, XEP-0198: what
        it kept goes to offline storage before the storage pool stops), then
        close every other client and server stream, with
        ``system-shutdown``."""
        self.server.hooks.notify(SERVER_STOPPING, None)
        for session in self.server.sessions.all():
            session.close("system-shutdown", "the server is shutting down")
        for stream in list(self.server.streams):
            stream.stream_error("system-shutdown", "the server is shutting down")
        return super().stopService()

    def _install_signal_handlers(self):
        # After the reactor's own: ours stop it without the re-raised signal,
        # so a graceful shutdown exits with status 0.
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: self.reactor.callFromThread(self._stop))

    def _stop(self):
        if self.reactor.running:
            log.info("stopping on request")
            self.reactor.stop()

    def reload(self):
        """Re-read and apply the config; return what happened, as lines."""
        systemd.notify(*systemd.reloading())
        try:
            return self._reload()
        finally:
            systemd.notify("READY=1", "STATUS=serving")

    def _reload(self):
        path = self.server.config.path
        try:
            new = configuration.load(path)
            certificates = load_certificates(new)
        except (configuration.ConfigError, StartupError) as e:
            log.error("reload refused, keeping the running configuration: {e}", e=e)
            return [f"error: {e}"]
        notes = [f"warning: {key} changed; it takes effect after a restart"
                 for key in RESTART_ONLY
                 if setting(new, key) != setting(self.server.config, key)]
        for note in notes:
            log.warn("{note}", note=note)
        logs.set_level(new.log_level)
        self.server.reconfigure(new, certificates)
        log.info("configuration reloaded from {path}", path=path)
        return notes + [f"ok: reloaded {path}"]

    def status(self):
        server = self.server
        s2s = server.services.get("s2s")
        status = {
            "uptime": round(self.reactor.seconds() - self.started, 1),
            "connections": server.connections.total,
            "sessions": server.sessions.count(),
            "hosts": sorted(server.hosts),
            "s2s_peers": sorted(s2s.peers()) if s2s is not None else [],
        }
        if server.cluster is not None:
            status["cluster"] = server.cluster.status()
        return status
