"""One node of a cluster: its heartbeat, its stream of stanzas, and the
reaping of dead nodes (docs/cluster.md).

Redis keys, under ``cluster.prefix`` (``P``):

- ``P:node:NAME``: the node's heartbeat, a key that expires after
  ``cluster.heartbeat`` seconds unless renewed (every third of it);
  ``P:nodes``: the set of node names.
- ``P:sessions:NAME``: a hash of the node's bound sessions, full JID to
  record (:func:`xmppd.cluster.directory.encode`); each change is also
  published on channel ``P:directory``, which every node follows to keep
  its mirror (:class:`~xmppd.cluster.directory.ClusterDirectory`).
- ``P:stream:NAME``: a Redis Stream of the stanzas other nodes route to the
  node's sessions (fields ``j``, the full JID, and ``x``, the stanza; or
  ``c``/``t``, a stream error to close the session with).  The node reads it
  through consumer group ``xmppd`` (``XREADGROUP``) and, once a batch is
  delivered, acknowledges and deletes its entries (``XACK``, ``XDEL``): the
  stream holds only what is not yet handled.
- ``P:lock:NAME``: a lock (:meth:`ClusterNode.lock`) for what one node at
  a time may change: an account's roster (RFC 6121 §3 subscription states
  are read, then written).
- channel ``P:events``: notifications of one node for the others
  (``tell``: caches to drop).
- ``P:components:all``: external components (XEP-0114) by the node they
  are connected to, followed through the directory channel too: the
  other nodes route a component's stanzas to that node (field ``r``), and
  a second connection of it elsewhere is refused.
- ``P:service:DOMAIN``: the lease of a service that keeps its state in
  memory (group chat, :meth:`~xmppd.core.router.Router.place`), held by
  the node that serves it and renewed with its heartbeat; the other nodes
  route the service's stanzas to that node's stream (field ``r``).  When
  the node dies, its lease expires and another node takes the service
  over: its persistent rooms come back from storage, their occupants
  rejoin (XEP-0410 self-pings tell clients to).

A node appends what it routes to another node in one script call per
stream and reactor turn (``XADD NOMKSTREAM`` for each entry).  Nothing
routed is lost silently (RFC 6121 §8.5.3.2): a stanza for a session that
is gone when its entry is read, or whose node's stream no longer exists
(the ``XADD`` answers nil), is handled as undeliverable
(:meth:`~xmppd.core.router.Router.undeliverable`: offline, bounced or
dropped as for an unavailable resource).  A node whose heartbeat key has
expired is reaped by the first survivor to take ``P:reap:NAME``: its
session records are dropped everywhere (their contacts get unavailable
presence, ``session/lost``) and its stream is taken over whole in one
script (renamed ``P:taken:THIS:RANDOM``, listed in ``P:taking:THIS``),
each entry handled as undeliverable, and deleted once what went offline
is stored; a stanza sent after that finds no stream.  A node stopping
does the same with its own stream once its sessions have ended, and a
node starting under the name of one that died reaps that one first.

Redis is reached with txredisapi (a Twisted client): three connections,
one for commands (in order, pipelined by the reactor), one blocked in
``XREADGROUP``, one subscribed to the channels.
"""

import json
import os
import socket
from urllib.parse import unquote, urlsplit

import txredisapi
from prometheus_client import Gauge
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from xmppd.cluster.directory import ClusterDirectory, encode
from xmppd.core.events import ACCOUNT_OFFLINE, SESSION_LOST
from xmppd.core.stanzas import Stanza
from xmppd.core.xmlstream import FrameParser, StreamError, serialize
from xmppd.jid import JID, InvalidJID

log = Logger(namespace="xmppd.cluster")

GROUP = "xmppd"
READ_COUNT = 200  # entries per XREADGROUP
READ_BLOCK = 1000  # ms an XREADGROUP waits for entries
RETRY = 1.0  # seconds before what failed for want of Redis is tried again
# Takes stream KEYS[1] over: renamed KEYS[2] and listed in set KEYS[3] (the
# takes of this node still to finish); 1, or 0 when there is no stream.
TAKE_STREAM = ("if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
               "redis.call('RENAME', KEYS[1], KEYS[2]) "
               "redis.call('SADD', KEYS[3], KEYS[2]) return 1")
# Takes or renews the lease of a placed service for ARGV[1], ARGV[2] ms;
# returns the node that holds it.
LEASE = ("local owner = redis.call('GET', KEYS[1]) "
         "if owner == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return owner end "
         "if not owner then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
         "return ARGV[1] end return owner")
# Appends entries to a stream that exists: ARGV holds, for each, its number
# of fields then the fields; 1 or 0 (no stream) for each.
APPEND = ("local added, i = {}, 1 "
          "while i <= #ARGV do local n = tonumber(ARGV[i]) "
          "local id = redis.call('XADD', KEYS[1], 'NOMKSTREAM', '*', unpack(ARGV, i + 1, i + n)) "
          "added[#added + 1] = id and 1 or 0 i = i + n + 1 end return added")
APPEND_BATCH = 500  # entries per script call at most
# Claims component ARGV[1] for node ARGV[2] unless another node has it;
# returns the node that has it.
CLAIM = ("local owner = redis.call('HGET', KEYS[1], ARGV[1]) "
         "if owner then return owner end "
         "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return ARGV[2]")
# Lets a lease or lock go if ARGV[1] holds it.
RELEASE = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
           "return redis.call('DEL', KEYS[1]) end return 0")
# Renews lock KEYS[1] for ARGV[2] ms if ARGV[1] holds it.
RENEW = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
         "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0")
# Lets field ARGV[1] of hash KEYS[1] go if ARGV[2] holds it.
RELEASE_FIELD = ("if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then "
                 "return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0")


def redis_address(url):
    """``(host, port, db, username, password, tls)`` of a ``redis://`` URL."""
    parts = urlsplit(url)
    db = parts.path.strip("/")
    return (parts.hostname or "127.0.0.1", parts.port or 6379, int(db) if db else 0,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None, parts.scheme == "rediss")


def default_name():
    return f"{socket.gethostname()}-{os.getpid()}"


def _first_copy(seen, full, xml):
    """Whether stanza ``xml`` to ``full`` (a full JID, text) is the first
    met in ``seen`` of its copies to several resources of an account (a
    message to its bare JID): they are handled as undeliverable once, not
    once each."""
    key = full.partition("/")[0], xml
    if key in seen:
        return False
    seen.add(key)
    return True


def within(d, seconds, clock):
    """A Deferred of ``d``'s result, or of a :class:`defer.TimeoutError`
    after ``seconds``.  ``d`` itself is not cancelled: txredisapi matches
    answers to commands by their order, so a command sent keeps its place."""
    result = defer.Deferred()
    timer = clock.callLater(seconds, lambda: result.errback(
        defer.TimeoutError(f"Redis did not answer in {seconds:g} s")))

    def settled(outcome):
        if timer.active():
            timer.cancel()
            result.callback(outcome)
        # else: too late, given up on (a failure is consumed here)

    d.addBoth(settled)
    return result


def connect(node, url, reactor):
    """The three connections of ``node`` to the Redis at ``url``: commands
    and reader (txredisapi handlers, reconnecting), and the subscriber
    (started; it calls ``node.subscribed`` and ``node.received``)."""
    host, port, db, username, password, tls = redis_address(url)
    options = dict(dbid=db, password=password, username=username, convertNumbers=False,
                   ssl_context_factory=tls)
    cmd = txredisapi.lazyConnection(host, port, **options)
    reader = txredisapi.lazyConnection(host, port, **options)
    factory = txredisapi.SubscriberFactory(isLazy=True)
    factory.protocol = _Subscriber
    factory.node = node
    factory.dbid, factory.password, factory.username = db, password, username
    endpoint = HostnameEndpoint(reactor, host, port)
    if tls:
        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    factory.startConnecting(endpoint)
    return cmd, reader, factory


class _Subscriber(txredisapi.SubscriberProtocol):
    """The connection that follows the directory and event channels."""

    @defer.inlineCallbacks
    def connectionMade(self):
        yield super().connectionMade()
        node = self.factory.node
        yield self.subscribe([node.directory_channel, node.events_channel])
        node.subscribed()

    def messageReceived(self, pattern, channel, message):
        self.factory.node.received(channel, message)


class ClusterNode(service.Service):
    """This process as a node of the cluster ``config.cluster`` describes;
    ``directory`` is the session directory the server routes with."""

    def __init__(self, server, config, reactor, connect=connect):
        cluster = config.cluster
        self.node = cluster.node or default_name()
        self._server = server
        self._reactor = reactor
        self._heartbeat = cluster.heartbeat
        self._url = cluster.redis
        prefix = cluster.prefix
        self._prefix = prefix
        self.nodes_key = f"{prefix}:nodes"
        self.directory_channel = f"{prefix}:directory"
        self.events_channel = f"{prefix}:events"
        self.stream = self.stream_key(self.node)
        self.directory = ClusterDirectory(
            self, server.sessions, lambda bare: server.hooks.notify(ACCOUNT_OFFLINE, bare))
        self._router = server.router
        self._router.cluster = self
        self.placement = {}  # placed service domain -> the node serving it
        self.components = {}  # component domain -> the other node it is connected to
        self._metrics(server.metrics.registry)
        self._parser = FrameParser(max(config.c2s.max_stanza_size, config.s2s.max_stanza_size))
        self._connect = connect
        self._cmd = self._reader = self._subscriber = None
        self._beat = None
        self._beating = None  # fires once the heartbeat stopped and its last tick ended
        self._beaten = None  # when the heartbeat was last renewed, by the clock
        self._reading = None
        self.lag = 0  # entries read in the last batch of this node's stream
        self.nodes = {}  # node name -> what its last heartbeat said (pid, sessions, lag)
        self._outgoing = {}  # node -> entries for its stream, sent at the end of the turn
        # Batches sent and not yet settled: (Deferred, when sent, give up)
        self._in_flight = {}
        self._watchdog = None  # the timer that gives up on batches not answered
        self._heard = None  # while the mirror loads: what the channel said meanwhile
        self._reset_at = None  # when this node last ended its sessions, taken for dead
        self._flush = None
        self._storing = {}  # entry id -> Deferred of its batch's offline storage
        self._reaper = None  # the reaping under way, which the heartbeat does not wait for

    def _metrics(self, registry):
        Gauge("xmppd_cluster_nodes", "Live nodes of the cluster, this one included",
              registry=registry).set_function(lambda: len(self.nodes))
        Gauge("xmppd_cluster_remote_sessions", "Sessions bound on the other nodes",
              registry=registry).set_function(self.directory.remote_count)
        Gauge("xmppd_cluster_stream_lag", "Entries of this node's stream in its last read",
              registry=registry).set_function(lambda: self.lag)

    def status(self):
        """This node's name and the live nodes' last heartbeats (``xmppctl status``)."""
        return {"node": self.node, "nodes": self.nodes, "services": self.placement}

    def key(self, kind, node):
        return f"{self._prefix}:{kind}:{node}"

    def stream_key(self, node):
        return self.key("stream", node)

    # Start and stop

    def startService(self):
        super().startService()
        self._cmd, self._reader, self._subscriber = self._connect(self, self._url, self._reactor)
        self._starting = self._start()
        self._starting.addErrback(lambda failure: log.failure(
            "cannot join the cluster", failure))

    @defer.inlineCallbacks
    def _start(self):
        """Join: take over what a former process of this name left, make
        this node's stream, renew its heartbeat, take its leases; each step
        tried again every second until it succeeds (or the node stops)."""
        for step in (lambda: self._reap(self.node), self._create_group, self._beat_once,
                     self._leases):
            while True:
                if not self.running:  # stopped meanwhile
                    return
                try:
                    yield step()
                    break
                except Exception:
                    log.failure("cannot join the cluster: trying again in a second")
                    yield self._pause(RETRY)
        self._beat = task.LoopingCall(self._tick)
        self._beat.clock = self._reactor
        self._beating = self._beat.start(self._heartbeat / 3, now=False)
        self._reading = self._read()
        log.info("cluster node {node} joined", node=self.node)

    @defer.inlineCallbacks
    def _rejoin(self):
        """Make this node's stream again and publish its sessions' records."""
        try:
            yield self._create_group()
            yield self._beat_once()
            self.republish()
        except Exception:
            log.failure("cannot join the cluster again")
            yield self._pause(RETRY)

    def _pause(self, seconds):
        """A Deferred fired after ``seconds``."""
        return task.deferLater(self._reactor, seconds, lambda: None)

    def _create_group(self):
        d = self._cmd.execute_command("XGROUP", "CREATE", self.stream, GROUP, "$", "MKSTREAM")
        d.addErrback(lambda failure: None if "BUSYGROUP" in str(failure.value) else failure)
        return d

    def republish(self):
        """Write every local session's record again (Redis may have lost them)."""
        for session in self.directory.local.all():
            self.publish_set(session)

    def stopService(self):
        """Leave the cluster (at most twice ``heartbeat`` seconds: past
        that, with Redis unreachable, the other nodes take over what is
        left in Redis as for a node that died), then close the connections."""
        super().stopService()
        leaving = self._leave()
        leaving.addTimeout(2 * self._heartbeat, self._reactor)
        leaving.addErrback(lambda failure: log.failure(
            "cannot leave the cluster cleanly: the other nodes take over what is left "
            "when this node's heartbeat expires", failure))
        leaving.addBoth(lambda _: self._stop_watching())
        leaving.addBoth(lambda _: defer.DeferredList(
            [defer.maybeDeferred(connection.disconnect)
             for connection in (self._reader, self._cmd, self._subscriber)],
            consumeErrors=True))
        return leaving

    @defer.inlineCallbacks
    def _leave(self):
        yield self._starting
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        # What this node routes to the others: added, or (Redis not
        # answering) handled as undeliverable while the storage still runs.
        yield self._flush_now()
        if self._beating is not None:
            yield self._beating  # a tick under way ends (a lease it renews is let go below)
        # The reader first ends its last read (its entries delivered or
        # undeliverable, acknowledged); the sessions have ended (the
        # controller stopped first): what is left in the stream is handled
        # here, with what this node still routes to the others, then the
        # node is gone.
        if self._reading is not None:
            yield self._reading
        yield defer.DeferredList(list(set(self._storing.values())))
        if self._reaper is not None:
            yield self._reaper
        yield self._flush_now()
        yield self._take_over(self.node)
        yield self._flush_now()  # what handling them routed (a bounce to another node)
        yield self._cmd.execute_command("SREM", self.nodes_key, self.node)
        yield self._cmd.execute_command("DEL", self.key("sessions", self.node),
                                        self.key("node", self.node))
        yield self._publish_directory("gone", self.node, by=self.node)
        for domain in self._router.placed:
            yield self._cmd.execute_command("EVAL", RELEASE, 1, self.key("service", domain),
                                            self.node)

    # Heartbeat and reaping

    def _beat_once(self):
        """Renew this node's heartbeat; a Deferred of whether this node was
        cut off from Redis since the last renewal (for longer than two
        ticks): then the others' heartbeats may have lapsed while they
        live, and they get a tick to renew them before any is reaped."""
        ms = str(int(self._heartbeat * 1000))
        state = json.dumps({"pid": os.getpid(), "sessions": self.directory.count(),
                            "lag": self.lag}, separators=(",", ":"))
        d = self._cmd.execute_command("SET", self.key("node", self.node), state, "PX", ms)

        def renewed(_):
            # Listed once its heartbeat is there: never found listed and dead.
            self._fire("SADD", self.nodes_key, self.node)
            now, before = self._reactor.seconds(), self._beaten
            self._beaten = now
            return before is not None and now - before > self._heartbeat * 2 / 3

        return d.addCallback(renewed)

    @defer.inlineCallbacks
    def _tick(self):
        """Renew the heartbeat, read the others' and reap the dead."""
        try:
            cut_off = yield self._beat_once()
            nodes = sorted((yield self._cmd.execute_command("SMEMBERS", self.nodes_key)))
            states = (yield self._cmd.execute_command(
                "MGET", *[self.key("node", node) for node in nodes])) if nodes else []
            view = {}
            for node, state in zip(nodes, states):
                if state is None:
                    if not cut_off and self._reaper is None:
                        self._start_reaping(node)
                    continue
                try:
                    view[node] = dict(json.loads(state))
                except (ValueError, TypeError):
                    view[node] = {}  # alive all the same: its key is there
            self.nodes = view
            yield self._leases()
        except Exception:
            log.failure("cluster heartbeat failed")

    def _start_reaping(self, node):
        """Reap dead node ``node`` beside the heartbeat (one reaping at a
        time): storing what it left must not hold up this node's own."""
        self._reaper = self._reap(node)
        self._reaper.addErrback(lambda failure: log.failure(
            "cannot reap cluster node {dead}", failure, dead=node))
        self._reaper.addBoth(lambda _: setattr(self, "_reaper", None))

    @defer.inlineCallbacks
    def _leases(self):
        """Take or renew the services this node serves; learn who serves the others."""
        ms = str(int(self._heartbeat * 1000))
        for domain, started in self._router.placed.items():
            owner = yield self._cmd.execute_command("EVAL", LEASE, 1,
                                                    self.key("service", domain), self.node, ms)
            before, self.placement[domain] = self.placement.get(domain), owner
            if owner == self.node and before != self.node:
                log.info("cluster node {node} serves {domain}", node=self.node, domain=domain)
                started(domain)
            elif before == self.node and owner != self.node:
                log.warn("cluster node {node} lost {domain} to node {owner} (its lease lapsed)",
                         node=self.node, domain=domain, owner=owner)

    def owner(self, domain):
        """The node serving placed service ``domain``; None when it is this
        one (or while none is known)."""
        owner = self.placement.get(domain)
        return None if owner == self.node else owner

    def route_to(self, node, stanza):
        """Route ``stanza`` to the service ``node`` serves."""
        self._append(node, ("r", "1", "x", serialize(stanza.element, default="",
                                                     declared=False)),
                     self._bounce_routed, stanza.element)

    @defer.inlineCallbacks
    def _reap(self, node):
        """Take over what dead node ``node`` left, unless another node does.

        Its contacts are told its sessions are lost, its stream is taken
        over (:meth:`_take_over`); only then is the node dropped from the
        cluster, so that a reaping that fails midway is done again, by this
        node or another, at a later tick.
        A node reaping a former process of its own name (at start) leaves
        alone the sessions and components it already serves itself.
        """
        ms = str(int(self._heartbeat * 1000))
        taken = yield self._cmd.execute_command("SET", self.key("reap", node), self.node,
                                                "NX", "PX", ms)
        if taken is None and (node != self.node or (yield self._cmd.execute_command(
                "GET", self.key("reap", node))) != self.node):
            return  # another node does it (this one's own lock: a start that failed midway)
        if node != self.node and (yield self._cmd.execute_command("EXISTS",
                                                                  self.key("node", node))):
            return  # alive after all (it started again meanwhile)
        fields = yield self._cmd.execute_command("HGETALL", self.key("sessions", node))
        lost = []
        mine = node == self.node
        for full, text in zip(fields[::2], fields[1::2]):
            record = self.directory.record(node, full, text)
            if record is not None and not (mine and
                                           self.directory.local.get(record.jid) is not None):
                lost.append(record)
        self.directory.mirror_forget(node)  # nothing is routed there any more
        self._forget_components(node)
        for record in lost:
            self._server.hooks.notify(SESSION_LOST, record)
        entries = yield self._take_over(node)
        if lost or entries:
            log.warn("cluster node {dead} is gone: {sessions} sessions lost, {entries} "
                     "stanzas for them handled here", dead=node, sessions=len(lost),
                     entries=entries)
        yield self._cmd.execute_command("DEL", self.key("sessions", node))
        components = yield self._cmd.execute_command("HGETALL", self.key("components", "all"))
        for domain, owner in zip(components[::2], components[1::2]):
            if owner == node and not (mine and self._router.attached(domain) is not None):
                yield self._cmd.execute_command("HDEL", self.key("components", "all"), domain)
        yield self._cmd.execute_command("SREM", self.nodes_key, node)
        if not mine or fields or entries:
            yield self._publish_directory("gone", node, by=self.node)
        if mine:
            self.republish()  # the records of the sessions bound here already
        yield self._cmd.execute_command("EVAL", RELEASE, 1, self.key("reap", node), self.node)

    @defer.inlineCallbacks
    def _take_over(self, node):
        """Handle what waits in the stream of ``node`` (dead, or this node
        leaving) and in the streams ``node`` had itself taken over and not
        finished; a Deferred of how many entries, fired once what went
        offline is stored.  A stream is taken in one script (renamed
        ``P:taken:THIS:RANDOM``, listed in ``P:taking:THIS``): a late
        sender's ``XADD NOMKSTREAM`` then finds no stream and handles its
        stanza itself.  A taken stream is deleted only once handled and
        stored: should this node die first, its own reaper takes it up."""
        taking = self.key("taking", self.node)
        yield self._cmd.execute_command(
            "EVAL", TAKE_STREAM, 3, self.stream_key(node),
            self.key("taken", f"{self.node}:{os.urandom(6).hex()}"), taking)
        count = 0
        for owner in dict.fromkeys((node, self.node)):
            for key in (yield self._cmd.execute_command("SMEMBERS", self.key("taking", owner))):
                entries = yield self._cmd.execute_command("XRANGE", key, "-", "+")
                count += len(entries)
                yield defer.DeferredList(self._undeliverable(entries), consumeErrors=True)
                yield self._cmd.execute_command("DEL", key)
                yield self._cmd.execute_command("SREM", self.key("taking", owner), key)
        return count

    # The directory

    def subscribed(self):
        """The channels are followed (again): load the other nodes' records,
        and write this node's (Redis may have restarted without them)."""
        self.republish()
        d = self._load_mirror()
        d.addErrback(lambda failure: log.failure("cannot read the cluster's sessions",
                                                 failure))

    def _forget_components(self, node):
        for domain, owner in list(self.components.items()):
            if owner == node:
                del self.components[domain]

    @defer.inlineCallbacks
    def _load_mirror(self):
        """Make the mirror what Redis holds: what changed while the channels
        were not followed (a node gone, a session unbound) was not heard.
        What is heard on the channel meanwhile is newer than what is read
        (the answers come on another connection): it is kept."""
        self._heard = set()  # full JIDs and ("gone", NODE) heard during the load
        try:
            fields = yield self._cmd.execute_command("HGETALL", self.key("components", "all"))
            self.components = {domain: node for domain, node in zip(fields[::2], fields[1::2])
                               if node != self.node}
            # The nodes listed, and those mirrored (gone, or joining and
            # not listed yet): each is what its hash of records holds.
            nodes = set((yield self._cmd.execute_command("SMEMBERS", self.nodes_key)))
            nodes |= self.directory.mirrored_nodes()
            nodes.discard(self.node)
            for node in sorted(nodes):
                fields = yield self._cmd.execute_command("HGETALL", self.key("sessions", node))
                if ("gone", node) not in self._heard:
                    self.directory.mirror_load(node, dict(zip(fields[::2], fields[1::2])),
                                               kept=self._heard)
        finally:
            self._heard = None

    def received(self, channel, message):
        """A message of channel ``channel``: a directory change or an event."""
        try:
            event = json.loads(message)
            node = event["n"]
        except (ValueError, KeyError, TypeError):
            log.warn("ignoring a malformed message of cluster channel {channel}",
                     channel=channel)
            return
        try:
            self._received(channel, event, node)
        except Exception:
            log.failure("cannot handle a message of cluster channel {channel}",
                        channel=channel)

    def _received(self, channel, event, node):
        if channel == self.events_channel:
            if node != self.node:
                self._server.hooks.notify(event.get("e"), event.get("a"))
            return
        op = event.get("op")
        if op == "gone" and node == self.node:
            if self.running and event.get("by") != self.node:
                self._taken_for_dead()  # reaped by another node while it ran
        elif op == "gone":
            self.directory.mirror_forget(node)
            self._forget_components(node)
            if self._heard is not None:
                self._heard.add(("gone", node))
        elif node == self.node:
            return
        elif op == "component":
            if event.get("on"):
                self.components[event.get("d")] = node
            elif self.components.get(event.get("d")) == node:
                del self.components[event.get("d")]
        elif op in ("set", "del"):
            if op == "set":
                self.directory.mirror_set(node, event.get("j"), event.get("r"))
            else:
                self.directory.mirror_del(node, event.get("j"))
            if self._heard is not None:
                self._heard.add(event.get("j"))

    def publish_set(self, session):
        text = encode(session)
        full = session.jid.full
        self._fire("HSET", self.key("sessions", self.node), full, text)
        self._publish_directory("set", self.node, j=full, r=text)

    def publish_del(self, session):
        full = session.jid.full
        self._fire("HDEL", self.key("sessions", self.node), full)
        self._publish_directory("del", self.node, j=full)

    def publish_component(self, domain, connected):
        """External component ``domain`` is (or no longer is) connected
        here.  A component connected to two nodes at once stays on the
        first to claim it; the other closes its stream with ``conflict``."""
        key = self.key("components", "all")
        if not connected:
            self._fire("EVAL", RELEASE_FIELD, 1, key, domain, self.node)
            self._publish_directory("component", self.node, d=domain, on=False)
            return
        d = self._cmd.execute_command("EVAL", CLAIM, 1, key, domain, self.node)

        def claimed(owner):
            if owner == self.node:
                return self._publish_directory("component", self.node, d=domain, on=True)
            self.components[domain] = owner
            stream = self._router.attached(domain)
            if stream is not None:
                stream.stream_error("conflict", f"{domain} is connected to another node")

        d.addCallback(claimed)
        d.addErrback(lambda failure: log.failure(
            "cannot publish component {domain} to the cluster", failure, domain=domain))

    def component_node(self, domain):
        """The other node external component ``domain`` is connected to, or None."""
        return self.components.get(domain)

    def _publish_directory(self, op, node, **fields):
        return self._fire("PUBLISH", self.directory_channel,
                          json.dumps({"n": node, "op": op, **fields}, separators=(",", ":")))

    def tell(self, event, argument):
        """Fire notification ``event`` with ``argument`` (a string) on the
        other nodes."""
        self._fire("PUBLISH", self.events_channel, json.dumps(
            {"n": self.node, "e": event, "a": argument}, separators=(",", ":")))

    def _fire(self, *command):
        """Send ``command`` without waiting for its answer; a failure (the
        connection lost before it) is logged.  The Deferred of its answer,
        or of None when it failed."""
        d = self._cmd.execute_command(*command)
        d.addErrback(lambda failure: log.warn(
            "cluster command {command} failed: {error}", command=command[0],
            error=failure.getErrorMessage()))
        return d

    # Stanzas between nodes

    def forward(self, node, jid, element):
        """Route ``element`` to session ``jid`` of ``node``."""
        self._append(node, ("j", jid.full, "x", serialize(element, default="", declared=False)),
                     self._router.undeliverable, jid, element)

    def forward_close(self, node, jid, condition, text=None):
        self._append(node, ("j", jid.full, "c", condition, "t", text or ""))

    def _append(self, node, fields, failed=None, *args):
        """Add an entry of ``fields`` to the stream of ``node``, with the
        entries of the same reactor turn, in one script call (a command
        per stanza cost more in the client than in Redis); ``failed(*args)``
        if the stream is gone or Redis cannot be reached."""
        batch = self._outgoing.get(node)
        if batch is None:
            batch = self._outgoing[node] = []
            if self._flush is None:
                self._flush = self._reactor.callLater(0, self._send_batches)
        batch.append((fields, failed, args))

    def _send_batches(self):
        self._flush = None
        batches, self._outgoing = self._outgoing, {}
        for node, entries in batches.items():
            for start in range(0, len(entries), APPEND_BATCH):
                self._send_batch(node, entries[start:start + APPEND_BATCH])

    def _flush_now(self):
        """Send what waits for the end of the turn; a Deferred fired once
        every entry sent is added or handled as undeliverable (given up on
        after ``heartbeat`` seconds)."""
        if self._flush is not None:
            self._flush.cancel()
        self._send_batches()
        self._stop_watching()  # watched again from now: all given up on in ``heartbeat``
        self._watch()
        return defer.DeferredList([settled for settled, _, _ in self._in_flight.values()])

    def _stop_watching(self):
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _watch(self):
        """One timer for the batches sent, not one per batch: each is given
        up on between ``heartbeat`` and twice that after it was sent."""
        if self._watchdog is None and self._in_flight:
            self._watchdog = self._reactor.callLater(self._heartbeat, self._watched)

    def _watched(self):
        """Batches sent ``heartbeat`` seconds ago or more and not answered
        (Redis unreachable): their entries are handled as undeliverable
        (should Redis add them after all, they come twice, never lost)."""
        self._watchdog = None
        now = self._reactor.seconds()
        for _, sent, give_up in list(self._in_flight.values()):
            if now - sent >= self._heartbeat:
                give_up()
        self._watch()

    def _send_batch(self, node, entries):
        """One script call adding ``entries`` to the stream of ``node``."""
        arguments = []
        for fields, _, _ in entries:
            arguments.append(len(fields))
            arguments.extend(fields)
        d = self._cmd.execute_command("EVAL", APPEND, 1, self.stream_key(node), *arguments)
        key = object()

        def answered(results):
            if self._in_flight.pop(key, None) is None:
                return  # given up on already
            if not all(results):
                # The node's stream is gone (taken by a reaper whose "gone"
                # is still on its way, or lost by Redis): its sessions are
                # unreachable, and a bare JID's other resources there too.
                self.directory.mirror_forget(node)
                self._failed([entry for entry, added in zip(entries, results) if not added])
            settled.callback(None)

        def failed(failure):
            if self._in_flight.pop(key, None) is None:
                return
            log.warn("cannot route to cluster node {node}: {error}", node=node,
                     error=failure.getErrorMessage())
            self._failed(entries)
            settled.callback(None)

        settled = defer.Deferred()
        self._in_flight[key] = (settled, self._reactor.seconds(), lambda: failed(
            Failure(defer.TimeoutError(f"Redis did not answer in {self._heartbeat:g} s"))))
        d.addCallbacks(answered, failed)
        self._watch()

    @staticmethod
    def _failed(entries):
        """Call the ``failed`` of ``entries`` not added: once for the copies
        of one stanza to several resources of an account (the fields
        ``j``, the full JID, and ``x``, the stanza), which would be stored
        offline once each."""
        seen = set()
        for fields, failed, args in entries:
            if failed is None:
                continue
            if fields[0] == "j" and not _first_copy(seen, fields[1], fields[3]):
                continue
            failed(*args)

    @defer.inlineCallbacks
    def lock(self, name, ttl=10.0):
        """Take the cluster-wide lock ``name`` (``P:lock:NAME``), waiting
        while another holder has it or Redis does not answer; a Deferred of
        the function that lets it go, or of a :class:`defer.TimeoutError`
        once ``3 * ttl`` seconds have passed.  Its holder renews it every
        third of ``ttl`` until it lets it go; it lapses after ``ttl``
        seconds if its holder dies."""
        key, token = self.key("lock", name), os.urandom(9).hex()
        ms = str(int(ttl * 1000))
        deadline = self._reactor.seconds() + 3 * ttl
        delay = 0.005
        while True:
            left = deadline - self._reactor.seconds()
            if left <= 0:
                raise defer.TimeoutError(f"cluster lock {name} not taken in {3 * ttl:g} s")
            try:
                if (yield within(self._cmd.execute_command("SET", key, token, "NX", "PX", ms),
                                 left, self._reactor)):
                    break
            except defer.TimeoutError:
                continue
            except Exception as e:  # the connection lost: try again
                log.warn("cannot take cluster lock {name}: {error}", name=name, error=e)
            yield self._pause(delay)
            delay = min(delay * 2, 0.2)
        renewal = task.LoopingCall(self._fire, "EVAL", RENEW, 1, key, token, ms)
        renewal.clock = self._reactor
        renewal.start(ttl / 3, now=False)

        def release():
            if renewal.running:
                renewal.stop()
            return self._cmd.execute_command("EVAL", RELEASE, 1, key, token)

        return release

    def parse(self, xml):
        return self._parser.parse(xml)

    @defer.inlineCallbacks
    def _read(self):
        """Read this node's stream and deliver its entries.  After a failed
        read, the entries this node has read and not acknowledged are read
        again first (from id 0): a read whose answer was lost took them."""
        start = "0"
        while self.running:
            try:
                reply = yield self._reader.execute_command(
                    "XREADGROUP", "GROUP", GROUP, self.node, "COUNT", str(READ_COUNT),
                    "BLOCK", str(READ_BLOCK), "STREAMS", self.stream, start)
            except Exception as e:
                if not self.running:
                    return
                start = "0"
                if "NOGROUP" in str(e):
                    # Redis lost the stream (restarted without its data), or
                    # this node stalled past its heartbeat and was reaped.
                    log.warn("this node's cluster stream is gone: joining again")
                    self._taken_for_dead()
                    yield self._rejoin()
                    continue
                log.failure("cannot read this node's cluster stream")
                yield self._pause(RETRY)
                continue
            entries = reply[0][1] if reply else []
            if not entries:
                self.lag, start = 0, ">"
                continue
            if start != ">":
                start = entries[-1][0]
            self.lag = len(entries)
            storing, delivered = {}, []
            for entry_id, fields in entries:
                if entry_id in self._storing:
                    continue  # read again from id 0 while still being stored
                result = None
                try:
                    if fields:  # None: deleted while pending
                        result = self._deliver(fields)
                except Exception:
                    log.failure("cannot deliver an entry of this node's cluster stream")
                if isinstance(result, defer.Deferred):
                    storing[entry_id] = result
                else:
                    delivered.append(entry_id)
            # Acknowledged once delivered, and once stored what went offline:
            # a node killed before keeps them in its stream for the survivor.
            if delivered:
                self._acknowledge(delivered)
            if storing:
                stored = defer.DeferredList(list(storing.values()), consumeErrors=True)
                self._storing.update(dict.fromkeys(storing, stored))
                stored.addCallback(lambda _, ids=list(storing): self._stored(ids))

    def _stored(self, ids):
        for entry_id in ids:
            del self._storing[entry_id]
        self._acknowledge(ids)

    def _acknowledge(self, ids):
        self._fire("XACK", self.stream, GROUP, *ids)
        self._fire("XDEL", self.stream, *ids)

    def _taken_for_dead(self):
        """This node's stream was taken while it ran (reaped after a stall,
        or Redis lost its data): what was sent to its sessions meanwhile
        went offline, and their contacts may have been told they left.
        Its sessions end, so that their clients come back, announce their
        presence again and get what waits for them.  Heard again within
        ``heartbeat`` seconds (the reaper's "gone" and the stream found
        gone are two signs of one reaping), the records of the sessions
        bound since are written again instead: the reaper's deletion of
        this node's records may have come after them."""
        now = self._reactor.seconds()
        if self._reset_at is not None and now - self._reset_at < self._heartbeat:
            self.republish()
            return
        self._reset_at = now
        sessions = list(self.directory.local.all())
        if sessions:
            log.warn("this cluster node was taken for dead: ending its {count} sessions",
                     count=len(sessions))
        for session in sessions:
            session.close("reset", "this cluster node was taken for dead: connect again")

    def _deliver(self, fields):
        """Deliver one entry of this node's stream to its local session; a
        Deferred while what went offline instead is being stored."""
        entry = dict(zip(fields[::2], fields[1::2]))
        if "r" in entry:
            element = self._element(entry)
            if element is not None:
                self._router.routed(element)
            return None
        try:
            jid = JID.normalised(entry["j"])
        except (KeyError, InvalidJID):
            return None
        session = self.directory.local.get(jid)
        if "c" in entry:
            if session is not None:
                session.close(entry["c"], entry.get("t") or None)
            return None
        element = self._element(entry)
        if element is None:
            return None
        if session is not None:
            session.send(element)
            return None
        return self._router.undeliverable(jid, element)

    def _element(self, entry):
        try:
            return self.parse(entry["x"].encode())
        except (KeyError, AttributeError, StreamError) as e:  # bytes: not UTF-8
            log.warn("dropping a malformed entry of a cluster stream: {e}", e=e)
            return None

    def _bounce_routed(self, element):
        try:
            stanza = Stanza(element, JID.parse(element["from"]), JID.parse(element["to"]))
        except (KeyError, InvalidJID):
            return
        self._router.bounce(stanza, "service-unavailable", "the service is moving to another node")

    def _undeliverable(self, entries):
        """Handle the entries of a stream taken over: their sessions are
        gone.  The copies of one stanza for several resources of an
        account (a message to its bare JID) are handled once.  The
        Deferreds of what is being stored offline."""
        seen, storing = set(), []
        for _, fields in entries or ():
            try:
                result = self._undeliverable_entry(dict(zip(fields[::2], fields[1::2])), seen)
            except Exception:
                log.failure("cannot handle an entry of a taken cluster stream")
                continue
            if isinstance(result, defer.Deferred):
                storing.append(result)
        return storing

    def _undeliverable_entry(self, entry, seen):
        if "c" in entry:
            return None
        element = self._element(entry)
        if "r" in entry:  # for a service of the node, which moves
            if element is not None:
                self._bounce_routed(element)
            return None
        try:
            jid = JID.normalised(entry.get("j", ""))
        except InvalidJID:
            return None
        if element is None or not _first_copy(seen, entry["j"], entry.get("x")):
            return None
        return self._router.undeliverable(jid, element)
