"""Stream management soak (XEP-0198): does every message arrive exactly once
while connections break?

    python bench/sm_soak.py                          # 200 clients, 60 s
    python bench/sm_soak.py --clients 50 --seconds 20 --keep

xmppd is started as bench/run.py starts it (its benchmark limits, pinned to
CPU 0), with ``c2s.resume_timeout`` set to ``--resume-timeout``.
``--clients`` accounts log in, enable stream management with resumption
(§3) and become available; for ``--seconds`` they send each other chat
messages (``--rate`` per second in all, each with a unique id) while
connections are cut at random, ``--cuts`` per second: the link goes dead
(what the client writes is lost, what comes is not read) for up to
``--silence`` seconds, then the TCP connection is aborted, never closed.
A cut client connects again after up to ``--max-delay`` seconds and
resumes (§5); a ``--late`` share of them waits past the resumption timeout
instead, so its resumption fails and it binds anew, sends the messages the
old session did not handle (the ``h`` of ``<failed/>``) and becomes
available, which brings what was stored offline for it.  Then the traffic
stops, every client is back, the server has acknowledged all it was sent
and nothing more arrives for ``--settle`` seconds; each client acknowledges
what it handled and closes its stream, and at last every account logs in
once more to fetch what was stored offline meanwhile.

Printed (a JSON line on stdout, a summary on stderr): ``sent``;
``delivered``, the distinct ids received (each counts once, however often
it comes); ``duplicates``, receptions of an id already received that
XEP-0198 does not allow; ``redelivered_unacknowledged``, those it does
allow (§4: "resending them might result in duplicates"; the recipient
weeds them out by id): messages the client handled on a session that then
ended without being resumed, after the last acknowledgement the server was
known to have (an ``<a/>`` it answered a later ``<r/>`` after, or the
``h`` of ``<resume/>``); ``offline``, ids that first came from offline
storage (with ``<delay/>``); ``bounced``, error replies carrying the id;
``lost`` = sent − delivered − bounced; then how the sessions fared, with
the stanzas the clients and the server (its log) resent after resuming.
The exit status is 1 if ``lost`` or ``duplicates`` is not 0.

The clients are bench/xmppclient.py's raw client with the client side of
XEP-0198 added here: it counts the stanzas it handles and answers ``<r/>``
with the count (§4), keeps what it sends until the server's ``<a h/>``
covers it, resumes with its own ``h`` and resends what ``<resumed h/>``
does not acknowledge (§5), and after a failed resumption sends again only
what the ``h`` of ``<failed/>`` says the server did not handle.  Not
slixmpp: its ``xep_0198`` drops its unacknowledged stanzas when a
resumption fails, whatever ``h`` says, which would show as losses of the
server, and its cost per stanza would make 200 clients compete with the
server for the CPU.
"""

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from xml.sax.saxutils import quoteattr

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import accounts, loadgen, run
from bench.soak import PASSWORD, edited, message, until_quiet
from bench.xmppclient import NS_STREAMS, Client, Target, XMPPError
from xmppd.modules.stream_management import MASK, NS_SM

PATTERN = "smsoak{}"
RESOURCE = "sm"
NS_DELAY = "urn:xmpp:delay"
STANZAS = ("<message", "<presence", "<iq")  # what is counted (§4), as this client writes it
REQUEST_EVERY = 5  # stanzas sent between two <r/>
LOGIN_TIMEOUT = 30.0
LOGIN_TRIES = 5
RESENT = re.compile(r"resumed with (\d+) stanza")  # the server's log line


class SMXmppd(run.Xmppd):
    """xmppd as the benchmark runs it, with ``c2s.resume_timeout`` set."""

    def __init__(self, directory, certificate, log_level, resume_timeout):
        self.resume_timeout = resume_timeout
        super().__init__(directory, certificate, log_level)

    def configure(self, certificate):
        super().configure(certificate)
        self.config.write_text(edited(self.config.read_text(), "[c2s]\n",
                                      f"[c2s]\nresume_timeout = {self.resume_timeout}\n"))


class Ledger:
    """What all clients sent, received and went through."""

    def __init__(self):
        self.sent = 0  # messages m0 ... m(sent-1)
        self.first = {}  # message id -> (session id, index) of its first reception
        self.offline = set()  # ids first received with a <delay/>
        self.bounced = set()  # ids of error replies
        self.ended = {}  # id of a session not resumed -> last index the server knew handled
        self.receptions = 0  # messages received, errors included
        self.duplicates = 0
        self.redelivered = 0
        self.events = Counter()  # cuts, resumptions, logins, stream errors...

    def receive(self, element, session, index):
        """A stanza handled as the ``index``-th of ``session`` (an id)."""
        id_ = element.get("id") or ""
        if element.name != "message" or not id_.startswith("m"):
            return
        self.receptions += 1
        if element.get("type") == "error":
            self.bounced.add(id_)
        elif id_ not in self.first:
            self.first[id_] = (session, index)
            if element.child("delay", NS_DELAY) is not None:
                self.offline.add(id_)
        else:
            session, index = self.first[id_]
            if index > self.ended.get(session, MASK):
                self.redelivered += 1  # handled, never acknowledged: §4
            else:
                self.duplicates += 1

    def figures(self):
        sent = {f"m{n}" for n in range(self.sent)}
        delivered = set(self.first)
        return {"sent": len(sent), "delivered": len(delivered), "duplicates": self.duplicates,
                "redelivered_unacknowledged": self.redelivered, "offline": len(self.offline),
                "bounced": len(self.bounced), "lost": len(sent - delivered - self.bounced),
                "delivered_and_bounced": len(delivered & self.bounced),
                **dict(sorted(self.events.items()))}


class SMClient(Client):
    """bench/xmppclient.py's client with the client side of stream
    management (XEP-0198); what it receives goes to the ledger."""

    def __init__(self, target, user, ledger):
        super().__init__(target, user, PASSWORD, resource=RESOURCE)
        self.ledger = ledger
        self.sm_id = None  # of the session to resume (§5)
        self.handled = 0  # stanzas received and handled since <enabled/> (§4)
        self.counting = False  # <enabled/> or <resumed/> seen on this stream
        self.outbound = False  # <enable/> sent: what is sent is kept until acknowledged
        self.unacked = deque()  # stanzas sent, not yet acknowledged, as sent
        self.acked = 0  # the server's last h
        self.pending = []  # messages a session that could not be resumed did not handle
        self.since_request = 0
        self.last_ack = 0  # the h of the last <a/> sent
        self.requests = deque()  # last_ack when each unanswered <r/> was sent
        self.confirmed = 0  # an h the server is known to have received
        self.ready = False  # logged in (bound or resumed) and not cut
        self.silent = False  # cut: what is written is lost, what comes is not read
        self.cut_here = False  # the connection was aborted by cut()

    # Connecting, resuming, closing

    async def connect(self):
        """Log in, resuming the session if there is one; tried again (a
        fresh connection) on failure."""
        for attempt in range(LOGIN_TRIES):
            self.on_stanza = None  # login() collects what comes until _bind returns
            self.counting = self.silent = False
            try:
                await self.login(LOGIN_TIMEOUT)
                self.ready, self.cut_here = True, False
                return
            except (XMPPError, OSError, asyncio.TimeoutError):
                self.ledger.events["login_errors"] += 1
                if self.transport is not None:
                    self.transport.abort()
                if attempt == LOGIN_TRIES - 1:
                    raise
                await asyncio.sleep(1.0)

    async def _bind(self, timeout):
        """Resume the previous session (§5); failing that, or without one,
        bind a resource, enable stream management with resumption (§3),
        send what the old session did not handle and become available."""
        if self.sm_id is not None:
            self.send(f"<resume xmlns='{NS_SM}' previd={quoteattr(self.sm_id)} "
                      f"h='{self.handled}'/>")
            answer, _ = await self._sm_answer(("resumed", "failed"), timeout)
            if answer.name == "resumed":
                self.last_ack = self.confirmed = self.handled  # <resume h/> arrived
                self._acknowledged(answer.get("h"))
                for stanza in self.unacked:
                    Client.send(self, stanza)  # counted already
                self.ledger.events["resumed"] += 1
                self.ledger.events["resent_by_clients"] += len(self.unacked)
                self._live()
                return
            self.ledger.ended[self.sm_id] = self.confirmed
            self.pending = self._unhandled(answer.get("h"))
        self.sm_id, self.outbound = None, False
        await super()._bind(timeout)
        self.unacked.clear()
        self.acked = self.handled = self.since_request = self.last_ack = self.confirmed = 0
        self.outbound = True
        self.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        enabled, early = await self._sm_answer(("enabled",), timeout)
        self.sm_id = enabled.get("id")
        self.ledger.events["logins"] += 1
        self._live()
        for element in early:  # sent before <enabled/>: not counted
            Client._element(self, element)
        self.send("<presence/>")
        for stanza in self.pending:
            self.send(stanza)
        self.ledger.events["resent_by_clients"] += len(self.pending)
        self.pending = []

    async def _sm_answer(self, names, timeout):
        """The next stream management answer, one of ``names``, and the
        stanzas that came before it."""
        early = []
        while True:
            element = await self._next(timeout)
            if element.ns == NS_SM and element.name in names:
                return element, early
            if element.name not in ("message", "presence", "iq"):
                raise XMPPError(f"{self.bare}: expected {'/'.join(names)}, got <{element.name}>")
            early.append(element)

    def _unhandled(self, h):
        """After ``<failed h/>``: the messages the old session did not
        handle (all of them if the server does not say), to send again."""
        self.ledger.events["resume_failed"] += 1
        if h is None:
            self.ledger.events["failed_without_h"] += 1
        else:
            self._acknowledged(h)
        return [stanza for stanza in self.unacked if stanza.startswith("<message")]

    def _live(self):
        self.counting = True
        self.on_stanza = self._receive

    def _receive(self, element):
        self.ledger.receive(element, self.sm_id, self.handled)

    def connection_lost(self, exc):
        self.ready = False
        self.requests.clear()  # their answers are lost with the connection
        super().connection_lost(exc)

    def cut(self, silence):
        """The link fails: for ``silence`` seconds what the client writes
        is lost and what comes stays unread, then the connection is aborted
        (no closing stream: the server sees it lost)."""
        self.silent = self.cut_here = True
        self.ledger.events["cuts"] += 1
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(silence, self.transport.abort)

    async def close(self, timeout=5.0):
        """Acknowledge what was handled (§4), then close the stream: what
        arrives after that is not handled (the server stores it offline)."""
        self.ready = False
        if self.counting and self.closed is not None and not self.closed.done():
            self.send(f"<a xmlns='{NS_SM}' h='{self.handled}'/>")
        await super().close(timeout)

    # Counting (§4)

    def send(self, text):
        if self.outbound and text.startswith(STANZAS):
            self.unacked.append(text)
            self.since_request += 1
        if not self.silent:
            super().send(text)

    def send_message(self, to, number):
        self.send(message(to, number, ""))
        if self.since_request >= REQUEST_EVERY:
            self.request()

    def request(self):
        self.since_request = 0
        self.requests.append(self.last_ack)
        self.send(f"<r xmlns='{NS_SM}'/>")

    def _element(self, element):
        if self.closing:
            return
        if self.on_stanza is None:  # logging in
            super()._element(element)
        elif element.ns == NS_SM and element.name == "r":
            # The answer, then a request: its answer confirms the <a/> arrived.
            self.last_ack = self.handled
            self.send(f"<a xmlns='{NS_SM}' h='{self.handled}'/>")
            self.request()
        elif element.ns == NS_SM and element.name == "a":
            if self.requests:
                self.confirmed = self.requests.popleft()
            self._acknowledged(element.get("h"))
        elif element.ns == NS_STREAMS and element.name == "error":
            conditions = "/".join(child.name for child in element.children)
            self.ledger.events[f"stream_error_{conditions}"] += 1
        else:
            if self.counting and element.name in ("message", "presence", "iq"):
                self.handled = (self.handled + 1) & MASK
            super()._element(element)  # iq requests answered, the rest to the ledger

    def _acknowledged(self, text):
        """The server's ``h``: drop what it acknowledges."""
        new = (int(text) - self.acked) & MASK
        if new > len(self.unacked):
            self.ledger.events["acks_above_sent"] += 1
            new = len(self.unacked)
        for _ in range(new):
            self.unacked.popleft()
        self.acked = int(text)


class Soak:
    """The clients, the traffic, the cuts and the final count."""

    def __init__(self, target, args):
        self.target, self.args = target, args
        self.ledger = Ledger()
        self.clients = [SMClient(target, name, self.ledger)
                        for name in accounts.names(PATTERN, args.clients)]

    async def run(self):
        args, ledger = self.args, self.ledger
        await asyncio.gather(*(client.connect() for client in self.clients))
        progress(f"{len(self.clients)} clients logged in; messages and cuts for {args.seconds:g} s")
        lives = [asyncio.create_task(self.live(client)) for client in self.clients]
        stop_at = time.monotonic() + args.seconds
        await asyncio.gather(self.traffic(stop_at), self.cutter(stop_at))
        progress("waiting for every client to be back and acknowledged")
        await self.drained(args.silence + args.resume_timeout + 2.0 + 2 * LOGIN_TIMEOUT)
        ledger.events["clients_not_back"] = sum(not c.ready or c.silent for c in self.clients)
        ledger.events["unacknowledged_at_end"] = sum(len(c.unacked) for c in self.clients)
        await until_quiet(lambda: ledger.receptions, args.settle, 300)
        progress("closing")
        await asyncio.gather(*(client.close() for client in self.clients))
        await asyncio.gather(*lives)
        progress("fetching offline messages")
        await self.fetch_offline()
        return ledger.figures()

    async def drained(self, limit):
        """Wait (at most ``limit`` seconds) until every client is back and
        the server acknowledged all it sent, asking it (<r/>) meanwhile."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            waiting = [c for c in self.clients if not c.ready or c.silent or c.unacked]
            if not waiting:
                return
            for client in waiting:
                if client.ready and not client.silent and not client.requests:
                    client.request()
            await asyncio.sleep(0.1)

    async def live(self, client):
        """Connect again whenever the connection is gone, until the end."""
        while True:
            await client.closed
            if client.closing:
                return
            if not client.cut_here:
                self.ledger.events["closed_by_server"] += 1
            delay = random.uniform(0, self.args.max_delay)
            if client.cut_here and random.random() < self.args.late:
                self.ledger.events["late_reconnections"] += 1
                delay = self.args.resume_timeout + random.uniform(0.5, 2.0)
            await asyncio.sleep(delay)
            try:
                await client.connect()
            except (XMPPError, OSError, asyncio.TimeoutError):
                self.ledger.events["gave_up"] += 1
                return

    async def traffic(self, stop_at):
        """``--rate`` messages per second from random connected clients to
        random others (their full JIDs), until ``stop_at``."""
        started = time.monotonic()
        due = 0
        while (now := time.monotonic()) < stop_at:
            target = int((now - started) * self.args.rate)
            for _ in range(target - due):
                sender, recipient = random.sample(self.clients, 2)
                if sender.ready:
                    sender.send_message(f"{recipient.bare}/{RESOURCE}", self.ledger.sent)
                    self.ledger.sent += 1
            due = target
            await asyncio.sleep(0.01)

    async def cutter(self, stop_at):
        """Cut a random connected client ``--cuts`` times per second."""
        while True:
            await asyncio.sleep(random.expovariate(self.args.cuts))
            if time.monotonic() >= stop_at:
                return
            ready = [client for client in self.clients if client.ready and not client.silent]
            if ready:
                random.choice(ready).cut(random.uniform(0, self.args.silence))

    async def fetch_offline(self):
        """Every account logs in anew, becomes available, takes what was
        stored for it and closes."""
        fetchers = [SMClient(self.target, c.user, self.ledger) for c in self.clients]
        before = len(self.ledger.offline)
        await asyncio.gather(*(fetcher.connect() for fetcher in fetchers))
        await until_quiet(lambda: self.ledger.receptions, self.args.settle, 300)
        await asyncio.gather(*(fetcher.close() for fetcher in fetchers))
        self.ledger.events["fetched_at_end"] = len(self.ledger.offline) - before


STARTED = time.monotonic()


def progress(text):
    print(f"# {time.monotonic() - STARTED:6.1f} s  {text}", file=sys.stderr, flush=True)


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60.0, help="how long messages flow")
    p.add_argument("--rate", type=float, default=200.0, help="messages per second, in all")
    p.add_argument("--cuts", type=float, default=2.0, help="connections cut per second")
    p.add_argument("--silence", type=float, default=0.5,
                   help="at most this many seconds of a dead link before a cut connection "
                        "is aborted")
    p.add_argument("--max-delay", type=float, default=1.0,
                   help="seconds a cut client waits before it resumes")
    p.add_argument("--late", type=float, default=0.2,
                   help="share of cut clients that come back after the resumption timeout")
    p.add_argument("--resume-timeout", type=float, default=10.0, help="c2s.resume_timeout")
    p.add_argument("--settle", type=float, default=5.0,
                   help="seconds without a new message that end a wait")
    p.add_argument("--seed", type=int, help="for random.seed()")
    p.add_argument("--log-level", default="info")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    random.seed(args.seed)
    loadgen.raise_fd_limit()
    if {run.SERVER_CPU, run.GENERATOR_CPU} <= run.CPUS:
        os.sched_setaffinity(0, {run.GENERATOR_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="xmppd-sm-soak-"))
    try:
        certificate = run._certificate(workdir)
        server = SMXmppd(workdir / "xmppd", certificate, args.log_level, args.resume_timeout)
        server.create_accounts(accounts.names(PATTERN, args.clients), PASSWORD, 0, 0)
        server.start()
        try:
            target = Target("127.0.0.1", server.port, run.DOMAIN,
                            ca_file=str(run._cert_path(server)))
            figures = asyncio.run(Soak(target, args).run())
        finally:
            server.stop()
        log = server.log.read_text(errors="replace")
        figures["resent_by_server"] = sum(map(int, RESENT.findall(log)))
        figures["server_tracebacks"] = log.count("Traceback")
        record = {"clients": args.clients, "seconds": args.seconds, "rate": args.rate,
                  "cuts_per_s": args.cuts, "resume_timeout": args.resume_timeout, **figures}
        print(json.dumps(record), flush=True)
        print("  ".join(f"{key}={value}" for key, value in record.items()), file=sys.stderr)
    finally:
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if figures["lost"] or figures["duplicates"] else 0


if __name__ == "__main__":
    sys.exit(main())
