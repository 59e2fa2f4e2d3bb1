"""HTTP file upload (XEP-0363) on the real server over real TLS: a slixmpp
client finds the service in the host's disco#items, asks for a slot, PUTs
the file to the HTTPS listener and downloads it byte-identical; a file
over the limit is refused with ``file-too-large``; the PUT URL cannot be
used twice.  The HTTP side is slixmpp's own (its xep_0363 plugin, over
aiohttp) for the upload and the download, and the standard library's
``http.client`` for the refusals; both verify the server against the test
CA, and resolve the test domain to 127.0.0.1 in process."""

import asyncio
import http.client
import io
import os
import socket
import ssl
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver
from slixmpp.plugins.xep_0363 import http_upload
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.integration.conftest import DOMAIN, STEP_TIMEOUT, prepare_web

NS = "urn:xmpp:http:upload:0"
LIMIT = 100_000


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The module's server with an HTTPS listener and the upload module."""
    deployment, port = prepare_web(tmp_path_factory.mktemp("xmppd-upload"),
                                   f'[upload]\nmax_file_size = {LIMIT}\n')
    config = deployment.process.config_path
    config.write_text(config.read_text() + 'modules_enabled = ["upload"]\n')
    deployment.process.start()
    yield deployment, port
    deployment.process.check_clean_exit()


class Connection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1, verifying the certificate of the URL's host."""

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), STEP_TIMEOUT)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch(deployment, method, url, body=None, headers=None):
    """(status, headers, body) of one request (blocking)."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=str(deployment.ca_file))
    connection = Connection(parts.hostname, parts.port, context=context,
                            timeout=STEP_TIMEOUT)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class Loopback(AbstractResolver):
    """Every name is 127.0.0.1: the test domain never reaches a name server."""

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": port,
                 "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self):
        pass


def sessions(ca_file):
    """aiohttp sessions trusting ``ca_file`` and resolving to loopback."""
    def session(**options):
        connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca_file),
                                         resolver=Loopback())
        return aiohttp.ClientSession(connector=connector, **options)
    return session


async def slot(client, filename, size, content_type):
    iq = client.xmpp.make_iq_get(ito=f"upload.{DOMAIN}")
    request = ET.Element(f"{{{NS}}}request", filename=filename, size=str(size))
    request.set("content-type", content_type)
    iq.append(request)
    answer = await iq.send(timeout=STEP_TIMEOUT)
    found = answer.xml.find(f"{{{NS}}}slot")
    return found.find(f"{{{NS}}}put").get("url"), found.find(f"{{{NS}}}get").get("url")


def test_upload_and_download(web, run):
    deployment, port = web
    data = os.urandom(50_000)

    async def body(clients):
        alice = await clients.login("alice")
        items = await alice.xmpp.plugin["xep_0030"].get_items(jid=DOMAIN, timeout=STEP_TIMEOUT)
        assert f"upload.{DOMAIN}" in [item[0] for item in items["disco_items"]["items"]]
        put, get = await slot(alice, "random data.bin", len(data), "application/octet-stream")
        assert put.startswith(f"https://{DOMAIN}:{port}/upload/")
        status, _, _ = await asyncio.to_thread(
            fetch, deployment, "PUT", put, data, {"Content-Type": "application/octet-stream"})
        assert status == 201
        status, headers, got = await asyncio.to_thread(fetch, deployment, "GET", get)
        assert status == 200
        assert got == data
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Content-Disposition"].startswith("attachment;")
        status, _, _ = await asyncio.to_thread(
            fetch, deployment, "PUT", put, data, {"Content-Type": "application/octet-stream"})
        assert status == 409
        status, _, part = await asyncio.to_thread(
            fetch, deployment, "GET", get, headers={"Range": "bytes=0-9"})
        assert (status, part) == (206, data[:10])

    run(deployment, body)


def test_slixmpp_uploads_and_downloads(web, run, monkeypatch):
    deployment, _ = web
    monkeypatch.setattr(http_upload, "ClientSession", sessions(str(deployment.ca_file)))
    data = os.urandom(70_000)

    async def body(clients):
        client = clients.new("alice", "uploader")
        client.xmpp.register_plugin("xep_0363")
        client.connect()
        await client.wait_started()
        url = await client.xmpp.plugin["xep_0363"].upload_file(
            "photo.jpg", input_file=io.BytesIO(data), domain=DOMAIN, timeout=STEP_TIMEOUT)
        assert client.xmpp.plugin["xep_0363"].max_file_size == LIMIT
        async with sessions(str(deployment.ca_file))() as session:
            async with session.get(url) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "image/jpeg"
                assert await response.read() == data

    run(deployment, body)


def test_over_the_limit_refused(web, run):
    deployment, _ = web

    async def body(clients):
        bob = await clients.login("bob")
        with pytest.raises(IqError) as refused:
            await slot(bob, "big.bin", LIMIT + 1, "application/octet-stream")
        error = refused.value.iq["error"]
        assert error["condition"] == "not-acceptable"
        too_large = error.xml.find(f"{{{NS}}}file-too-large")
        assert too_large.find(f"{{{NS}}}max-file-size").text == str(LIMIT)
        # A PUT of more than the limit is refused before it is read.
        put, _ = await slot(bob, "small.bin", 10, "application/octet-stream")
        status, _, _ = await asyncio.to_thread(
            fetch, deployment, "PUT", put, b"x" * (LIMIT + 1),
            {"Content-Type": "application/octet-stream"})
        assert status == 413

    run(deployment, body)
