"""In-memory helpers for the server-to-server tests: a federation on a
``MemoryReactorClock`` with a stand-in for TLS, and the far end of each
s2s connection speaking raw XML."""

import base64

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure

from tests.harness import TLSStringTransport, make_server
from xmppd.core.xmlstream import NS_SERVER, StreamParser
from xmppd.s2s.incoming import IncomingStream
from xmppd.s2s.service import Federation
from xmppd.storage.deferred import immediate_runner

LOCAL = "example.com"
REMOTE = "remote.example"
REMOTE_PORT = 5270
MODULES = ("bind", "legacy_session", "roster")

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
          "xmlns:stream='http://etherx.jabber.org/streams'{attrs}>")
STARTTLS_FEATURES = ("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                     "<required/></starttls></stream:features>")
EXTERNAL_FEATURES = ("<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                     "<mechanism>EXTERNAL</mechanism></mechanisms>"
                     "<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>"
                     "</stream:features>")
DIALBACK_FEATURES = ("<stream:features><dialback xmlns='urn:xmpp:features:dialback'>"
                     "<errors/></dialback></stream:features>")
EMPTY_FEATURES = "<stream:features/>"


def header(to=None, from_=None, id_=None, version="1.0", dialback=True):
    """A peer's stream header (declaring the dialback namespace unless
    ``dialback`` is false)."""
    attrs = "".join(f" {name}='{value}'" for name, value in
                    (("xmlns:db", dialback and "jabber:server:dialback"), ("to", to),
                     ("from", from_), ("id", id_), ("version", version)) if value)
    return HEADER.format(attrs=attrs)


class FakeResolver:
    """Answers SRV lookups from ``zone``: name -> list of (priority, weight,
    port, target), or an exception to fail with."""

    def __init__(self, zone):
        self.zone = zone
        self.queries = []

    def lookupService(self, name):
        self.queries.append(name)
        answer = self.zone.get(name, DNSNameError(name))
        if isinstance(answer, Exception):
            return defer.fail(answer)
        records = [dns.RRHeader(name, dns.SRV, payload=dns.Record_SRV(p, w, port, target))
                   for p, w, port, target in answer]
        return defer.succeed((records, [], []))


class FakeTLS:
    """TLS is not run in memory: contexts are strings, and the peer's
    certificate is valid for the domains in ``valid``."""

    def __init__(self, valid=()):
        self.valid = set(valid)

    def server_tls(self, domain):
        return f"server-tls-{domain}"

    def client_tls(self, local, remote, direct_tls=False):
        return f"client-tls-{local}-{remote}"

    def peer_problem(self, transport, domain):
        return None if domain in self.valid else "untrusted certificate"


def make_federation(tmp_path, s2s="", valid=(), hosts=(LOCAL,), resolver=None,
                    runner=immediate_runner):
    """A server hosting ``hosts`` (crossing domains allowed), its storage
    calls through ``runner``, with a federation whose ``[s2s]`` section is
    ``s2s`` plus a pinned route for REMOTE; returns the federation
    (``.server``, ``.reactor``)."""
    extra = (f"[s2s]\n{s2s}\n[s2s.routes]\n"
             f"\"{REMOTE}\" = \"tcp:host=127.0.0.1:port={REMOTE_PORT}\"\n"
             + "".join(f'[hosts."{h}"]\ncross_domain_messages = true\n' for h in hosts))
    server = make_server(tmp_path, hosts=(), modules=MODULES, extra=extra, runner=runner)
    return Federation(server, MemoryReactorClock(), resolver=resolver, tls=FakeTLS(valid))


class WireTransport(TLSStringTransport):
    """Records STARTTLS, and a TLS handshake begun and not finished yet."""

    handshaking = False

    def startTLS(self, context):
        super().startTLS(context)
        self.handshaking = True


class Wire:
    """The peer's end of one s2s connection: send it raw XML, read back what
    xmppd wrote, parsed (``restart()`` after TLS or SASL).  A TLS handshake
    finishes when the peer sends its next bytes, unless ``stall_tls``."""

    stall_tls = False

    def __init__(self, stream):
        self.stream = stream
        self.transport = WireTransport()
        self.received = []
        self.headers = []
        self.ended = False
        self.restart()

    def restart(self):
        self._parser = StreamParser(self.headers.append, self.received.append,
                                    self._end, 10**7, content_namespaces=(NS_SERVER,))

    def _end(self):
        self.ended = True

    def send(self, data):
        if self.transport.handshaking and not self.stall_tls:
            self.transport.handshaking = False
            self.stream.handshakeCompleted()
        self.stream.dataReceived(data.encode() if isinstance(data, str) else data)

    def take(self):
        """Everything xmppd sent since the last take (call :meth:`restart`
        first when xmppd's next bytes are a new stream header)."""
        self._parser.feed(self.transport.value())
        self.transport.clear()
        received, self.received[:] = list(self.received), []
        return received

    def take_one(self):
        received = self.take()
        assert len(received) == 1, [e.toXml() for e in received]
        return received[0]

    @property
    def closed(self):
        return self.transport.disconnecting


def incoming(federation, direct_tls=False):
    """A new incoming stream and its wire."""
    wire = Wire(IncomingStream(federation, direct_tls))
    wire.transport.handshaking = direct_tls
    wire.stream.makeConnection(wire.transport)
    return wire


def accept_outgoing(federation, index=-1):
    """Complete the TCP connection of the last (or ``index``-th) outgoing
    attempt; returns the wire."""
    host, port, factory, _, _ = federation.reactor.tcpClients[index]
    protocol = factory.buildProtocol(None)
    wire = Wire(protocol)
    protocol.makeConnection(wire.transport)
    wire.stream = protocol
    return wire


def refuse_outgoing(federation, index=-1):
    factory = federation.reactor.tcpClients[index][2]
    factory.clientConnectionFailed(federation.reactor.connectors[index],
                                   Failure(ConnectionRefusedError()))


def b64(text):
    return base64.b64encode(text.encode()).decode()


def stream_error(elements):
    """The condition of the stream error among ``elements``."""
    errors = [e for e in elements if e.name == "error" and e.uri.endswith("streams")]
    assert errors, [e.toXml() for e in elements]
    return next(c.name for c in errors[-1].elements() if c.name != "text")


def outgoing_past_tls(federation, features, index=-1, remote=REMOTE, dialback=True,
                      local=LOCAL):
    """Accept the last outgoing connection (from ``local``) and take it
    through STARTTLS to ``features`` (after a header declaring dialback,
    unless ``dialback`` is false); returns the wire and what xmppd sent
    after them."""
    wire = accept_outgoing(federation, index)
    wire.send(header(to=local, from_=remote, id_="before-tls"))
    wire.send(STARTTLS_FEATURES)
    assert [e.name for e in wire.take()] == ["starttls"]
    wire.send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert wire.transport.tls == f"client-tls-{local}-{remote}"
    wire.restart()
    wire.send(header(to=local, from_=remote, id_="after-tls", dialback=dialback))
    wire.send(features)
    return wire, wire.take()
