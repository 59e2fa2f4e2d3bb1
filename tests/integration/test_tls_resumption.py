"""A reconnecting client resumes its TLS session with the real server
(RFC 8446 §2.2, RFC 5077), as a phone coming back does: Python's ``ssl``
client, the certificate verified, STARTTLS (RFC 6120 §5) and direct TLS
(XEP-0368, SNI), TLS 1.3 and 1.2.  The first connection makes a full
handshake, the second one, given the session of the first, resumes it."""

import socket
import ssl

import pytest

from tests.integration.conftest import STEP_TIMEOUT

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>")
VERSIONS = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}


def read_until(connection, mark):
    data = b""
    while mark not in data:
        chunk = connection.recv(4096)
        assert chunk, f"closed before {mark!r}: {data!r}"
        data += chunk
    return data


def connect(server, context, direct, session=None):
    """A TLS connection to the server that got the stream features after
    TLS (so the TLS 1.3 tickets are in), then closed: whether it resumed a
    session, its version and its session."""
    raw = socket.create_connection(("127.0.0.1", server.direct_tls_port if direct
                                    else server.c2s_port), timeout=STEP_TIMEOUT)
    header = HEADER.format(domain=server.domain).encode()
    if not direct:
        raw.sendall(header)
        read_until(raw, b"</stream:features>")
        raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert b"<proceed" in read_until(raw, b"/>")
    tls = context.wrap_socket(raw, server_hostname=server.domain, session=session)
    try:
        tls.sendall(header)
        assert b"mechanism" in read_until(tls, b"</stream:features>")
        return tls.session_reused, tls.version(), tls.session
    finally:
        tls.close()


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_the_second_connection_resumes(server, direct, version):
    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.minimum_version = context.maximum_version = VERSIONS[version]
    reused, _, session = connect(server, context, direct)
    assert not reused and session.has_ticket
    reused, negotiated, session = connect(server, context, direct, session)
    assert reused and negotiated == {"1.3": "TLSv1.3", "1.2": "TLSv1.2"}[version]
    reused, _, _ = connect(server, context, direct, session)
    assert reused
