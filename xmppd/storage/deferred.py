"""Deferred-returning access to a ``SQLStore`` for the Twisted server.

``AsyncStore`` hands every call to a runner, ``run(fn, *args, **kw) ->
Deferred``: ``StoragePool.run`` keeps the blocking database work off the
reactor thread; ``immediate_runner`` runs it synchronously, for tests.
"""

from collections.abc import Callable
from functools import wraps

from twisted.application import service
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from .sql import SQLStore

Runner = Callable[..., defer.Deferred]

METHODS = frozenset(
    {
        "close",
        "migrate",
        "schema_status",
        "check_schema",
        "ping",
        "create_account",
        "set_credentials",
        "get_credentials",
        "delete_account",
        "account_exists",
        "list_accounts",
        "get_roster",
        "get_roster_item",
        "set_roster_item",
        "remove_roster_item",
        "get_value",
        "set_value",
        "get_values",
        "delete_values",
        "store_offline",
        "take_offline",
        "count_offline",
        "total_offline",
    }
)


class AsyncStore:
    """The methods of ``SQLStore`` named in ``METHODS``, each returning a
    Deferred that fires with the method's result (or its exception)."""

    def __init__(self, store: SQLStore, run: Runner) -> None:
        self._store = store
        self._run = run

    def __getattr__(self, name: str) -> Callable[..., defer.Deferred]:
        if name not in METHODS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        method = getattr(self._store, name)

        @wraps(method)
        def call(*args, **kw) -> defer.Deferred:
            return self._run(method, *args, **kw)

        return call


class StoragePool(service.Service):
    """The thread pool storage calls (and other blocking work, such as
    PLAIN's key derivation) run in, as a service.

    :meth:`run` is the runner for :class:`AsyncStore`: it calls a function
    in the pool and fires its Deferred in the reactor thread.  On stop it
    waits (at most ``grace`` seconds) until no call is pending, so work that
    takes several storage steps, such as a message checked and then stored
    offline, is finished before the pool stops; then ``closing`` (if given,
    such as ``SQLStore.close``) is called.
    """

    def __init__(self, reactor, grace=10.0, poll=0.01, closing=None):
        self.reactor = reactor
        self._closing = closing
        self.pool = ThreadPool(1, 8, "xmppd-storage")
        self.pending = 0
        self._grace = grace
        self._poll = poll

    def run(self, fn, *args, **kw) -> defer.Deferred:
        self.pending += 1

        def done(result):
            self.pending -= 1
            return result

        return threads.deferToThreadPool(self.reactor, self.pool, fn, *args, **kw).addBoth(done)

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
