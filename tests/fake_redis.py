"""An in-memory Redis for unit tests of cluster nodes (xmppd.cluster.node).

fakeredis (its Lua scripts with lupa) holds the data and runs the commands;
this module stands in for txredisapi's connections, the way the node uses
them: ``execute_command`` answers at once with Redis's reply as txredisapi
gives it (RESP2, strings), ``PUBLISH`` reaches every subscribed node on its
clock's next turn, and a blocked ``XREADGROUP`` waits until something is
added or its ``BLOCK`` time passes on the clock.  While :attr:`FakeRedis.down`,
commands get no answer (txredisapi waits for the connection to come back)
until :meth:`FakeRedis.up`.  No socket, no thread, no real time.
"""

import fakeredis
from redis.exceptions import ResponseError
from twisted.internet import defer


class FakeRedis:
    """One Redis, shared by the nodes of a test."""

    def __init__(self):
        self.server = fakeredis.FakeServer()
        self.subscribers = []  # the nodes following the channels
        self.readers = []  # connections blocked in XREADGROUP
        self.down = False
        self.held = []  # (Deferred, connection, command) sent while down
        self.fail = None  # command -> True: answered with a lost connection
        self.commands = []  # every command sent, in order
        self.holding = None  # the start of a command whose answer comes late
        self.late = []  # (Deferred, answer) held

    def connect(self, node, url, reactor):
        """``ClusterNode``'s ``connect``: commands, reader, subscriber."""
        self.subscribers.append(node)
        reactor.callLater(0, node.subscribed)
        return Connection(self, reactor), Connection(self, reactor), Subscriber(self, node)

    def up(self):
        """Redis is back: the commands sent meanwhile get their answers."""
        self.down = False
        held, self.held = self.held, []
        for d, connection, command in held:
            connection.answer(d, command)

    def fail_once(self, *start):
        """The first command beginning with ``start`` fails (its connection
        lost); the list of the commands failed."""
        failed = []

        def fail(command):
            if command[:len(start)] == start and not failed:
                failed.append(command)
                return True
            return False

        self.fail = fail
        return failed

    def hold_answer(self, *start):
        """Redis runs the next command beginning with ``start``, and its
        answer waits until :meth:`release_answer`."""
        self.holding = start

    def release_answer(self):
        d, answer = self.late.pop(0)
        d.callback(answer)

    def call(self, *command):
        """Run ``command`` directly (as a test setting up or looking)."""
        return Connection(self, None).run(command)

    def woken(self):
        for connection in self.readers:
            connection.reactor.callLater(0, connection.retry_read)


class Connection:
    """A txredisapi connection handler of one node."""

    def __init__(self, redis, reactor):
        self.redis = redis
        self.reactor = reactor
        self.client = fakeredis.FakeRedis(server=redis.server, decode_responses=True,
                                          protocol=2).connection_pool.get_connection()
        self.reading = None  # (Deferred, command, timeout) of a blocked XREADGROUP

    def execute_command(self, *command):
        command = tuple(str(part) if isinstance(part, (int, float)) else part
                        for part in command)
        self.redis.commands.append(command)
        d = defer.Deferred()
        if self.redis.down:
            self.redis.held.append((d, self, command))
        else:
            self.answer(d, command)
        return d

    def answer(self, d, command):
        if self.redis.fail is not None and self.redis.fail(command):
            d.errback(ConnectionError("Lost connection"))
            return
        if command[0] == "XREADGROUP":
            self._read(d, command)
            return
        try:
            reply = self.run(command)
        except ResponseError as e:
            d.errback(e)
            return
        holding = self.redis.holding
        if holding is not None and command[:len(holding)] == holding:
            self.redis.holding = None
            self.redis.late.append((d, reply))
            return
        d.callback(reply)
        if command[0] in ("EVAL", "XADD", "DEL", "XGROUP"):
            self.redis.woken()

    def run(self, command):
        if command[0] == "PUBLISH":
            for node in self.redis.subscribers:
                node._reactor.callLater(0, node.received, command[1], command[2])
            return len(self.redis.subscribers)
        self.client.send_command(*command)
        return self.client.read_response()

    def _read(self, d, command):
        parts = list(command)
        block = parts.index("BLOCK")
        timeout = int(parts[block + 1]) / 1000
        del parts[block:block + 2]
        try:
            reply = self.run(tuple(parts))
        except ResponseError as e:
            d.errback(nogroup(e))
            return
        if reply is not None:
            d.callback(reply)
            return
        call = self.reactor.callLater(timeout, self._timed_out)
        self.reading = (d, tuple(parts), call)
        self.redis.readers.append(self)

    def _timed_out(self):
        d, _, _ = self._done()
        d.callback(None)

    def _done(self):
        reading, self.reading = self.reading, None
        self.redis.readers.remove(self)
        return reading

    def retry_read(self):
        if self.reading is None:  # answered meanwhile
            return
        d, command, call = self.reading
        try:
            reply = self.run(command)
        except ResponseError as e:
            call.cancel()
            self._done()
            d.errback(nogroup(e))
            return
        if reply is not None:
            call.cancel()
            self._done()
            d.callback(reply)

    def disconnect(self):
        self.client.disconnect()
        return defer.succeed(None)


def nogroup(error):
    """``error`` as Redis answers an ``XREADGROUP`` on a stream that is gone."""
    if "requires the key to exist" in str(error):
        return ResponseError("NOGROUP No such key or consumer group")
    return error


class Subscriber:
    """The subscribed connection of ``node``."""

    def __init__(self, redis, node):
        self.redis = redis
        self.node = node

    def disconnect(self):
        if self.node in self.redis.subscribers:
            self.redis.subscribers.remove(self.node)
        return defer.succeed(None)
