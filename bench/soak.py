"""Hostile-load soak: does the server stay bounded and keep serving logins?

    python bench/soak.py                          # every scenario against xmppd
    python bench/soak.py --scenarios flood --quick
    python bench/soak.py --servers xmppd,prosody  # side by side

Each scenario runs on a freshly started server with its default limits
(only the number of file descriptors is raised), sends traffic only to
127.0.0.0/8, is bounded in time, and prints one JSON line (stdout) and a
table (stderr):

- **handshakes**: ``--stalled`` connections stop in the middle of TLS: half
  on the STARTTLS port after ``<proceed/>``, half on the direct-TLS port
  without a ClientHello, spread over ``--addresses`` source addresses
  (127.0.1.x).  Meanwhile a legitimate client logs in every
  ``--probe-interval`` seconds.  Reports how many stalled connections are
  still open after ``--hold`` seconds and the probe logins (failures,
  latency).
- **slow-readers**: ``--readers`` logged-in clients stop reading while
  ``--senders`` clients send them ``--message-bytes`` messages for
  ``--seconds``; a reader's receive buffer is 64 KiB (``READER_WINDOW``),
  and the messages are large enough that what the senders get through
  while they are held passes ``c2s.max_output_buffer`` (1 MiB).  Reports
  the server's RSS growth and how many readers the server cut off
  (``cut_off``); then every message is accounted for: delivered to the
  reader (read after it resumes), bounced to the sender, stored offline
  (fetched by logging in again), or ``dropped_with_connection``: sent to a
  reader that was cut off and neither delivered nor stored, i.e. waiting
  in the server or the kernel for that TCP connection when it was closed
  (RFC 6120 without stream management (XEP-0198) promises nothing for
  them).  ``lost`` (the rest) must be 0.
- **flood**: ``--senders`` clients send ``--body``-byte messages to
  ``--offline`` accounts that are not logged in, as fast as the server
  takes them, for ``--seconds``; a probe logs in every ``--probe-interval``
  seconds and a logged-in canary pings the server.  Reports login latency
  during the flood (p50, max, failures), the canary's ping round trips,
  the time logins take to come back after the flood, the RSS growth, and
  ``lost``: sent − bounced − fetched from offline storage.

The exit status is 1 if any scenario lost a message.
"""

import argparse
import asyncio
import json
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import accounts, loadgen, run
from bench.xmppclient import NS_STREAMS, NS_TLS, Client, Target, XMPPError

PASSWORD = "soak-password"
SCENARIOS = ("handshakes", "slow-readers", "flood")
# The receive buffer of a slow reader, as on a slow link: what waits for it
# then passes c2s.max_output_buffer in the server, whatever the kernel's
# buffer autotuning would allow (up to net.ipv4.tcp_rmem's maximum).
READER_WINDOW = 65536

class SoakXmppd(run.Xmppd):
    """xmppd as the benchmark runs it, but with its default limits (the
    benchmark's ``[limits]`` section left out) and a direct-TLS port too."""

    def configure(self, certificate):
        self.direct_port = run.free_port()
        super().configure(certificate)
        text = edited(self.config.read_text(), "direct_tls = []",
                      f'direct_tls = ["tcp:{self.direct_port}:interface=127.0.0.1:backlog=1024"]')
        text, count = re.subn(r"\[limits\].*?(?=\[hosts)", "", text, flags=re.S)
        if count != 1:
            raise SystemExit("soak.py: bench/run.py's xmppd config has no [limits] to leave out")
        self.config.write_text(text)


class SoakProsody(run.Prosody):
    """Prosody with the Debian default limits (mod_limits), a direct-TLS port."""

    def configure(self, certificate):
        self.direct_port = run.free_port()
        super().configure(certificate)
        text = edited(self.config.read_text(), "c2s_direct_tls_ports = { }",
                      f"c2s_direct_tls_ports = {{ {self.direct_port} }}")
        self.config.write_text(edited(text, '"blocklist";', '"blocklist"; "limits";'))


def edited(text, old, new):
    """``text`` with its one ``old`` replaced by ``new``: the benchmark's
    configs are edited, and an edit that no longer applies must not pass
    silently."""
    if text.count(old) != 1:
        raise SystemExit(f"soak.py: bench/run.py's config no longer has {old!r} once")
    return text.replace(old, new)


KINDS = {"xmppd": SoakXmppd, "prosody": SoakProsody}


# Measuring


class Sampler:
    """The server's RSS every second, in the background."""

    def __init__(self, pid):
        self.process = loadgen.ServerProcess(pid)
        self.samples = [self.process.rss_bytes()]
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self):
        while True:
            await asyncio.sleep(1.0)
            self.samples.append(self.process.rss_bytes())

    def stop(self):
        self._task.cancel()
        self.samples.append(self.process.rss_bytes())
        mib = 1024 * 1024
        return {"rss_start_mib": round(self.samples[0] / mib, 1),
                "rss_max_mib": round(max(self.samples) / mib, 1),
                "rss_growth_mib": round((max(self.samples) - self.samples[0]) / mib, 1)}


class Prober:
    """A fresh login every ``interval`` seconds: latency or failure."""

    def __init__(self, target, user, interval, timeout):
        self.target, self.user, self.interval, self.timeout = target, user, interval, timeout
        self.results = []  # (start, seconds or None)
        self._task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self):
        while True:
            started = time.monotonic()
            asyncio.get_running_loop().create_task(self._one(started))
            await asyncio.sleep(self.interval)

    async def _one(self, started):
        client = Client(self.target, self.user, PASSWORD, resource=f"probe{started}")
        try:
            self.results.append((started, await client.login(self.timeout)))
        except (XMPPError, OSError, asyncio.TimeoutError):
            self.results.append((started, None))
        finally:
            await client.close(1.0)

    def stop(self):
        self._task.cancel()

    def figures(self, since=None, until=None):
        chosen = [seconds for started, seconds in self.results
                  if (since is None or started >= since) and (until is None or started < until)]
        done = sorted(s for s in chosen if s is not None)
        return {"logins": len(chosen), "login_failures": len(chosen) - len(done),
                "login_p50_s": round(statistics.median(done), 3) if done else None,
                "login_max_s": round(done[-1], 3) if done else None}


async def login(target, user, resource="soak", timeout=30.0):
    client = Client(target, user, PASSWORD, resource=resource)
    await client.login(timeout)
    return client


def message(to, number, body):
    return (f"<message type='chat' to={quoteattr(to)} id='m{number}'>"
            f"<body>{number} {body}</body></message>")


def numbers_in(elements):
    """The message numbers carried in the bodies of ``elements``."""
    found = set()
    for element in elements:
        body = element.child("body")
        if element.name == "message" and body is not None and body.text.split():
            found.add(int(body.text.split()[0]))
    return found


async def fetch_offline(target, user, quiet=2.0, timeout=60.0, tries=5):
    """Log in as ``user``, become available and collect what arrives until
    ``quiet`` seconds pass without a stanza; the message numbers.  A login
    that fails (a server still busy after a flood) is tried again."""
    for attempt in range(tries):
        client = Client(target, user, PASSWORD, resource="fetch")
        try:
            await client.login(timeout)
            break
        except (XMPPError, OSError) as e:
            await client.close(1.0)
            if attempt == tries - 1:
                raise XMPPError(f"{user}: cannot fetch offline messages: {e}") from None
    received = []
    client.on_stanza = received.append
    client.send("<presence/>")
    await until_quiet(lambda: len(received), quiet, timeout)
    await client.close()
    return numbers_in(received)


async def until_quiet(count, quiet, limit):
    """Wait until ``count()`` has not changed for ``quiet`` seconds (at
    most ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    seen = -1
    while count() != seen and time.monotonic() < deadline:
        seen = count()
        await asyncio.sleep(quiet)


HIGH_WATER = 256 * 1024  # bytes a sender lets wait in its own buffer
WINDOW = 400  # messages a sender may be ahead of what the server answered


async def sender_loop(client, targets, body, stop_at, sent):
    """Send numbered messages round-robin to ``targets`` until ``stop_at``,
    never letting the client's own buffer pass :data:`HIGH_WATER` nor
    getting more than :data:`WINDOW` messages ahead of what the server has
    handled: every ``WINDOW // 2`` messages a ping follows them, and the
    loop waits for the answer to the previous one (the server answers it
    only once it has handled what came before, RFC 6120 §10.1).  So what
    counts as sent is what the server took, at whatever rate it allows a
    connection, rather than what waits unread in the sockets' buffers."""
    pending = {}
    previous = client.on_stanza

    def on_stanza(element):
        future = pending.pop(element.get("id"), None) if element.name == "iq" else None
        if future is None:
            previous(element)
        elif not future.done():
            future.set_result(None)

    client.on_stanza = on_stanza
    index, waiting = 0, None
    try:
        while time.monotonic() < stop_at and not client.closed.done():
            if client.transport.get_write_buffer_size() > HIGH_WATER:
                await asyncio.sleep(0.01)
                continue
            number = len(sent)
            to = targets[index % len(targets)]
            sent[number] = to
            client.send(message(to, number, body))
            index += 1
            if index % (WINDOW // 2) == 0:
                if waiting is not None:  # held by the server, or closed: stop waiting
                    await asyncio.wait({waiting, client.closed}, return_when=asyncio.FIRST_COMPLETED,
                                       timeout=max(0.01, stop_at - time.monotonic()))
                waiting = pending[f"w{index}"] = asyncio.get_running_loop().create_future()
                client.send(f"<iq type='get' id='w{index}'><ping xmlns='urn:xmpp:ping'/></iq>")
            elif index % 50 == 0:
                await asyncio.sleep(0)
        if waiting is not None:  # its answer is not a stanza for ``previous``
            await asyncio.wait({waiting, client.closed}, return_when=asyncio.FIRST_COMPLETED,
                               timeout=10)
    finally:
        client.on_stanza = previous


def bounced_numbers(elements):
    """Message numbers of the error bounces among ``elements``."""
    return {int(e.get("id")[1:]) for e in elements
            if e.name == "message" and e.get("type") == "error" and (e.get("id") or "")[:1] == "m"}


# Scenarios


class StalledConnection(asyncio.Protocol):
    """A connection that stops in the middle of TLS; ``closed`` when the
    server gives up on it."""

    def __init__(self, starttls, domain):
        self.starttls, self.domain = starttls, domain
        self.closed = asyncio.get_running_loop().create_future()
        self.proceeded = asyncio.get_running_loop().create_future()
        self.buffer = b""

    def connection_made(self, transport):
        self.transport = transport
        if self.starttls:
            transport.write(
                f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                f"xmlns:stream='{NS_STREAMS}' to='{self.domain}' version='1.0'>"
                f"<starttls xmlns='{NS_TLS}'/>".encode())

    def data_received(self, data):
        self.buffer += data
        if b"proceed" in self.buffer and not self.proceeded.done():
            self.proceeded.set_result(True)  # and never send a ClientHello

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(True)


async def handshakes(server, target, args):
    loop = asyncio.get_running_loop()
    direct = Target(target.host, server.direct_port, target.domain, ca_file=target.ca_file)
    sampler = Sampler(server.process.pid)
    prober = Prober(target, "soak0", args.probe_interval, args.probe_timeout)
    stalled, refused = [], 0
    for number in range(args.stalled):
        starttls = number % 2 == 0
        source = f"127.0.1.{1 + number % args.addresses}"
        port = target.port if starttls else direct.port
        try:
            _, protocol = await asyncio.wait_for(loop.create_connection(
                lambda: StalledConnection(starttls, target.domain), "127.0.0.1", port,
                local_addr=(source, 0)), 10)
            stalled.append(protocol)
        except (OSError, asyncio.TimeoutError):
            refused += 1
        if number % 100 == 99:
            await asyncio.sleep(0)
    opened = time.monotonic()
    # Closed at once: refused by a connection limit, not timed out.
    closed_at_once = sum(p.closed.done() for p in stalled)
    await asyncio.sleep(args.hold)
    prober.stop()
    record = {"scenario": "handshakes", "stalled": args.stalled, "refused_at_connect": refused,
              "closed_before_hold": closed_at_once, "hold_s": args.hold,
              "still_open": sum(not p.closed.done() for p in stalled),
              **prober.figures(since=opened), **sampler.stop()}
    for protocol in stalled:
        protocol.transport.abort()
    return record


async def slow_readers(server, target, args):
    readers = [await login(target, f"soak{1 + i}", "reader") for i in range(args.readers)]
    base = 1 + args.readers
    senders = [await login(target, f"soak{base + i}", "sender") for i in range(args.senders)]
    inboxes = {r.bare: [] for r in readers}
    bounces = []
    for reader in readers:
        reader.on_stanza = inboxes[reader.bare].append
        reader.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, READER_WINDOW)
        reader.transport.pause_reading()
    for sender in senders:
        sender.on_stanza = bounces.append
    sampler = Sampler(server.process.pid)
    sent = {}
    stop_at = time.monotonic() + args.seconds
    body = "x" * args.message_bytes
    await asyncio.gather(*(sender_loop(s, [r.jid for r in readers], body, stop_at, sent)
                           for s in senders))
    memory = sampler.stop()
    for reader in readers:
        reader.transport.resume_reading()
    await until_quiet(lambda: sum(map(len, inboxes.values())) + len(bounces), args.settle, 300)
    cut_off = {r.jid for r in readers if r.closed.done()}
    # Closing a sender's stream waits until the server has handled all it sent.
    await asyncio.gather(*(client.close(300) for client in senders))
    await asyncio.gather(*(client.close(300) for client in readers))
    delivered = set().union(*(numbers_in(inbox) for inbox in inboxes.values()))
    stored = set()
    for reader in readers:
        stored |= await fetch_offline(target, reader.bare.split("@")[0])
    bounced = bounced_numbers(bounces)
    missing = set(sent) - delivered - bounced - stored
    dropped = {number for number in missing if sent[number] in cut_off}
    return {"scenario": "slow-readers", "readers": args.readers, "senders": args.senders,
            "message_bytes": args.message_bytes, "seconds": args.seconds, "sent": len(sent),
            "cut_off": len(cut_off), "delivered": len(delivered), "bounced": len(bounced),
            "offline": len(stored), "dropped_with_connection": len(dropped),
            "lost": len(missing - dropped), **memory}


async def flood(server, target, args):
    base = 1
    offline = [f"soak{base + i}@{target.domain}" for i in range(args.offline)]
    base += args.offline
    senders = [await login(target, f"soak{base + i}", "flooder") for i in range(args.senders)]
    bounces = []
    for sender in senders:
        sender.on_stanza = bounces.append
    canary = await login(target, "soak0", "canary")
    pings = []
    sampler = Sampler(server.process.pid)
    prober = Prober(target, "soak0", args.probe_interval, args.probe_timeout)
    started = time.monotonic()
    stop_at = started + args.seconds
    sent = {}
    ping_task = asyncio.get_running_loop().create_task(ping_loop(canary, pings, stop_at))
    await asyncio.gather(*(sender_loop(s, offline, "x" * args.body, stop_at, sent)
                           for s in senders))
    await ping_task
    ended = time.monotonic()
    recovered = await recovery(prober, ended, args.recovery_limit)
    prober.stop()
    await until_quiet(lambda: len(bounces), args.settle, 300)
    await asyncio.gather(*(client.close(300) for client in senders + [canary]))
    bounced = bounced_numbers(bounces)
    stored = set()
    for jid in offline:
        stored |= await fetch_offline(target, jid.split("@")[0])
    lost = set(sent) - bounced - stored
    done = sorted(p for p in pings if p is not None)
    return {"scenario": "flood", "senders": args.senders, "offline_accounts": args.offline,
            "body_bytes": args.body, "seconds": args.seconds, "sent": len(sent),
            "bounced": len(bounced), "stored": len(stored), "lost": len(lost),
            **prober.figures(since=started, until=ended),
            "ping_p50_s": round(statistics.median(done), 3) if done else None,
            "ping_max_s": round(done[-1], 3) if done else None,
            "ping_failures": len(pings) - len(done),
            "logins_back_after_s": recovered, **sampler.stop()}


async def ping_loop(client, rtts, stop_at, interval=0.2, timeout=10.0):
    """The canary: a ping to the server every ``interval``; round trips."""
    waiting = {}

    def answered(element):
        future = waiting.pop(element.get("id"), None)
        if future is not None and not future.done():
            future.set_result(time.monotonic())

    client.on_stanza = answered
    number = 0
    while time.monotonic() < stop_at:
        number += 1
        future = asyncio.get_running_loop().create_future()
        waiting[f"p{number}"] = future
        sent = time.monotonic()
        client.send(f"<iq type='get' id='p{number}' to={quoteattr(client.target.domain)}>"
                    "<ping xmlns='urn:xmpp:ping'/></iq>")
        try:
            rtts.append(await asyncio.wait_for(future, timeout) - sent)
        except asyncio.TimeoutError:
            rtts.append(None)
        await asyncio.sleep(interval)


async def recovery(prober, since, limit):
    """Seconds after ``since`` until a probe login started then succeeds
    within 2 s (None if not within ``limit``)."""
    deadline = since + limit
    while time.monotonic() < deadline:
        for started, seconds in prober.results:
            if started >= since and seconds is not None and seconds < 2.0:
                return round(started - since, 1)
        await asyncio.sleep(0.5)
    return None


RUNNERS = {"handshakes": handshakes, "slow-readers": slow_readers, "flood": flood}


# Command line


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="xmppd", help="comma-separated: xmppd, prosody")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--quick", action="store_true", help="small numbers, short runs")
    p.add_argument("--log-level", default="info")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--stalled", type=int, default=2000)
    p.add_argument("--addresses", type=int, default=20)
    p.add_argument("--hold", type=float, default=40.0)
    p.add_argument("--readers", type=int, default=5)
    p.add_argument("--senders", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--message-bytes", type=int, default=250000,
                   help="body size of the slow-readers messages")
    p.add_argument("--offline", type=int, default=100)
    p.add_argument("--body", type=int, default=1)
    p.add_argument("--probe-interval", type=float, default=0.5)
    p.add_argument("--probe-timeout", type=float, default=30.0)
    p.add_argument("--recovery-limit", type=float, default=180.0)
    p.add_argument("--settle", type=float, default=5.0)
    return p


# The quick hold outlasts c2s.handshake_timeout (10 s), so stalled
# handshakes are seen closed; the quick slow-readers run is long enough
# to push a reader past c2s.max_output_buffer.
QUICK = {"stalled": 200, "hold": 16.0, "readers": 1, "senders": 4, "seconds": 20.0,
         "offline": 10, "recovery_limit": 60.0, "settle": 2.0}


def main(argv=None):
    args = parser().parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser().get_default(name):
                setattr(args, name, value)
    loadgen.raise_fd_limit()
    scenarios = args.scenarios.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="xmppd-soak-"))
    workdir.chmod(0o755)
    records = []
    try:
        certificate = run._certificate(workdir)
        needed = 1 + max(args.readers + args.senders, args.offline + args.senders)
        for name in args.servers.split(","):
            for scenario in scenarios:
                server = KINDS[name](workdir / f"{name}-{scenario}", certificate, args.log_level)
                server.create_accounts(accounts.names("soak{}", needed), PASSWORD, 0, 0)
                server.start()
                try:
                    target = Target("127.0.0.1", server.port, run.DOMAIN,
                                    ca_file=str(run._cert_path(server)))
                    print(f"# {name}: {scenario}", file=sys.stderr)
                    record = {"server": name,
                              **asyncio.run(RUNNERS[scenario](server, target, args))}
                finally:
                    server.stop()
                records.append(record)
                print(json.dumps(record), flush=True)
        for record in records:
            cells = "  ".join(f"{k}={loadgen.cell(v)}" for k, v in record.items()
                              if k not in ("server", "scenario"))
            print(f"{record['server']:<8} {record['scenario']:<13} {cells}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(r.get("lost") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
