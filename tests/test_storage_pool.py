"""The storage thread pool drains pending work before it stops."""

from twisted.internet.task import Clock

from xmppd.storage.deferred import StoragePool


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
