"""Client state indication (XEP-0352): the traffic an inactive client is spared.

    python bench/csi.py                        # xmppd and Prosody (mod_csi_simple)
    python bench/csi.py --servers xmppd --seconds 30

Starts each server as bench/run.py does (its own directory, certificate,
accounts and rosters, pinned to CPU 0), with CSI on: xmppd's ``csi``
module (a standard one), Prosody's ``csi_simple``.  ``--users`` accounts on a ring of
rosters (bench/accounts.py) log in and send initial presence; ``--observed``
of them are watched.  Their contacts then play the same seeded script twice,
for ``--seconds`` each: presence changes (a ``<status/>``), typing bursts to
an observed client (XEP-0085 chat states: composing, paused, composing,
then active, or a message with a body for ``--message-share`` of them).
The first time the observed clients are active; the second time they send
``<inactive/>`` first and ``<active/>`` at the end.  Each time, what the
observed clients receive until it stops (the script, then what
``<active/>`` releases) is counted: stanzas by kind, XML bytes (after TLS),
and reads (times data arrived: what wakes a phone's radio).  Nothing is
asserted; the table shows the reduction.
"""

import argparse
import asyncio
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import accounts, loadgen, run
from bench.xmppclient import Client, Target

NS_CSI = "urn:xmpp:csi:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
RESOURCE = "bench"
# A typing burst: (seconds after its start, chat state); the last one is
# replaced by a message with a body for --message-share of the bursts.
TYPING = ((0.0, "composing"), (1.5, "paused"), (2.5, "composing"), (4.0, "active"))
QUIET = 1.0  # seconds without anything arriving: the traffic is over
QUIET_LIMIT = 20.0  # ... waiting for that at most this long
LOGINS_IN_FLIGHT = 20
KINDS = ("presence", "chat_states", "messages", "other")


class ProsodyCSI(run.Prosody):
    """Prosody as bench/run.py runs it, with ``csi_simple``."""

    def configure(self, certificate):
        super().configure(certificate)
        text = self.config.read_text()
        if '"blocklist";' not in text:
            raise SystemExit("csi.py: bench/run.py's Prosody modules_enabled changed")
        self.config.write_text(text.replace('"blocklist";', '"blocklist"; "csi_simple";', 1))


SERVERS = {"xmppd": run.Xmppd, "prosody": ProsodyCSI}


class Watched(Client):
    """A client whose received bytes, reads and stanzas are counted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset()
        self.last = time.monotonic()

    def reset(self):
        self.bytes = self.reads = 0
        self.kinds = dict.fromkeys(KINDS, 0)

    def data_received(self, data):
        self.bytes += len(data)
        self.reads += 1
        self.last = time.monotonic()
        super().data_received(data)

    def count(self, element):
        if element.name == "presence":
            kind = "presence"
        elif element.name == "message" and element.child("body") is not None:
            kind = "messages"
        elif element.name == "message" and any(c.ns == NS_CHATSTATES for c in element.children):
            kind = "chat_states"
        else:
            kind = "other"
        self.kinds[kind] += 1


def script(args, observed):
    """The seeded traffic: sorted (seconds, sender, XML) of the observed
    clients' contacts."""
    rng = random.Random(args.seed)
    contacts = {o: [c for c in accounts.contacts(o, args.users, args.roster_size)
                    if c not in observed] for o in observed}
    senders = sorted({c for cs in contacts.values() for c in cs})
    events = []
    for n in range(int(args.presence_rate * args.seconds)):
        at = rng.uniform(0, args.seconds)
        events.append((at, rng.choice(senders),
                       f"<presence><status>status {n} of a contact</status></presence>"))
    for n in range(int(args.typing_rate * args.seconds)):
        start = rng.uniform(0, args.seconds - TYPING[-1][0])
        target = rng.choice(observed)
        sender = rng.choice(contacts[target])
        to = f"{args.pattern.format(target)}@{run.DOMAIN}/{RESOURCE}"
        body = rng.random() < args.message_share
        for offset, state in TYPING:
            payload = f"<{state} xmlns='{NS_CHATSTATES}'/>"
            if body and state == "active":
                payload += f"<body>message {n}: what the typing was about</body>"
            events.append((start + offset, sender,
                           f"<message to='{to}' type='chat'>{payload}</message>"))
    return sorted(events, key=lambda event: event[0])


async def measure(server, args, certificate):
    """Log everyone in, play the script active then inactive; the counts."""
    target = Target("127.0.0.1", server.port, run.DOMAIN, ca_file=str(certificate))
    observed = [i * args.users // args.observed for i in range(args.observed)]
    clients = {}
    gate = asyncio.Semaphore(LOGINS_IN_FLIGHT)

    async def login(i):
        kind = Watched if i in observed else Client
        client = kind(target, args.pattern.format(i), args.password, RESOURCE)
        async with gate:
            await client.login()
        clients[i] = client

    await asyncio.gather(*(login(i) for i in range(args.users)))
    watched = [clients[i] for i in observed]
    for client in watched:
        client.on_stanza = client.count
    for client in clients.values():
        client.send("<presence/>")
    await quiet(watched)
    events = script(args, observed)
    results = {}
    for mode in ("active", "inactive"):
        if mode == "inactive":
            for client in watched:
                client.send(f"<inactive xmlns='{NS_CSI}'/>")
            await asyncio.sleep(0.2)
        for client in watched:
            client.reset()
        await play(events, clients)
        if mode == "inactive":
            for client in watched:
                client.send(f"<active xmlns='{NS_CSI}'/>")
        await quiet(watched)
        results[mode] = totals(watched)
    await asyncio.gather(*(client.close() for client in clients.values()))
    return results


async def play(events, clients):
    started = time.monotonic()
    for at, sender, xml in events:
        delay = started + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        clients[sender].send(xml)


async def quiet(watched):
    """Wait until nothing has arrived for QUIET seconds (QUIET_LIMIT at most)."""
    deadline = time.monotonic() + QUIET_LIMIT
    await asyncio.sleep(QUIET)
    while (time.monotonic() < deadline
           and time.monotonic() - max(client.last for client in watched) < QUIET):
        await asyncio.sleep(0.1)


def totals(watched):
    total = {kind: sum(client.kinds[kind] for client in watched) for kind in KINDS}
    total["stanzas"] = sum(total.values())
    total["bytes"] = sum(client.bytes for client in watched)
    total["reads"] = sum(client.reads for client in watched)
    return total


COLUMNS = ("stanzas", *KINDS, "bytes", "reads")


def table(results):
    rows = [("server", "mode", *COLUMNS)]
    for name, modes in results.items():
        for mode, total in modes.items():
            rows.append((name, mode, *(str(total[c]) for c in COLUMNS)))
        active, inactive = modes["active"], modes["inactive"]
        rows.append((name, "reduction", *(
            f"{100 * (1 - inactive[c] / active[c]):.0f}%" if active[c] else "-"
            for c in COLUMNS)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths))
                     for row in rows)


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="xmppd,prosody",
                   help="comma-separated: xmppd, prosody (with mod_csi_simple)")
    p.add_argument("--users", type=int, default=40, help="accounts, all on rosters")
    p.add_argument("--roster-size", type=int, default=10, help="contacts per account (even)")
    p.add_argument("--observed", type=int, default=4, help="clients that go inactive")
    p.add_argument("--seconds", type=float, default=15.0, help="length of the script")
    p.add_argument("--presence-rate", type=float, default=20.0,
                   help="presence changes per second among the observed clients' contacts")
    p.add_argument("--typing-rate", type=float, default=2.0,
                   help="typing bursts per second to the observed clients")
    p.add_argument("--message-share", type=float, default=0.25,
                   help="share of typing bursts that end with a message")
    p.add_argument("--seed", type=int, default=352)
    p.add_argument("--pattern", default=accounts.DEFAULT_PATTERN)
    p.add_argument("--password", default=accounts.DEFAULT_PASSWORD)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"))
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    accounts.check_roster_shape(args.users, args.roster_size)
    kinds = [SERVERS[name] for name in args.servers.split(",")]
    loadgen.raise_fd_limit()
    signal.signal(signal.SIGTERM, run._interrupted)
    if {run.SERVER_CPU, run.GENERATOR_CPU} <= run.CPUS:
        os.sched_setaffinity(0, {run.GENERATOR_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="xmppd-bench-csi-"))
    workdir.chmod(0o755)  # the prosody user reads its directory below it
    results, server = {}, None
    try:
        certificate = run._certificate(workdir)
        localparts = accounts.names(args.pattern, args.users)
        for kind in kinds:
            server = kind(workdir / kind.name, certificate, args.log_level)
            server.create_accounts(localparts, args.password, args.users, args.roster_size)
            server.start()
            print(f"# {server.name} {server.version()}", file=sys.stderr)
            results[server.name] = asyncio.run(measure(server, args, certificate))
            server.stop()
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"What {args.observed} observed clients received in {args.seconds:g} s of contacts' "
          f"traffic ({args.presence_rate:g} presence changes/s, {args.typing_rate:g} typing "
          "bursts/s), active, then inactive until <active/>:")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
