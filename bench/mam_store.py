"""The message archive store (XEP-0313) at scale: insert rate and query latency.

    python bench/mam_store.py                                  # SQLite, 1,000,000 messages
    python bench/mam_store.py --postgres postgresql+psycopg://postgres@127.0.0.1/test
    python bench/mam_store.py --messages 100000                # a quick run

Fills the archive ``mam`` of one account with ``--messages`` messages
exchanged with ``--contacts`` correspondents (a bare or a full JID, at
random), a second apart, through ``ArchiveStore.append_many`` in batches of
``--batch``, with ids made as a server makes them (the time in microseconds
shifted left by 12 bits), and prints the insert rate and the CPU time of
this process per message in ``append_many`` (SQLite's work included, not
PostgreSQL's server).  Then times ``--queries`` queries of each kind and
prints their median and 99th percentile:

- ``last 50 with one contact``: the last page of 50 messages with the bare
  JID of a random correspondent (``with_jid``, ``before=""``);
- ``page by id``: the 50 messages after a random archive id (``after``);
- ``first 50 of a day``: the first page of 50 messages from a random time
  to a day later (``start`` and ``end`` alone);
- ``first 50 since a time``: the first page of 50 messages from a random
  time on (``start`` alone).

On SQLite (a file in a temporary directory, removed afterwards) and, with
``--postgres URL``, on PostgreSQL too (in a schema of its own, dropped
afterwards).  Nothing is asserted.  The default run takes about 3 minutes
on a 2-core machine with both databases (a little over a minute for SQLite
alone); the time grows with ``--messages``.
"""

import argparse
import random
import secrets
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, make_url, text

from xmppd.storage import ScramKeys
from xmppd.storage.kinds import ArchiveRecord, first_archive_id
from xmppd.storage.sql import SQLStore

USER = ("bench", "example.org")
KEYS = {"SHA-256": ScramKeys(b"salt", 4096, b"\x01" * 32, b"\x02" * 32)}
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
STANZA = ("<message xmlns='jabber:client' from='{frm}' to='{to}' type='chat' id='{sid}'>"
          "<body>{body}</body><active xmlns='http://jabber.org/protocol/chatstates'/>"
          "</message>")
BODY = "A message of an ordinary length, a sentence or two of chat. " * 2


def contacts(count: int) -> list[str]:
    return [f"contact{n}@example.net" for n in range(count)]


def fill(store, messages: int, correspondents: list[str], batch: int,
         rng: random.Random) -> list[str]:
    """Archive the messages; their ids, in order."""
    archive = store.open("archive", "mam")
    owner = "@".join(USER)
    ids = []
    elapsed = cpu = 0.0
    for offset in range(0, messages, batch):
        records = []
        for n in range(offset, min(offset + batch, messages)):
            archive_id = str(first_archive_id(START + timedelta(seconds=n)))
            contact = rng.choice(correspondents)
            with_jid = contact if rng.random() < 0.5 else f"{contact}/phone"
            incoming = rng.random() < 0.5
            records.append(ArchiveRecord(
                *USER, archive_id, with_jid, f"s{n}", "in" if incoming else "out",
                STANZA.format(frm=with_jid if incoming else owner,
                              to=owner if incoming else with_jid, sid=f"s{n}", body=BODY)))
            ids.append(archive_id)
        began, began_cpu = time.perf_counter(), time.process_time()
        archive.append_many(records)
        elapsed += time.perf_counter() - began
        cpu += time.process_time() - began_cpu
    print(f"  insert: {messages:,} messages in {elapsed:.1f} s, "
          f"{messages / elapsed:,.0f} messages/s, {cpu / messages * 1e6:.1f} µs CPU "
          f"per message (batches of {batch})")
    return ids


def timed(query, count: int) -> tuple[float, float]:
    """Median and 99th percentile of ``count`` calls, in milliseconds."""
    durations = []
    for _ in range(count):
        began = time.perf_counter()
        query()
        durations.append((time.perf_counter() - began) * 1000)
    cuts = statistics.quantiles(durations, n=100, method="inclusive")
    return cuts[49], cuts[98]


def first_page(archive, messages: int, span: timedelta | None, rng: random.Random):
    """The first 50 messages from a random time, over ``span`` (None: to the end)."""
    start = START + timedelta(seconds=rng.randrange(messages))
    return archive.find(*USER, start=start, end=None if span is None else start + span,
                        limit=50)


def measure(name: str, url: str, args) -> None:
    print(f"{name}:")
    rng = random.Random(args.seed)
    store = SQLStore(url)
    try:
        store.migrate()
        store.open("accounts").create(*USER, KEYS)
        correspondents = contacts(args.contacts)
        ids = fill(store, args.messages, correspondents, args.batch, rng)
        archive = store.open("archive", "mam")
        queries = {
            "last 50 with one contact": lambda: archive.find(
                *USER, with_jid=rng.choice(correspondents), before="", limit=50),
            "page by id": lambda: archive.find(*USER, after=rng.choice(ids), limit=50),
            "first 50 of a day": lambda: first_page(archive, args.messages, timedelta(days=1),
                                                    rng),
            "first 50 since a time": lambda: first_page(archive, args.messages, None, rng),
        }
        for label, query in queries.items():
            p50, p99 = timed(query, args.queries)
            print(f"  {label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({args.queries:,} queries)")
    finally:
        store.close()


def on_postgres(url: str, args) -> None:
    schema = f"bench_mam_{secrets.token_hex(4)}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        measure("PostgreSQL", scoped.render_as_string(hide_password=False), args)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000, help="messages per append_many")
    parser.add_argument("--queries", type=int, default=1000, help="queries of each kind")
    parser.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL database")
    parser.add_argument("--seed", type=int, default=313)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xmppd-mam-bench-") as directory:
        measure("SQLite", f"sqlite:///{directory}/xmppd.sqlite", args)
    if args.postgres:
        on_postgres(args.postgres, args)


if __name__ == "__main__":
    main()
