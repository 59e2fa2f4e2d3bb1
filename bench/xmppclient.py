"""A minimal asyncio XMPP client for load generation (RFC 6120, RFC 6121).

Just enough of the protocol to drive a server hard from few CPU cycles:
TCP, stream header, STARTTLS (§5), SASL PLAIN (RFC 4616) or SCRAM-SHA-1 /
SCRAM-SHA-256 (RFC 5802, RFC 7677), resource binding (§7) and the optional
RFC 3921 session iq.

A client given a :class:`Reconnect` logs in as a phone coming back does:
SASL2 (XEP-0388: ``<authenticate/>`` with its initial response and
``<user-agent id/>``, no stream restart) with Bind2 inline (XEP-0386), a
FAST token (XEP-0484, HT-SHA-256-NONE) once it has one, asked for with
its first password login, and the TLS session of its last connection
resumed (RFC 8446 §2.2).  Incoming XML goes through pyexpat into small
:class:`Element` trees; nothing is validated beyond what the benchmark needs.
Stanzas are written as preformatted strings.

Once a client is logged in, every top-level element goes to
``client.on_stanza(element)``; iq requests addressed to the client are
answered (a result for XEP-0199 pings, ``service-unavailable`` otherwise),
so idle sessions survive server pings.  A client given :class:`Caps`
announces them in its presence (:meth:`Client.presence`, XEP-0115) and
answers disco#info queries (XEP-0030) with them.
"""

import asyncio
import base64
import hashlib
import hmac
import os
import pyexpat
import re
import secrets
import ssl
import time
import uuid
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from xmppd.core import scram

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"  # RFC 7395 §3.3.2
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_PING = "urn:xmpp:ping"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"
NS_FAST = "urn:xmpp:fast:0"
MECHANISMS = ("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256")
FAST_MECHANISM = "HT-SHA-256-NONE"  # XEP-0484 §3.1 with draft-schmaus-kitten-sasl-ht §2


class XMPPError(Exception):
    """The server refused a step, closed the stream, or did not answer."""


class Element:
    """A parsed element: namespace, local name, attributes, children, text."""

    __slots__ = ("ns", "name", "attrs", "children", "text")

    def __init__(self, ns, name, attrs):
        self.ns = ns
        self.name = name
        self.attrs = attrs
        self.children = []
        self.text = ""

    def get(self, attr, default=None):
        return self.attrs.get(attr, default)

    def child(self, name, ns=None):
        """The first child called ``name`` (in ``ns`` if given), or None."""
        for c in self.children:
            if c.name == name and (ns is None or c.ns == ns):
                return c
        return None

    def __repr__(self):
        return f"<{self.name} xmlns={self.ns!r} {self.attrs} {len(self.children)} children>"


@dataclass
class Target:
    """Where and how to log in."""

    host: str
    port: int
    domain: str
    tls_version: str = "1.3"  # "1.2" or "1.3": the only version offered
    ca_file: str | None = None  # None: no certificate verification
    mechanism: str = "PLAIN"
    session_iq: bool = False  # send the RFC 3921 session iq even when optional
    ws_port: int | None = None  # the HTTPS port of /xmpp-websocket (RFC 7395)
    fast_count: bool = False  # send a count with each FAST token use (XEP-0484 §3.4)
    # Local addresses to connect from, by account number in turn: one
    # address has about 28,000 ephemeral ports for one server port.
    sources: tuple = ()

    def source(self, number):
        """The ``local_addr`` of account ``number``'s connections."""
        return (self.sources[number % len(self.sources)], 0) if self.sources else None

    def ssl_context(self, kind=ssl.SSLContext):
        context = kind(ssl.PROTOCOL_TLS_CLIENT)
        version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[self.tls_version]
        context.minimum_version = context.maximum_version = version
        if self.ca_file:
            context.load_verify_locations(self.ca_file)
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class _ResumingContext(ssl.SSLContext):
    """A client context that offers ``session`` in its next handshake
    (asyncio's ``start_tls`` has no way to pass one)."""

    session = None

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None,
                 session=None):
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname,
                                session or self.session)


@dataclass
class Reconnect:
    """What one account's client keeps from one connection to the next:
    its user agent id (XEP-0388 §2.3, a UUID), the TLS session to resume
    (a context of the account's own: a session resumes only with the
    context that made it), its FAST token and the count of its uses
    (XEP-0484 §3.4); and what the last login did.  Without ``fast``, SASL2
    and Bind2 only: no token, no TLS resumption."""

    fast: bool = True
    agent: str = field(default_factory=lambda: str(uuid.uuid4()))
    context: ssl.SSLContext | None = None
    token: str | None = None
    count: int = 0
    tls_resumed: bool = False
    used_token: bool = False
    new_token: bool = False

    def tls_context(self, target):
        if not self.fast:
            return _ssl_context(target)
        if self.context is None:
            self.context = target.ssl_context(_ResumingContext)
        return self.context


class Caps:
    """A client's entity capabilities (XEP-0115): one identity and its
    features, under ``node``; ``ver`` is their verification string (§5.1,
    sha-1; no extended information forms)."""

    def __init__(self, node, features, category="client", type_="pc", name=""):
        self.node = node
        self.identity = (category, type_, "", name)  # category, type, xml:lang, name
        self.features = sorted(set(features))
        text = "/".join(self.identity) + "<" + "".join(f + "<" for f in self.features)
        self.ver = base64.b64encode(hashlib.sha1(text.encode("utf-8")).digest()).decode()
        self.element = (f"<c xmlns='{NS_CAPS}' hash='sha-1' node={quoteattr(node)} "
                        f"ver={quoteattr(self.ver)}/>")
        category, type_, _, name = self.identity
        self._info = (f"<identity category={quoteattr(category)} type={quoteattr(type_)}"
                      + (f" name={quoteattr(name)}" if name else "") + "/>"
                      + "".join(f"<feature var={quoteattr(f)}/>" for f in self.features))

    def info(self, node):
        """The children of the disco#info answer for ``node`` (None: the
        client itself, or ``node#ver``), or None for an unknown node."""
        if node in (None, f"{self.node}#{self.ver}"):
            return self._info
        return None


class _StreamParser:
    """pyexpat driven for one stream: header, then top-level elements."""

    def __init__(self, on_header, on_element, on_end):
        self._on_header = on_header
        self._on_element = on_element
        self._on_end = on_end
        self._stack = []
        p = self._parser = pyexpat.ParserCreate("UTF-8", " ")
        p.buffer_text = True
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text

    def feed(self, data):
        self._parser.Parse(data, False)

    def _start(self, name, attrs):
        ns, _, local = name.rpartition(" ")
        element = Element(ns, local, attrs)
        stack = self._stack
        if not stack:
            stack.append(element)
            self._on_header(element)
            return
        if len(stack) > 1:
            stack[-1].children.append(element)
        stack.append(element)

    def _end(self, name):
        element = self._stack.pop()
        if len(self._stack) == 1:
            self._on_element(element)
        elif not self._stack:
            self._on_end()

    def _text(self, data):
        if len(self._stack) > 1:
            self._stack[-1].text += data


class Client(asyncio.Protocol):
    """One client connection.  ``login()`` negotiates up to a bound
    session; afterwards :meth:`send` writes raw XML and ``on_stanza`` gets
    what arrives."""

    def __init__(self, target, user, password, resource="bench", reconnect=None):
        self.target = target
        self.user = user
        self.password = password
        self.resource = resource
        self.reconnect = reconnect  # a Reconnect: SASL2, Bind2, FAST, TLS resumption
        self.local_addr = None  # connect from this (address, port)
        self.bare = f"{user}@{target.domain}"
        self.jid = None  # the bound full JID
        self.on_stanza = None
        self.transport = None
        self.closed = None  # future: connection lost
        self.closing = False  # close() was called
        self._parser = None
        self._inbox = []
        self._waiter = None
        self._stream_ended = False
        self._iq_serial = 0
        self.caps = None  # Caps announced in presence() and told by disco#info
        self.disco_answered = 0  # disco#info queries answered

    # asyncio.Protocol

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            self._parser.feed(data)
        except pyexpat.ExpatError as e:
            self._fail(XMPPError(f"{self.bare}: malformed XML from the server: {e}"))
            self.transport.abort()

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)
        self._fail(XMPPError(f"{self.bare}: connection lost ({exc or 'closed'})"))

    def eof_received(self):
        return False

    # Incoming elements

    def _header(self, element):
        self._deliver(element)

    def _element(self, element):
        if self.on_stanza is not None:
            if element.name == "iq" and element.get("type") in ("get", "set"):
                self._answer_iq(element)
            else:
                self.on_stanza(element)
        else:
            self._deliver(element)

    def _end(self):
        self._stream_ended = True
        if self.transport is not None:
            self.transport.close()

    def _deliver(self, element):
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(element)
        else:
            self._inbox.append(element)

    def _fail(self, error):
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    async def _next(self, timeout):
        if self._inbox:
            return self._inbox.pop(0)
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(self._waiter, timeout)
        except asyncio.TimeoutError:
            raise XMPPError(f"{self.bare}: no answer from the server in {timeout} s") from None
        finally:
            self._waiter = None

    async def _expect(self, name, timeout, ns=None):
        element = await self._next(timeout)
        if element.name != name or (ns is not None and element.ns != ns):
            raise XMPPError(f"{self.bare}: expected <{name}/>, got {_describe(element)}")
        return element

    def _answer_iq(self, iq):
        to, id_ = iq.get("from", self.target.domain), iq.get("id", "")
        payload = iq.children[0] if iq.children else None
        if payload is not None and payload.ns == NS_PING:
            self.send(f"<iq type='result' to={quoteattr(to)} id={quoteattr(id_)}/>")
            return
        if (payload is not None and payload.ns == NS_DISCO_INFO and self.caps is not None
                and iq.get("type") == "get"):
            node = payload.get("node")
            info = self.caps.info(node)
            if info is not None:
                self.disco_answered += 1
                about = "" if node is None else f" node={quoteattr(node)}"
                self.send(f"<iq type='result' to={quoteattr(to)} id={quoteattr(id_)}>"
                          f"<query xmlns='{NS_DISCO_INFO}'{about}>{info}</query></iq>")
                return
        self.send(f"<iq type='error' to={quoteattr(to)} id={quoteattr(id_)}>"
                  "<error type='cancel'><service-unavailable "
                  "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")

    # Output

    def send(self, text):
        self.transport.write(text.encode())

    def presence(self, children=""):
        """Send available presence with ``children`` (XML text), and the
        client's caps if it has any."""
        caps = "" if self.caps is None else self.caps.element
        self.send(f"<presence>{children}{caps}</presence>" if children or caps
                  else "<presence/>")

    def _restart(self):
        """Open a new stream (RFC 6120 §4.3.3) with a fresh parser."""
        self._parser = _StreamParser(self._header, self._element, self._end)
        self._inbox = []
        self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  f"xmlns:stream='{NS_STREAMS}' to={quoteattr(self.target.domain)} "
                  "version='1.0' xml:lang='en'>")

    stream_end = "</stream:stream>"

    async def _features(self, timeout):
        await self._expect("stream", timeout, NS_STREAMS)
        return await self._expect("features", timeout, NS_STREAMS)

    # Login

    async def login(self, timeout=30.0):
        """Connect and negotiate TLS, SASL and a resource; returns the
        seconds it took."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self.closed = loop.create_future()
        target = self.target
        await asyncio.wait_for(loop.create_connection(
            lambda: self, target.host, target.port, local_addr=self.local_addr), timeout)
        self._restart()
        features = await self._features(timeout)
        if features.child("starttls", NS_TLS) is None:
            raise XMPPError(f"{self.bare}: the server offers no STARTTLS")
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        await self._expect("proceed", timeout, NS_TLS)
        reconnect = self.reconnect
        context = _ssl_context(target) if reconnect is None else reconnect.tls_context(target)
        self.transport = await asyncio.wait_for(loop.start_tls(
            self.transport, self, context, server_hostname=target.domain), timeout)
        self._restart()
        await self._negotiate(await self._features(timeout), timeout)
        if reconnect is not None and reconnect.fast:  # the tickets came with the first data
            tls = self.transport.get_extra_info("ssl_object")
            reconnect.tls_resumed = tls.session_reused
            context.session = tls.session
        return time.monotonic() - started

    async def _negotiate(self, features, timeout):
        """SASL, a new stream, bind (or SASL2 with Bind2); then stanzas go
        to ``on_stanza``."""
        if self.reconnect is not None:
            await self._authenticate2(features, timeout)
        else:
            await self._authenticate(features, timeout)
            self._restart()
            features = await self._features(timeout)
            await self._bind(timeout)
            session = features.child("session", NS_SESSION)
            if session is not None and (self.target.session_iq
                                        or session.child("optional") is None):
                await self._iq(f"<session xmlns='{NS_SESSION}'/>", timeout)
        self.on_stanza = self.on_stanza or _ignore
        for element in self._inbox:
            self._element(element)
        self._inbox = []

    async def _authenticate(self, features, timeout):
        mechanism = self.target.mechanism
        offered = features.child("mechanisms", NS_SASL)
        names = [] if offered is None else [m.text.strip() for m in offered.children]
        if mechanism not in names:
            raise XMPPError(f"{self.bare}: the server does not offer {mechanism} ({names})")
        if mechanism == "PLAIN":
            await self._sasl_plain(timeout)
        else:
            await self._sasl_scram(mechanism.removeprefix("SCRAM-"), timeout)

    async def _sasl_plain(self, timeout):
        message = f"\0{self.user}\0{self.password}".encode()
        self._auth("PLAIN", message)
        await self._sasl_result(timeout)

    async def _sasl_scram(self, hash_name, timeout):
        scram_state = self._scram_first()
        self._auth(f"SCRAM-{hash_name}", scram_state[0])
        challenge = await self._next(timeout)
        if challenge.name != "challenge":
            raise XMPPError(f"{self.bare}: SCRAM: expected a challenge, got {_describe(challenge)}")
        final, expected = self._scram_final(hash_name, scram_state, challenge.text)
        self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final).decode()}</response>")
        success = await self._sasl_result(timeout)
        if success.text.strip() and base64.b64decode(success.text) != expected:
            raise XMPPError(f"{self.bare}: SCRAM: wrong server signature")

    def _scram_first(self):
        """The client-first message and what the final one needs."""
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={_saslname(self.user)},r={nonce}"
        return f"n,,{first_bare}".encode(), nonce, first_bare

    def _scram_final(self, hash_name, first, challenge):
        """The client-final message answering ``challenge`` (base64 text)
        and the server-final message expected."""
        _, nonce, first_bare = first
        server_first = base64.b64decode(challenge).decode()
        fields = dict(f.split("=", 1) for f in server_first.split(","))
        if not fields["r"].startswith(nonce):
            raise XMPPError(f"{self.bare}: SCRAM: the server changed the client nonce")
        client_key, stored_key, server_key = _scram_keys(
            hash_name, self.password, base64.b64decode(fields["s"]), int(fields["i"]))
        without_proof = f"c=biws,r={fields['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = scram.client_signature(hash_name, stored_key, auth_message)
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
        expected = b"v=" + base64.b64encode(
            scram.server_signature(hash_name, server_key, auth_message))
        return f"{without_proof},p={proof}".encode(), expected

    async def _authenticate2(self, features, timeout):
        """SASL2 (XEP-0388 §2.3-§2.6) with Bind2 inline (XEP-0386 §2): with
        the FAST token if the client has one (XEP-0484 §3.4), else with the
        password mechanism, asking for a token (§3.3)."""
        reconnect, user = self.reconnect, self.user
        offered = features.child("authentication", NS_SASL2)
        if offered is None:
            raise XMPPError(f"{self.bare}: the server offers no SASL2")
        inline = offered.child("inline")
        fast = None if inline is None else inline.child("fast", NS_FAST)
        fast_mechanisms = [] if fast is None else [m.text.strip() for m in fast.children]
        token = reconnect.token
        reconnect.used_token = token is not None
        reconnect.new_token = False
        scram_state = None
        if token is not None:
            if FAST_MECHANISM not in fast_mechanisms:
                raise XMPPError(f"{self.bare}: the server offers no {FAST_MECHANISM}")
            mechanism = FAST_MECHANISM
            initial = user.encode() + b"\0" + _ht(token, b"Initiator")
            reconnect.count += 1
            count = f" count='{reconnect.count}'" if self.target.fast_count else ""
            extra = f"<fast xmlns='{NS_FAST}'{count}/>"
        else:
            mechanism = self.target.mechanism
            names = [m.text.strip() for m in offered.children if m.name == "mechanism"]
            if mechanism not in names:
                raise XMPPError(f"{self.bare}: SASL2 does not offer {mechanism} ({names})")
            if mechanism == "PLAIN":
                initial = f"\0{user}\0{self.password}".encode()
            else:
                scram_state = self._scram_first()
                initial = scram_state[0]
            extra = (f"<request-token xmlns='{NS_FAST}' mechanism='{FAST_MECHANISM}'/>"
                     if reconnect.fast and FAST_MECHANISM in fast_mechanisms else "")
        self.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='{mechanism}'>"
                  f"<initial-response>{base64.b64encode(initial).decode()}</initial-response>"
                  f"<user-agent id='{reconnect.agent}'><software>xmppd bench</software>"
                  f"</user-agent><bind xmlns='{NS_BIND2}'><tag>{escape(self.resource)}</tag>"
                  f"</bind>{extra}</authenticate>")
        expected = None
        while True:
            element = await self._next(timeout)
            if element.ns != NS_SASL2 or element.name not in ("challenge", "success"):
                raise XMPPError(f"{self.bare}: SASL2 {mechanism} failed: {_describe(element)}")
            if element.name == "success":
                break
            if scram_state is None:
                raise XMPPError(f"{self.bare}: SASL2: a challenge for {mechanism}")
            final, expected = self._scram_final(mechanism.removeprefix("SCRAM-"), scram_state,
                                                element.text)
            self.send(f"<response xmlns='{NS_SASL2}'>{base64.b64encode(final).decode()}"
                      "</response>")
        data = element.child("additional-data")
        data = b"" if data is None else base64.b64decode(data.text)
        if token is not None:
            expected = _ht(token, b"Responder")
        if expected is not None and data != expected:
            raise XMPPError(f"{self.bare}: SASL2 {mechanism}: wrong server signature")
        issued = element.child("token", NS_FAST)
        if issued is not None:
            reconnect.token, reconnect.count, reconnect.new_token = issued.get("token"), 0, True
        jid = element.child("authorization-identifier")
        if jid is None or element.child("bound", NS_BIND2) is None:
            raise XMPPError(f"{self.bare}: SASL2 success without a bound resource")
        self.jid = jid.text.strip()

    def _auth(self, mechanism, initial):
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>"
                  f"{base64.b64encode(initial).decode()}</auth>")

    async def _sasl_result(self, timeout):
        result = await self._next(timeout)
        if result.name != "success":
            raise XMPPError(f"{self.bare}: SASL failed: {_describe(result)}")
        return result

    async def _bind(self, timeout):
        result = await self._iq(
            f"<bind xmlns='{NS_BIND}'><resource>{escape(self.resource)}</resource></bind>", timeout)
        bind = result.child("bind", NS_BIND)
        jid = None if bind is None else bind.child("jid")
        if jid is None:
            raise XMPPError(f"{self.bare}: bind result without a JID")
        self.jid = jid.text.strip()

    async def _iq(self, payload, timeout):
        self._iq_serial += 1
        id_ = f"b{self._iq_serial}"
        self.send(f"<iq type='set' id='{id_}'>{payload}</iq>")
        result = await self._next(timeout)
        if result.name != "iq" or result.get("id") != id_ or result.get("type") != "result":
            raise XMPPError(f"{self.bare}: iq {payload[:40]}... failed: {_describe(result)}")
        return result

    # Closing

    async def close(self, timeout=5.0):
        """End the stream and wait (bounded) for the server to close it."""
        self.closing = True
        if self.transport is None or self.closed is None or self.closed.done():
            return
        try:
            self.send(self.stream_end)
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except (asyncio.TimeoutError, RuntimeError, OSError):
            pass
        finally:
            if not self.closed.done():
                self.transport.abort()


_STANZA = re.compile(r"<(?:iq|message|presence)\b")


class WebSocketClient(Client):
    """One client over WebSocket (RFC 7395) at ``wss://DOMAIN:ws_port/xmpp-websocket``:
    TLS from the start, then one element per text frame, ``<open/>`` and
    ``<close/>`` for the stream's start and end.  The framing is the
    ``websockets`` package's, sans I/O, under this asyncio protocol."""

    stream_end = f"<close xmlns='{NS_FRAMING}'/>"

    def __init__(self, target, user, password, resource="bench"):
        super().__init__(target, user, password, resource)
        self._ws = None
        self._opened = None  # future: the WebSocket handshake's response

    async def login(self, timeout=30.0):
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self.closed = loop.create_future()
        target = self.target
        await asyncio.wait_for(loop.create_connection(
            lambda: self, target.host, target.ws_port, ssl=_ssl_context(target),
            server_hostname=target.domain, local_addr=self.local_addr), timeout)
        self._ws = ClientProtocol(
            parse_uri(f"wss://{target.domain}:{target.ws_port}/xmpp-websocket"),
            subprotocols=["xmpp"], max_size=None)
        self._opened = loop.create_future()
        self._ws.send_request(self._ws.connect())
        self._flush()
        response = await asyncio.wait_for(self._opened, timeout)
        if self._ws.handshake_exc is not None:
            raise XMPPError(f"{self.bare}: WebSocket refused: {response.status_code}")
        self._restart()
        await self._negotiate(await self._features(timeout), timeout)
        return time.monotonic() - started

    def data_received(self, data):
        ws = self._ws
        ws.receive_data(data)
        try:
            for event in ws.events_received():
                if not isinstance(event, Frame):
                    self._opened.set_result(event)
                elif event.opcode == Opcode.TEXT:
                    self._parser.feed(event.data)
        except pyexpat.ExpatError as e:
            self._fail(XMPPError(f"{self.bare}: malformed XML from the server: {e}"))
            self.transport.abort()
        self._flush()  # pongs, the closing handshake
        if ws.close_expected() and self.transport is not None:
            self.transport.close()

    def _flush(self):
        for data in self._ws.data_to_send():
            if data:
                self.transport.write(data)

    def send(self, text):
        """Send one element; a stanza gets its ``jabber:client`` namespace
        declared (RFC 7395 §3.3.3: no stream header declares it)."""
        stanza = _STANZA.match(text)
        if stanza is not None and "xmlns=" not in text[:text.find(">")]:
            text = f"{text[:stanza.end()]} xmlns='jabber:client'{text[stanza.end():]}"
        self._ws.send_text(text.encode())
        self._flush()

    def _restart(self):
        self._parser = _StreamParser(lambda _: None, self._frame, self._end)
        self._parser.feed(f"<frames xmlns='jabber:client' xmlns:stream='{NS_STREAMS}'>")
        self._inbox = []
        self.send(f"<open xmlns='{NS_FRAMING}' to={quoteattr(self.target.domain)} "
                  "version='1.0'/>")

    def _frame(self, element):
        """One frame's element: ``<open/>`` stands for the stream header."""
        if element.ns == NS_FRAMING and element.name == "open":
            self._deliver(Element(NS_STREAMS, "stream", element.attrs))
        elif element.ns == NS_FRAMING and element.name == "close":
            self._end()
        else:
            self._element(element)


NS_HTTPBIND = "http://jabber.org/protocol/httpbind"  # XEP-0124
NS_XBOSH = "urn:xmpp:xbosh"  # XEP-0206


class BoshClient(Client):
    """One client over BOSH (XEP-0124, XEP-0206) at
    ``https://DOMAIN:ws_port/http-bind``: a session of HTTP requests, each
    a ``<body/>`` with the next ``rid``.  One request is always held by the
    server (``hold=1``) for what it sends; stanzas go in a new request at
    once (``requests=2``), which answers the held one.  A session creation
    or a restart (``xmpp:restart``) stands for a new stream header."""

    def __init__(self, target, user, password, resource="bench"):
        super().__init__(target, user, password, resource)
        self._http = None
        self._url = f"https://127.0.0.1:{target.ws_port}/http-bind"
        self._sid = None
        self._rid = secrets.randbelow(2**40)
        self._outgoing = []
        self._inflight = 0
        self._restarting = False
        self._received = []  # the elements of the response being read
        self._holding = False  # keep a request out for what the server sends (after login)

    async def login(self, timeout=30.0):
        import aiohttp

        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self.closed = loop.create_future()
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=_ssl_context(self.target), limit=4),
            timeout=aiohttp.ClientTimeout(total=timeout + 70))
        self.transport = self  # abort() and close(), as loadgen calls them
        self._restart()
        await self._negotiate(await self._features(timeout), timeout)
        self._holding = True
        self._pump()
        return time.monotonic() - started

    def _restart(self):
        self._inbox = []
        self._restarting = True
        if self._sid is not None:  # the new stream's features may come in any response
            self._deliver(Element(NS_STREAMS, "stream", {}))
        self._pump()

    def send(self, text):
        stanza = _STANZA.match(text)
        if stanza is not None and "xmlns=" not in text[:text.find(">")]:
            text = f"{text[:stanza.end()]} xmlns='jabber:client'{text[stanza.end():]}"
        self._outgoing.append(text)
        self._pump()

    def _pump(self):
        """A request with what waits to go, unless two are out already;
        and one always out, to be held for what the server sends."""
        if self.closed is None or self.closed.done() or self._inflight >= 2:
            return
        if not (self._outgoing or self._restarting or (self._holding and not self._inflight)):
            return
        self._rid += 1
        domain = self.target.domain
        if self._sid is None:
            head = (f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' rid='{self._rid}' "
                    f"to='{domain}' xml:lang='en' wait='60' hold='1' ver='1.6' "
                    "xmpp:version='1.0'")
        elif self._restarting:
            head = (f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' rid='{self._rid}' "
                    f"sid='{self._sid}' to='{domain}' xml:lang='en' xmpp:restart='true'")
        else:
            head = f"<body xmlns='{NS_HTTPBIND}' rid='{self._rid}' sid='{self._sid}'"
        stream_start = self._restarting and self._sid is None  # a session's creation
        self._restarting = False
        payload, self._outgoing = "".join(self._outgoing), []
        body = f"{head}>{payload}</body>" if payload else f"{head}/>"
        self._inflight += 1
        asyncio.get_running_loop().create_task(self._request(body, stream_start))

    async def _post(self, body):
        """The response's bytes to one request (XMPPError unless HTTP 200)."""
        async with self._http.post(self._url, data=body.encode(), headers={
                "Host": f"{self.target.domain}:{self.target.ws_port}",
                "Content-Type": "text/xml; charset=utf-8"},
                server_hostname=self.target.domain) as response:
            data = await response.read()
            if response.status != 200:
                raise XMPPError(f"{self.bare}: BOSH: HTTP {response.status}")
            return data

    async def _request(self, body, stream_start):
        try:
            data = await self._post(body)
        except Exception as e:  # noqa: BLE001 - any failure ends the session
            self._lost(e)
            return
        self._inflight -= 1
        header = []
        parser = _StreamParser(header.append, self._received.append, lambda: None)
        parser.feed(data)
        attrs = header[0].attrs if header else {}
        if attrs.get("type") == "terminate":
            self._lost(XMPPError(f"{self.bare}: BOSH terminated: {attrs.get('condition')}"))
            return
        self._sid = self._sid or attrs.get("sid")
        if stream_start:
            self._deliver(Element(NS_STREAMS, "stream", attrs))
        elements, self._received = self._received, []
        for element in elements:
            self._element(element)
        self._pump()

    def _lost(self, error):
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(error)
        self._fail(XMPPError(f"{self.bare}: BOSH: {error}"))

    def abort(self):
        self._lost(XMPPError("aborted"))
        if self._http is not None:
            asyncio.get_running_loop().create_task(self._http.close())

    async def close(self, timeout=5.0):
        self.closing = True
        if self._http is None:
            return
        if self._sid is not None and not self.closed.done():
            self._rid += 1
            body = (f"<body xmlns='{NS_HTTPBIND}' rid='{self._rid}' sid='{self._sid}' "
                    "type='terminate'/>")
            try:
                await self._post(body)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if not self.closed.done():
            self.closed.set_result(None)
        await self._http.close()


_CONTEXTS = {}
_SCRAM_CACHE = {}


def _ssl_context(target):
    """One SSL context per target settings (contexts are costly to build)."""
    key = (target.tls_version, target.ca_file)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = target.ssl_context()
    return _CONTEXTS[key]


def _scram_keys(hash_name, password, salt, iterations):
    """ClientKey, StoredKey and ServerKey, cached: accounts made with one
    verifier share the salt, so the key derivation runs once."""
    key = (hash_name, password, salt, iterations)
    if key not in _SCRAM_CACHE:
        salted = scram.salted_password(hash_name, scram.prepare_password(password), salt,
                                       iterations)
        client_key = scram.client_key(hash_name, salted)
        _SCRAM_CACHE[key] = (client_key, scram.stored_key(hash_name, client_key),
                             scram.server_key(hash_name, salted))
    return _SCRAM_CACHE[key]


def _ht(token, message):
    """HMAC-SHA-256 keyed with the token (draft-schmaus-kitten-sasl-ht §3.1)."""
    return hmac.digest(token.encode(), message, "sha256")


def _saslname(name):
    return name.replace("=", "=3D").replace(",", "=2C")


def _describe(element):
    if element.ns == NS_STREAMS and element.name == "error":
        return "stream error " + ", ".join(c.name for c in element.children)
    return f"<{element.name}> " + " ".join(c.name for c in element.children)


def _ignore(element):
    pass
