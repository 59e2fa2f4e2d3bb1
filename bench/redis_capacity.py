"""What one Redis sustains for a cluster of xmppd nodes (docs/cluster.md).

    python bench/redis_capacity.py                                # redis://127.0.0.1:6379/15
    python bench/redis_capacity.py --seconds 10 --pipeline 1      # one command per round trip

Times the operations the nodes of a cluster put on Redis, sent in pipelines
of ``--pipeline`` commands:

- a stanza for a session on another node: ``XADD NOMKSTREAM`` of a ~400-byte
  stanza (fields ``j``, a full JID, and ``x``, the XML) to that node's
  stream, ``XREADGROUP COUNT 100`` by the node (its cost shared by the
  entries it returns), then ``XACK`` and ``XDEL``: for half of the entries
  one id a command, for the other half the 100 ids of a read together (as
  a node does with what it read), ``--batch`` entries at a time;
- a session's directory event (its ~300-byte record in JSON) ``PUBLISH``ed
  to 1, 3 and 10 subscribers (``--subscribers``: one a node), which read
  every byte;
- ``HSET`` of a session record into its node's hash.

Each figure is the CPU time of Redis's main thread per operation (``INFO
cpu``, ``used_cpu_*_main_thread``: the one core that executes commands) and
the operations a second that makes for one core; the rate this client
reached is printed beside it (Python, not Redis, limits that one).  Then
the memory (``INFO memory``, ``used_memory``) taken by ``--records``
session records written into the hashes of 4 nodes, and by as many stream
entries waiting, then read and not yet acknowledged.

Writes only keys and channels under a prefix of its own
(``xmppd-bench-RANDOM``), on the database of the URL, and deletes them at
the end.  Run it on an otherwise idle Redis: ``used_memory`` and the CPU
time are the whole server's.  Takes about ten times ``--seconds`` (50 s
by default).
"""

import argparse
import json
import secrets
import socket
import ssl
import time
from contextlib import contextmanager

import redis
from redis.connection import SSLConnection, parse_url

GROUP = "xmppd"  # the consumer group of every node stream
STANZA_SIZE = 400
RECORD_SIZE = 300


def full_jid(n: int) -> str:
    return f"user{n}@example.com/phone-{n:08x}"


def stanza(n: int) -> str:
    head = (f"<message xmlns='jabber:client' from='{full_jid(n + 1)}' to='{full_jid(n)}' "
            f"type='chat' id='{n:016x}'><body>")
    tail = "</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    return head + ("A sentence of chat. " * 20)[:STANZA_SIZE - len(head) - len(tail)] + tail


def record(n: int) -> dict:
    """A session record as the directory holds it: available, priority,
    last presence, flags, hibernating."""
    fields = {"a": True, "p": 0, "x": "", "f": ["csi"], "h": False}
    presence = (f"<presence xmlns='jabber:client' from='{full_jid(n)}'><show>away</show>"
                "<status>{}</status><c xmlns='http://jabber.org/protocol/caps' "
                "hash='sha-1' node='https://example.org/client' "
                "ver='Yb0q3tIR4xbTKCmmzjvpw5Ud5yw='/></presence>")
    room = RECORD_SIZE - len(encode(fields)) - len(presence) + 2
    fields["x"] = presence.format(("Out for lunch. " * 20)[:room])
    return fields


def encode(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def directory_event(n: int) -> str:
    return encode({"n": "a", "op": "set", "j": full_jid(n), "r": record(n)})


def main_thread_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return cpu["used_cpu_sys_main_thread"] + cpu["used_cpu_user_main_thread"]


def used_memory(client: redis.Redis) -> int:
    return client.info("memory")["used_memory"]


@contextmanager
def measured(client: redis.Redis, totals: dict, name: str, count: int):
    """Add ``count`` operations, their wall and Redis CPU time to ``totals[name]``."""
    cpu, began = main_thread_cpu(client), time.perf_counter()
    yield
    wall = time.perf_counter() - began
    total = totals.setdefault(name, [0, 0.0, 0.0])
    total[0] += count
    total[1] += wall
    total[2] += main_thread_cpu(client) - cpu


def pipelined(client: redis.Redis, commands: list[tuple], size: int) -> list:
    replies = []
    for start in range(0, len(commands), size):
        pipe = client.pipeline(transaction=False)
        for command in commands[start:start + size]:
            pipe.execute_command(*command)
        replies += pipe.execute()
    return replies


def stream_cycle(client: redis.Redis, key: str, first: int, args, totals: dict) -> None:
    """One batch of stanzas through a node stream: added, read, acknowledged."""
    count = args.batch
    adds = [("XADD", key, "NOMKSTREAM", "*", "j", full_jid(n), "x", stanza(n))
            for n in range(first, first + count)]
    with measured(client, totals, "XADD NOMKSTREAM (a stanza)", count):
        ids = pipelined(client, adds, args.pipeline)
    reads = [("XREADGROUP", "GROUP", GROUP, "b", "COUNT", 100, "STREAMS", key, ">")]
    with measured(client, totals, "XREADGROUP COUNT 100 (an entry)", count):
        replies = pipelined(client, reads * -(-count // 100), args.pipeline)
    read = sum(len(entries) for reply in replies for _, entries in reply or ())
    if read != count:
        raise SystemExit(f"XREADGROUP returned {read} entries, not {count}")
    half = count // 2
    singly = [command for entry in ids[:half]
              for command in (("XACK", key, GROUP, entry), ("XDEL", key, entry))]
    with measured(client, totals, "XACK + XDEL, 1 id (an entry)", half):
        pipelined(client, singly, args.pipeline)
    groups = [ids[start:start + 100] for start in range(half, count, 100)]
    batched = [command for group in groups
               for command in (("XACK", key, GROUP, *group), ("XDEL", key, *group))]
    with measured(client, totals, "XACK + XDEL, 100 ids (an entry)", count - half):
        pipelined(client, batched, args.pipeline)


def subscriber(url: str, channel: str) -> socket.socket:
    """A raw connection subscribed to ``channel``, so that reading costs
    this client nothing but the bytes."""
    options = parse_url(url)
    if "path" in options:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(options["path"])
    else:
        host = options.get("host", "localhost")
        sock = socket.create_connection((host, options.get("port", 6379)))
        if options.get("connection_class") is SSLConnection:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    sock.settimeout(30)
    expected = b""
    if options.get("password"):
        sock.sendall(resp("AUTH", *filter(None, (options.get("username"),
                                                 options["password"]))))
        expected += b"+OK\r\n"
    sock.sendall(resp("SUBSCRIBE", channel))
    expected += b"*3\r\n$9\r\nsubscribe\r\n" + bulk(channel) + b":1\r\n"
    if receive(sock, len(expected)) != expected:
        raise SystemExit(f"subscribing to {channel} failed")
    return sock


def resp(*words: str) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(bulk(word) for word in words)


def bulk(word: str) -> bytes:
    data = word.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def receive(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise SystemExit("a subscriber's connection closed")
        data += chunk
    return bytes(data)


def publish(client: redis.Redis, url: str, channel: str, subscribers: int, args,
            totals: dict) -> None:
    """PUBLISH directory events to ``subscribers`` connections that read them all."""
    socks = [subscriber(url, channel) for _ in range(subscribers)]
    try:
        event = directory_event(0)
        message = b"*3\r\n$7\r\nmessage\r\n" + bulk(channel) + bulk(event)
        name = f"PUBLISH, {subscribers} subscriber{'s' * (subscribers > 1)}"
        spent = 0.0
        while spent < args.seconds:
            began = time.perf_counter()
            with measured(client, totals, name, args.batch):
                delivered = pipelined(client, [("PUBLISH", channel, event)] * args.batch,
                                      args.pipeline)
                for sock in socks:
                    receive(sock, len(message) * args.batch)
            if sum(delivered) != subscribers * args.batch:
                raise SystemExit(f"PUBLISH reached {sum(delivered)} subscribers, "
                                 f"not {subscribers * args.batch}")
            spent += time.perf_counter() - began
    finally:
        for sock in socks:
            sock.close()


def fill_sessions(client: redis.Redis, keys: list[str], args, totals: dict) -> None:
    """``--records`` session records, spread over the node hashes in turn."""
    sets = [("HSET", keys[n % len(keys)], full_jid(n), encode(record(n)))
            for n in range(args.records)]
    with measured(client, totals, "HSET (a session record)", args.records):
        pipelined(client, sets, args.pipeline)


def memory(client: redis.Redis, prefix: str, args, totals: dict) -> dict:
    """Bytes of Redis memory per session record and per stream entry."""
    figures = {}
    keys = [f"{prefix}:sessions:n{n}" for n in range(4)]
    before = used_memory(client)
    fill_sessions(client, keys, args, totals)
    figures["session record in a node's hash"] = (used_memory(client) - before) / args.records
    spent = totals["HSET (a session record)"][1]
    while spent < args.seconds:
        client.delete(*keys)
        fill_sessions(client, keys, args, totals)
        spent = totals["HSET (a session record)"][1]
    client.delete(*keys)

    key = f"{prefix}:stream:m"
    before = used_memory(client)
    client.execute_command("XGROUP", "CREATE", key, GROUP, "$", "MKSTREAM")
    adds = [("XADD", key, "NOMKSTREAM", "*", "j", full_jid(n), "x", stanza(n))
            for n in range(args.records)]
    pipelined(client, adds, args.pipeline)
    waiting = used_memory(client)
    figures["stream entry waiting"] = (waiting - before) / args.records
    reads = [("XREADGROUP", "GROUP", GROUP, "m", "COUNT", 100, "STREAMS", key, ">")]
    pipelined(client, reads * -(-args.records // 100), args.pipeline)
    figures[" + once read, not yet acknowledged"] = (
        (used_memory(client) - waiting) / args.records)
    client.delete(key)
    return figures


def report(client: redis.Redis, args, totals: dict, figures: dict) -> None:
    server = client.info("server")
    print(f"Redis {server['redis_version']} at {args.redis}, pipelines of {args.pipeline} "
          f"command{'s' * (args.pipeline > 1)}, about {args.seconds:g} s per operation")
    print(f"stanza {len(stanza(0))} bytes, full JID {len(full_jid(0))} bytes, session record "
          f"{len(encode(record(0)))} bytes, directory event {len(directory_event(0))} bytes")
    print()
    print(f"{'operation':<34}{'count':>10}{'µs Redis CPU':>14}"
          f"{'ops/s a Redis core':>20}{'ops/s here':>12}")
    for name, (count, wall, cpu) in totals.items():
        print(f"{name:<34}{count:>10,}{cpu / count * 1e6:>14.2f}"
              f"{count / cpu:>20,.0f}{count / wall:>12,.0f}")
    print()
    print(f"Redis memory (used_memory), {args.records:,} of each:")
    for name, size in figures.items():
        print(f"  {name:<40}{size:>8,.0f} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", metavar="URL", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="time spent on each operation")
    parser.add_argument("--pipeline", type=int, default=100, help="commands per round trip")
    parser.add_argument("--batch", type=int, default=10000,
                        help="stream entries, or publishes, between two measurements")
    parser.add_argument("--subscribers", default="1,3,10",
                        help="subscriber counts for PUBLISH, comma-separated")
    parser.add_argument("--records", type=int, default=100_000,
                        help="session records and stream entries for the memory figures")
    args = parser.parse_args()
    if args.batch % 200:
        parser.error("--batch must be a multiple of 200")
    client = redis.Redis.from_url(args.redis)
    prefix = f"xmppd-bench-{secrets.token_hex(4)}"
    totals: dict = {}
    try:
        key = f"{prefix}:stream:b"
        client.execute_command("XGROUP", "CREATE", key, GROUP, "$", "MKSTREAM")
        first = 0
        while totals.get("XADD NOMKSTREAM (a stanza)", (0, 0.0))[1] < args.seconds:
            stream_cycle(client, key, first, args, totals)
            first += args.batch
        client.delete(key)
        for subscribers in map(int, args.subscribers.split(",")):
            publish(client, args.redis, f"{prefix}:directory", subscribers, args, totals)
        figures = memory(client, prefix, args, totals)
    finally:
        leftover = list(client.scan_iter(match=f"{prefix}:*"))
        if leftover:
            client.delete(*leftover)
    report(client, args, totals, figures)


if __name__ == "__main__":
    main()
