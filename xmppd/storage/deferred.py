"""Deferred-returning access to a ``SQLStore`` for the Twisted server.

``AsyncStore`` hands every call to a runner, ``run(fn, *args, **kw) ->
Deferred``: ``thread_pool_runner`` keeps the blocking database work off the
reactor thread; ``immediate_runner`` runs it synchronously, for tests.
"""

from collections.abc import Callable
from functools import partial, wraps

from twisted.internet import defer, threads

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


def thread_pool_runner(reactor, threadpool) -> Runner:
    """A runner calling functions in ``threadpool``; their Deferreds fire in
    the reactor thread."""
    return partial(threads.deferToThreadPool, reactor, threadpool)


def immediate_runner(fn, *args, **kw) -> defer.Deferred:
    """A runner calling functions at once in the calling thread."""
    return defer.maybeDeferred(fn, *args, **kw)
