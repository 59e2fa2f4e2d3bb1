"""A storage runner a test can pause: calls run at once until
:meth:`PausableRunner.pause`, then wait until :meth:`PausableRunner.flush`
(which also runs the calls made while flushing)."""

from twisted.internet import defer

from tests.harness import make_server


class PausableRunner:
    def __init__(self):
        self.paused = False
        self.calls = []

    def __call__(self, fn, *args, **kw):
        if not self.paused:
            return defer.maybeDeferred(fn, *args, **kw)
        d = defer.Deferred()
        self.calls.append((d, fn, args, kw))
        return d

    def pause(self):
        self.paused = True
        return self

    def flush(self):
        while self.calls:
            d, fn, args, kw = self.calls.pop(0)
            d.callback(fn(*args, **kw))

    def resume(self):
        """Run what waits, and later calls at once again."""
        self.paused = False
        self.flush()


def pausable_server(tmp_path, **options):
    """``make_server`` whose storage runs through a :class:`PausableRunner`
    (``server.runner``)."""
    runner = PausableRunner()
    server = make_server(tmp_path, runner=runner, **options)
    server.runner = runner
    return server
