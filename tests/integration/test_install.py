"""The package as people install it: a wheel built from this checkout,
installed into a fresh virtual environment, serves clients.

The wheel must ship the twistd plugin (``twisted/plugins/``, which has no
``__init__.py``), every file of ``xmppd/`` with the migrations, and the
licence, and nothing else under ``twisted/``: a ``twisted/__init__.py`` would
shadow Twisted itself.  The virtual environment's own ``xmppctl`` and
``twistd`` then set up and run a server outside the checkout, so nothing can
be imported from the source tree by accident.  Dependencies come from the
package index (or pip's cache).
"""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.integration.conftest import (DOMAIN, PASSWORDS, REPO, Deployment, ServerProcess,
                                        free_ports)

PLUGIN = "twisted/plugins/xmppd_plugin.py"
BUILD_TIMEOUT = 300.0  # seconds for pip to build the wheel
INSTALL_TIMEOUT = 600.0  # seconds for a venv with the wheel and its dependencies
COMMAND_TIMEOUT = 60.0  # seconds for one twistd or xmppctl command

# What builds and runs leave in a checkout: not part of the source.
NOT_SOURCE = shutil.ignore_patterns(".*", "build", "dist", "var", "*.egg-info", "__pycache__",
                                    "*.pyc", "dropin.cache")


def environment():
    """This process's environment without what would make Python or pip use
    the test's own virtual environment or the checkout."""
    return {name: value for name, value in os.environ.items()
            if name not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def command(*args, cwd, timeout=COMMAND_TIMEOUT):
    """Run ``args`` in ``cwd``; its output, or the test fails with it."""
    args = [str(arg) for arg in args]
    result = subprocess.run(args, cwd=cwd, env=environment(), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited with {result.returncode}:\n"
                    f"{result.stdout}{result.stderr}", pytrace=False)
    return result.stdout


def listen_on_loopback(config_path, ports):
    """Make the listeners ``xmppctl init`` wrote (``"tcp:PORT"``, every
    interface) listen on 127.0.0.1 only."""
    text = config_path.read_text()
    for port in ports:
        listener = f'"tcp:{port}"'
        assert listener in text, f"no listener {listener} in {config_path}:\n{text}"
        text = text.replace(listener, f'"tcp:{port}:interface=127.0.0.1"')
    config_path.write_text(text)


class InstalledServer(ServerProcess):
    """``twistd -n xmppd`` of a virtual environment, run in the configuration's
    directory rather than in the checkout."""

    def __init__(self, bin_dir, config_path, ports):
        super().__init__(config_path, ports)
        self.bin_dir = bin_dir

    def start(self):
        """Start the server; wait until every port accepts connections."""
        argv = [str(self.bin_dir / "twistd"), "-n", "--pidfile=", "xmppd",
                   "--config", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=self.config_path.parent, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env={**environment(), "PYTHONUNBUFFERED": "1"})
        self._wait_ready()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel ``pip wheel`` builds from a copy of the checkout (a build in
    the checkout itself would pack whatever an earlier one left in build/)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    command(sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
            "--wheel-dir", work, source, cwd=work, timeout=BUILD_TIMEOUT)
    (wheel,) = work.glob("xmppd-*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory, wheel):
    """The bin directory of a new virtual environment with the wheel installed."""
    venv = tmp_path_factory.mktemp("venv")
    command(sys.executable, "-m", "venv", venv, cwd=venv)
    command(venv / "bin" / "python", "-m", "pip", "install", "--quiet",
            "--disable-pip-version-check", wheel, cwd=venv, timeout=INSTALL_TIMEOUT)
    return venv / "bin"


@pytest.fixture
def installed_server(venv_bin, tmp_path):
    """The installed server for ``DOMAIN`` with alice, set up by the installed
    ``xmppctl init`` (its self-signed certificate is the clients' trust anchor)
    and running; it must exit cleanly afterwards."""
    config_dir = tmp_path / "etc"
    ports = free_ports(2)
    command(venv_bin / "xmppctl", "init", config_dir, "--domain", DOMAIN,
            "--c2s-port", ports[0], "--direct-tls-port", ports[1], cwd=tmp_path)
    config_path = config_dir / "xmppd.toml"
    listen_on_loopback(config_path, ports)
    command(venv_bin / "xmppctl", "-c", config_path, "adduser", f"alice@{DOMAIN}",
            "--password", PASSWORDS["alice"], cwd=tmp_path)
    process = InstalledServer(venv_bin, config_path, ports)
    deployment = Deployment(DOMAIN, *ports, config_dir / "certs" / f"{DOMAIN}.crt",
                            {"alice": PASSWORDS["alice"]}, process)
    try:
        process.start()
        yield deployment
    finally:
        process.check_clean_exit()


def source_files(directory):
    """The files under ``directory`` of the checkout, relative to it, as a wheel names them."""
    return {path.relative_to(REPO).as_posix() for path in (REPO / directory).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


def test_wheel_ships_the_plugin_every_module_and_migration(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert sorted(name for name in names if name.startswith("twisted/")) == [PLUGIN]
    assert "xmppd/storage/migrations/script.py.mako" in names
    assert any(name.startswith("xmppd/storage/migrations/versions/0") for name in names)
    assert source_files("xmppd") - names == set()


def test_wheel_carries_the_licence(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        licences = [name for name in names
                    if re.fullmatch(r"[^/]+\.dist-info/(licenses/)?LICENSE", name)]
        assert "License-File: LICENSE" in archive.read(metadata).decode().splitlines()
        assert len(licences) == 1
        assert archive.read(licences[0]) == (REPO / "LICENSE").read_bytes()


def test_installed_twistd_lists_xmppd(venv_bin):
    location = command(venv_bin / "python", "-c", "import xmppd; print(xmppd.__file__)",
                       cwd=venv_bin)
    assert Path(location.strip()).is_relative_to(venv_bin.parent)
    assert re.search(r"^\s+xmppd\s", command(venv_bin / "twistd", "--help", cwd=venv_bin), re.M)


def test_installed_server_logs_a_client_in(installed_server, run):
    async def body(clients):
        client = await clients.login("alice")
        assert client.tls is not None
        client.send_message(client.jid, "hello from the installed server")
        message = await client.next_message()
        assert message["body"] == "hello from the installed server"

    run(installed_server, body)
