"""systemd readiness notification and the shipped unit files."""

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from xmppd.systemd import ReadinessService, notify, reloading

UNITS = Path(__file__).resolve().parents[1] / "contrib" / "systemd"


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield path, sock
    sock.close()


def received(sock):
    return sock.recv(4096).decode().split("\n")


def test_notify_sends_a_datagram(notify_socket):
    path, sock = notify_socket
    assert notify("READY=1", "STATUS=ok", environ={"NOTIFY_SOCKET": path})
    assert received(sock) == ["READY=1", "STATUS=ok"]


def test_notify_without_systemd_does_nothing():
    assert notify("READY=1", environ={}) is False


def test_reloading_carries_a_monotonic_timestamp():
    state, stamp = reloading()
    assert state == "RELOADING=1" and int(stamp.split("=")[1]) > 0


def test_readiness_service(notify_socket):
    path, sock = notify_socket
    readiness = ReadinessService(environ={"NOTIFY_SOCKET": path})
    readiness.startService()
    assert received(sock)[0] == "READY=1"
    readiness.stopService()
    assert received(sock) == ["STOPPING=1"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_units_verify(tmp_path):
    twistd = str(Path(sys.executable).parent / "twistd")
    for name in ("xmppd.service", "xmppd.socket"):
        text = (UNITS / name).read_text().replace("/usr/bin/twistd", twistd)
        (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no",
                             str(tmp_path / "xmppd.service"), str(tmp_path / "xmppd.socket")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
