"""Log output for the server: twisted.logger events filtered by level.

Human-readable lines on standard output, which is what journald and
``twistd -n`` want, and, when ``log_json`` names a file, the same events as
JSON lines there (one object per line, for log shippers).  ``twistd
--logfile`` or ``--logger`` still take over when given.  The level comes from
the config's ``log_level`` and can change while the server runs; at
``debug`` every stanza in and out is traced.
"""

import sys

from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, jsonFileLogObserver,
    textFileLogObserver)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info,
          "warn": LogLevel.warn, "error": LogLevel.error}

level_filter = LogLevelFilterPredicate(LogLevel.info)
tracing = False  # stanza-level tracing, on at debug level
json_path = None


def configure(config):
    """Take the level and the JSON file from ``config`` (at start)."""
    global json_path
    json_path = config.log_json
    set_level(config.log_level)


def set_level(level):
    """Log events of ``level`` ("debug", "info", "warn", "error") and above."""
    global tracing
    level_filter.setLogLevelForNamespace(None, LEVELS[level])
    tracing = level == "debug"


def observer():
    """The log observer twistd is given (``--logger xmppd.logs.observer``)."""
    text = FilteringLogObserver(textFileLogObserver(sys.stdout), [level_filter])
    if json_path is None:
        return text
    json = FilteringLogObserver(
        jsonFileLogObserver(open(json_path, "a", encoding="utf-8")), [level_filter])

    def both(event):
        text(event)
        json(event)

    return both
