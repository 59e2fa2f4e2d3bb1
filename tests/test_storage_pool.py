"""The storage thread pool: interactive calls never wait behind bulk
writes; pending work is drained before it stops."""

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from xmppd.storage import StorageError
from xmppd.storage.deferred import StoragePool, current_lane
from xmppd.storage.kinds import BULK, INTERACTIVE


class FakePool:
    stopped = False

    def start(self):
        pass

    def stop(self):
        self.stopped = True


def make_pool(clock):
    pool = StoragePool(clock, grace=5.0)
    pool.pool = FakePool()
    pool.startService()
    return pool


def test_stop_waits_for_pending_calls():
    clock = Clock()
    pool = make_pool(clock)
    pool.pending = 1
    drained = pool.stopService()
    clock.advance(1)
    assert not pool.pool.stopped and not drained.called
    pool.pending = 0
    clock.advance(0.01)
    assert pool.pool.stopped and drained.called


def test_stop_gives_up_after_the_grace_period():
    clock = Clock()
    pool = make_pool(clock)
    pool.pending = 3
    drained = pool.stopService()
    for _ in range(600):
        clock.advance(0.01)
    assert pool.pool.stopped and drained.called


def test_stop_when_idle_is_immediate():
    clock = Clock()
    pool = make_pool(clock)
    drained = pool.stopService()
    clock.advance(0)
    assert pool.pool.stopped and drained.called


class ThreadsByHand:
    """A thread pool whose calls run when the test says so, in any order."""

    def __init__(self):
        self.started = []  # [(on_result, fn, args, kw)]

    def start(self):
        pass

    def callInThreadWithCallback(self, on_result, fn, *args, **kw):
        self.started.append((on_result, fn, args, kw))

    def finish(self, fn):
        """Run the started call of ``fn``, as a worker thread would."""
        call = next(c for c in self.started if c[1] is fn)
        self.started.remove(call)
        on_result, fn, args, kw = call
        on_result(True, fn(*args, **kw))


class ReactorThread(Clock):
    def callFromThread(self, fn, *args, **kw):
        fn(*args, **kw)


def pool_by_hand(threads=4, bulk_threads=2):
    pool = StoragePool(ReactorThread(), threads=threads, bulk_threads=bulk_threads)
    pool.pool = ThreadsByHand()
    pool.startService()
    return pool


def run_in(pool, lane, fn, *args):
    token = current_lane.set(lane)
    try:
        return pool.run(fn, *args)
    finally:
        current_lane.reset(token)


def offline_write(n):
    return n


def read_credentials(user):
    return f"keys of {user}"


def started(pool):
    return [(fn.__name__, args) for _, fn, args, _ in pool.pool.started]


def test_an_interactive_read_never_waits_behind_bulk_writes():
    pool = pool_by_hand(threads=4, bulk_threads=2)
    writes = [run_in(pool, BULK, offline_write, n) for n in range(100)]
    assert started(pool) == [("offline_write", (0,)), ("offline_write", (1,))]
    read = run_in(pool, INTERACTIVE, read_credentials, "alice")
    assert started(pool)[-1] == ("read_credentials", ("alice",))
    pool.pool.finish(read_credentials)
    assert read.result == "keys of alice"
    assert pool.pending == 100 and not writes[2].called


def test_a_freed_thread_goes_to_the_queued_interactive_call_first():
    pool = pool_by_hand(threads=2, bulk_threads=1)
    writes = [run_in(pool, BULK, offline_write, n) for n in range(10)]
    reads = [run_in(pool, INTERACTIVE, read_credentials, user) for user in ("a", "b", "c")]
    assert started(pool) == [("offline_write", (0,)), ("read_credentials", ("a",))]
    pool.pool.finish(offline_write)  # its thread takes the next read, not a write
    assert started(pool) == [("read_credentials", ("a",)), ("read_credentials", ("b",))]
    assert writes[0].result == 0
    pool.pool.finish(read_credentials)
    pool.pool.finish(read_credentials)
    assert started(pool) == [("read_credentials", ("c",)), ("offline_write", (1,))]
    pool.pool.finish(read_credentials)
    assert [read.result for read in reads] == ["keys of a", "keys of b", "keys of c"]


def test_bulk_writes_run_in_order_and_all_finish():
    pool = pool_by_hand(threads=3, bulk_threads=2)
    writes = [run_in(pool, BULK, offline_write, n) for n in range(20)]
    order = []
    while pool.pool.started:
        order.append(pool.pool.started[0][2])
        pool.pool.finish(pool.pool.started[0][1])
    assert order == [(n,) for n in range(20)]
    assert [write.result for write in writes] == list(range(20))
    assert pool.pending == 0


def test_a_failed_call_fails_its_deferred():
    pool = pool_by_hand()
    d = run_in(pool, INTERACTIVE, read_credentials, "alice")
    on_result, _, _, _ = pool.pool.started.pop()
    on_result(False, Failure(StorageError("disk I/O error")))
    assert isinstance(d.result, Failure) and d.result.check(StorageError)
    d.addErrback(lambda _: None)
    assert pool.pending == 0


def test_bulk_calls_leave_a_thread_for_the_others():
    with pytest.raises(ValueError):
        StoragePool(Clock(), threads=4, bulk_threads=4)
