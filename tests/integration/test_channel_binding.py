"""SCRAM-*-PLUS channel binding (RFC 5802 §6, RFC 7677) with the real
server over real TLS.

The client is a blocking pyOpenSSL socket that verifies the server against
the test CA and reads its binding data from its own end of the connection,
independently of the server: tls-exporter (RFC 9266 §2) is the TLS 1.3
keying material exported with the label ``EXPORTER-Channel-Binding``,
tls-server-end-point (RFC 5929 §4) the SHA-256 hash of the certificate the
server presented (signed with SHA-256).  scramp is the SCRAM client for
tls-server-end-point; it refuses tls-exporter, so that exchange is computed
here from RFC 5802 §3.  Covered: XEP-0440's ``<sasl-channel-binding/>``
feature, RFC 6120 §6 SASL, SASL2 (XEP-0388) followed by an RFC 6120 §7
bind on the same stream, binding data relayed from another connection (a
man in the middle) refused, and TLS 1.2 without tls-exporter.
"""

import base64
import hashlib
import hmac
import secrets
import socket
import struct
import xml.etree.ElementTree as ET
from collections import deque

import pytest
import scramp
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from service_identity.pyopenssl import verify_hostname

from tests.integration.conftest import STEP_TIMEOUT, new_accounts

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SASL2 = "urn:xmpp:sasl:2"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>")
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"  # RFC 9266 §2, 32 bytes, no context
BOTH = ["tls-exporter", "tls-server-end-point"]


class Stream:
    """A client stream to the server on 127.0.0.1, TLS by pyOpenSSL
    (``direct``: XEP-0368's port, otherwise STARTTLS, RFC 6120 §5), its
    top-level elements read with an incremental parser.  Every read fails
    after STEP_TIMEOUT rather than hang (SO_RCVTIMEO)."""

    def __init__(self, server, *, direct=True, max_version=None):
        self.domain = server.domain
        port = server.direct_tls_port if direct else server.c2s_port
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT)
        self.socket.settimeout(None)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                               struct.pack("ll", int(STEP_TIMEOUT), 0))
        self.tls = None
        if not direct:
            features = self.restart()
            assert features.find(f"{{{NS_TLS}}}starttls") is not None, _show(features)
            self.send(f"<starttls xmlns='{NS_TLS}'/>")
            assert self.next().tag == f"{{{NS_TLS}}}proceed"
        self._start_tls(server.ca_file, max_version)
        self.features = self.restart()

    def _start_tls(self, ca_file, max_version):
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        if max_version is not None:
            context.set_max_proto_version(max_version)
        context.load_verify_locations(str(ca_file))
        context.set_verify(SSL.VERIFY_PEER)
        self.tls = SSL.Connection(context, self.socket)
        self.tls.set_tlsext_host_name(self.domain.encode("ascii"))
        self.tls.set_connect_state()
        self.tls.do_handshake()
        verify_hostname(self.tls, self.domain)

    @property
    def version(self):
        return self.tls.get_protocol_version_name()

    def binding(self, kind):
        """The client's own channel binding data of ``kind``."""
        if kind == "tls-exporter":
            assert self.version == "TLSv1.3"
            return self.tls.export_keying_material(EXPORTER_LABEL, 32)
        certificate = self.tls.get_peer_certificate(as_cryptography=True)
        assert certificate.signature_hash_algorithm.name == "sha256"
        return hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()

    def send(self, text):
        (self.tls or self.socket).sendall(text.encode("utf-8"))

    def restart(self):
        """Open a new stream (RFC 6120 §4.3.2); its features."""
        self._parser = ET.XMLPullParser(("start", "end"))
        self._depth = 0
        self._pending = deque()
        self.send(HEADER.format(domain=self.domain))
        features = self.next()
        assert features.tag == f"{{{NS_STREAMS}}}features", _show(features)
        return features

    def next(self):
        """The next top-level element the server sends."""
        while not self._pending:
            try:
                data = (self.tls or self.socket).recv(65536)
            except (SSL.WantReadError, BlockingIOError):
                raise AssertionError(f"nothing from the server in {STEP_TIMEOUT} s") from None
            except SSL.ZeroReturnError:
                data = b""
            assert data, "the server closed the connection"
            self._parser.feed(data)
            for event, element in self._parser.read_events():
                self._depth += 1 if event == "start" else -1
                if event == "end" and self._depth == 1:
                    self._pending.append(element)
        return self._pending.popleft()

    def close(self):
        if self.tls is not None:
            try:
                self.send("</stream:stream>")
                self.tls.shutdown()
            except SSL.Error:
                pass
        self.socket.close()


@pytest.fixture
def streams(server):
    """``streams(**options)`` opens a :class:`Stream` to the server; all
    are closed after the test."""
    opened = []

    def open_stream(**options):
        stream = Stream(server, **options)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


class ExporterScram:
    """A SCRAM-SHA-256-PLUS client with tls-exporter (RFC 5802 §3, §7;
    RFC 9266), with scramp's calls."""

    def __init__(self, username, password, binding):
        self.gs2_header = "p=tls-exporter,,"
        self.password = password.encode("utf-8")  # ASCII: SASLprep changes nothing
        self.binding = binding
        self.bare = f"n={username},r={secrets.token_urlsafe(18)}"
        self.server_first = None

    def get_client_first(self):
        return self.gs2_header + self.bare

    def set_server_first(self, message):
        self.server_first = message

    def get_client_final(self):
        attributes = dict(field.split("=", 1) for field in self.server_first.split(","))
        assert attributes["r"].startswith(self.bare.split(",r=")[1])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attributes["s"]),
                                     int(attributes["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        cbind = base64.b64encode(self.gs2_header.encode("ascii") + self.binding).decode("ascii")
        without_proof = f"c={cbind},r={attributes['r']}"
        auth_message = f"{self.bare},{self.server_first},{without_proof}".encode("utf-8")
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}"

    def set_server_final(self, message):
        assert message == "v=" + base64.b64encode(self.server_signature).decode("ascii"), (
            f"wrong server signature: {message}")


def sasl(stream, mechanism, client):
    """RFC 6120 §6.4 exchange with a scramp-like ``client``: the element
    that ended it (<success/>, verified, or <failure/>)."""
    stream.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>"
                f"{_b64(client.get_client_first())}</auth>")
    answer = stream.next()
    if answer.tag != f"{{{NS_SASL}}}challenge":
        return answer
    client.set_server_first(_unb64(answer.text))
    stream.send(f"<response xmlns='{NS_SASL}'>{_b64(client.get_client_final())}</response>")
    answer = stream.next()
    if answer.tag == f"{{{NS_SASL}}}success":
        client.set_server_final(_unb64(answer.text))  # RFC 6120 §6.3.10
    return answer


def sasl2(stream, mechanism, client):
    """XEP-0388 §2.3-§2.6 exchange: the element that ended it (<success/>,
    its additional data verified, or <failure/>)."""
    stream.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='{mechanism}'><initial-response>"
                f"{_b64(client.get_client_first())}</initial-response></authenticate>")
    answer = stream.next()
    if answer.tag != f"{{{NS_SASL2}}}challenge":
        return answer
    client.set_server_first(_unb64(answer.text))
    stream.send(f"<response xmlns='{NS_SASL2}'>{_b64(client.get_client_final())}</response>")
    answer = stream.next()
    if answer.tag == f"{{{NS_SASL2}}}success":
        client.set_server_final(_unb64(answer.findtext(f"{{{NS_SASL2}}}additional-data")))
    return answer


def mechanisms(features):
    return [m.text for m in features.iterfind(f"{{{NS_SASL}}}mechanisms/{{{NS_SASL}}}mechanism")]


def channel_bindings(features):
    """The types of XEP-0440's feature; None without the feature."""
    feature = features.find(f"{{{NS_SASL_CB}}}sasl-channel-binding")
    if feature is None:
        return None
    return [b.get("type") for b in feature.iterfind(f"{{{NS_SASL_CB}}}channel-binding")]


def account(server):
    user, = new_accounts(server, "cb")
    return user, server.passwords[user]


def _b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _unb64(text):
    return base64.b64decode(text or "").decode("utf-8")


def _show(element):
    return ET.tostring(element, encoding="unicode")


def _condition(failure):
    return [child.tag.split("}")[1] for child in failure if child.tag.startswith(f"{{{NS_SASL}}}")
            and not child.tag.endswith("}text")]


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
def test_tls13_scram_sha256_plus_tls_exporter(server, streams, direct):
    """TLS 1.3: both binding types listed; RFC 6120 SASL with
    SCRAM-SHA-256-PLUS bound to tls-exporter succeeds, the server signature
    verifies, and the restarted stream offers resource binding."""
    user, password = account(server)
    stream = streams(direct=direct)
    assert stream.version == "TLSv1.3"
    offered = mechanisms(stream.features)
    assert {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"} <= set(offered), offered
    assert channel_bindings(stream.features) == BOTH

    client = ExporterScram(user, password, stream.binding("tls-exporter"))
    answer = sasl(stream, "SCRAM-SHA-256-PLUS", client)
    assert answer.tag == f"{{{NS_SASL}}}success", _show(answer)
    assert "h" in dict(f.split("=", 1) for f in client.server_first.split(","))  # XEP-0474
    features = stream.restart()
    assert features.find(f"{{{NS_BIND}}}bind") is not None, _show(features)


def test_sasl2_scram_sha256_plus_server_end_point_then_bind(server, streams):
    """SASL2 with scramp's SCRAM-SHA-256-PLUS over tls-server-end-point:
    <success/> with verified additional data and the bare JID, the features
    with no stream restart, then an RFC 6120 bind on the same stream."""
    user, password = account(server)
    stream = streams()
    assert stream.features.find(f"{{{NS_SASL2}}}authentication") is not None
    client = scramp.ScramClient(["SCRAM-SHA-256-PLUS"], user, password,
                                channel_binding=("tls-server-end-point",
                                                 stream.binding("tls-server-end-point")))
    assert client.mechanism_name == "SCRAM-SHA-256-PLUS"
    answer = sasl2(stream, "SCRAM-SHA-256-PLUS", client)
    assert answer.tag == f"{{{NS_SASL2}}}success", _show(answer)
    bare = f"{user}@{server.domain}"
    assert answer.findtext(f"{{{NS_SASL2}}}authorization-identifier") == bare

    features = stream.next()
    assert features.tag == f"{{{NS_STREAMS}}}features", _show(features)
    assert features.find(f"{{{NS_BIND}}}bind") is not None, _show(features)
    assert features.find(f"{{{NS_SASL2}}}authentication") is None
    stream.send(f"<iq type='set' id='b1'><bind xmlns='{NS_BIND}'>"
                "<resource>plus</resource></bind></iq>")
    result = stream.next()
    assert (result.tag, result.get("type"), result.get("id")) == (
        "{jabber:client}iq", "result", "b1"), _show(result)
    assert result.findtext(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid") == f"{bare}/plus"


def test_binding_of_another_connection_is_refused(server, streams):
    """A man in the middle relays the exchange with its own TLS connection
    to the server: the client's tls-exporter data (here of a second
    connection) does not match the server's, so not-authorized; the same
    stream then succeeds with its own data."""
    user, password = account(server)
    stream, other = streams(), streams()
    relayed = other.binding("tls-exporter")
    assert relayed != stream.binding("tls-exporter")
    answer = sasl(stream, "SCRAM-SHA-256-PLUS", ExporterScram(user, password, relayed))
    assert answer.tag == f"{{{NS_SASL}}}failure", _show(answer)
    assert _condition(answer) == ["not-authorized"], _show(answer)

    own = ExporterScram(user, password, stream.binding("tls-exporter"))
    answer = sasl(stream, "SCRAM-SHA-256-PLUS", own)
    assert answer.tag == f"{{{NS_SASL}}}success", _show(answer)


def test_tls12_offers_only_server_end_point(server, streams):
    """On TLS 1.2 tls-exporter is defined only with the extended master
    secret (RFC 9266 §2), which the server does not check: only
    tls-server-end-point is listed, and SCRAM-SHA-1-PLUS bound to it
    succeeds (scramp)."""
    user, password = account(server)
    stream = streams(max_version=SSL.TLS1_2_VERSION)
    assert stream.version == "TLSv1.2"
    assert channel_bindings(stream.features) == ["tls-server-end-point"]
    assert "SCRAM-SHA-1-PLUS" in mechanisms(stream.features)
    client = scramp.ScramClient(["SCRAM-SHA-1-PLUS"], user, password,
                                channel_binding=("tls-server-end-point",
                                                 stream.binding("tls-server-end-point")))
    answer = sasl(stream, "SCRAM-SHA-1-PLUS", client)
    assert answer.tag == f"{{{NS_SASL}}}success", _show(answer)
