"""TCP connections that send their TLS records at once: a record goes to
the socket when nothing waits before it.

Twisted's TCP transport never sends in ``write``: it appends the bytes to a
buffer, asks the reactor to watch the socket for writability (an
``epoll_ctl``), sends them when the next reactor iteration finds the socket
writable, and stops watching (another ``epoll_ctl``).  On a TLS connection
Twisted's TLS layer already gathers the writes of one reactor iteration
into one record, nearly always written into an empty kernel buffer, so each
record cost two system calls and one more dispatch by the reactor: about an
eighth of the server's CPU per message in the messages benchmark
(bench/RESULTS.md).

These transports try the socket first when the buffer is empty and the
connection is open.  What the kernel takes is sent; the rest goes through
Twisted's buffer as before, so the order of the bytes, the pausing of a
streaming producer past ``bufferSize`` and the closing after the last byte
stay Twisted's.  A pull producer would be asked for more only by Twisted's
own send, so while one is registered, writes take Twisted's path (a
safeguard: twisted.web and the TLS layer register streaming producers).  A
send that fails for any reason but a full buffer leaves the bytes in
Twisted's buffer and ends the connection with ``ConnectionLost`` at the
next reactor iteration, as Twisted's own send does.

Only TLS records go at once: plaintext writes (before STARTTLS, external
components, plain HTTP) may come several in one iteration, which Twisted's
buffer gathers into one send.  :class:`StartTLSServer` (a STARTTLS
listener's connections) sends at once what its TLS layer writes once
STARTTLS has begun: Twisted's ``_newtls.startTLS`` (private) is given
:class:`_Socket` as the base that layer writes through.  :class:`Server`
(a direct TLS listener's connections, where every byte written is TLS, the
TLS layer wrapping the protocol above) sends every write at once.  Twisted
has no option for this, hence subclasses of its transport;
:func:`direct_writes` gives a listening port one of them
(``xmppd.tap.Listener`` applies it).
"""

import errno

from twisted.internet import abstract, main, tcp
from twisted.internet._newtls import startTLS

# What a non-blocking send may raise while the connection is fine (as
# Twisted's tcp.Connection.writeSomeData tells them apart).
_FULL = (errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR)


class _Socket(abstract.FileDescriptor):
    """Twisted's file descriptor methods, with :meth:`write` trying the
    socket first; what the TLS layer writes its records through (Twisted's
    ``_BypassTLS`` calls these with the connection, a :class:`StartTLSServer`)."""

    def write(self, data):
        if (data.__class__ is bytes and data and not self._tempDataLen and not self.dataBuffer
                and self.connected and not self.disconnecting and not self._writeDisconnecting
                and not self._aborting and not self._send_failed
                and (self.producer is None or self.streamingProducer)):
            try:
                sent = self.socket.send(data)
            except OSError as e:
                if e.errno not in _FULL:
                    self._send_failed = True  # reported at the next iteration
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        abstract.FileDescriptor.write(self, data)

    def writeSequence(self, iovec):
        if all(chunk.__class__ is bytes for chunk in iovec):
            _Socket.write(self, b"".join(iovec))
        else:
            abstract.FileDescriptor.writeSequence(self, iovec)  # refuses them


class StartTLSServer(tcp.Server):
    """Twisted's server side TCP transport whose TLS records, once STARTTLS
    has begun, are sent at once (see the module docstring)."""

    _send_failed = False  # a direct send failed: the connection is lost

    def startTLS(self, ctx, normal=True):
        startTLS(self, ctx, normal, _Socket)

    def doRead(self):
        if self._send_failed:
            return main.CONNECTION_LOST
        return super().doRead()

    def writeSomeData(self, data):
        if self._send_failed:
            return main.CONNECTION_LOST
        return super().writeSomeData(data)


class Server(StartTLSServer):
    """The transport of a direct TLS listener's connections: every write
    (a TLS record) is sent at once (see the module docstring)."""

    def write(self, data):
        if self.TLS:
            super().write(data)  # through a TLS layer of its own, which writes by _Socket
        else:
            _Socket.write(self, data)

    def writeSequence(self, iovec):
        if self.TLS:
            super().writeSequence(iovec)
        else:
            _Socket.writeSequence(self, iovec)


def direct_writes(port, tls):
    """Give the connections of ``port`` (a listening port) :class:`Server`
    transports if ``tls`` (every byte they carry is TLS), else
    :class:`StartTLSServer` ones, if it is Twisted's TCP port (not a UNIX
    one); return it."""
    if type(port) is tcp.Port:
        port.transport = Server if tls else StartTLSServer
    return port
