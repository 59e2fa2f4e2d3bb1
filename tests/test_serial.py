"""The serial queue: in-order processing (RFC 6120 §10.1); serial jobs per key."""

from twisted.internet import defer

from xmppd.core.serial import SerialJobs, SerialQueue


def recording(pending):
    """A process function that records items and returns the Deferred
    given for an item in ``pending`` (else handles it at once)."""
    seen = []

    def process(item):
        seen.append(item)
        return pending.get(item)

    return seen, process


def test_items_run_at_once_when_nothing_waits():
    seen, process = recording({})
    queue = SerialQueue(process)
    queue.push(1)
    queue.push(2)
    assert seen == [1, 2]
    assert not queue.busy and len(queue) == 0


def test_later_items_wait_for_a_pending_deferred():
    first = defer.Deferred()
    seen, process = recording({1: first})
    queue = SerialQueue(process)
    for item in (1, 2, 3):
        queue.push(item)
    assert seen == [1] and queue.busy and len(queue) == 2
    first.callback(None)
    assert seen == [1, 2, 3] and not queue.busy


def test_an_already_fired_deferred_does_not_make_items_wait():
    seen, process = recording({1: defer.succeed(None)})
    queue = SerialQueue(process)
    queue.push(1)
    queue.push(2)
    assert seen == [1, 2] and not queue.busy


def test_a_fired_deferred_waiting_on_another_makes_items_wait():
    inner = defer.Deferred()
    outer = defer.succeed(None).addCallback(lambda _: inner)  # fired, paused
    seen, process = recording({1: outer})
    queue = SerialQueue(process)
    queue.push(1)
    queue.push(2)
    assert seen == [1] and queue.busy
    inner.callback(None)
    assert seen == [1, 2] and not queue.busy


def test_a_failure_is_logged_and_the_queue_goes_on():
    first = defer.Deferred()
    seen, process = recording({1: first})
    queue = SerialQueue(process)
    queue.push(1)
    queue.push(2)
    first.errback(RuntimeError("storage down"))
    assert seen == [1, 2] and not queue.busy


def test_an_exception_is_logged_and_the_queue_goes_on():
    seen = []

    def process(item):
        seen.append(item)
        if item == 1:
            raise ValueError("bad")

    queue = SerialQueue(process)
    queue.push(1)
    queue.push(2)
    assert seen == [1, 2]


def test_full_and_drained_marks_pause_and_resume_the_source():
    first = defer.Deferred()
    seen, process = recording({1: first})
    events = []
    queue = SerialQueue(process, high=3, low=1, on_full=lambda: events.append("full"),
                        on_drained=lambda: events.append("drained"))
    for item in range(1, 6):
        queue.push(item)
    assert events == ["full"] and len(queue) == 4
    first.callback(None)
    assert seen == [1, 2, 3, 4, 5]
    assert events == ["full", "drained"]


def test_clear_drops_waiting_items():
    first = defer.Deferred()
    seen, process = recording({1: first})
    queue = SerialQueue(process)
    for item in (1, 2, 3):
        queue.push(item)
    assert queue.clear() == [2, 3]
    first.callback(None)
    assert seen == [1]


def test_an_item_pushed_while_one_is_processed_waits_its_turn():
    """Processing an item may push another (a stream closing after its
    stanzas): it runs after the items that were already waiting."""
    first = defer.Deferred()
    seen = []
    queue = None

    def process(item):
        seen.append(item)
        if item == 2:
            queue.push("pushed by 2")
        return first if item == 1 else None

    queue = SerialQueue(process)
    for item in (1, 2, 3):
        queue.push(item)
    first.callback(None)
    assert seen == [1, 2, 3, "pushed by 2"]
    assert not queue.busy and len(queue) == 0


def test_jobs_of_one_key_wait_for_each_other_not_for_other_keys():
    jobs = SerialJobs()
    first, seen = defer.Deferred(), []

    def job(name, result=None):
        seen.append(name)
        return result

    done = jobs.run("alice", job, "a1", first)
    later = jobs.run("alice", job, "a2", "second")
    jobs.run("bob", job, "b1")
    assert seen == ["a1", "b1"]
    first.callback("first")
    assert seen == ["a1", "b1", "a2"]
    assert (done.result, later.result) == ("first", "second")
    assert jobs._locks == {}


def test_a_failed_job_fails_its_deferred_and_the_next_runs():
    jobs = SerialJobs()
    failed = jobs.run("alice", lambda: 1 / 0)
    assert failed.result.check(ZeroDivisionError)
    failed.addErrback(lambda failure: None)
    assert jobs.run("alice", lambda: "next").result == "next"
