"""systemd integration: readiness notification (sd_notify(3)).

With ``Type=notify`` systemd waits for ``READY=1`` before it considers the
service started, expects ``RELOADING=1`` ... ``READY=1`` around a reload and
``STOPPING=1`` on shutdown.  Messages are datagrams to the UNIX socket named
by ``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket).  Without
that variable (not run by systemd) notifications are silently skipped.

Socket activation needs nothing here: Twisted's ``systemd:`` endpoint strings
take the listening sockets systemd passes (``systemd:domain=INET:index=0``).
"""

import os
import socket
import time

from twisted.application import service


def notify(*states, environ=None):
    """Send ``states`` (e.g. ``"READY=1"``) to systemd; say whether sent."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall("\n".join(states).encode())
    return True


def reloading():
    """The RELOADING=1 message, with the monotonic time systemd asks for."""
    return ("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


class ReadinessService(service.Service):
    """Started last and stopped first: READY=1 once every listener is up,
    STOPPING=1 as soon as shutdown begins."""

    def __init__(self, environ=None):
        self.environ = environ

    def startService(self):
        super().startService()
        notify("READY=1", "STATUS=serving", f"MAINPID={os.getpid()}", environ=self.environ)

    def stopService(self):
        notify("STOPPING=1", environ=self.environ)
        return super().stopService()
