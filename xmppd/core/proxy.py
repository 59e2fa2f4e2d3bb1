"""The PROXY protocol (v1 and v2) on client listeners, from the load
balancers of ``c2s.proxy_protocol_from`` only.

A balancer such as HAProxy (``send-proxy-v2``) begins each connection with
a header carrying the client's address (proxy-protocol.txt: §2.1 the text
v1, §2.2 the binary v2).  :class:`ProxyProtocolFactory` wraps a c2s
listener's factory, below TLS on direct TLS (XEP-0368) listeners:

- a connection from a listed address must begin with a header; the
  client's address it carries is then the connection's peer
  (``transport.getPeer()``) for everything: logs, per-address limits,
  registration buckets.  ``LOCAL`` (v2 health checks), ``UNKNOWN`` (v1),
  ``UNSPEC`` and UNIX-socket addresses keep the balancer's own (§2.1,
  §2.2).  A bad header, or none within ``c2s.handshake_timeout``
  seconds: the connection is closed, logged once, with no XML stream (one
  the balancer ends before its header, as a health check may, is logged
  at debug level only);
- a connection from any other address gets no wrapper and is served with
  its own address: a header from it is bad XML like any other.

The listed addresses are read at each connection: a reload applies them.

Twisted's :mod:`twisted.protocols.haproxy` parses the headers (its v1 and
v2 parsers) and its wrapper answers ``getPeer`` with the carried address.
As it is, it does not fit, so it is subclassed here: it wraps every
connection; it connects the protocol it wraps at once, whose
``connectionMade`` (where streams read their peer and are counted
against its limits) would then see the balancer; it closes on a missing
or bad header without a word and waits for one for ever; it refuses a
header cut across two reads before 16 (v2) or 8 (v1) bytes, and v1's bare
``PROXY UNKNOWN`` (§2.1); it checks no address (v1 takes any text, v2
writes IPv6 uncompressed: ``0:0:0:0:0:0:0:1``, not the ``::1`` of a
direct connection); and it hides the TLS layer of STARTTLS, which starts
below it, from the stream above (``IHandshakeListener``).  The package
exports only ``proxyEndpoint`` (every connection of an endpoint wrapped):
its parts come from its private modules.
"""

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from zope.interface import directlyProvides, implementer, providedBy

from xmppd.core.stream import cancelled, peer_text

log = Logger()

V1_PREFIX = b"PROXY "
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"  # §2.1: all a sender knowing no address sends


def read_header(data):
    """``(info, rest)``: the :class:`ProxyInfo` of the header ``data``
    begins with and the bytes after it, or ``(None, b"")`` while the header
    is incomplete.  Its ``source`` is the client's address, normalised as
    Twisted writes a peer's, or None where the balancer's own stands.
    :class:`InvalidProxyHeader` if ``data`` cannot begin a valid header."""
    if data.startswith(V2Parser.PREFIX):
        if len(data) < 16:  # the v2 parser needs the length field
            return None, b""
        info, rest = V2Parser().feed(data)
    elif data.startswith(V1_UNKNOWN):
        return ProxyInfo(V1_UNKNOWN[:-2], None, None), data[len(V1_UNKNOWN):]
    elif data.startswith(V1_PREFIX):
        try:
            info, rest = V1Parser().feed(data)
        except ValueError:  # a port that is no number
            raise InvalidProxyHeader() from None
    elif V2Parser.PREFIX.startswith(data) or V1_PREFIX.startswith(data):
        return None, b""
    else:
        raise InvalidProxyHeader()
    if info is None:
        return None, b""
    source = client_address(info.source)
    return ProxyInfo(info.header, source, source and info.destination), rest


def client_address(source):
    """A header's source as the peer address of a direct connection, or
    None if it is no IP address (``LOCAL``, ``UNKNOWN``, ``UNSPEC``, a UNIX
    socket); :class:`InvalidProxyHeader` if it is no valid one."""
    if not isinstance(source, (IPv4Address, IPv6Address)):
        return None
    try:
        ip = ipaddress.ip_address(source.host)
    except ValueError:
        raise InvalidProxyHeader() from None
    if ip.version != (4 if isinstance(source, IPv4Address) else 6) \
            or not 0 <= source.port <= 65535:
        raise InvalidProxyHeader()
    return type(source)("TCP", str(ip), source.port)


@implementer(IHandshakeListener)
class ProxyProtocol(HAProxyProtocolWrapper):
    """One connection from a listed balancer: the protocol it wraps is
    connected once the header is read, with the client's address as its
    peer (``getPeer``, from :class:`HAProxyProtocolWrapper`)."""

    def __init__(self, factory, wrapped):
        super().__init__(factory, wrapped)
        self._buffer = b""
        self._timer = None
        self._done = False  # the header was read, or the connection refused

    def makeConnection(self, transport):
        """As ``ProtocolWrapper.makeConnection``, less connecting the
        wrapped protocol (:meth:`dataReceived` does, after the header)."""
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)

    def connectionMade(self):
        self._timer = self.factory.clock.callLater(self.factory.timeout(), self._refuse,
                                                   "no PROXY protocol header in time")

    def dataReceived(self, data):
        if self._proxyInfo is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._done:
            return
        self._buffer += data
        try:
            info, rest = read_header(self._buffer)
        except InvalidProxyHeader:
            self._refuse("no valid PROXY protocol header")
            return
        if info is None:
            return
        self._buffer = b""
        self._done = True
        self._timer = cancelled(self._timer)
        self._proxyInfo = info
        log.debug("c2s connection from {balancer} is from {peer} (PROXY protocol)",
                  balancer=peer_text(self.transport.getPeer()), peer=peer_text(self.getPeer()))
        self.wrappedProtocol.makeConnection(self)
        if rest:
            self.wrappedProtocol.dataReceived(rest)

    def _refuse(self, problem):
        self._done = True
        self._timer = cancelled(self._timer)
        log.info("c2s connection from {peer} closed: {problem}",
                 peer=peer_text(self.transport.getPeer()), problem=problem)
        self.transport.loseConnection()

    def handshakeCompleted(self):
        """STARTTLS's TLS layer, started below this wrapper, tells this
        wrapper: the stream above waits for it."""
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason):
        self._timer = cancelled(self._timer)
        if self._proxyInfo is not None:
            super().connectionLost(reason)
            return
        if not self._done:
            self._done = True
            log.debug("c2s connection from {peer} ended before its PROXY protocol header",
                      peer=peer_text(self.transport.getPeer()))
        self.factory.unregisterProtocol(self)


class ProxyProtocolFactory(HAProxyWrappingFactory):
    """Wraps the connections of ``factory`` (a c2s listener's) that come
    from the addresses of ``c2s.proxy_protocol_from`` of ``server``'s
    configuration in :class:`ProxyProtocol`; others get ``factory``'s own
    protocol, unwrapped."""

    protocol = ProxyProtocol
    noisy = False

    def __init__(self, server, factory):
        super().__init__(factory)
        self.server = server
        self.clock = server.clock
        self._listed = ()
        self._networks = ()

    def logPrefix(self):
        """The listener's own: ``ClientStreamFactory starting on 5222``."""
        return self.wrappedFactory.logPrefix()

    def timeout(self):
        """Seconds a balancer has to send its header."""
        return self.server.config.c2s.handshake_timeout

    def trusted(self, address):
        """Whether ``address`` (a peer address) is of a listed balancer."""
        listed = self.server.config.c2s.proxy_protocol_from
        if not listed:
            return False
        if listed is not self._listed:
            self._listed, self._networks = listed, [ipaddress.ip_network(n) for n in listed]
        try:
            ip = ipaddress.ip_address(getattr(address, "host", None) or "")
        except ValueError:
            return False
        ip = getattr(ip, "ipv4_mapped", None) or ip  # a tcp6 listener's IPv4 peer
        return any(ip in network for network in self._networks)

    def buildProtocol(self, addr):
        if not self.trusted(addr):
            return self.wrappedFactory.buildProtocol(addr)
        return super().buildProtocol(addr)
