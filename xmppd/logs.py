"""Log output for the server: twisted.logger events filtered by level.

Human-readable lines to standard output by default (what journald and
``twistd -n`` want), or to the file given with ``twistd --logfile``.
"""

import sys

from twisted.logger import (
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, textFileLogObserver)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info,
          "warn": LogLevel.warn, "error": LogLevel.error}


class LevelFilter:
    """A log level that can be changed while the server runs."""

    def __init__(self, level):
        self.predicate = LogLevelFilterPredicate(LEVELS[level])

    def set(self, level):
        self.predicate.setLogLevelForNamespace(None, LEVELS[level])


def observer_factory(level_filter, logfile=None):
    """A twistd ``logger`` factory writing to ``logfile`` or stdout."""

    def make():
        out = sys.stdout if logfile in (None, "", "-") else open(logfile, "a", encoding="utf-8")
        return FilteringLogObserver(textFileLogObserver(out), [level_filter.predicate])

    return make
