"""Summarise py-spy samples (``py-spy record --format raw``): flat profiles.

    python bench/profile.py SAMPLES.folded

Each line of the input is one stack, outermost frame first, frames joined by
``;``, then the number of samples.  Samples of a thread waiting for work
(the reactor in epoll, idle thread-pool workers) are counted apart as idle;
of the rest, the summary gives the share per area of xmppd's work (each
sample goes to the innermost frame that names an area, see :data:`AREAS`),
per function where it was running (self) and on the stack (total), and the
self share per source file.
"""

import sys
from collections import Counter

TOP = 30
# (running function, its caller): waiting, not working
IDLE = {("Condition.wait (threading.py)", None),
        ("untilConcludes (twisted/python/util.py)", "EPollReactor.doPoll "
         "(twisted/internet/epollreactor.py)")}


# (area, how to recognise a frame of it): the first match wins, from the
# innermost frame outwards; frames matching none are passed over.
AREAS = (
    ("TLS decrypt", ("Connection.recv (OpenSSL", "Connection.bio_write (OpenSSL",
                     "TLSMemoryBIOProtocol._flushReceiveBIO")),
    ("TLS encrypt", ("Connection.send (OpenSSL", "Connection.bio_read (OpenSSL",
                     "TLSMemoryBIOProtocol._flushSendBIO", "TLSMemoryBIOProtocol.write")),
    ("TLS handshake", ("do_handshake", "ServerTLS", "xmppd/core/tls.py")),
    ("SASL (PBKDF2, SCRAM)", ("xmppd/core/scram.py", "xmppd/core/sasl.py")),
    ("storage (SQLAlchemy, thread pool)", ("sqlalchemy/", "xmppd/storage/", "threadpool",
                                           "_threads/")),
    ("metrics (prometheus_client)", ("prometheus_client/", "xmppd/core/metrics.py")),
    ("logging", ("twisted/logger/", "xmppd/logs.py", "Logger.")),
    ("XML serialisation", ("serialize (xmppd/core/xmlstream.py)", ".toXml (",
                           "_ListSerializer", "escapeToXml")),
    ("XML parsing", ("xmppd/core/xmlstream.py",)),
    ("feature modules", ("xmppd/modules/",)),
    ("stanza handling (c2s, router, hooks, sessions, JIDs)",
     ("xmppd/core/", "xmppd/jid.py", "precis_i18n/")),
    ("socket I/O and reactor", ("twisted/internet/",)),
)


def area(frames):
    for frame in reversed(frames):
        for name, marks in AREAS:
            if any(mark in frame for mark in marks):
                return name
    return "other (Twisted plumbing, interpreter)"


def _function(frame):
    """``name (path:line)`` -> ``name (file)``: lines of one function merge."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0].rstrip(")")
    return f"{name} ({_short(path)})"


def _short(path):
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def summarise(text, top=TOP):
    own, total, files, areas = Counter(), Counter(), Counter(), Counter()
    samples = idle = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        frames = [_function(f) for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        caller = frames[-2] if len(frames) > 1 else None
        if (frames[-1], None) in IDLE or (frames[-1], caller) in IDLE:
            idle += count
            continue
        samples += count
        areas[area(frames)] += count
        own[frames[-1]] += count
        files[frames[-1].split(" (", 1)[1].rstrip(")")] += count
        for function in set(frames):
            total[function] += count

    def block(title, counter):
        lines = [f"{title}:"]
        for name, count in counter.most_common(top):
            lines.append(f"  {100 * count / samples:5.1f}%  {name}")
        return "\n".join(lines)

    if not samples:
        return "no samples\n"
    return "\n\n".join([f"{samples} samples working, {idle} idle", block("by area", areas),
                        block("self", own),
                        block("total (on the stack)", total),
                        block("self by file", files)]) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(summarise(f.read()), end="")
