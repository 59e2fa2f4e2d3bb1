"""A real browser client: Strophe.js on a web page in headless Chromium logs
in to xmppd over WebSocket and over BOSH, sends a message to a slixmpp
client and shows its reply in the page.

``tests/browser/chat.mjs`` (node, playwright-core) serves the page
``tests/browser/client.html`` on http://127.0.0.1:PORT/, another origin
than the server's HTTPS listener (allowed by ``[http] cors_origins``), and
drives Chromium like a user: fills in the form, clicks, waits for the reply,
takes a screenshot, logs out.  Chromium resolves ``example.test`` to
127.0.0.1 without DNS and trusts only the key of the test server's
certificate (its SPKI SHA-256).  Skipped, with the reason, without Debian's
``chromium`` or node and the packages of ``npm ci --prefix tests/browser``.
"""

import base64
import hashlib
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.integration.conftest import (DOMAIN, REPO, STEP_TIMEOUT, free_ports, new_accounts,
                                       node_script, prepare, replier)

BROWSER_DIR = REPO / "tests" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
NODE = shutil.which("node")
BROWSER_TIMEOUT = 40.0  # seconds for the whole browser run (its steps are bounded by 8 s each)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def missing():
    """Why the browser test cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"no {CHROMIUM} (Debian's chromium package)"
    if NODE is None:
        return "no node"
    for package in ("playwright-core", "strophe.js"):
        if not (BROWSER_DIR / "node_modules" / package / "package.json").exists():
            return f"no {package} in tests/browser (npm ci --prefix tests/browser)"
    return None


pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


def spki_sha256(certificate_file):
    """Base64 SHA-256 of the first certificate's SubjectPublicKeyInfo: what
    Chromium's --ignore-certificate-errors-spki-list takes."""
    certificate = x509.load_pem_x509_certificates(Path(certificate_file).read_bytes())[0]
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The module's server with an HTTPS listener whose CORS allows the
    test page's origin; yields (deployment, https port, page port)."""
    https_port, page_port = free_ports(2)
    deployment = prepare(
        tmp_path_factory.mktemp("xmppd-browser"),
        f'[http]\nlisten = ["ssl:{https_port}:interface=127.0.0.1"]\n'
        f'cors_origins = ["http://127.0.0.1:{page_port}"]\n')
    deployment.process.start()
    yield deployment, https_port, page_port
    deployment.process.check_clean_exit()


async def browser_chat(options):
    """Run chat.mjs with ``options``; its exit status and JSON result."""
    status, result, _ = await node_script(BROWSER_DIR / "chat.mjs", options, BROWSER_TIMEOUT)
    return status, result


@pytest.mark.parametrize("transport", ["websocket", "bosh"])
def test_a_browser_client_chats_with_a_slixmpp_client(web, run, tmp_path, transport):
    deployment, https_port, page_port = web
    web_user, tcp_user = new_accounts(deployment, "browser", "replier")
    web_bare, tcp_bare = f"{web_user}@{DOMAIN}", f"{tcp_user}@{DOMAIN}"
    # Strophe.js takes a wss:// service for WebSocket, an https:// one for BOSH.
    path = "xmpp-websocket" if transport == "websocket" else "http-bind"
    scheme = "wss" if transport == "websocket" else "https"
    screenshot = tmp_path / f"browser-{transport}.png"
    text = f"Hello from Chromium over {transport}"
    received = []

    async def body(clients):
        await replier(clients, tcp_user, received)
        status, result = await browser_chat({
            "chromium": str(CHROMIUM),
            "pagePort": page_port,
            "service": f"{scheme}://{DOMAIN}:{https_port}/{path}",
            "resolve": {DOMAIN: "127.0.0.1"},
            "spki": spki_sha256(deployment.ca_file.parent / "certs" / f"{DOMAIN}.crt"),
            "jid": f"{web_bare}/browser",
            "password": deployment.passwords[web_user],
            "to": tcp_bare,
            "body": text,
            "screenshot": str(screenshot),
            "stepTimeout": int(STEP_TIMEOUT * 800),
        })
        assert status == 0 and "error" not in result, (
            f"the browser run failed: {result.get('error')}\npage:\n{result.get('text')}\n"
            "console:\n" + "\n".join(result.get("console", [])))

        # The page logged in with SCRAM over the transport, and shows the reply.
        transport_name = "WebSocket" if transport == "websocket" else "BOSH"
        assert result["online"] == f"online as {web_bare}/browser ({transport_name}, SCRAM-SHA-256)"
        assert result["transcript"] == [
            {"kind": "outgoing", "text": f"me: {text}"},
            {"kind": "incoming", "text": f"{tcp_bare}/tcp: {tcp_user} read: {text}"},
        ]
        assert f"{tcp_user} read: {text}" in result["text"]
        assert result["status"] == "disconnected"

        # The slixmpp client got the message from the browser's session.
        assert [(str(m["from"]), m["body"], m["type"]) for m in received] == [
            (f"{web_bare}/browser", text, "chat")]

    run(deployment, body, timeout=BROWSER_TIMEOUT + 2 * STEP_TIMEOUT)

    image = screenshot.read_bytes()  # a PNG of the page, 900 pixels wide as chat.mjs sets it
    assert image.startswith(PNG_SIGNATURE) and len(image) > 1000
    assert image[12:16] == b"IHDR" and int.from_bytes(image[16:20], "big") == 900
