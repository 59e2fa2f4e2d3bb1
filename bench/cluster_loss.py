"""Does a cluster of xmppd nodes lose messages when a node dies? (docs/cluster.md)

    python bench/cluster_loss.py --ports 5222,5322,5422 --ca-file ca.pem --pid 4242 \\
        --account s1:pw1 --account s2:pw2 --account r1:pw3 --account r2:pw4 --account r3:pw5

Three running nodes of one cluster, A, B and C, by their c2s ports (STARTTLS,
verified against ``--ca-file``), and the pid of node C's process.  The first
two ``--account``s send, from A and B; the others receive, spread over A, B
and C in turn (the third, sixth... on C), each available (initial
presence) under resource ``live``.  The senders send ``--messages`` chat
messages in all to the recipients' bare JIDs, ``--rate`` a second, each
with a unique id as its body, stanza id and origin-id (XEP-0359); once
``--kill-at`` of them are sent, C gets ``--signal`` (``KILL``: it dies;
``TERM``: it stops gracefully).  Then the survivors reap it (within
``--heartbeat`` × 4/3 seconds) and what was routed to it is stored offline
(XEP-0160): once that time and two more seconds have passed, C's users log
in to A or B under resource ``offline`` and become available, which brings
their offline messages.  Collection ends when every id is accounted for and
nothing came for half a second, or when nothing came for ``QUIET`` seconds.

Printed (a JSON line): ``sent``; ``delivered_live`` and
``delivered_offline``, the distinct ids their recipients got without and
with the server's ``<delay/>`` (XEP-0203); ``bounced``, the ids of the
errors the senders got; ``lost``, the ids in none of these; ``duplicated``,
the ids a recipient got more than once.  The exit status is 1 if ``lost``
or ``duplicated`` is not 0.  Uses the slixmpp clients of the integration
tests (tests/integration/conftest.py).
"""

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from xml.etree import ElementTree

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.conftest import Clients, Deployment, settled

NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"
QUIET = 3.0  # seconds without anything arriving: collection is over
SETTLED = 0.5  # ... once every id is accounted for
COLLECT_LIMIT = 30.0  # seconds of collection at most
REAP_MARGIN = 2.0  # seconds after the survivors must have reaped the node


@dataclass
class Outcome:
    sent: int
    delivered_live: int
    delivered_offline: int
    bounced: int
    lost: int
    duplicated: int
    killed_at: float = field(repr=False)  # time.monotonic() of the signal
    missing: list = field(repr=False)  # the ids lost, with their recipients


class Tally:
    """What the recipients got and the senders had bounced, by id."""

    def __init__(self, domain):
        self.domain = domain
        self.expected = {}  # id -> recipient (bare JID)
        self.received = Counter()  # (recipient, id) -> times received
        self.live, self.offline, self.bounced = set(), set(), set()
        self.last_arrival = time.monotonic()

    def receiver(self, user):
        """The message handler of recipient ``user`` (a bare JID)."""
        def received(message):
            origin = message.xml.find(f"{{{NS_SID}}}origin-id")
            if message["type"] == "error" or origin is None:
                return
            self.last_arrival = time.monotonic()
            key = origin.get("id")
            self.received[user, key] += 1
            delayed = any(delay.get("from") == self.domain
                          for delay in message.xml.iter(f"{{{NS_DELAY}}}delay"))
            (self.offline if delayed else self.live).add(key)
        return received

    def bounce(self, message):
        if message["type"] == "error":
            self.last_arrival = time.monotonic()
            self.bounced.add(message["id"])

    def accounted(self):
        got = {key for (user, key) in self.received if self.expected.get(key) == user}
        return got | self.bounced

    def outcome(self, killed_at):
        missing = sorted(set(self.expected) - self.accounted())
        return Outcome(
            sent=len(self.expected), delivered_live=len(self.live),
            delivered_offline=len(self.offline), bounced=len(self.bounced), lost=len(missing),
            duplicated=sum(1 for count in self.received.values() if count > 1),
            killed_at=killed_at, missing=[(key, self.expected[key]) for key in missing])


async def measure(ports, ca_file, domain, accounts, pid, messages=1000, rate=200.0,
                  kill_at=0.5, heartbeat=15.0, sig=signal.SIGKILL):
    """Run the measure (see the module's documentation): ``ports`` are the
    c2s ports of A, B and C, ``accounts`` an ordered dict of user name to
    password (two senders, then at least three recipients), ``pid`` node
    C's process.  Returns the :class:`Outcome`."""
    if len(accounts) < 5:
        raise ValueError("two senders and at least three recipients are needed")
    nodes = [Clients(Deployment(domain, port, None, Path(ca_file), dict(accounts)))
             for port in ports]
    users = list(accounts)
    tally = Tally(domain)
    try:
        senders = []
        for node, user in zip(nodes, users[:2]):
            sender = await node.login(user, "send")
            sender.xmpp.add_event_handler("message", tally.bounce)
            senders.append(sender)
        recipients = users[2:]
        for index, user in enumerate(recipients):
            await available(nodes[index % 3], user, "live", tally)
        run = secrets.token_hex(4)
        start = time.monotonic()
        killed_at = None
        for number in range(messages):
            if number == int(messages * kill_at):
                os.kill(pid, sig)
                killed_at = time.monotonic()
            key = f"{run}-{number}"
            recipient = f"{recipients[number % len(recipients)]}@{domain}"
            tally.expected[key] = recipient
            send(senders[number % 2], recipient, key)
            await asyncio.sleep(max(0.0, start + (number + 1) / rate - time.monotonic()))
        if killed_at is None:
            os.kill(pid, sig)
            killed_at = time.monotonic()
        for sender in senders:
            await settled(sender)
        await asyncio.sleep(max(0.0, killed_at + heartbeat * 4 / 3 + REAP_MARGIN
                                - time.monotonic()))
        for index, user in enumerate(recipients[2::3]):
            await available(nodes[index % 2], user, "offline", tally)
        await collected(tally)
        return tally.outcome(killed_at)
    finally:
        await asyncio.gather(*(node.close_all() for node in nodes))


async def available(clients, user, resource, tally):
    """``user`` logged in and available, its messages counted."""
    client = clients.new(user, resource)
    client.xmpp.add_event_handler("message", tally.receiver(f"{user}@{tally.domain}"))
    client.connect()
    await client.wait_started()
    client.xmpp.send_presence()
    await settled(client)


def send(client, recipient, key):
    message = client.xmpp.make_message(mto=recipient, mbody=key, mtype="chat")
    message["id"] = key
    message.xml.append(ElementTree.Element(f"{{{NS_SID}}}origin-id", id=key))
    message.send()


async def collected(tally):
    """Wait until every id is accounted for and nothing more comes, or
    nothing came for QUIET seconds (COLLECT_LIMIT at most)."""
    tally.last_arrival = time.monotonic()
    deadline = tally.last_arrival + COLLECT_LIMIT
    while time.monotonic() < deadline:
        quiet = time.monotonic() - tally.last_arrival
        if quiet >= QUIET or quiet >= SETTLED and len(tally.accounted()) == len(tally.expected):
            return
        await asyncio.sleep(0.1)


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ports", required=True,
                   help="c2s ports of nodes A, B and C (C is the one that dies), comma-separated")
    p.add_argument("--ca-file", required=True, help="CA certificate the nodes' chain up to")
    p.add_argument("--domain", default="example.test")
    p.add_argument("--account", action="append", required=True, metavar="USER:PASSWORD",
                   help="two senders, then three or more recipients (in this order)")
    p.add_argument("--pid", type=int, required=True, help="node C's process")
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200.0, help="messages a second, in all")
    p.add_argument("--kill-at", type=float, default=0.5,
                   help="share of the messages sent before C gets the signal")
    p.add_argument("--heartbeat", type=float, default=15.0, help="the cluster's [cluster] "
                   "heartbeat: C is reaped within 4/3 of it")
    p.add_argument("--signal", default="KILL", choices=("KILL", "TERM"))
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    ports = [int(port) for port in args.ports.split(",")]
    if len(ports) != 3:
        raise SystemExit("cluster_loss.py: --ports names three nodes")
    accounts = dict(account.split(":", 1) for account in args.account)
    outcome = asyncio.run(measure(
        ports, args.ca_file, args.domain, accounts, args.pid, args.messages, args.rate,
        args.kill_at, args.heartbeat, getattr(signal, f"SIG{args.signal}")))
    counts = asdict(outcome)
    for key, recipient in counts.pop("missing"):
        print(f"lost: {key} to {recipient}", file=sys.stderr)
    del counts["killed_at"]
    print(json.dumps(counts))
    return 1 if outcome.lost or outcome.duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
