"""In-memory harness for unit tests: a server core on SQLite in memory,
client streams over string transports, an injected clock.  No reactor, no
sockets, no threads."""

import base64
import importlib

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.words.xish import domish

from xmppd import config as configuration
from zope.interface import implementer

from xmppd.core.carrier import ICarrier
from xmppd.core.events import ROUTE_REMOTE
from xmppd.core.server import Server
from xmppd.core.c2s import ClientConnection, ClientStream
from xmppd.core.scram import derive_all
from xmppd.core.xmlstream import NS_STREAMS, StreamError, StreamParser, parse_stanza
from xmppd.storage.deferred import AsyncStore, immediate_runner
from xmppd.storage.sql import SQLStore
from xmppd.tap import MODULES
from xmppd.wokkel_compat import data_form

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>")


def make_config(tmp_path, hosts=("example.com",), extra=""):
    text = extra + "\n" + "\n".join(f'[hosts."{h}"]' for h in hosts)
    return configuration.parse(text, str(tmp_path / "xmppd.toml"))


class FakeCertificates:
    """Stands in for the certificate store: TLS is not run in memory."""

    def context_factory(self, domain):
        return f"tls-context-for-{domain}"

    def replace(self, other):
        pass


class TLSStringTransport(StringTransport):
    """A string transport that records STARTTLS and TCP_NODELAY instead
    of doing them."""

    tls = None
    no_delay = False

    def startTLS(self, context):
        self.tls = context

    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled


def make_server(tmp_path, hosts=("example.com",), modules=MODULES, extra="",
                runner=immediate_runner, store=None):
    """A server on SQLite in memory (or on ``store``, another server's
    ``sql``: that server restarted) whose storage calls go through
    ``runner`` (at once, by default), with ``modules`` loaded."""
    if store is None:
        store = SQLStore("sqlite://")
        store.migrate()
    server = Server(make_config(tmp_path, hosts, extra), AsyncStore(store, runner),
                    FakeCertificates(), Clock())
    server.sql = store
    # Clients authenticate with SASL, whichever feature modules a test loads.
    for name in dict.fromkeys(("sasl", *modules)):
        server.load(importlib.import_module(f"xmppd.modules.{name}"))
    return server


def keep_remote(server):
    """Keep what ``server`` routes to remote domains in ``server.remote``
    (elements) instead of sending it to federation; returns ``server``."""
    server.remote = []
    server.hooks.add(ROUTE_REMOTE, lambda stanza: server.remote.append(stanza.element) or True)
    return server


def reload(server, tmp_path, extra=""):
    """Apply a reloaded config with ``extra`` (as ``xmppctl reload`` does)."""
    server.reconfigure(make_config(tmp_path, extra=extra), server.certificates)


def add_user(server, jid, password="secret"):
    local, domain = jid.split("@")
    server.sql.create_account(local, domain, derive_all(password))


class Client:
    """One client connection to ``server``, with what the server sent parsed
    back into elements."""

    def __init__(self, server, domain="example.com", direct_tls=False, address=None):
        self.server = server
        self.domain = domain
        self.transport = TLSStringTransport(
            peerAddress=address and IPv4Address("TCP", address, 54321))
        self.stream = ClientStream(server, direct_tls=direct_tls)
        self.stream.makeConnection(self.transport)
        if direct_tls:
            self.stream.handshakeCompleted()
        self.received = []
        self.header = None
        self.ended = False
        self._reset()

    def _reset(self):
        self._parser = StreamParser(self._on_header, self.received.append,
                                    self._on_end, 10**7)

    def _on_header(self, header):
        self.header = header

    def _on_end(self):
        self.ended = True

    def send(self, data):
        if isinstance(data, domish.Element):
            data = data.toXml()
        self.stream.dataReceived(data.encode() if isinstance(data, str) else data)
        self._read()

    def _read(self):
        self._parser.feed(self.transport.value())
        self.transport.clear()

    def open(self, to=None):
        """Send a stream header (a restart starts a new server stream)."""
        self._reset()
        self.send(HEADER.format(to=to or self.domain))
        return self.received.pop()  # the features

    def take(self):
        """Everything the server sent since the last take."""
        self._read()
        received, self.received[:] = list(self.received), []
        return received

    def starttls(self):
        self.open()
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert self.take()[0].name == "proceed"
        self.stream.handshakeCompleted()

    def auth_plain(self, user, password="secret"):
        token = base64.b64encode(f"\0{user.split('@')[0]}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        return self.take()[0]

    def login(self, user, resource="res", password="secret"):
        """STARTTLS, SASL PLAIN, bind; returns the bound full JID."""
        self.starttls()
        self.open()
        assert self.auth_plain(user, password).name == "success"
        self.open()
        self.send(f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        result = self.take()[0]
        assert result["type"] == "result", result.toXml()
        return str(next(result.elements()).jid)

    @property
    def closed(self):
        return self.transport.disconnecting

    def lose(self):
        """The connection is gone (the transport reports it lost)."""
        self.stream.connectionLost(Failure(ConnectionDone()))


def online(server, user, resource="res"):
    """A client of ``user`` logged in on ``resource`` and available (its
    initial presence sent, what it got since taken)."""
    client = Client(server)
    client.login(user, resource)
    client.send("<presence/>")
    client.take()
    return client


def info_forms(server, to="example.com", user="alice@example.com"):
    """The extended information forms (XEP-0128) of the disco#info of
    ``to``, as ``user`` (logged in here) reads them."""
    client = Client(server)
    client.login(user)
    client.send(f"<iq type='get' id='d1' to='{to}'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [answer] = client.take()
    assert answer["type"] == "result", answer.toXml()
    return [data_form.Form.fromElement(x)
            for x in answer.firstChildElement().elements(data_form.NS_X_DATA, "x")]


@implementer(ICarrier)
class ElementCarrier:
    """A carrier that is not a TCP stream: it takes and yields elements
    (no bytes, no headers, no TLS), as WebSocket and BOSH carriers do."""

    secure = True
    peer = "memory"
    address = "memory"

    def __init__(self, server):
        self.sent = []
        self.closed = False
        self.error = None  # the condition it was closed with
        self.restarts = 0
        self.pauses = 0
        self.connection = ClientConnection(server, self)

    def open(self, domain="example.com"):
        """Open a stream to ``domain``; returns the features."""
        header = domish.Element((NS_STREAMS, "stream"))
        header["to"], header["version"] = domain, "1.0"
        self.connection.stream_opened(header)
        return self.sent.pop()

    def receive(self, xml):
        """The client sends ``xml`` (one element)."""
        try:
            self.connection.element_received(parse_stanza(xml))
        except StreamError as e:
            self.close(e.condition, e.text)

    def take(self):
        sent, self.sent = self.sent, []
        return sent

    def end(self):
        """The client closes its stream."""
        self.connection.stream_ended()

    def lose(self):
        """The connection is gone without a stream error."""
        self.closed = True
        self.connection.carrier_lost()

    # ICarrier

    def send_element(self, element):
        if not self.closed:
            self.sent.append(element)
        return False

    def close(self, condition=None, text=None):
        if not self.closed:
            self.error = condition
            self.lose()

    def restart(self):
        self.restarts += 1

    def channel_binding(self, kind):
        return None

    def tls_version(self):
        return None

    def features(self):
        return []

    def authenticated(self):
        pass

    def backlogged(self):
        return False

    def hold(self, writer):
        pass

    def pause(self):
        self.pauses += 1

    def resume(self):
        self.pauses -= 1


def result(deferred):
    """What ``deferred``, already fired (no reactor here), fired with; its
    failure raised."""
    results = []
    deferred.addBoth(results.append)
    [value] = results
    if hasattr(value, "raiseException"):
        value.raiseException()
    return value


def error_condition(element):
    """The defined condition of a stanza or stream error element."""
    error = element if element.name == "error" else next(
        c for c in element.elements() if c.name == "error")
    return next(c.name for c in error.elements() if c.name != "text")
