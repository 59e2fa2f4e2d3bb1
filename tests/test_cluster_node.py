"""Tests for xmppd.cluster.node: nodes of one cluster on an in-memory Redis
(tests/fake_redis.py), each a server with its clock: stanzas between
nodes, the reaping of a dead node, a node leaving, and what a node does
with Redis unreachable or with malformed data in it."""

import json
from dataclasses import replace

import pytest
from twisted.internet import defer

from tests.fake_redis import FakeRedis
from tests.harness import MODULES, add_user, make_server, online, result
from tests.paused_storage import PausableRunner
from xmppd.cluster.node import ClusterNode
from xmppd.config import ClusterConfig
from xmppd.core.events import ACCOUNT_OFFLINE
from xmppd.jid import JID
from xmppd.storage import RosterItem
from xmppd.storage.deferred import immediate_runner

HEARTBEAT = 3.0
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
RECORD = '{"a":true,"p":0,"f":[],"x":"","h":false}'


@pytest.fixture
def redis():
    return FakeRedis()


@pytest.fixture
def nodes(tmp_path, redis):
    """``nodes(NAME...)``: servers that are nodes of one cluster, on one
    database (alice and bob are contacts of each other)."""
    made = {}

    def make(*names, runner=immediate_runner):
        for name in names:
            (tmp_path / name).mkdir()
            first = next(iter(made.values()), None)
            server = make_server(tmp_path / name, modules=(), runner=runner,
                                 store=first.sql if first else None)
            config = replace(server.config, cluster=ClusterConfig(
                redis="redis://127.0.0.1:6379/0", node=name, heartbeat=HEARTBEAT, prefix="t"))
            # As xmppd.tap builds a node: the cluster's directory, then the modules.
            server.cluster = ClusterNode(server, config, server.clock, connect=redis.connect)
            server.sessions = server.router.sessions = server.cluster.directory
            server.load_modules([module for module in MODULES if module != "sasl"])
            server.cluster.startService()
            made[name] = server
            if first is None:
                for user in (ALICE, BOB, CAROL):
                    add_user(server, user)
                for user, contact in ((ALICE, BOB), (BOB, ALICE)):
                    server.sql.set_roster_item(*user.split("@"), RosterItem(
                        jid=contact, subscription="both"))
        settle(made)
        return [made[name] for name in names]

    make.all = made
    return make


def settle(servers):
    """Run what the nodes' clocks have due now, until nothing is left."""
    servers = list(servers.values()) if isinstance(servers, dict) else servers
    for _ in range(50):
        if not any(call.getTime() <= server.clock.seconds()
                   for server in servers for call in server.clock.getDelayedCalls()):
            return
        for server in servers:
            server.clock.advance(0)
    raise AssertionError("the nodes never settle")


def advance(servers, seconds):
    for server in servers:
        server.clock.advance(seconds)
    settle(servers)


def alice_and_bob(nodes):
    """Nodes a and b, alice online on a and bob on b."""
    a, b = nodes("a", "b")
    alice, bob = online(a, ALICE), online(b, BOB)
    settle([a, b])
    return a, b, alice, bob


def dies(server):
    """The node of ``server`` stops reading its stream, as a dead one."""
    server.cluster.running = False
    server.clock.advance(1.0)  # its last blocked read ends


def message(to, body="hi"):
    return f"<message to='{to}' type='chat' id='m-{body}'><body>{body}</body></message>"


def bodies(client):
    return [str(e.body) for e in client.take() if e.name == "message" and e.body]


def offline_count(server, user):
    return server.sql.count_offline(*user.split("@"))


def test_a_message_reaches_a_session_on_another_node(nodes):
    a, b, alice, bob = alice_and_bob(nodes)
    alice.send(message(f"{BOB}/res"))
    settle([a, b])
    assert bodies(bob) == ["hi"]


def test_a_dead_node_is_reaped_once_what_waited_for_it_handled(nodes, redis):
    a, b, alice, _ = alice_and_bob(nodes)
    alice.take()
    dies(b)
    alice.send(message(f"{BOB}/res", "waiting"))
    settle([a])
    redis.call("DEL", "t:node:b")  # its heartbeat expires
    advance([a], HEARTBEAT / 3)
    got = alice.take()
    assert any(e.name == "presence" and e.getAttribute("type") == "unavailable"
               and e["from"] == f"{BOB}/res" for e in got), [e.toXml() for e in got]
    assert offline_count(a, BOB) == 1
    assert redis.call("SMEMBERS", "t:nodes") == ["a"]
    assert redis.call("EXISTS", "t:stream:b", "t:sessions:b") == 0
    assert a.sessions.get(JID.parse(f"{BOB}/res")) is None


def test_a_reaping_that_fails_midway_is_done_again_without_duplicates(nodes, redis):
    a, b, alice, _ = alice_and_bob(nodes)
    dies(b)
    alice.send(message(f"{BOB}/res", "waiting"))
    settle([a])
    redis.call("DEL", "t:node:b")
    redis.fail = lambda command: command[:2] == ("DEL", "t:sessions:b")
    advance([a], HEARTBEAT / 3)
    assert "b" in redis.call("SMEMBERS", "t:nodes")  # still to be reaped
    assert offline_count(a, BOB) == 1  # what its stream held is handled
    redis.fail = None
    redis.call("DEL", "t:reap:b")  # the reaper's lock lapses
    advance([a], HEARTBEAT / 3)
    assert redis.call("SMEMBERS", "t:nodes") == ["a"]
    assert offline_count(a, BOB) == 1


def test_a_node_cut_off_from_redis_lets_the_others_renew_before_reaping(nodes, redis):
    a, b = nodes("a", "b")
    online(b, BOB)
    settle([a, b])
    redis.down = True
    advance([a, b], HEARTBEAT)  # their ticks wait for Redis
    redis.call("DEL", "t:node:a", "t:node:b")  # both heartbeats lapsed meanwhile
    redis.up()  # a's tick goes on first: b's heartbeat is not renewed yet
    settle([a, b])
    advance([a, b], HEARTBEAT / 3)
    assert sorted(redis.call("SMEMBERS", "t:nodes")) == ["a", "b"]
    assert a.sessions.count(JID.parse(BOB)) == 1
    redis.call("DEL", "t:node:b")
    b.cluster.running = False
    b.cluster._beat.stop()  # b dies
    advance([a], HEARTBEAT / 3)
    assert redis.call("SMEMBERS", "t:nodes") == ["a"]


def test_a_malformed_heartbeat_does_not_stop_the_others(nodes, redis):
    a, = nodes("a")
    redis.call("SADD", "t:nodes", "x")
    redis.call("SET", "t:node:x", "{not json")
    advance([a], HEARTBEAT / 3)
    assert a.cluster.nodes["x"] == {}
    assert a.cluster.nodes["a"]["sessions"] == 0
    assert redis.call("PTTL", "t:node:a") > 0


def test_malformed_channel_messages_are_ignored(nodes):
    a, = nodes("a")
    channel = a.cluster.directory_channel
    for text in ("not json", "[1]", '{"n":"b","op":"set","j":"@@","r":"{}"}',
                 '{"n":"b","op":"set","j":"bob@example.com/x","r":"[]"}',
                 '{"n":"b","op":"component","d":[1],"on":true}'):
        a.cluster.received(channel, text)
    a.cluster.received(a.cluster.events_channel, '{"n":"b","e":[7],"a":null}')
    a.cluster.received(channel, json.dumps({"n": "b", "op": "set", "j": f"{BOB}/x",
                                            "r": RECORD}))
    assert a.sessions.count(JID.parse(BOB)) == 1


def test_the_mirror_is_made_whole_when_the_channels_come_back(nodes, redis):
    a, b = nodes("a", "b")
    bob = online(b, BOB)
    settle([a, b])
    assert a.sessions.count(JID.parse(BOB)) == 1
    offline = []
    a.hooks.add(ACCOUNT_OFFLINE, offline.append)
    # Bob leaves and a node "c" goes while a does not follow the channels.
    redis.subscribers.remove(a.cluster)
    bob.lose()
    a.cluster.directory.mirror_set("c", f"{ALICE}/gone", RECORD)  # c left, its records too
    settle([a, b])
    assert a.sessions.count(JID.parse(BOB)) == 1  # not heard
    redis.subscribers.append(a.cluster)
    a.cluster.subscribed()
    settle([a, b])
    assert a.sessions.count(JID.parse(BOB)) == 0
    assert a.sessions.count(JID.parse(ALICE)) == 0  # c has no records any more
    assert sorted(str(bare) for bare in offline) == [ALICE, BOB]


class ComponentStream:
    def __init__(self):
        self.errors = []

    def send(self, element):
        pass

    def stream_error(self, condition, text=None):
        self.errors.append(condition)


def test_a_component_connected_to_two_nodes_at_once_stays_on_the_first(nodes, redis):
    a, b = nodes("a", "b")
    for server in (a, b):
        server.router.add_component("gw.example.com", "example.com")
    first, second = ComponentStream(), ComponentStream()
    assert a.router.attach("gw.example.com", first)
    assert b.router.attach("gw.example.com", second)  # before b heard of a's
    settle([a, b])
    assert first.errors == [] and second.errors == ["conflict"]
    assert redis.call("HGET", "t:components:all", "gw.example.com") == "a"
    b.router.detach("gw.example.com", second)
    settle([a, b])
    assert redis.call("HGET", "t:components:all", "gw.example.com") == "a"
    assert b.cluster.component_node("gw.example.com") == "a"


def test_a_stopping_node_stores_what_its_stream_still_holds(nodes, redis):
    a, b = nodes("a", "b")
    alice = online(a, ALICE)
    settle([a, b])
    alice.take()
    # An entry for a session of b's that has gone, not yet read.
    dies(b)
    redis.call("XADD", "t:stream:b", "*", "j", f"{BOB}/res", "x",
               "<message xmlns='jabber:client' from='alice@example.com/res' "
               "to='bob@example.com/res' type='chat'><body>late</body></message>")
    b.cluster.running = True
    stopped = b.cluster.stopService()
    settle([a, b])
    assert stopped.called
    assert offline_count(b, BOB) == 1
    assert redis.call("SMEMBERS", "t:nodes") == ["a"]
    assert redis.call("EXISTS", "t:stream:b", "t:node:b", "t:sessions:b") == 0


def test_a_node_stops_within_twice_its_heartbeat_when_redis_is_unreachable(nodes, redis):
    a, = nodes("a")
    redis.down = True
    stopped = a.cluster.stopService()
    advance([a], HEARTBEAT)
    assert not stopped.called
    advance([a], HEARTBEAT)
    assert stopped.called
    assert redis.subscribers == []  # its connections are closed


def test_a_stopping_node_waits_for_its_heartbeat_under_way(nodes, redis):
    a, = nodes("a")
    started = []
    a.router.place("conference.example.com", started.append)
    redis.down = True
    advance([a], HEARTBEAT / 3)  # a tick starts, and waits for Redis
    stopped = a.cluster.stopService()
    redis.up()
    advance([a], 1.0)  # the reader's last read ends
    assert stopped.called
    assert redis.call("EXISTS", "t:service:conference.example.com", "t:node:a") == 0


def entry(to, body):
    return ("j", to, "x", "<message xmlns='jabber:client' from='alice@example.com/res' "
            f"to='{to}' type='chat'><body>{body}</body></message>")


def test_entries_of_a_read_whose_answer_was_lost_are_read_again(nodes, redis):
    a, b = nodes("a", "b")
    bob = online(b, BOB)
    settle([a, b])
    redis.call("XADD", "t:stream:b", "*", *entry(f"{BOB}/res", "lost"))
    # Redis ran b's blocked read, then the connection broke before its answer.
    redis.call("XREADGROUP", "GROUP", "xmppd", "b", "COUNT", "200", "STREAMS", "t:stream:b", ">")
    reader = b.cluster._reader
    d, _, call = reader.reading
    call.cancel()
    reader._done()
    d.errback(ConnectionError("Lost connection"))
    advance([a, b], 1.0)
    assert bodies(bob) == ["lost"]
    assert redis.call("XLEN", "t:stream:b") == 0


def test_a_node_whose_start_failed_joins_when_redis_answers_again(nodes, redis):
    a, = nodes("a")
    failed = redis.fail_once("SET", "t:node:b")
    b, = nodes("b")
    assert "b" not in redis.call("SMEMBERS", "t:nodes")  # not listed without a heartbeat
    bob = online(b, BOB)
    alice = online(a, ALICE)
    advance([a, b], 1.0)
    assert failed and sorted(redis.call("SMEMBERS", "t:nodes")) == ["a", "b"]
    bob.take()
    alice.send(message(f"{BOB}/res", "late"))
    advance([a, b], 1.0)
    assert bodies(bob) == ["late"]


def test_a_bad_entry_in_a_taken_stream_does_not_lose_the_others(nodes, redis):
    a, b = nodes("a", "b")
    online(b, BOB)
    settle([a, b])
    dies(b)
    for body in ("bad", "good"):
        redis.call("XADD", "t:stream:b", "*", *entry(f"{BOB}/res", body))
    execute = a.cluster._cmd.execute_command

    def spoiled(*command):  # the first entry not UTF-8: txredisapi gives bytes
        d = execute(*command)
        if command[0] == "XRANGE":
            d.addCallback(lambda entries: entries[0][1].__setitem__(3, b"\xff<m/>") or entries)
        return d

    a.cluster._cmd.execute_command = spoiled
    redis.call("DEL", "t:node:b")
    advance([a], HEARTBEAT / 3)
    assert offline_count(a, BOB) == 1
    assert redis.call("SMEMBERS", "t:nodes") == ["a"]


def test_a_node_reaped_while_alive_ends_its_sessions(nodes, redis):
    a, b, alice, bob = alice_and_bob(nodes)
    alice.take()
    redis.call("DEL", "t:node:b")  # b stalled past its heartbeat
    advance([a], HEARTBEAT / 3)  # reaped: bob's contacts are told he left
    alice.send(message(f"{BOB}/res", "meanwhile"))
    settle([a, b])
    assert offline_count(a, BOB) == 1  # bob gets it when he connects again
    advance([a, b], HEARTBEAT / 3)
    assert bob.closed
    assert redis.call("HKEYS", "t:sessions:b") == []
    assert a.sessions.count(JID.parse(BOB)) == 0
    assert "b" in redis.call("SMEMBERS", "t:nodes")  # b goes on as a node
    again = online(b, BOB, "again")  # bob comes back, then the reaping is heard again
    b.cluster.received(b.cluster.directory_channel, '{"n":"b","op":"gone","by":"a"}')
    settle([a, b])
    assert not again.closed
    assert redis.call("HKEYS", "t:sessions:b") == [f"{BOB}/again"]
    assert a.sessions.count(JID.parse(BOB)) == 1


def test_an_inbound_subscription_is_bounced_when_the_roster_lock_fails(nodes, redis):
    a, b = nodes("a", "b")
    alice = online(a, ALICE)
    carol = online(b, CAROL)
    settle([a, b])
    alice.take()
    carol.take()
    redis.fail = lambda command: command[:2] == ("SET", f"t:lock:roster:{CAROL}")
    alice.send(f"<presence to='{CAROL}' type='subscribe'/>")
    advance([a, b], 31.0)  # three times the lock's lifetime
    redis.fail = None
    settle([a, b])
    errors = [e for e in alice.take() if e.name == "presence" and e.getAttribute("type") == "error"]
    assert [e.error.firstChildElement().name for e in errors] == ["internal-server-error"]
    assert not [e for e in carol.take() if e.getAttribute("type") == "subscribe"]


@pytest.mark.parametrize("gone", ["reaped", "stream taken"])
def test_a_message_to_two_resources_of_a_node_gone_is_stored_once(nodes, redis, gone):
    a, b = nodes("a", "b")
    alice = online(a, ALICE)
    online(b, BOB, "one")
    online(b, BOB, "two")
    settle([a, b])
    dies(b)
    if gone == "stream taken":  # by a reaper whose "gone" is not heard yet
        redis.call("DEL", "t:stream:b")
    before = len(redis.commands)
    alice.send(f"<message to='{BOB}' type='chat' id='m1'><body>hi</body></message>")
    settle([a])
    if gone == "reaped":
        redis.call("DEL", "t:node:b")
        advance([a], HEARTBEAT / 3)
    else:  # one attempt, not one per resource
        assert sum(command[0] == "EVAL" and "XADD" in command[1]
                   for command in redis.commands[before:]) == 1
    assert offline_count(a, BOB) == 1


def test_an_entry_gone_offline_is_acknowledged_once_stored(nodes, redis):
    runner = PausableRunner()
    a, b = nodes("a", "b", runner=runner)
    settle([a, b])
    redis.call("XADD", "t:stream:b", "*", *entry(f"{BOB}/gone", "later"))
    runner.pause()
    advance([b], 1.0)  # b reads it: its resource is gone, it goes offline
    assert redis.call("XLEN", "t:stream:b") == 1  # killed now, b leaves it to a survivor
    runner.resume()
    settle([a, b])
    assert offline_count(b, BOB) == 1
    assert redis.call("XLEN", "t:stream:b") == 0


@pytest.mark.parametrize("stopping", [False, True])
def test_what_waits_for_an_unreachable_redis_goes_offline(nodes, redis, stopping):
    a, b, alice, _ = alice_and_bob(nodes)
    redis.down = True
    alice.send(message(f"{BOB}/res", "held"))
    settle([a])
    if stopping:
        stopped = a.cluster.stopService()
        advance([a], HEARTBEAT)  # given up on, the storage still running
        assert offline_count(a, BOB) == 1
        advance([a], HEARTBEAT)
        assert stopped.called
        return
    advance([a], HEARTBEAT / 2)
    assert offline_count(a, BOB) == 0
    advance([a], 2 * HEARTBEAT)
    assert offline_count(a, BOB) == 1
    redis.up()  # Redis takes it after all: delivered too, never lost
    settle([a, b])
    assert offline_count(a, BOB) == 1


def test_a_session_unbound_while_the_mirror_loads_does_not_come_back(nodes, redis):
    a, b = nodes("a", "b")
    bob = online(b, BOB)
    settle([a, b])
    redis.hold_answer("HGETALL", "t:sessions:b")  # it comes after the channel's news
    a.cluster.subscribed()  # the channels are followed again
    bob.lose()
    settle([a, b])  # a hears "del"
    redis.release_answer()  # a read from before it
    assert a.sessions.count(JID.parse(BOB)) == 0


def test_a_node_started_again_leaves_alone_what_it_serves_already(nodes, redis):
    b, = nodes("b")
    bob = online(b, BOB)
    redis.call("SADD", "t:nodes", "a")  # a former process of node a, killed
    redis.call("HSET", "t:sessions:a", f"{ALICE}/old", RECORD)
    redis.hold_answer("SET", "t:reap:a")  # its first answer comes after a client bound
    a, = nodes("a")
    online(a, ALICE, "new")
    settle([a, b])
    bob.take()
    redis.release_answer()
    settle([a, b])
    left = [e["from"] for e in bob.take()
            if e.name == "presence" and e.getAttribute("type") == "unavailable"]
    assert left == [f"{ALICE}/old"]
    assert redis.call("HKEYS", "t:sessions:a") == [f"{ALICE}/new"]
    assert b.sessions.get(JID.parse(f"{ALICE}/new")) is not None


def a_reaps_b_slowly(nodes, redis):
    """Nodes a, b and c, alice on a; b dies with a message for bob in its
    stream; a reaps it, its offline write waiting (a slow database)."""
    runner = PausableRunner()
    a, b, c = nodes("a", "b", "c", runner=runner)
    alice = online(a, ALICE)
    online(b, BOB)
    settle([a, b, c])
    dies(b)
    redis.call("XADD", "t:stream:b", "*", *entry(f"{BOB}/res", "once"))
    redis.call("DEL", "t:node:b")
    runner.pause()
    advance([a], HEARTBEAT / 3)
    return a, b, c, runner, alice


def test_what_a_survivor_took_over_is_not_lost_when_it_dies_before_storing_it(nodes, redis):
    a, b, c, runner, _ = a_reaps_b_slowly(nodes, redis)
    assert redis.call("EXISTS", "t:stream:b") == 0  # taken over
    dies(a)  # and a dies before the write is done
    a.cluster._beat.stop()
    runner.calls.clear()
    redis.call("DEL", "t:node:a", "t:reap:b")
    runner.resume()
    advance([c], HEARTBEAT / 3)  # c reaps a (and what a had taken over), then b
    advance([c], HEARTBEAT / 3)
    assert offline_count(c, BOB) == 1
    assert redis.call("SMEMBERS", "t:nodes") == ["c"]
    assert redis.call("KEYS", "t:tak*") == []


def entry_being_stored(nodes, redis):
    """Nodes a and b, b having read an entry for a session gone whose
    offline write waits (``runner`` paused)."""
    runner = PausableRunner()
    a, b = nodes("a", "b", runner=runner)
    settle([a, b])
    redis.call("XADD", "t:stream:b", "*", *entry(f"{BOB}/gone", "once"))
    runner.pause()
    advance([b], 1.0)
    return a, b, runner


def test_a_node_stopping_while_an_entry_is_being_stored_stores_it_once(nodes, redis):
    a, b, runner = entry_being_stored(nodes, redis)
    stopped = b.cluster.stopService()
    advance([b], 1.0)  # the reader's last read ends; b takes its own stream over
    runner.resume()
    settle([a, b])
    assert stopped.called
    assert offline_count(b, BOB) == 1


def test_an_entry_being_stored_is_not_handled_again_when_read_again(nodes, redis):
    a, b, runner = entry_being_stored(nodes, redis)
    reader = b.cluster._reader
    d, _, call = reader.reading  # the next read, blocked, fails
    call.cancel()
    reader._done()
    d.errback(ConnectionError("Lost connection"))
    advance([b], 1.0)  # read again from id 0: the entry is still pending
    runner.resume()
    settle([a, b])
    assert offline_count(b, BOB) == 1
    assert redis.call("XLEN", "t:stream:b") == 0


def test_a_node_reaping_keeps_renewing_its_heartbeat(nodes, redis):
    a, b, c, runner, alice = a_reaps_b_slowly(nodes, redis)
    before = sum(command[:2] == ("SET", "t:node:a") for command in redis.commands)
    advance([a, c], HEARTBEAT / 3)
    advance([a, c], HEARTBEAT / 3)
    assert sum(command[:2] == ("SET", "t:node:a") for command in redis.commands) == before + 2
    runner.resume()
    settle([a, b, c])
    assert offline_count(a, BOB) == 1
    assert not alice.closed


def test_a_start_whose_own_reaping_failed_midway_does_it_again(nodes, redis):
    b, = nodes("b")
    redis.call("SADD", "t:nodes", "a")  # a former process of a, killed
    redis.call("HSET", "t:sessions:a", f"{ALICE}/old", RECORD)
    b.cluster.directory.mirror_set("a", f"{ALICE}/old", RECORD)
    failed = redis.fail_once("DEL", "t:sessions:a")
    a, = nodes("a")
    advance([a, b], 1.0)
    assert failed
    assert redis.call("HKEYS", "t:sessions:a") == []
    assert b.sessions.get(JID.parse(f"{ALICE}/old")) is None


def test_a_lock_is_renewed_while_it_is_held(nodes, redis):
    a, = nodes("a")
    release = result(a.cluster.lock("roster:x", ttl=3.0))

    def renewals():
        return sum(command[0] == "EVAL" and "PEXPIRE" in command[1]
                   and command[3] == "t:lock:roster:x" for command in redis.commands)

    for _ in range(3):  # its lifetime: renewed every second
        advance([a], 1.0)
    assert renewals() == 3
    assert redis.call("PTTL", "t:lock:roster:x") > 2000
    release()
    advance([a], 3.0)
    assert renewals() == 3
    assert redis.call("EXISTS", "t:lock:roster:x") == 0


def test_a_lock_another_holds_is_given_up_after_three_lifetimes(nodes, redis):
    a, = nodes("a")
    redis.call("SET", "t:lock:roster:x", "another holder", "PX", "60000")
    failures = []
    a.cluster.lock("roster:x", ttl=1.0).addErrback(failures.append)
    advance([a], 2.9)
    assert failures == []
    for _ in range(3):  # the last attempts, the backoff at most 0.2 s
        advance([a], 0.2)
    assert len(failures) == 1 and failures[0].check(defer.TimeoutError)
    assert redis.call("GET", "t:lock:roster:x") == "another holder"


def test_a_lock_whose_redis_does_not_answer_is_given_up_and_not_renewed(nodes, redis):
    a, = nodes("a")
    redis.hold_answer("SET", "t:lock:roster:x")
    failures = []
    a.cluster.lock("roster:x", ttl=1.0).addErrback(failures.append)
    advance([a], 3.0)
    assert len(failures) == 1 and failures[0].check(defer.TimeoutError)
    redis.release_answer()  # the lock was taken after all: it lapses, no one renews it
    sent = len(redis.commands)
    advance([a], 2.0)
    assert not any("t:lock:roster:x" in command for command in redis.commands[sent:])


def test_the_records_of_a_node_joining_are_kept_when_the_mirror_loads(nodes, redis):
    a, = nodes("a")
    redis.call("HSET", "t:sessions:j", f"{BOB}/new", RECORD)  # j: published, not listed yet
    a.cluster.directory.mirror_set("j", f"{BOB}/new", RECORD)
    a.cluster.subscribed()
    settle([a])
    assert a.sessions.count(JID.parse(BOB)) == 1
