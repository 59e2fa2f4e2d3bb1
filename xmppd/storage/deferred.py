"""Deferred-returning access to a ``SQLStore`` for the Twisted server.

``AsyncStore`` hands every call to a runner, ``run(fn, *args, **kw) ->
Deferred``: ``StoragePool.run`` keeps the blocking database work off the
reactor thread; ``immediate_runner`` runs it synchronously, for tests.

Each call is made in a *lane* (:mod:`xmppd.storage.kinds`): ``bulk`` for
the interface methods marked so (offline and archive appends), else
``interactive``.  ``AsyncStore`` sets the lane of the call it hands to its
runner in :data:`current_lane`, so that a runner which wraps calls (to time
them, say) need not know of lanes; ``StoragePool.run`` reads it.
"""

from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from functools import wraps

from twisted.application import service
from twisted.internet import defer
from twisted.python.threadpool import ThreadPool

from .kinds import BULK, INTERACTIVE, lane, methods
from .sql import SQLStore

Runner = Callable[..., defer.Deferred]

current_lane: ContextVar[str] = ContextVar("xmppd_storage_lane", default=INTERACTIVE)


class AsyncStore:
    """A ``SQLStore`` for the server: :meth:`open` gives a typed store
    (:mod:`xmppd.storage.kinds`) whose interface methods return Deferreds."""

    def __init__(self, store: SQLStore, run: Runner) -> None:
        self._store = store
        self._run = run

    def open(self, kind: str, name: str | None = None) -> "AsyncView":
        """The store of ``kind``, scoped to ``name`` where the kind is."""
        return AsyncView(kind, self._store.open(kind, name), self._run)


class AsyncView:
    """A typed store whose interface methods return Deferreds; nothing else
    of the store is reachable."""

    def __init__(self, kind: str, store, run: Runner) -> None:
        self.kind = kind
        for name, declared in methods(kind).items():
            setattr(self, name, _deferred(getattr(store, name), f"{kind}_{name}",
                                          lane(declared), run, declared))


def _deferred(method, label: str, lane_: str, run: Runner,
              described) -> Callable[..., defer.Deferred]:
    """``method`` run by ``run`` in ``lane_``, documented as ``described``;
    ``label`` names the call (the ``method`` label of the storage metrics)."""

    def call(*args, **kw):
        return method(*args, **kw)

    call.__name__ = label

    @wraps(described)
    def submit(*args, **kw) -> defer.Deferred:
        token = current_lane.set(lane_)
        try:
            return run(call, *args, **kw)
        finally:
            current_lane.reset(token)

    return submit


class StoragePool(service.Service):
    """The thread pool storage calls (and other blocking work, such as
    PLAIN's key derivation) run in, as a service.

    :meth:`run` is the runner for :class:`AsyncStore`: it calls a function
    in the pool and fires its Deferred in the reactor thread.  Calls wait
    in two queues, one per lane, and start when a thread is free: queued
    interactive calls always start first, and bulk calls never hold more
    than ``bulk_threads`` of the ``threads`` threads, so a login's reads
    never wait behind a flood of offline writes.

    On stop it waits (at most ``grace`` seconds) until no call is pending,
    so work that takes several storage steps, such as a message checked and
    then stored offline, is finished before the pool stops; then
    ``closing`` (if given, such as ``SQLStore.close``) is called.
    """

    def __init__(self, reactor, grace=10.0, poll=0.01, closing=None, threads=8,
                 bulk_threads=4):
        if not 0 < bulk_threads < threads:
            raise ValueError("bulk calls need a thread, and must leave one for the others")
        self.reactor = reactor
        self._closing = closing
        self.pool = ThreadPool(1, threads, "xmppd-storage")
        self.pending = 0  # calls queued or running
        self._grace = grace
        self._poll = poll
        self._threads = threads
        self._limits = {INTERACTIVE: threads, BULK: bulk_threads}
        self._queues = {INTERACTIVE: deque(), BULK: deque()}
        self._running = {INTERACTIVE: 0, BULK: 0}

    def run(self, fn, *args, **kw) -> defer.Deferred:
        """Call ``fn(*args, **kw)`` in a thread, in the lane of
        :data:`current_lane`; a Deferred of its result."""
        d = defer.Deferred()
        self.pending += 1
        self._queues[current_lane.get()].append((d, fn, args, kw))
        self._start_queued()
        return d

    def _start_queued(self):
        for lane_ in (INTERACTIVE, BULK):
            queue = self._queues[lane_]
            while (queue and sum(self._running.values()) < self._threads
                   and self._running[lane_] < self._limits[lane_]):
                self._start(lane_, *queue.popleft())

    def _start(self, lane_, d, fn, args, kw):
        self._running[lane_] += 1

        def finished(succeeded, result):  # in the worker thread
            self.reactor.callFromThread(self._finished, lane_, d, succeeded, result)

        self.pool.callInThreadWithCallback(finished, fn, *args, **kw)

    def _finished(self, lane_, d, succeeded, result):
        self._running[lane_] -= 1
        self.pending -= 1
        self._start_queued()
        if succeeded:
            d.callback(result)
        else:
            d.errback(result)

    def startService(self):
        super().startService()
        self.pool.start()

    def stopService(self):
        super().stopService()
        if not getattr(self.reactor, "running", True):
            # A failed start: no reactor runs the polling below, and a
            # worker thread left running would keep the process alive.
            self._stop_pool()
            return defer.succeed(None)
        drained = defer.Deferred()
        deadline = self.reactor.seconds() + self._grace

        def check():
            # Polled, never checked in a callback: a call's callbacks may
            # start the next call right after the counter went down.
            if self.pending and self.reactor.seconds() < deadline:
                self.reactor.callLater(self._poll, check)
            else:
                self._stop_pool()
                drained.callback(None)

        self.reactor.callLater(0, check)
        return drained

    def _stop_pool(self):
        self.pool.stop()
        if self._closing is not None:
            self._closing()


def immediate_runner(fn, *args, **kw) -> defer.Deferred:
    """A runner calling functions at once in the calling thread."""
    return defer.maybeDeferred(fn, *args, **kw)
