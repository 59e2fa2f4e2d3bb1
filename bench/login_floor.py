"""The floor under a login: what Twisted and pyOpenSSL alone cost per login.

    python bench/login_floor.py --port PORT --certificates DIR --domain DOMAIN

A server that answers bench/loadgen.py's ``login`` and ``fast_login``
phases with canned XMPP and nothing else: the transport xmppd's c2s
listener uses (:mod:`xmppd.core.direct_write`), STARTTLS with xmppd's own
TLS contexts (:class:`xmppd.core.tls.CertificateStore`: the same
certificate, tickets and resumption), and per step of the login the
fewest bytes a client accepts: features, SCRAM (RFC 5802, with the
benchmark's password, whose keys are derived once), SASL2 with Bind2 and a
FAST token (XEP-0388, XEP-0386, XEP-0484), a bind result, the closing tag.
No XML parser, no storage, no sessions, no logging: each read of the
socket is taken to be one client element, recognised by its first bytes,
which holds for the generator (it waits for each answer before it sends
the next element).

Run by ``bench/run.py --servers floor`` beside xmppd and Prosody: its CPU
per login is the part of xmppd's that any Twisted server with pyOpenSSL
pays (accepting, the TLS handshake and records, the reactor, closing),
so what xmppd spends above it is what xmppd's own code can still save.
"""

import argparse
import base64
import hmac
import os
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import protocol, reactor  # noqa: E402

from xmppd.core import scram  # noqa: E402
from xmppd.core.direct_write import direct_writes  # noqa: E402
from xmppd.core.tls import CertificateStore  # noqa: E402

STREAMS = "http://etherx.jabber.org/streams"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
SASL2 = "urn:xmpp:sasl:2"
ITERATIONS = 4096
TOKEN = "floor-token"  # the one FAST token every client gets
MECHANISMS = ("SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN")
_OFFERED = "".join(f"<mechanism>{m}</mechanism>" for m in MECHANISMS)
_MECHANISM = re.compile(rb"mechanism='([^']+)'")
_CONTENT = re.compile(rb">([^<]*)</")
_ID = re.compile(rb"id='([^']+)'")


class Canned:
    """The server's side of every step, built once."""

    def __init__(self, domain, password):
        self.domain = domain
        header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  f"xmlns:stream='{STREAMS}' from='{domain}' id='floor' version='1.0' "
                  "xml:lang='en'><stream:features>")
        self.plain_features = (header + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                               "<required/></starttls></stream:features>").encode()
        self.proceed = b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
        self.sasl_features = (
            header + f"<mechanisms xmlns='{SASL}'>{_OFFERED}</mechanisms>"
            f"<authentication xmlns='{SASL2}'>{_OFFERED}<inline>"
            "<bind xmlns='urn:xmpp:bind:0'/><fast xmlns='urn:xmpp:fast:0'>"
            "<mechanism>HT-SHA-256-NONE</mechanism></fast></inline></authentication>"
            "</stream:features>").encode()
        self.bind_features = (header + "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                              "</stream:features>").encode()
        self.salt = os.urandom(16)
        prepared = scram.prepare_password(password)
        self.keys = {}
        for name in ("SHA-1", "SHA-256"):
            salted = scram.salted_password(name, prepared, self.salt, ITERATIONS)
            self.keys[name] = scram.server_key(name, salted)
        self.fast_data = hmac.digest(TOKEN.encode(), b"Responder", "sha256")


class FloorProtocol(protocol.Protocol):
    """One client: a step per read, answered from :class:`Canned`."""

    def __init__(self, canned, tls):
        self.canned, self.tls = canned, tls
        self.secure = self.authenticated = False
        self.scram = None  # between SCRAM's steps: (hash, first-bare, server-first, ns, token?)

    def dataReceived(self, data):
        canned = self.canned
        if data.startswith(b"<?xml") or data.startswith(b"<stream:stream"):
            self.transport.write(canned.bind_features if self.authenticated
                                 else canned.sasl_features if self.secure
                                 else canned.plain_features)
        elif data.startswith(b"<starttls"):
            self.transport.write(canned.proceed)
            self.transport.startTLS(self.tls)
            self.secure = True
        elif data.startswith(b"<auth ") or data.startswith(b"<authenticate "):
            self._authenticate(data)
        elif data.startswith(b"<response "):
            self._scram_final(data)
        elif data.startswith(b"<iq "):
            id_ = _ID.search(data).group(1).decode()
            self.transport.write(
                f"<iq type='result' id='{id_}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                f"<jid>floor@{canned.domain}/bench</jid></bind></iq>".encode())
        elif data.startswith(b"</stream:stream>"):
            self.transport.write(b"</stream:stream>")
            self.transport.loseConnection()

    def _authenticate(self, data):
        ns = SASL2 if data.startswith(b"<authenticate ") else SASL
        mechanism = _MECHANISM.search(data).group(1).decode()
        initial = base64.b64decode(_CONTENT.search(data).group(1))
        if mechanism.startswith("SCRAM-"):
            first_bare = initial.decode().split(",", 2)[2]
            nonce = dict(f.split("=", 1) for f in first_bare.split(","))["r"]
            server_first = (f"r={nonce}{os.urandom(12).hex()},"
                            f"s={base64.b64encode(self.canned.salt).decode()},i={ITERATIONS}")
            self.scram = (mechanism[6:], first_bare, server_first, ns, b"request-token" in data)
            self.transport.write(f"<challenge xmlns='{ns}'>"
                                 f"{base64.b64encode(server_first.encode()).decode()}"
                                 "</challenge>".encode())
        else:
            raw = self.canned.fast_data if mechanism.startswith("HT-") else b""
            self._success(ns, raw, b"request-token" in data)

    def _scram_final(self, data):
        hash_name, first_bare, server_first, ns, token = self.scram
        final = base64.b64decode(_CONTENT.search(data).group(1)).decode()
        without_proof = final.rsplit(",p=", 1)[0]
        message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = scram.server_signature(hash_name, self.canned.keys[hash_name], message)
        self._success(ns, b"v=" + base64.b64encode(signature), token)

    def _success(self, ns, raw, token):
        """SASL's or SASL2's success with ``raw`` as its additional data."""
        self.authenticated = True
        payload = base64.b64encode(raw).decode()
        if ns == SASL:
            self.transport.write(f"<success xmlns='{SASL}'>{payload}</success>".encode())
            return
        extra = (f"<token xmlns='urn:xmpp:fast:0' token='{TOKEN}' "
                 "expiry='2099-01-01T00:00:00Z'/>" if token else "")
        self.transport.write(
            f"<success xmlns='{SASL2}'><additional-data>{payload}</additional-data>"
            f"<authorization-identifier>floor@{self.canned.domain}/bench"
            f"</authorization-identifier><bound xmlns='urn:xmpp:bind:0'/>{extra}"
            "</success>".encode())


class Factory(protocol.Factory):
    def __init__(self, canned, tls):
        self.canned, self.tls = canned, tls

    def buildProtocol(self, addr):
        return FloorProtocol(self.canned, self.tls)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--certificates", required=True, help="a directory with DOMAIN.crt/.key")
    p.add_argument("--domain", required=True)
    p.add_argument("--password", default="bench-password")
    args = p.parse_args(argv)
    store = CertificateStore(args.certificates, [args.domain])
    factory = Factory(Canned(args.domain, args.password), store.context_factory(args.domain))
    direct_writes(reactor.listenTCP(args.port, factory, backlog=1024, interface="127.0.0.1"),
                  tls=False)
    reactor.run()


if __name__ == "__main__":
    main()
