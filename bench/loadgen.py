"""XMPP load generator: the benchmark phases against any server.

    python bench/loadgen.py --host 127.0.0.1 --port 5222 --domain example.com \\
        --pattern 'bench{}' --password secret --server-pid 1234

A server of several processes (cluster nodes, docs/cluster.md) is given as
lists: ``--port 5222,5322 --server-pid 1234,1235`` (and ``--ws-port``, one
per port).  Account number i logs in to port i mod the number of ports; the
server's CPU time and RSS are the sums over its processes.  The messages
phase pairs consecutive accounts, so with two ports (or more) the two
sessions of every pair are on different ports: every message crosses from
one node to another.

Accounts must exist (see bench/accounts.py); the first ``--presence-users``
of them need the rosters that accounts.py makes, and with the ``pep`` phase
the next 1 + ``--pep-contacts`` the star that its ``--star-size`` makes.
Phases (``--phases``):

- ``login``: ``--logins`` full logins (TCP, STARTTLS, SASL, bind, then
  ``</stream:stream>``) with ``--concurrency`` in flight: logins/s, p50/p99
  latency (connect to bind result), server CPU ms per login.  With
  ``--sasl2``, SASL2 (XEP-0388) with Bind2 (XEP-0386) inline instead.
- ``fast_login``: each of the ``--logins`` accounts logs in once with its
  password over SASL2 and gets a FAST token (XEP-0484), and once with the
  token; then, measured, ``--fast-rounds`` times over, each logs in again
  as a phone reconnecting does: its TLS session resumed, SASL2 with the
  token (HT-SHA-256-NONE) and Bind2 inline, in one round trip after TLS.
- ``messages``: ``--pairs`` pairs of sessions play closed-loop ping-pong
  with ``--window`` chat messages in flight per pair for ``--seconds``:
  delivered messages/s, p50/p99 delivery latency, server CPU%.
- ``ws_messages``: the same ping-pong with every session over WebSocket
  (RFC 7395, ``wss://DOMAIN:--ws-port/xmpp-websocket``, TLS from the
  start, one element per frame).
- ``bosh_messages``: the same over BOSH (XEP-0124, XEP-0206,
  ``https://DOMAIN:--ws-port/http-bind``): each message a request, one
  request always held for what the server sends.
- ``presence``: the ``--presence-users`` accounts with rosters of
  ``--roster-size`` contacts come online; then each repeatedly changes its
  presence, sending the next change when the server reflects the last one
  back (RFC 6121 §4.4.2): broadcast deliveries/s and p50/p99 latency.
- ``pep``: a publisher with ``--pep-contacts`` contacts, all online with
  entity capabilities (XEP-0115) that ask for notifications of its tune
  node, publishes ``--pep-items`` items (XEP-0163) with ``--pep-window``
  publishes in flight: notifications delivered/s and p50/p99 latency
  (publish sent to notification received).
- ``muc``: ``--muc-occupants`` sessions enter one group chat room
  (XEP-0045) at ``conference.DOMAIN``, the first creating it and accepting
  the instant configuration; ``--muc-senders`` of them send groupchat
  messages with ``--muc-window`` in flight each (the next when the room
  reflects one back) for ``--seconds``: messages sent/s, deliveries/s
  (every occupant gets every message), p50/p99 delivery latency, and of
  the senders' own copies (the echo their next message waits for).
- ``memory``: RSS of the server (``--server-pid``) per bound, idle
  session at each count of ``--idle-sessions``, read once the RSS has
  settled, after ``--idle-wait`` seconds; the server's open files and the
  time the sessions added at that count took to log in.
- ``cpu_per_stanza`` (whenever messages, presence, pep or muc ran): server
  CPU per delivered message, per presence delivery, per PEP notification
  and per group chat delivery.

Every phase prints one JSON line on stdout and, at the end, a table on
stderr.  Sent and delivered stanzas are counted in every phase; ``lost``
must be 0.  Latencies compare ``time.monotonic_ns()`` stamps carried in the
stanzas, a clock shared by all processes of the machine.  The CPU figures
of a phase: the server's (``server_cpu_pct``), the rest of its CPUs' busy
time when each server process is pinned to one (``others_cpu_pct``), and
the busy time of the whole machine (``machine_cpu_pct``, up to 100 per
CPU).

The clients run in ``--workers`` processes (each an asyncio loop); each
reports its CPU use during the measured window (``gen_cpu_pct``), so a
saturated generator shows up as ~100%.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import secrets
import sys
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.accounts import (
    DEFAULT_PASSWORD,
    DEFAULT_PATTERN,
    check_roster_shape,
    contacts,
    star,
)
from bench.xmppclient import (FAST_MECHANISM, MECHANISMS, NS_DISCO_INFO, BoshClient, Caps,
                              Client, Reconnect, Target, WebSocketClient, XMPPError)

CLIENTS = {"tcp": Client, "websocket": WebSocketClient, "bosh": BoshClient}

PHASES = ("login", "fast_login", "messages", "ws_messages", "bosh_messages", "presence", "pep",
          "muc", "memory")
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
PEP_NODE = "http://jabber.org/protocol/tune"  # XEP-0118, a PEP node clients commonly follow
PEP_CAPS_NODE = "https://xmppd.example/bench"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = f"{NS_MUC}#user"
NS_MUC_OWNER = f"{NS_MUC}#owner"
MUC_ROOM = "bench"  # the muc phase's room: bench@conference.DOMAIN
PEP_WARMUP_ROUNDS = 40  # warm-up items at most, until every contact got one
START_DELAY = 0.2  # seconds between announcing a measured window and its start
DRAIN_TIMEOUT = 20.0  # seconds to wait for stanzas in flight after a window
DRAIN_STALL = 3.0  # ... or for this long without any new delivery
ERRORS_KEPT = 5


def raise_fd_limit():
    """Soft RLIMIT_NOFILE up to the hard limit (10k sessions need 10k fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# The server process, seen through /proc


class ServerProcess:
    """CPU time and RSS of the server's processes (all their threads,
    summed), from /proc; none given: nothing is measured."""

    def __init__(self, *pids):
        self.pids = pids
        self._tick = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self):
        if not self.pids:
            return None
        total = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / self._tick

    def others_seconds(self):
        """CPU time used so far on the server's CPUs, when each of its
        processes is pinned to one: the busy time of those CPUs
        (/proc/stat), to be compared with the server's own."""
        if not self.pids:
            return None
        cpus = set()
        for pid in self.pids:
            pinned = os.sched_getaffinity(pid)
            if len(pinned) != 1:
                return None
            cpus |= pinned
        return self._busy({f"cpu{cpu}" for cpu in cpus})

    def machine_seconds(self):
        """CPU time used so far by the whole machine, all CPUs together."""
        return self._busy({"cpu"}) if self.pids else None

    def _busy(self, names):
        """The busy time of the /proc/stat lines ``names`` ("cpu" is all)."""
        busy = 0
        with open("/proc/stat") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in names:
                    user, nice, system, _, _, irq, softirq, steal = map(int, fields[1:9])
                    busy += user + nice + system + irq + softirq + steal
        return busy / self._tick

    def rss_bytes(self):
        return sum(_rss(pid) for pid in self.pids)

    def open_files(self):
        """The file descriptors the server holds."""
        return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in self.pids)


def _rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# Worker processes: each holds some clients on its own event loop


class Worker:
    """The commands a worker process runs on its event loop, one at a time."""

    def __init__(self, options):
        """``options``: the ``target`` (or a list of them: account number
        i logs in to target i mod their number), the account name
        ``pattern`` (users are given as what it formats: numbers, or names
        with ``"{}"``) and the ``password``, or a dict of passwords by
        localpart."""
        target = options["target"]
        self.targets = target if isinstance(target, list) else [target]
        self.password = options["password"]
        self.pattern = options["pattern"]
        self.clients = {}  # user -> logged-in Client
        self.reconnects = {}  # user -> Reconnect: its FAST token and TLS session
        self.pep_publisher = None  # the pep phase's publisher, if in this process
        self.pep_contacts = []  # its contacts in this process
        self.pep_token = None  # the prefix of this run's item ids
        self.pep_serial = 0  # items published so far, numbering the ids
        self.pep_warmed = set()  # contacts that got a warm-up item
        self.pep_seen = set()  # (contact, item id) of the measured items received
        self.pep_duplicates = 0
        self.pep_last_ns = 0  # when the last measured item arrived
        self.pep_done = None  # future: every measured item arrived
        self.muc_occupants = []  # the muc phase's clients in this process, in the room
        self.pacer = None  # the task sending open-loop presence updates
        self.reset()

    def _client(self, user, resource, transport="tcp", profile="sasl"):
        """A client of ``user``; ``profile``: ``sasl`` (RFC 6120), ``sasl2``
        (XEP-0388 with Bind2), ``fast`` (SASL2 with the user's FAST token
        and TLS session, once it has them)."""
        localpart = self.pattern.format(user)
        password = self.password
        if isinstance(password, dict):
            password = password[localpart]
        target = (self.targets[user % len(self.targets)] if len(self.targets) > 1
                  else self.targets[0])
        client = CLIENTS[transport](target, localpart, password, resource)
        client.local_addr = target.source(user)
        if profile != "sasl":
            if transport != "tcp":
                raise ValueError(f"the {profile} profile is over TCP only")
            client.reconnect = (Reconnect(fast=False) if profile == "sasl2"
                                else self.reconnects.setdefault(user, Reconnect()))
        return client

    def reset(self):
        self.sent = 0
        self.delivered = 0
        self.window_delivered = 0
        self.expected = 0
        self.latencies = []
        self.errors = []
        self.end_ns = 0
        self.seen = {}  # localpart -> localparts whose presence arrived

    def _error(self, text):
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(text)

    # Logins

    async def login(self, users, concurrency, keep, resource, transport="tcp", profile="sasl"):
        """Log ``users`` in with at most ``concurrency`` logins in flight
        (over ``transport``: ``tcp``, ``websocket``, ``bosh``; with
        ``profile``, see :meth:`_client`); keep the sessions or end them at
        once.  With FAST, how many logins resumed TLS, used a token and got
        a new one."""
        self.reset()
        gate = asyncio.Semaphore(concurrency)
        latencies, failed = [], 0
        fast = {"tls_resumed": 0, "token_logins": 0, "new_tokens": 0}

        async def one(index):
            nonlocal failed
            async with gate:
                client = self._client(index, resource, transport, profile)
                try:
                    latencies.append(await client.login() * 1000)
                    if profile == "fast":
                        reconnect = client.reconnect
                        fast["tls_resumed"] += reconnect.tls_resumed
                        fast["token_logins"] += reconnect.used_token
                        fast["new_tokens"] += reconnect.new_token
                except (XMPPError, OSError, asyncio.TimeoutError) as e:
                    failed += 1
                    self._error(f"{type(e).__name__}: {e}")
                    if client.transport is not None:
                        client.transport.abort()
                    return
                if keep:
                    self.clients[index] = client
                    client.closed.add_done_callback(
                        lambda _: client.closing or self._error(f"{client.bare}: connection lost"))
                else:
                    await client.close()

        await asyncio.gather(*(one(i) for i in users))
        return {"latencies": latencies, "failed": failed, "errors": self.errors, **fast}

    async def close_all(self):
        clients, self.clients = list(self.clients.values()), {}
        self.muc_occupants = []
        await asyncio.gather(*(c.close() for c in clients))
        return {"closed": len(clients)}

    def _watch(self, client, handler):
        """Route ``client``'s stanzas to ``handler``; stream errors are
        counted as errors."""
        def on_stanza(element):
            if element.name == "error":
                self._error(f"{client.bare}: stream error {[c.name for c in element.children]}")
            else:
                handler(client, element)
        client.on_stanza = on_stanza

    async def _window(self, start_at, end_at, kick):
        """Run a measured window: wait for its start, ``kick()``, wait for its
        end; the window's counts and this process's CPU use."""
        self.end_ns = int(end_at * 1e9)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cpu = time.process_time()
        kick()
        await asyncio.sleep(max(0.0, end_at - time.monotonic()))
        cpu = time.process_time() - cpu
        return {"sent": self.sent, "window_delivered": self.window_delivered,
                "latencies": self.latencies, "errors": self.errors,
                "gen_cpu_pct": 100 * cpu / (end_at - start_at)}

    def counts(self):
        return {"sent": self.sent, "delivered": self.delivered, "expected": self.expected,
                "errors": self.errors}

    # Messages: closed-loop ping-pong between the two sessions of a pair

    async def messages(self, pairs, window, start_at, end_at, padding):
        self.reset()
        filler = "x" * padding
        peer = {}
        for a, b in pairs:
            peer[self.clients[a]], peer[self.clients[b]] = self.clients[b], self.clients[a]

        def send(client):
            self.sent += 1
            client.send(f"<message to='{peer[client].jid}' type='chat' id='m{self.sent}'>"
                        f"<body>{time.monotonic_ns()} {filler}</body></message>")

        def received(client, element):
            if element.name != "message":
                return
            if element.get("type") == "error":
                self._error(f"{client.bare}: message bounced")
                return
            now = time.monotonic_ns()
            self.delivered += 1
            if now <= self.end_ns:
                stamp = int(element.child("body").text.split(" ", 1)[0])
                self.window_delivered += 1
                self.latencies.append((now - stamp) / 1e6)
                send(client)

        for client in peer:
            self._watch(client, received)

        def kick():
            for a, _ in pairs:
                for _ in range(window):
                    send(self.clients[a])

        result = await self._window(start_at, end_at, kick)
        self.expected = self.sent
        return result

    # Presence: every user changes presence when the last change came back

    async def presence_online(self, roster_users, roster_size, timeout, quiet=1.0):
        """Send initial presence from every session; wait until each has
        the presence of all its contacts (all of them are online) and no
        presence arrived for ``quiet`` seconds (the initial broadcasts and
        probe answers are over)."""
        self.reset()
        want = {client.user: {self.pattern.format(j)
                              for j in contacts(i, roster_users, roster_size)}
                for i, client in self.clients.items()}
        last = time.monotonic()

        def received(client, element):
            nonlocal last
            last = time.monotonic()
            if element.name == "presence" and element.get("type") is None:
                self.seen[client.user].add(element.get("from", "").split("@", 1)[0])

        for client in self.clients.values():
            self.seen[client.user] = set()
            self._watch(client, received)
            client.send("<presence/>")
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if (time.monotonic() - last > quiet
                    and all(want[u] <= self.seen[u] for u in want)):
                break
            await asyncio.sleep(0.05)
        complete = sum(want[u] <= self.seen[u] for u in want)
        return {"complete": complete, "sessions": len(want),
                "seconds": time.monotonic() - started}

    async def presence(self, roster_size, start_at, end_at, rate=None):
        """Presence updates: closed-loop (each session sends its next one
        when the server reflects the last), or open-loop at ``rate``
        updates a second from this process, its sessions in turn."""
        self.reset()

        def update(client):
            self.sent += 1
            self.expected += roster_size
            client.send(f"<presence><status>{time.monotonic_ns()}</status></presence>")

        def received(client, element):
            if element.name != "presence" or element.get("type") is not None:
                if element.get("type") == "error":
                    self._error(f"{client.bare}: presence error")
                return
            status = element.child("status")
            if status is None:
                return
            now = time.monotonic_ns()
            if element.get("from") == client.jid:  # reflected: next change
                if now < self.end_ns and rate is None:
                    update(client)
                return
            self.delivered += 1
            if now <= self.end_ns:
                self.window_delivered += 1
                self.latencies.append((now - int(status.text)) / 1e6)

        for client in self.clients.values():
            self._watch(client, received)

        def kick():
            if rate is not None:
                self.pacer = asyncio.ensure_future(self._paced(rate, end_at, update))
                return
            for client in self.clients.values():
                update(client)

        return await self._window(start_at, end_at, kick)

    async def _paced(self, rate, end_at, send):
        """Until ``end_at``, ``send(client)`` ``rate`` times a second, the
        clients in turn, as many at each wake-up as are due."""
        clients = list(self.clients.values())
        started, done = time.monotonic(), 0
        while (now := time.monotonic()) < end_at:
            due = int((now - started) * rate) + 1
            for _ in range(done, due):
                send(clients[done % len(clients)])
                done += 1
            await asyncio.sleep(max(0.0, started + done / rate - time.monotonic()))

    # Personal eventing: one publisher, its contacts notified of each item

    async def pep_publisher_online(self, user, timeout):
        """The publisher sends initial presence (without caps: it wants no
        notifications) and waits for the server to reflect it."""
        self.pep_publisher = publisher = self.clients[user]
        reflected = asyncio.get_running_loop().create_future()

        def received(client, element):
            if (element.name == "presence" and element.get("from") == client.jid
                    and not reflected.done()):
                reflected.set_result(None)

        self._watch(publisher, received)
        publisher.presence()
        await asyncio.wait_for(reflected, timeout)
        return {}

    async def pep_contacts_online(self, users, hub, token, timeout, quiet=1.0):
        """The contacts (``users``) send initial presence with caps that
        want notifications of ``PEP_NODE``; wait until each has the
        publisher's presence and nothing arrived for ``quiet`` seconds (the
        server has queried the caps it did not know).  Notifications of
        items whose id starts with ``token`` are counted from now on."""
        self.reset()
        self.pep_token = token
        self.pep_contacts = [self.clients[u] for u in users]
        self.pep_warmed = set()
        hub = self.pattern.format(hub)
        caps = Caps(PEP_CAPS_NODE, [NS_DISCO_INFO, "http://jabber.org/protocol/caps", PEP_NODE,
                                    f"{PEP_NODE}+notify"], name="xmppd bench")
        last = time.monotonic()
        have_hub = set()

        def received(client, element):
            nonlocal last
            last = time.monotonic()
            if element.name == "message":
                self._pep_notification(client, element)
            elif (element.name == "presence" and element.get("type") is None
                  and element.get("from", "").split("@", 1)[0] == hub):
                have_hub.add(client.user)

        for client in self.pep_contacts:
            client.caps = caps
            self._watch(client, received)
            client.presence()
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if time.monotonic() - last > quiet and len(have_hub) == len(self.pep_contacts):
                break
            await asyncio.sleep(0.05)
        return {"complete": len(have_hub), "seconds": time.monotonic() - started,
                "disco_answered": sum(c.disco_answered for c in self.pep_contacts),
                "errors": self.errors}

    def _pep_notification(self, client, message):
        """Count a notification (XEP-0163 §4.3) of this run's items."""
        if message.get("type") == "error":
            self._error(f"{client.bare}: message error")
            return
        event = message.child("event", NS_PUBSUB_EVENT)
        items = None if event is None else event.child("items")
        item = None if items is None else items.child("item")
        item_id = None if item is None else item.get("id", "")
        if item_id is None or not item_id.startswith(self.pep_token):
            return  # not a notification, or of an earlier run's item (the last one)
        if item_id[len(self.pep_token)] == "w":
            self.pep_warmed.add(client.user)
            return
        now = time.monotonic_ns()
        key = (client.user, item_id)
        if key in self.pep_seen:
            self.pep_duplicates += 1
            return
        self.pep_seen.add(key)
        self.delivered += 1
        self.pep_last_ns = now
        self.latencies.append((now - int(item.children[0].child("title").text)) / 1e6)
        done = self.pep_done
        if done is not None and self.delivered >= self.expected and not done.done():
            done.set_result(None)

    async def _pep_publish(self, count, window, kind):
        """Publish ``count`` items of ``kind`` ("w"arm-up or "m"easured),
        ``window`` at a time, each stamped with the time it is sent; the
        time the first was sent (ns) once every result came."""
        publisher, token = self.pep_publisher, self.pep_token
        finished = asyncio.get_running_loop().create_future()
        results = 0
        first_ns = None

        def publish():
            nonlocal first_ns
            self.sent += 1
            self.pep_serial += 1
            item_id = f"{token}{kind}{self.pep_serial}"
            now = time.monotonic_ns()
            first_ns = first_ns or now
            publisher.send(
                f"<iq type='set' id='{item_id}'><pubsub xmlns='{NS_PUBSUB}'>"
                f"<publish node={quoteattr(PEP_NODE)}><item id='{item_id}'>"
                f"<tune xmlns='{PEP_NODE}'><artist>xmppd bench</artist><title>{now}</title>"
                f"<length>{self.sent}</length></tune></item></publish></pubsub></iq>")

        def received(client, element):
            nonlocal results
            if element.name != "iq" or not element.get("id", "").startswith(token):
                return
            results += 1
            if element.get("type") != "result":
                self._error(f"{client.bare}: publish failed: "
                            f"{[c.name for e in element.children for c in e.children]}")
            if self.sent < count:
                publish()
            elif results == count and not finished.done():
                finished.set_result(None)

        self._watch(publisher, received)
        self.sent = 0
        for _ in range(min(window, count)):
            publish()
        await finished
        return first_ns

    async def pep_warmup(self, publish, wait):
        """Publish one warm-up item (if this process has the publisher);
        wait up to ``wait`` seconds for every contact here to have one."""
        if publish:
            await self._pep_publish(1, 1, "w")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and len(self.pep_warmed) < len(self.pep_contacts):
            await asyncio.sleep(0.02)
        return {"warmed": len(self.pep_warmed), "contacts": len(self.pep_contacts)}

    async def pep(self, items, publish, window, start_at):
        """The measured run: the publisher (if ``publish``, it is here)
        publishes ``items`` from ``start_at``; every contact here waits for
        all of them (or until deliveries stop)."""
        self.delivered = self.pep_duplicates = self.pep_last_ns = 0
        self.latencies, self.pep_seen = [], set()
        self.expected = items * len(self.pep_contacts)
        self.pep_done = asyncio.get_running_loop().create_future()
        if self.expected == 0:
            self.pep_done.set_result(None)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cpu = time.process_time()
        first_ns = None
        if publish:
            first_ns = await self._pep_publish(items, window, "m")
        started = last_change = time.monotonic()
        previous = self.delivered
        while not self.pep_done.done() and time.monotonic() - started < DRAIN_TIMEOUT:
            await asyncio.wait({self.pep_done}, timeout=0.05)
            if self.delivered != previous:
                previous, last_change = self.delivered, time.monotonic()
            elif time.monotonic() - last_change > DRAIN_STALL:
                break
        return {"first_ns": first_ns, "last_ns": self.pep_last_ns, "sent": self.sent,
                "expected": self.expected, "delivered": self.delivered,
                "duplicates": self.pep_duplicates, "latencies": self.latencies,
                "errors": self.errors, "cpu_seconds": time.process_time() - cpu}


    # Group chat (XEP-0045): one room, every occupant gets every message

    async def muc_enter(self, users, room, create, timeout, quiet=1.0):
        """The sessions of ``users`` enter ``room`` (presence to ROOM/NICK,
        the localpart as nick, no history) and wait for their own presence
        (status 110), then until nothing arrived for ``quiet`` seconds (the
        occupants' presence).  With ``create`` (the room's first occupant),
        a new room (status 201) is unlocked at once: the instant
        configuration (XEP-0045 §10.1.2) is accepted and its result waited
        for, so that the others may enter."""
        self.reset()
        loop = asyncio.get_running_loop()
        clients = [self.clients[u] for u in users]
        inside, created = set(), False
        configured = loop.create_future()
        last = time.monotonic()

        def received(client, element):
            nonlocal last, created
            last = time.monotonic()
            if element.name == "iq" and element.get("id") == "muc-config":
                if element.get("type") != "result":
                    self._error(f"{client.bare}: the room's configuration failed: "
                                f"{_conditions(element)}")
                if not configured.done():
                    configured.set_result(None)
                return
            if element.get("type") == "error":
                self._error(f"{client.bare}: {element.name} error {_conditions(element)}")
                return
            if element.name != "presence" or element.get("from") != f"{room}/{client.user}":
                return
            x = element.child("x", NS_MUC_USER)
            codes = {c.get("code") for c in x.children if c.name == "status"} if x else set()
            if "110" in codes:
                inside.add(client)
            if "201" in codes and create and not created:
                created = True
                client.send(f"<iq type='set' to='{room}' id='muc-config'>"
                            f"<query xmlns='{NS_MUC_OWNER}'>"
                            "<x xmlns='jabber:x:data' type='submit'/></query></iq>")

        for client in clients:
            self._watch(client, received)
            client.send(f"<presence to='{room}/{client.user}'><x xmlns='{NS_MUC}'>"
                        "<history maxstanzas='0'/></x></presence>")
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if (len(inside) == len(clients) and time.monotonic() - last > quiet
                    and (configured.done() or not created)):
                break
            await asyncio.sleep(0.05)
        self.muc_occupants += [c for c in clients if c in inside]
        return {"entered": len(inside), "created": created, "errors": self.errors,
                "seconds": time.monotonic() - started}

    async def muc(self, room, senders, window, occupants, padding, start_at, end_at):
        """The measured window: the occupants ``senders`` (here) each keep
        ``window`` groupchat messages in flight, sending the next when the
        room reflects one of their own; every occupant here counts what it
        gets.  Each message is expected by all ``occupants`` of the room."""
        self.reset()
        filler = "x" * padding
        own = {client: f"{room}/{client.user}" for client in self.muc_occupants}
        sending = {self.clients[u] for u in senders}
        echoes = []  # latencies of the senders' own copies

        def send(client):
            self.sent += 1
            self.expected += occupants
            client.send(f"<message to='{room}' type='groupchat' id='g{self.sent}'>"
                        f"<body>{time.monotonic_ns()} {filler}</body></message>")

        def received(client, element):
            if element.name != "message":
                return
            type_ = element.get("type")
            if type_ == "error":
                self._error(f"{client.bare}: message error {_conditions(element)}")
                return
            body = element.child("body")
            if type_ != "groupchat" or body is None:
                return  # the subject
            now = time.monotonic_ns()
            self.delivered += 1
            if now <= self.end_ns:
                self.window_delivered += 1
                latency = (now - int(body.text.split(" ", 1)[0])) / 1e6
                self.latencies.append(latency)
                if client in sending and element.get("from") == own[client]:
                    echoes.append(latency)
                    send(client)

        for client in self.muc_occupants:
            self._watch(client, received)

        def kick():
            for client in sending:
                for _ in range(window):
                    send(client)

        return {**await self._window(start_at, end_at, kick), "echoes": echoes}


def _conditions(stanza):
    """The conditions of an error stanza, for error texts."""
    error = stanza.child("error")
    return [] if error is None else [c.name for c in error.children]


def _worker_main(connection, options):
    raise_fd_limit()

    async def serve():
        worker = Worker(options)
        loop = asyncio.get_running_loop()
        while True:
            command, kwargs = await loop.run_in_executor(None, connection.recv)
            if command == "stop":
                await worker.close_all()
                return
            cpu, started = time.process_time(), time.monotonic()
            method = getattr(worker, command)
            result = method(**kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            result["cpu"] = time.process_time() - cpu
            result["wall"] = time.monotonic() - started
            connection.send(result)

    asyncio.run(serve())


class Workers:
    """The worker processes and the commands sent to all of them at once."""

    def __init__(self, count, options):
        context = multiprocessing.get_context("fork")
        self.connections, self.processes = [], []
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=_worker_main, args=(theirs, options), daemon=True)
            process.start()
            self.connections.append(ours)
            self.processes.append(process)

    def __len__(self):
        return len(self.connections)

    def send(self, command, per_worker):
        """Send ``command`` with ``per_worker[i]`` arguments to worker i."""
        for connection, kwargs in zip(self.connections, per_worker):
            connection.send((command, kwargs))

    def collect(self):
        return [connection.recv() for connection in self.connections]

    def run(self, command, per_worker):
        self.send(command, per_worker)
        return self.collect()

    def all(self, command, **kwargs):
        return self.run(command, [kwargs] * len(self))

    def one(self, index, command, **kwargs):
        """Run ``command`` on worker ``index`` only."""
        self.connections[index].send((command, kwargs))
        return self.connections[index].recv()

    def stop(self, timeout=10.0):
        """Ask every worker to close its sessions and end; kill those that
        are still busy (after an interruption) once ``timeout`` is over."""
        for connection in self.connections:
            try:
                connection.send(("stop", {}))
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()


# The phases, run from the controlling process


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _round(value, digits=1):
    return None if value is None else round(value, digits)


def _split(items, parts):
    return [items[i::parts] for i in range(parts)]


class Benchmark:
    """The phases against one server, the clients in worker processes;
    ``args`` as parsed by :func:`parse_args`."""

    def __init__(self, args):
        self.args = args
        self.server = ServerProcess(*(args.server_pid or ()))
        sources = (tuple(f"127.0.1.{i}" for i in range(1, args.sources + 1))
                   if args.sources > 1 else ())
        targets = [Target(args.host, port, args.domain, args.tls, args.ca_file, args.mechanism,
                          args.session_iq, ws_port, args.fast_count, sources)
                   for port, ws_port in zip(args.port, args.ws_port or [None] * len(args.port))]
        self.workers = Workers(args.workers, {"target": targets, "password": args.password,
                                              "pattern": args.pattern})
        self.records = []
        self.pep_publisher = args.presence_users  # then its contacts
        self.base = args.presence_users + pep_accounts(args)  # accounts below have rosters

    def emit(self, record):
        record = {"server": self.args.label, **record}
        self.records.append(record)
        print(json.dumps(record), flush=True)

    def _cpu(self):
        """CPU seconds so far: the server's, its CPUs' in all, the machine's."""
        return (self.server.cpu_seconds(), self.server.others_seconds(),
                self.server.machine_seconds())

    @staticmethod
    def _used(before, after, seconds):
        """CPU seconds the server used between two ``_cpu()`` readings, the
        share of ``seconds`` its CPUs spent on anything else (other
        processes, interrupt work: above a few percent the numbers are
        disturbed), and the machine's busy share of ``seconds`` (all CPUs)."""
        if before[0] is None:
            return None, None, None
        server = after[0] - before[0]
        others = None if before[1] is None else after[1] - before[1] - server
        return (server, None if others is None else _round(max(0.0, 100 * others / seconds)),
                _round(100 * (after[2] - before[2]) / seconds))

    def _login(self, users, concurrency, keep, resource, profile="sasl"):
        results = self.workers.run("login", [
            {"users": part, "concurrency": max(1, concurrency // len(self.workers)),
             "keep": keep, "resource": resource, "profile": profile}
            for part in _split(users, len(self.workers))])
        latencies = [x for r in results for x in r["latencies"]]
        failed = sum(r["failed"] for r in results)
        errors = [e for r in results for e in r["errors"]][:ERRORS_KEPT]
        return results, latencies, failed, errors

    def _require_logins(self, what, failed, errors):
        if failed:
            raise SystemExit(f"loadgen: {failed} logins failed during {what}: {errors}")

    def _window(self, command, per_worker):
        """Run one measured window on every worker; server CPU over it."""
        start_at = time.monotonic() + START_DELAY
        end_at = start_at + self.args.seconds
        for kwargs in per_worker:
            kwargs.update(start_at=start_at, end_at=end_at)
        self.workers.send(command, per_worker)
        time.sleep(max(0.0, start_at - time.monotonic()))
        cpu_before = self._cpu()
        time.sleep(max(0.0, end_at - time.monotonic()))
        cpu_after = self._cpu()
        results = self.workers.collect()
        return results, self._used(cpu_before, cpu_after, end_at - start_at)

    def _drain(self):
        """Wait until every stanza sent has arrived (or nothing moves any
        more); the final counts."""
        started = last_change = time.monotonic()
        previous = None
        while True:
            counts = self.workers.all("counts")
            delivered = sum(c["delivered"] for c in counts)
            expected = sum(c["expected"] for c in counts)
            now = time.monotonic()
            if delivered >= expected or now - started > DRAIN_TIMEOUT:
                break
            if delivered != previous:
                previous, last_change = delivered, now
            elif now - last_change > DRAIN_STALL:
                break
            time.sleep(0.05)
        errors = [e for c in counts for e in c["errors"]][:ERRORS_KEPT]
        return sum(c["sent"] for c in counts), expected, delivered, errors

    def _window_record(self, results, used, delivered_key):
        seconds = self.args.seconds
        cpu, waited, machine = used
        latencies = [x for r in results for x in r["latencies"]]
        window_delivered = sum(r["window_delivered"] for r in results)
        return {
            f"{delivered_key}_per_s": _round(window_delivered / seconds),
            "p50_ms": _round(percentile(latencies, 50), 2),
            "p99_ms": _round(percentile(latencies, 99), 2),
            "server_cpu_pct": None if cpu is None else _round(100 * cpu / seconds),
            "server_cpu_us_per_delivery": (None if cpu is None or not window_delivered
                                           else _round(1e6 * cpu / window_delivered)),
            "others_cpu_pct": waited, "machine_cpu_pct": machine,
            "gen_cpu_pct": [_round(r["gen_cpu_pct"]) for r in results],
            "seconds": seconds,
        }

    # Phases

    def phase_login(self):
        args = self.args
        profile = "sasl2" if args.sasl2 else "sasl"
        users = list(range(self.base, self.base + args.logins))
        self._login(users[:min(20, len(users))], args.concurrency, False, "warmup", profile)
        record = self._logins("login", users, 1, profile)
        self.emit({**record, "mechanism": args.mechanism, "profile": profile})

    def phase_fast_login(self):
        """Every account gets a FAST token and a TLS session with a password
        login, and uses the token once (the server's new token becomes its
        current one, XEP-0484 §5.1): not measured.  Then the measured
        logins with the current token, as a phone reconnecting again and
        again makes them."""
        args = self.args
        users = list(range(self.base, self.base + args.logins))
        started = time.monotonic()
        for step in ("password", "first token use"):
            results, _, failed, errors = self._login(users, args.concurrency, False, "fast",
                                                     "fast")
            self._require_logins(f"fast_login's {step} logins", failed, errors)
            key = "new_tokens" if step == "password" else "token_logins"
            done = sum(r[key] for r in results)
            if done < len(users):
                raise SystemExit(f"loadgen: {len(users) - done} of {len(users)} {step} logins "
                                 f"had no FAST token")
        setup = time.monotonic() - started
        record = self._logins("fast_login", users, args.fast_rounds, "fast")
        self.emit({**record, "mechanism": FAST_MECHANISM, "fast_count": args.fast_count,
                   "setup_mechanism": args.mechanism, "setup_seconds": _round(setup, 2)})

    def _logins(self, phase, users, rounds, profile):
        """``rounds`` times, ``users`` log in and out: the record."""
        args = self.args
        before = self._cpu()
        started = time.monotonic()
        results, latencies, failed, errors = [], [], 0, []
        for _ in range(rounds):
            round_results, round_latencies, round_failed, round_errors = self._login(
                users, args.concurrency, False, phase, profile)
            results += round_results
            latencies += round_latencies
            failed += round_failed
            errors = (errors + round_errors)[:ERRORS_KEPT]
        elapsed = time.monotonic() - started
        cpu, waited, machine = self._used(before, self._cpu(), elapsed)
        ok = len(latencies)
        record = {
            "phase": phase, "attempted": len(users) * rounds, "logged_in": ok, "failed": failed,
            "lost": len(users) * rounds - ok, "concurrency": args.concurrency, "tls": args.tls,
            "seconds": _round(elapsed, 2),
            "logins_per_s": _round(ok / elapsed),
            "p50_ms": _round(percentile(latencies, 50), 2),
            "p99_ms": _round(percentile(latencies, 99), 2),
            "server_cpu_ms_per_login": (None if cpu is None or not ok
                                        else _round(1000 * cpu / ok, 2)),
            "server_cpu_pct": None if cpu is None else _round(100 * cpu / elapsed),
            "others_cpu_pct": waited, "machine_cpu_pct": machine,
            "gen_cpu_pct": [_round(100 * sum(r["cpu"] for r in results[i::len(self.workers)])
                                   / elapsed) for i in range(len(self.workers))],
            "errors": errors,
        }
        if profile == "fast":
            record.update({key: sum(r[key] for r in results)
                           for key in ("tls_resumed", "token_logins", "new_tokens")})
        return record

    def phase_messages(self, phase="messages", transport="tcp"):
        """Pairs of consecutive accounts: on different ports when there are
        several, so that every message goes from one node to another."""
        args = self.args
        users = list(range(self.base, self.base + 2 * args.pairs))
        pairs = [(users[2 * p], users[2 * p + 1]) for p in range(args.pairs)]
        per_worker = _split(pairs, len(self.workers))
        results = self.workers.run("login", [
            {"users": [u for pair in part for u in pair], "concurrency": args.concurrency,
             "keep": True, "resource": phase, "transport": transport} for part in per_worker])
        self._require_logins(phase, sum(r["failed"] for r in results),
                             [e for r in results for e in r["errors"]])
        results, cpu = self._window("messages", [
            {"pairs": part, "window": args.window, "padding": args.padding}
            for part in per_worker])
        sent, _, delivered, errors = self._drain()
        self.workers.all("close_all")
        record = {"phase": phase, "pairs": args.pairs, "window": args.window,
                  "sent": sent, "delivered": delivered, "lost": sent - delivered,
                  **self._window_record(results, cpu, "msgs"), "errors": errors}
        self.emit(record)

    def phase_ws_messages(self):
        """The messages phase with every session over WebSocket (RFC 7395)."""
        if self.args.ws_port is None:
            raise SystemExit("loadgen: the ws_messages phase needs --ws-port")
        self.phase_messages("ws_messages", "websocket")

    def phase_bosh_messages(self):
        """The messages phase with every session over BOSH (XEP-0124, XEP-0206)."""
        if self.args.ws_port is None:
            raise SystemExit("loadgen: the bosh_messages phase needs --ws-port")
        self.phase_messages("bosh_messages", "bosh")

    def phase_presence(self):
        args = self.args
        users = list(range(args.presence_users))
        per_worker = _split(users, len(self.workers))
        _, _, failed, errors = self._login(users, args.concurrency, True, "presence")
        self._require_logins("presence", failed, errors)
        started = time.monotonic()
        online = self.workers.all("presence_online", roster_users=args.presence_users,
                                  roster_size=args.roster_size, timeout=DRAIN_TIMEOUT)
        online_seconds = time.monotonic() - started
        complete = sum(o["complete"] for o in online)
        rate = args.presence_rate and args.presence_rate / len(self.workers)
        results, cpu = self._window("presence", [
            {"roster_size": args.roster_size, "rate": rate} for _ in per_worker])
        sent, expected, delivered, errors = self._drain()
        self.workers.all("close_all")
        self.emit({"phase": "presence", "users": args.presence_users,
                   "roster_size": args.roster_size, "offered_per_s": args.presence_rate,
                   "online_with_all_contacts": complete,
                   "online_seconds": _round(online_seconds, 2), "updates_sent": sent,
                   "expected": expected, "delivered": delivered, "lost": expected - delivered,
                   **self._window_record(results, cpu, "deliveries"), "errors": errors})

    def phase_pep(self):
        args = self.args
        hub = self.pep_publisher
        users = list(range(hub, hub + 1 + args.pep_contacts))
        per_worker = _split(users, len(self.workers))  # the publisher goes to worker 0
        _, _, failed, errors = self._login(users, args.concurrency, True, "pep")
        self._require_logins("pep", failed, errors)
        self.workers.one(0, "pep_publisher_online", user=hub, timeout=DRAIN_TIMEOUT)
        token = secrets.token_hex(4)  # this run's item ids: not the last item of a run before
        started = time.monotonic()
        online = self.workers.run("pep_contacts_online", [
            {"users": [u for u in part if u != hub], "hub": hub, "token": token,
             "timeout": DRAIN_TIMEOUT} for part in per_worker])
        online_seconds = time.monotonic() - started
        # The server knows the contacts' caps once a warm-up item reaches all.
        warmed = rounds = 0
        while warmed < args.pep_contacts and rounds < PEP_WARMUP_ROUNDS:
            rounds += 1
            warm = self.workers.run("pep_warmup", [{"publish": i == 0, "wait": 0.5}
                                                   for i in range(len(self.workers))])
            warmed = sum(w["warmed"] for w in warm)
        time.sleep(0.5)
        start_at = time.monotonic() + START_DELAY
        self.workers.send("pep", [{"items": args.pep_items, "publish": i == 0,
                                   "window": args.pep_window, "start_at": start_at}
                                  for i in range(len(self.workers))])
        time.sleep(max(0.0, start_at - time.monotonic()))
        cpu_before, measured_from = self._cpu(), time.monotonic()
        results = self.workers.collect()
        measured = time.monotonic() - measured_from
        cpu, waited, machine = self._used(cpu_before, self._cpu(), measured)
        self.workers.all("close_all")
        expected = sum(r["expected"] for r in results)
        delivered = sum(r["delivered"] for r in results)
        last_ns = max(r["last_ns"] for r in results)
        seconds = max(1e-9, (last_ns - results[0]["first_ns"]) / 1e9) if delivered else None
        latencies = [x for r in results for x in r["latencies"]]
        self.emit({
            "phase": "pep", "contacts": args.pep_contacts, "items": args.pep_items,
            "window": args.pep_window,
            "online_with_publisher": sum(o["complete"] for o in online),
            "online_seconds": _round(online_seconds, 2),
            "disco_queries_answered": sum(o["disco_answered"] for o in online),
            "warmup_items": rounds, "warmed": warmed,
            "published": sum(r["sent"] for r in results), "expected": expected,
            "delivered": delivered, "lost": expected - delivered,
            "duplicates": sum(r["duplicates"] for r in results),
            "deliveries_per_s": seconds and _round(delivered / seconds),
            "publishes_per_s": seconds and _round(args.pep_items / seconds),
            "p50_ms": _round(percentile(latencies, 50), 2),
            "p99_ms": _round(percentile(latencies, 99), 2),
            "server_cpu_pct": None if cpu is None else _round(100 * cpu / measured),
            "server_cpu_us_per_delivery": (None if cpu is None or not delivered
                                           else _round(1e6 * cpu / delivered)),
            "others_cpu_pct": waited, "machine_cpu_pct": machine,
            "gen_cpu_pct": [seconds and _round(100 * r["cpu_seconds"] / seconds)
                            for r in results],
            "seconds": _round(seconds, 2),
            "errors": [e for r in results for e in r["errors"]][:ERRORS_KEPT],
        })

    def phase_muc(self):
        args = self.args
        room = f"{MUC_ROOM}@{args.muc_service or 'conference.' + args.domain}"
        users = list(range(self.base, self.base + args.muc_occupants))
        per_worker = _split(users, len(self.workers))  # as _login spreads them
        _, _, failed, errors = self._login(users, args.concurrency, True, "muc")
        self._require_logins("muc", failed, errors)
        started = time.monotonic()
        first = self.workers.one(0, "muc_enter", users=users[:1], room=room, create=True,
                                 timeout=DRAIN_TIMEOUT)
        entered = [first, *self.workers.run("muc_enter", [
            {"users": [u for u in part if u != users[0]], "room": room, "create": False,
             "timeout": DRAIN_TIMEOUT} for part in per_worker])]
        enter_seconds = time.monotonic() - started
        occupants = sum(e["entered"] for e in entered)
        if occupants < len(users):
            raise SystemExit(f"loadgen: {len(users) - occupants} of {len(users)} sessions "
                             f"did not enter {room}: "
                             f"{[x for e in entered for x in e['errors']][:ERRORS_KEPT]}")
        senders = set(users[:args.muc_senders])
        results, cpu = self._window("muc", [
            {"room": room, "senders": [u for u in part if u in senders],
             "window": args.muc_window, "occupants": occupants, "padding": args.padding}
            for part in per_worker])
        sent, expected, delivered, errors = self._drain()
        self.workers.all("close_all")
        window = self._window_record(results, cpu, "deliveries")
        echoes = [x for r in results for x in r["echoes"]]
        self.emit({"phase": "muc", "room": room, "occupants": occupants,
                   "senders": len(senders), "window": args.muc_window,
                   "created": first["created"], "enter_seconds": _round(enter_seconds, 2),
                   "sent": sent, "expected": expected, "delivered": delivered,
                   "lost": expected - delivered,
                   "msgs_per_s": _round(sum(r["sent"] for r in results) / args.seconds),
                   **window,
                   "echo_p50_ms": _round(percentile(echoes, 50), 2),
                   "echo_p99_ms": _round(percentile(echoes, 99), 2),
                   "errors": errors})

    def phase_memory(self):
        args = self.args
        if not args.server_pid:
            raise SystemExit("loadgen: the memory phase needs --server-pid")
        self._login(list(range(self.base, self.base + 20)), 20, False, "warmup")
        baseline = self._settled_rss()
        logged_in = 0
        for count in sorted(args.idle_sessions):
            users = list(range(self.base + logged_in, self.base + count))
            started = time.monotonic()
            _, _, failed, errors = self._login(users, args.concurrency, True, "idle")
            login_s = time.monotonic() - started
            self._require_logins("memory", failed, errors)
            logged_in = count
            time.sleep(args.idle_wait)
            rss = self._settled_rss()
            self.emit({"phase": "memory", "sessions": count, "logged_in": count,
                       "baseline_rss_mb": _round(baseline / 2**20),
                       "rss_mb": _round(rss / 2**20),
                       "login_s": _round(login_s, 1),
                       "open_files": self.server.open_files(),
                       "idle_wait_s": args.idle_wait,
                       "kb_per_session": _round((rss - baseline) / count / 1024, 2)})
        self.workers.all("close_all")

    def _settled_rss(self, quiet=1.0, timeout=10.0):
        """The server's RSS once it stopped changing for ``quiet`` seconds."""
        started = time.monotonic()
        rss, since = self.server.rss_bytes(), time.monotonic()
        while time.monotonic() - started < timeout:
            time.sleep(0.2)
            now = self.server.rss_bytes()
            if now != rss:
                rss, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return rss

    def cpu_per_stanza(self):
        found = {r["phase"]: r for r in self.records
                 if r["phase"] in ("messages", "ws_messages", "bosh_messages", "presence", "pep",
                                   "muc")}
        if not found:
            return
        self.emit({
            "phase": "cpu_per_stanza",
            "message_us": found.get("messages", {}).get("server_cpu_us_per_delivery"),
            "presence_delivery_us": found.get("presence", {}).get("server_cpu_us_per_delivery"),
            "pep_delivery_us": found.get("pep", {}).get("server_cpu_us_per_delivery"),
            "muc_delivery_us": found.get("muc", {}).get("server_cpu_us_per_delivery"),
            "ws_message_us": found.get("ws_messages", {}).get("server_cpu_us_per_delivery"),
            "bosh_message_us": found.get("bosh_messages", {}).get(
                "server_cpu_us_per_delivery"),
        })

    def run(self, phases):
        try:
            for phase in phases:
                getattr(self, f"phase_{phase}")()
            self.cpu_per_stanza()
        finally:
            self.workers.stop()
        return self.records


# Readable output

COLUMNS = {
    "login": ("logins_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_login", "server_cpu_pct",
              "others_cpu_pct", "machine_cpu_pct", "lost"),
    "fast_login": ("logins_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_login",
                   "server_cpu_pct", "others_cpu_pct", "machine_cpu_pct", "tls_resumed",
                   "token_logins", "lost"),
    "messages": ("msgs_per_s", "p50_ms", "p99_ms", "server_cpu_pct", "others_cpu_pct",
                 "machine_cpu_pct", "lost"),
    "ws_messages": ("msgs_per_s", "p50_ms", "p99_ms", "server_cpu_pct", "others_cpu_pct",
                    "machine_cpu_pct", "lost"),
    "bosh_messages": ("msgs_per_s", "p50_ms", "p99_ms", "server_cpu_pct", "others_cpu_pct",
                      "machine_cpu_pct", "lost"),
    "presence": ("offered_per_s", "deliveries_per_s", "p50_ms", "p99_ms", "server_cpu_pct",
                 "others_cpu_pct", "machine_cpu_pct", "lost"),
    "pep": ("deliveries_per_s", "publishes_per_s", "p50_ms", "p99_ms", "server_cpu_pct",
            "others_cpu_pct", "machine_cpu_pct", "lost"),
    "muc": ("msgs_per_s", "deliveries_per_s", "p50_ms", "p99_ms", "echo_p50_ms", "echo_p99_ms",
            "server_cpu_pct", "others_cpu_pct", "machine_cpu_pct", "lost"),
    "memory": ("sessions", "rss_mb", "kb_per_session"),
    "cpu_per_stanza": ("message_us", "presence_delivery_us", "pep_delivery_us",
                       "muc_delivery_us", "ws_message_us", "bosh_message_us"),
}


def table(records):
    """The records as aligned text, one row per record."""
    lines = []
    for record in records:
        columns = (*COLUMNS.get(record["phase"], ()), "gen_cpu_pct")
        cells = "  ".join(f"{c}={cell(record[c])}" for c in columns if c in record)
        lines.append(f"{record.get('server', ''):<10} {record['phase']:<15} {cells}")
    return "\n".join(lines)


def cell(value):
    """A value as table text: "-" for none, a list joined with "/"."""
    if isinstance(value, list):
        return "/".join(map(str, value))
    return "-" if value is None else str(value)


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_numbers, default="5222",
                   help="c2s port, or comma-separated ports: account i logs in to port i mod "
                        "their number")
    p.add_argument("--ws-port", type=_numbers,
                   help="HTTPS port of /xmpp-websocket (ws_messages), one per --port")
    p.add_argument("--domain", required=True)
    p.add_argument("--pattern", default=DEFAULT_PATTERN,
                   help="account localparts, formatted with the account number")
    p.add_argument("--password", default=DEFAULT_PASSWORD)
    p.add_argument("--server-pid", type=_numbers,
                   help="server process to measure (CPU, RSS), or comma-separated processes "
                        "(summed)")
    p.add_argument("--label", default="server", help="name of the server in the output")
    p.add_argument("--mechanism", choices=MECHANISMS, default="PLAIN",
                   help="the password mechanism (fast_login: of the logins that get tokens)")
    p.add_argument("--sasl2", action="store_true",
                   help="the login phase over SASL2 with Bind2 (XEP-0388, XEP-0386)")
    p.add_argument("--fast-rounds", type=int, default=2,
                   help="FAST logins per account in the fast_login phase")
    p.add_argument("--fast-count", action="store_true",
                   help="send a count with each FAST token use (XEP-0484 §3.4)")
    p.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
    p.add_argument("--ca-file", help="verify the server certificate against this file")
    p.add_argument("--session-iq", action="store_true", help="send the optional session iq")
    p.add_argument("--workers", type=int, default=1, help="generator processes")
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--logins", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=50, help="logins in flight")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window of a phase")
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--window", type=int, default=1, help="messages in flight per pair")
    p.add_argument("--padding", type=int, default=100, help="filler characters per body")
    p.add_argument("--presence-users", type=int, default=200)
    p.add_argument("--roster-size", type=int, default=20)
    p.add_argument("--presence-rate", type=float,
                   help="presence updates a second, offered open-loop (default: closed-loop, "
                        "each user's next update when the last is reflected)")
    p.add_argument("--pep-contacts", type=int, default=200,
                   help="contacts of the pep phase's publisher")
    p.add_argument("--pep-items", type=int, default=200, help="items the publisher publishes")
    p.add_argument("--pep-window", type=int, default=1, help="publishes in flight")
    p.add_argument("--muc-occupants", type=int, default=100,
                   help="sessions in the muc phase's room")
    p.add_argument("--muc-senders", type=int, default=5,
                   help="occupants sending groupchat messages")
    p.add_argument("--muc-window", type=int, default=1, help="messages in flight per sender")
    p.add_argument("--muc-service", help="the group chat service (default conference.DOMAIN)")
    p.add_argument("--idle-sessions", default="1000,10000",
                   help="session counts at which to measure memory")
    p.add_argument("--idle-wait", type=float, default=0.0,
                   help="seconds the sessions stay idle before the memory is read (a server "
                        "may release per-session buffers of quiet streams)")
    p.add_argument("--sources", type=int, default=1,
                   help="connect from this many loopback addresses (127.0.1.1, 127.0.1.2, "
                        "...; 1: the system's choice): about 28,000 connections each")
    return p


def _numbers(text):
    """A comma-separated list of numbers (ports, pids)."""
    return [int(n) for n in text.split(",") if n]


def parse_args(argv=None):
    args = parser().parse_args(argv)
    if args.ws_port and len(args.ws_port) != len(args.port):
        raise SystemExit("loadgen: --ws-port needs one port per --port")
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        raise SystemExit(f"loadgen: unknown phases {', '.join(sorted(unknown))}")
    args.idle_sessions = [int(n) for n in args.idle_sessions.split(",") if n]
    if not 1 <= args.sources <= 254:
        raise SystemExit("loadgen: --sources must be between 1 and 254")
    if "presence" in args.phases:
        check_roster_shape(args.presence_users, args.roster_size)
    if "muc" in args.phases and not 0 < args.muc_senders <= args.muc_occupants:
        raise SystemExit("loadgen: --muc-senders must be between 1 and --muc-occupants")
    return args


def pep_accounts(args):
    """Accounts of the pep phase: the publisher, then its contacts."""
    return 1 + args.pep_contacts if "pep" in args.phases else 0


def rosters(args):
    """The rosters besides the presence phase's ring (see bench/accounts.py):
    the pep phase's star, from account ``--presence-users`` on."""
    return star(args.presence_users, args.pep_contacts) if "pep" in args.phases else None


def accounts_needed(args):
    """How many accounts (pattern numbers 0..N-1) the phases use."""
    others = [0]
    if {"login", "fast_login"} & set(args.phases):
        others.append(args.logins)
    if {"messages", "ws_messages", "bosh_messages"} & set(args.phases):
        others.append(2 * args.pairs)
    if "muc" in args.phases:
        others.append(args.muc_occupants)
    if "memory" in args.phases:
        others.append(max(args.idle_sessions, default=0))
    return args.presence_users + pep_accounts(args) + max(others)


def main(argv=None):
    args = parse_args(argv)
    raise_fd_limit()
    records = Benchmark(args).run(args.phases)
    print(table(records), file=sys.stderr)
    return 0 if all(not r.get("lost") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
