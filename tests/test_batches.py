"""Writes batched while one is under way (xmppd.storage.batches)."""

from twisted.internet import defer
from twisted.logger import Logger

from xmppd.storage import StorageError
from xmppd.storage.batches import MAX_BATCH, BatchedWrites


class Writes:
    """A write that waits until told: the batches it was given."""

    def __init__(self):
        self.batches = []
        self.pending = []

    def __call__(self, items):
        self.batches.append(list(items))
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def finish(self, failure=None):
        """End the write under way (one at a time): every item stored, or
        ``failure``."""
        d = self.pending.pop()
        if failure is not None:
            d.errback(failure)
        else:
            d.callback([True] * len(self.batches[-1]))


def outcomes(d):
    seen = []
    d.addBoth(seen.append)
    return seen


def test_items_that_come_during_a_write_go_together_into_the_next():
    writes = Writes()
    batched = BatchedWrites(writes, Logger(), "items")
    first = outcomes(batched.add("a"))
    rest = [outcomes(batched.add(item)) for item in "bcd"]
    assert writes.batches == [["a"]]
    writes.finish()
    assert first == [True] and rest == [[], [], []]
    assert writes.batches == [["a"], ["b", "c", "d"]]
    writes.finish()
    assert rest == [[True]] * 3


def test_an_item_not_waited_for_is_written_without_a_deferred():
    writes = Writes()
    batched = BatchedWrites(writes, Logger(), "items")
    assert batched.add("a", wait=False) is None
    waited = outcomes(batched.add("b"))
    batched.add("c", wait=False)
    writes.finish()
    writes.finish()
    assert writes.batches == [["a"], ["b", "c"]] and waited == [True]


def test_a_failed_write_fails_its_items_and_the_next_batch_goes_on():
    writes = Writes()
    batched = BatchedWrites(writes, Logger(), "items")
    first = outcomes(batched.add("a"))
    batched.add("b", wait=False)
    later = outcomes(batched.add("c"))
    writes.finish(StorageError("disk full"))
    assert first[0].check(StorageError)
    writes.finish()
    assert writes.batches == [["a"], ["b", "c"]] and later == [True]


def test_a_batch_holds_at_most_max_batch_items():
    writes = Writes()
    batched = BatchedWrites(writes, Logger(), "items")
    batched.add(-1, wait=False)
    for n in range(MAX_BATCH + 1):
        batched.add(n, wait=False)
    writes.finish()
    writes.finish()
    assert [len(batch) for batch in writes.batches] == [1, MAX_BATCH, 1]


def test_callbacks_get_their_outcome_and_one_that_raises_stops_no_other():
    writes = Writes()
    batched = BatchedWrites(writes, Logger(), "items")
    seen = []

    def raising(outcome, name):
        raise RuntimeError(name)

    batched.add("a", wait=False)
    batched.then("b", seen.append)
    batched.then("c", raising, "c")
    batched.then("d", lambda outcome, name: seen.append((outcome, name)), "d")
    writes.finish()
    writes.finish()
    assert seen == [True, (True, "d")]
    batched.then("e", seen.append)
    writes.finish(StorageError("disk full"))
    assert seen[-1].check(StorageError)
