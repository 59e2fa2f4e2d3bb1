"""Log output for the server: twisted.logger events filtered by level.

Human-readable lines on standard output, which is what journald and
``twistd -n`` want.  ``twistd --logfile`` or ``--logger`` still take over
when given.  The level comes from the config's ``log_level`` and can be
changed while the server runs.
"""

import sys

from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, textFileLogObserver)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info,
          "warn": LogLevel.warn, "error": LogLevel.error}

level_filter = LogLevelFilterPredicate(LogLevel.info)


def set_level(level):
    """Log events of ``level`` ("debug", "info", "warn", "error") and above."""
    level_filter.setLogLevelForNamespace(None, LEVELS[level])


def observer():
    """The log observer twistd is given (``--logger xmppd.logs.observer``)."""
    return FilteringLogObserver(textFileLogObserver(sys.stdout), [level_filter])
