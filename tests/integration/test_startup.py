"""Start-up failures of the real server: each is one line naming the file,
the setting and the problem, a non-zero exit, and no hang."""

import socket
import subprocess
import sys

import pytest

from tests.integration.conftest import BIN, REPO, STARTUP_TIMEOUT, prepare


def start(config_path):
    """Run ``twistd -n xmppd``, expecting it to exit by itself; its status
    and its output (standard output and error together) as lines."""
    command = [sys.executable, str(BIN / "twistd"), "-n", "--pidfile=", "xmppd",
               "--config", str(config_path)]
    try:
        result = subprocess.run(command, cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=STARTUP_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"xmppd did not exit within {STARTUP_TIMEOUT:.0f} s:\n{e.output}")
    return result.returncode, result.stdout.splitlines()


def failure_line(config_path):
    """The one line a failed start prints (the exit status must be 1)."""
    status, lines = start(config_path)
    assert status == 1, lines
    assert len(lines) == 1, "\n".join(lines)
    assert lines[0].startswith(f"xmppd: {config_path}: ")
    return lines[0].removeprefix(f"xmppd: {config_path}: ")


def add_setting(config_path, text, top=False):
    old = config_path.read_text()
    config_path.write_text(text + "\n" + old if top else old.replace(
        "[limits]", text + "\n[limits]"))


def test_port_in_use(tmp_path):
    deployment = prepare(tmp_path)
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", deployment.c2s_port))
        busy.listen()
        assert failure_line(deployment.process.config_path) == (
            f"c2s.listen: cannot listen on tcp:{deployment.c2s_port}:interface=127.0.0.1: "
            "address already in use")


def test_second_server_on_the_same_admin_socket(tmp_path):
    deployment = prepare(tmp_path)
    config_path = deployment.process.config_path
    deployment.process.start()
    try:
        status, lines = start(config_path)
        assert status == 1
        assert f"xmppd: {config_path}: admin.socket: another xmppd is running: " \
               f"{tmp_path}/xmppd.sock answers" in lines
        assert all(line.startswith(f"xmppd: {config_path}: ") for line in lines), lines
    finally:
        deployment.process.check_clean_exit()


@pytest.mark.parametrize("setting, top, problem", [
    ('[s2s.routes]\n"peer.example" = "tcp:host=peer.example"', False,
     's2s.routes."peer.example": bad endpoint \'tcp:host=peer.example\': '),
    ('[s2s.routes]\n"peer.example" = "tcp:host=peer.example:port=99999"', False,
     's2s.routes."peer.example": bad endpoint \'tcp:host=peer.example:port=99999\': '
     "a host and a port (1-65535) are needed"),
    ('log_json = "no-such-dir/xmppd.json"', True,
     "log_json: cannot write {dir}/no-such-dir/xmppd.json: "
     "the directory {dir}/no-such-dir does not exist"),
    ('[admin]\nsocket = "no-such-dir/admin.sock"', False,
     "admin.socket: the directory {dir}/no-such-dir does not exist"),
])
def test_bad_settings(tmp_path, setting, top, problem):
    deployment = prepare(tmp_path)
    config_path = deployment.process.config_path
    add_setting(config_path, setting, top)
    assert failure_line(config_path).startswith(problem.format(dir=tmp_path))


def test_driver_not_installed(tmp_path):
    try:
        import pg8000  # noqa: F401
        pytest.skip("pg8000 is installed")
    except ImportError:
        pass
    deployment = prepare(tmp_path)
    config_path = deployment.process.config_path
    text = config_path.read_text()
    config_path.write_text(text.replace("sqlite:///xmppd.sqlite",
                                        "postgresql+pg8000://xmppd@127.0.0.1/xmppd"))
    assert failure_line(config_path) == (
        "storage.url: the driver for postgresql+pg8000 is not installed "
        "(No module named 'pg8000')")


def test_failed_start_leaves_no_database_file(tmp_path):
    deployment = prepare(tmp_path)
    config_path = deployment.process.config_path
    text = config_path.read_text()
    config_path.write_text(text.replace("sqlite:///xmppd.sqlite", "sqlite:///data/new.sqlite"))
    assert failure_line(config_path) == (
        f"storage.url: cannot use the database: the database {tmp_path}/data/new.sqlite "
        "does not exist: run 'xmppctl migrate'")
    assert not (tmp_path / "data").exists()
