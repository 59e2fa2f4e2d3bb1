"""The admin socket: how xmppctl reaches a running server.

``[admin] socket`` is a UNIX socket with mode 0600, so only the server's user
and root reach it.  It answers one JSON command per line, such as
``{"command": "status"}`` and ``{"command": "reload"}``, with one JSON object
per line.
"""

import json
import os
import socket

from twisted.application import service
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from xmppd.errors import StartupError


class AdminProtocol(LineOnlyReceiver):
    delimiter = b"\n"

    def lineReceived(self, line):
        try:
            command = json.loads(line).get("command")
        except (ValueError, AttributeError):
            command = None
        controller = self.factory.controller
        if command == "status":
            answer = {"ok": True, "status": controller.status()}
        elif command == "reload":
            lines = controller.reload()
            answer = {"ok": not lines[-1].startswith("error"), "messages": lines}
        else:
            answer = {"ok": False, "error": "unknown command"}
        self.sendLine(json.dumps(answer).encode())


class AdminFactory(Factory):
    protocol = AdminProtocol
    noisy = False

    def __init__(self, controller):
        self.controller = controller


class AdminSocketService(service.Service):
    """Listens on the admin UNIX socket, readable by its owner only."""

    def __init__(self, path, controller, reactor):
        self.path = path
        self.factory = AdminFactory(controller)
        self.reactor = reactor
        self._port = None

    def startService(self):
        super().startService()
        if os.path.exists(self.path):
            if _answers(self.path):
                raise StartupError(f"{self.path}: another xmppd is using this admin socket")
            os.unlink(self.path)  # left over by a server that did not stop cleanly
        old = os.umask(0o177)
        try:
            self._port = self.reactor.listenUNIX(self.path, self.factory, mode=0o600)
        finally:
            os.umask(old)

    def stopService(self):
        super().stopService()
        if self._port is not None:
            return self._port.stopListening()


def _answers(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def ask(path, command, timeout=10.0):
    """Send ``command`` to the admin socket at ``path``; return the answer
    (a dict).  Blocking: for xmppctl."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)

