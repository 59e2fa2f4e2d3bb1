"""In-order processing: one queue per session and per server link.

RFC 6120 §10.1: a server MUST process the stanzas it receives over one
stream in the order it received them, and MUST NOT deliver a later stanza
before an earlier one.  A handler may have to wait (for the storage, say)
before it has handled its stanza; :class:`SerialQueue` makes every later
item of the same stream wait for it.  This is the one ordering mechanism of
xmppd (like Prosody's per-session async runner): a handler returns a
Deferred, and the stanzas that follow are processed once it has fired.

A stanza therefore counts as handled, for what follows it, only when its
Deferred has fired: an offline message once its row is committed, a roster
change once it is stored.  While items wait, the queue can pause the source
(``on_full``, e.g. stop reading the socket) and resume it (``on_drained``),
so a client that sends faster than its stanzas are handled is slowed down
instead of filling memory.

:class:`SerialJobs` orders work a module does in the background, away from
any stream: for one key (an account), one job at a time.
"""

from collections import deque

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

log = Logger()


class SerialQueue:
    """Calls ``process(item)`` for each pushed item, one at a time, in the
    order pushed.  When ``process`` returns an unfired Deferred, the next
    item waits until it fires (its failure is logged, not propagated).

    ``on_full()`` is called when more than ``high`` items wait and
    ``on_drained()`` when the waiting items are back to ``low`` or fewer.
    """

    __slots__ = ("_process", "_waiting", "_busy", "_high", "_low", "_full",
                 "_on_full", "_on_drained")

    def __init__(self, process, high=64, low=8, on_full=None, on_drained=None):
        self._process = process
        self._waiting = None  # a deque, made when something has to wait
        self._busy = False
        self._high = high
        self._low = low
        self._full = False
        self._on_full = on_full
        self._on_drained = on_drained

    def __len__(self):
        """Items waiting (not counting the one being handled)."""
        return len(self._waiting) if self._waiting else 0

    @property
    def busy(self):
        """Whether an item is being handled (or its Deferred has not fired)."""
        return self._busy

    def push(self, item):
        if not self._busy:
            self._run(item)
            return
        # An item pushed while one is handled (also from inside ``process``)
        # waits its turn.
        if self._waiting is None:
            self._waiting = deque()
        self._waiting.append(item)
        if not self._full and len(self._waiting) > self._high:
            self._full = True
            if self._on_full is not None:
                self._on_full()

    def clear(self):
        """Drop the waiting items (the source is gone); return them."""
        items, self._waiting = list(self._waiting or ()), None
        return items

    def _run(self, item):
        self._busy = True
        while True:
            try:
                result = self._process(item)
            except Exception:
                log.failure("processing {item!r} failed", item=item)
                result = None
            if result is not None and result is not True and isinstance(result, Deferred):
                result.addErrback(self._failed, item)
                # Fired but paused: its callbacks wait for another Deferred.
                if not result.called or result.paused:
                    result.addBoth(self._done)
                    return
            if not self._waiting:
                self._busy = False
                return
            item = self._next()

    def _next(self):
        item = self._waiting.popleft()
        if self._full and len(self._waiting) <= self._low:
            self._full = False
            if self._on_drained is not None:
                self._on_drained()
        return item

    def _done(self, _):
        if self._waiting:
            self._run(self._next())
        else:
            self._busy = False

    @staticmethod
    def _failed(failure, item):
        log.failure("processing {item!r} failed", failure, item=item)


class SerialJobs:
    """Runs the jobs of one key (an account, say) one at a time, in the
    order given, and those of different keys independently: a job that
    reads, then writes, what the next one reads (a module converting an
    account's data) finishes before the next starts."""

    __slots__ = ("_locks",)

    def __init__(self):
        self._locks = {}  # key -> its DeferredLock, while it has jobs

    def run(self, key, job, *args):
        """Deferred: the result of ``job(*args)``, called once the earlier
        jobs of ``key`` are done."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = DeferredLock()

        def done(result):
            if not lock.locked and self._locks.get(key) is lock:
                del self._locks[key]
            return result

        return lock.run(job, *args).addBoth(done)
