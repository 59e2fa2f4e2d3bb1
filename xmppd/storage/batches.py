"""Writes batched while one is under way.

:class:`BatchedWrites` runs one write at a time: the items that come while
it runs go together into the next one, one transaction (at most
``MAX_BATCH`` items), so that a store keeps up with many writers without a
transaction each (offline messages, XEP-0160; archived messages,
XEP-0313).  A batch holds plain callbacks, called in one pass once it is
written: no Deferred per item unless the caller asks for one."""

from twisted.internet import defer
from twisted.python.failure import Failure

from . import StorageError

MAX_BATCH = 500  # items in one transaction


class BatchedWrites:
    """``write(items)`` (a Deferred of one outcome per item, or the
    outcomes) called with the items that waited.  Each item's callback is
    called with its outcome once the write holding it is committed, or
    with the write's failure, which is logged once for the whole batch
    (``what``: what the items are, for the log line)."""

    def __init__(self, write, log, what):
        self._write_many = write
        self._log = log
        self._what = what
        self._waiting = []  # [(item, callback or None, args)]
        self._writing = False

    def add(self, item, wait=True):
        """Write ``item`` with the next batch; a Deferred of its outcome, or
        None without ``wait`` (a failure is logged all the same)."""
        if not wait:
            self.then(item, None)
            return None
        d = defer.Deferred()
        self.then(item, _fire, d)
        return d

    def then(self, item, callback, *args):
        """Write ``item`` with the next batch, then call ``callback(outcome,
        *args)``, or ``callback(failure, *args)`` (a Failure) if the write
        failed; no callback if None."""
        self._waiting.append((item, callback, args))
        if not self._writing:
            self._write()

    def _write(self):
        batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
        self._writing = True
        d = defer.maybeDeferred(self._write_many, [item for item, _, _ in batch])
        d.addBoth(self._written, batch)

    def _written(self, result, batch):
        self._writing = False
        if isinstance(result, Failure):
            if result.check(StorageError):
                self._log.error("storing {count} {what} failed: {error}", count=len(batch),
                                what=self._what, error=result.value)
            else:
                self._log.failure("storing {count} {what} failed", result, count=len(batch),
                                  what=self._what)
            outcomes = [result] * len(batch)
        else:
            outcomes = result
        for (_, callback, args), outcome in zip(batch, outcomes):
            if callback is not None:
                try:
                    callback(outcome, *args)
                except Exception:
                    self._log.failure("after storing {what}", what=self._what)
        if self._waiting and not self._writing:
            self._write()


def _fire(outcome, d):
    if isinstance(outcome, Failure):
        d.errback(outcome)
    else:
        d.callback(outcome)
