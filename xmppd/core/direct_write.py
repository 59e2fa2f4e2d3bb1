"""TCP connections that write at once: bytes go to the socket when nothing
waits before them.

Twisted's TCP transport never sends in ``write``: it appends the bytes to a
buffer, asks the reactor to watch the socket for writability (an
``epoll_ctl``), sends them when the next reactor iteration finds the socket
writable, and stops watching (another ``epoll_ctl``).  A stream server
writes a few hundred bytes per connection per iteration (the stanzas of the
iteration, gathered into TLS records by Twisted's TLS layer), nearly always
into an empty kernel buffer, so each write cost two system calls and one
more dispatch by the reactor: about a sixth of the server's CPU per message
in the messages benchmark (bench/RESULTS.md).

:class:`Server` tries the socket first when its buffer is empty and the
connection is open.  What the kernel takes is sent; the rest goes through
Twisted's buffer as before, so the order of the bytes, the pausing of a
producer past ``bufferSize`` and the closing after the last byte stay
Twisted's.  A pull producer (twisted.web's file sender) is asked for more
when Twisted has written the buffer out, so its writes take Twisted's
path.  Errors too: on a failed send the bytes go to Twisted's buffer, and
its own send meets the error and closes the connection.  Once STARTTLS has
begun, the TLS layer writes its records through the same path.

Twisted has no option for this, hence a subclass of its transport; STARTTLS
needs Twisted's ``_newtls.startTLS`` (private), given :class:`_Socket` as
the base to write through.  :func:`direct_writes` makes a listening port
hand out :class:`Server` transports (``xmppd.tap.Listener`` applies it).
"""

from twisted.internet import abstract, tcp
from twisted.internet._newtls import startTLS


class _Socket(abstract.FileDescriptor):
    """Twisted's file descriptor methods, with :meth:`write` trying the
    socket first; what STARTTLS's TLS layer writes its records through
    (Twisted's ``_BypassTLS`` calls these with the connection)."""

    def write(self, data):
        if (data and not self._tempDataLen and not self.dataBuffer and self.connected
                and not self.disconnecting and not self._writeDisconnecting
                and not self._aborting and (self.producer is None or self.streamingProducer)):
            try:
                sent = self.socket.send(data)
            except OSError:  # EAGAIN; or an error Twisted's own send reports
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        abstract.FileDescriptor.write(self, data)

    def writeSequence(self, iovec):
        _Socket.write(self, b"".join(iovec))


class Server(tcp.Server):
    """Twisted's server side TCP transport, writing at once (see the module
    docstring)."""

    def write(self, data):
        if self.TLS:
            super().write(data)  # through the TLS layer, which writes by _Socket
        else:
            _Socket.write(self, data)

    def writeSequence(self, iovec):
        if self.TLS:
            super().writeSequence(iovec)
        else:
            _Socket.writeSequence(self, iovec)

    def startTLS(self, ctx, normal=True):
        startTLS(self, ctx, normal, _Socket)


def direct_writes(port):
    """Make ``port`` (a listening port) give its connections :class:`Server`
    transports if it is Twisted's TCP port; return it."""
    if type(port) is tcp.Port:
        port.transport = Server
    return port
