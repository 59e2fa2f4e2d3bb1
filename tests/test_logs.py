"""Log levels, stanza tracing and JSON log lines."""

import json

from twisted.logger import Logger, LogLevel

from xmppd import logs
from xmppd.config import parse


def test_level_and_tracing():
    try:
        logs.set_level("debug")
        assert logs.tracing
        assert logs.level_filter.logLevelForNamespace("x") == LogLevel.debug
        logs.set_level("warn")
        assert not logs.tracing
        assert logs.level_filter.logLevelForNamespace("x") == LogLevel.warn
    finally:
        logs.set_level("info")


def test_json_lines(tmp_path, capsys):
    config = parse('log_json = "events.json"\n[hosts."a.test"]\n', str(tmp_path / "x.toml"))
    try:
        logs.configure(config)
        observer = logs.observer()
        log = Logger(namespace="xmppd.test", observer=observer)
        log.info("hello {who}", who="world")
        log.debug("hidden")
    finally:
        logs.json_path = None
        logs.set_level("info")
    assert "hello world" in capsys.readouterr().out
    [line] = (tmp_path / "events.json").read_text().strip("\x1e\n").split("\n")
    event = json.loads(line.strip("\x1e"))
    assert event["who"] == "world" and event["log_namespace"] == "xmppd.test"
