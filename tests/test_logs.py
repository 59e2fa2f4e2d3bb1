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
    """Every line of ``log_json`` is one JSON object ``json.loads`` reads."""
    config = parse('log_json = "events.json"\n[hosts."a.test"]\n', str(tmp_path / "x.toml"))
    try:
        logs.configure(config)
        observer = logs.observer()
        log = Logger(namespace="xmppd.test", observer=observer)
        log.info("hello {who}", who="world")
        log.debug("hidden")
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("it broke")
    finally:
        logs.json_path = None
        logs.set_level("info")
    assert "hello world" in capsys.readouterr().out
    lines = (tmp_path / "events.json").read_text().splitlines()
    hello, broken = [json.loads(line) for line in lines]
    assert set(hello) == {"time", "level", "namespace", "message"}
    assert hello["level"] == "info" and hello["namespace"] == "xmppd.test"
    assert hello["message"] == "hello world"
    assert hello["time"].endswith("+00:00")
    assert broken["level"] == "critical" and broken["message"] == "it broke"
    assert "ZeroDivisionError" in broken["failure"]


def test_twistd_logfile_gets_the_filtered_text(tmp_path):
    """``twistd --logfile`` still goes through the level filter."""
    from xmppd.tap import Options

    class Twistd(dict):
        pass

    parent = Twistd(logger=None, logfile=str(tmp_path / "xmppd.log"))
    options = Options()
    options.parent = parent
    options.parseOptions(["--config", "x.toml"])
    try:
        assert parent["logger"] == "xmppd.logs.observer"
        log = Logger(namespace="xmppd.test", observer=logs.observer())
        log.info("to the file")
        log.debug("hidden")
    finally:
        logs.text_path = None
    text = (tmp_path / "xmppd.log").read_text()
    assert "to the file" in text and "hidden" not in text
