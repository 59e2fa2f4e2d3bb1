"""The slixmpp script of README.md runs as written against the server
``make run`` serves.

The server is set up as ``make run`` sets it up in ./var (``xmppctl init var
--domain localhost``, the account demo@localhost with its password in
var/demo-password), here in a temporary directory where the script runs, so
its relative paths (var/demo-password, var/certs/localhost.crt) are the
README's own.  One substitution only: port 5222 becomes a free port, since
this machine may already serve 5222.  The server listens on 127.0.0.1 only.
"""

import re
import secrets
import subprocess
import sys
import textwrap

import pytest

from tests.integration.conftest import REPO, Deployment, ServerProcess, free_ports, run_xmppctl
from tests.integration.test_install import listen_on_loopback

SCRIPT_TIMEOUT = 60.0  # seconds for the whole script; it bounds its own waits too
README_ADDRESS = '"127.0.0.1", 5222'


def readme_script():
    """The one Python code block of README.md, dedented."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```$", (REPO / "README.md").read_text(),
                        re.M | re.S)
    assert len(blocks) == 1, f"README.md has {len(blocks)} Python code blocks, expected 1"
    return textwrap.dedent(blocks[0][1])


@pytest.fixture
def make_run_server(tmp_path):
    """xmppd for ``localhost`` in ``tmp_path/var`` as ``make run`` makes it, running."""
    var = tmp_path / "var"
    ports = free_ports(2)
    run_xmppctl("init", var, "--domain", "localhost",
                "--c2s-port", ports[0], "--direct-tls-port", ports[1])
    config_path = var / "xmppd.toml"
    listen_on_loopback(config_path, ports)
    password = secrets.token_urlsafe(12)
    (var / "demo-password").write_text(password + "\n")
    run_xmppctl("-c", config_path, "adduser", "demo@localhost", "--password", password)
    process = ServerProcess(config_path, ports)
    try:
        process.start()
        yield Deployment("localhost", *ports, var / "certs" / "localhost.crt",
                         {"demo": password}, process)
    finally:
        process.check_clean_exit()


def test_readme_slixmpp_script_logs_in_and_messages_itself(make_run_server, tmp_path):
    script = readme_script()
    assert script.count(README_ADDRESS) == 1, f"the script does not connect to {README_ADDRESS}"
    script = script.replace(README_ADDRESS, f'"127.0.0.1", {make_run_server.c2s_port}')
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=SCRIPT_TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"the README script failed:\n{result.stdout}{result.stderr}"
    assert re.fullmatch(r"demo@localhost/\S+ says: Hello, me\n", result.stdout), result.stdout
