"""Log output for the server: twisted.logger events filtered by level.

Human-readable lines on standard output, which is what journald and
``twistd -n`` want, or in the file ``twistd --logfile`` names (rotated by
size, as twistd does); and, when ``log_json`` names a file, the same events
as JSON Lines there: one JSON object per line with ``time`` (ISO 8601,
UTC), ``level``, ``namespace``, the rendered ``message`` and, for an error
with a traceback, ``failure``.  The level comes from the config's
``log_level`` and can change while the server runs; at ``debug`` every
stanza in and out is traced.  ``twistd --logger`` replaces all of this with
the observer it names.
"""

import json
import sys
from datetime import datetime, timezone

from twisted.logger import (
    FileLogObserver, FilteringLogObserver, LogLevel, LogLevelFilterPredicate, formatEvent,
    textFileLogObserver)
from twisted.python.logfile import LogFile

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info,
          "warn": LogLevel.warn, "error": LogLevel.error}

level_filter = LogLevelFilterPredicate(LogLevel.info)
tracing = False  # stanza-level tracing, on at debug level
json_path = None
text_path = None  # twistd --logfile; None or "-" is standard output


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


def json_record(event):
    """The JSON Lines record of one log event (a dict)."""
    record = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc)
        .isoformat(timespec="milliseconds"),
        "level": event["log_level"].name if "log_level" in event else "info",
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return record


def json_lines_observer(output):
    """An observer writing each event to ``output`` as one JSON line."""
    return FileLogObserver(
        output, lambda event: json.dumps(json_record(event), ensure_ascii=False) + "\n")


def observer():
    """The log observer twistd is given (``--logger xmppd.logs.observer``)."""
    if text_path in (None, "-"):
        text_file = sys.stdout
    else:
        text_file = LogFile.fromFullPath(text_path)
    text = FilteringLogObserver(textFileLogObserver(text_file), [level_filter])
    if json_path is None:
        return text
    json_out = FilteringLogObserver(
        json_lines_observer(open(json_path, "a", encoding="utf-8")), [level_filter])

    def both(event):
        text(event)
        json_out(event)

    return both
