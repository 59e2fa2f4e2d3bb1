"""``xmppctl reports``: the reports users attached to their blocks
(XEP-0377), which the ``spam_reporting`` module keeps in the ``hostval``
store ``reports`` (the reporter's domain, a time-ordered id, JSON).  The
command reads and deletes them in the database directly, so it works
whether the server runs or not; it imports nothing of the server, so
``xmppctl`` stays quick to start.  See docs/abuse.md.
"""

import json
import sys

from xmppd.options import quote

STORE = "reports"


def add_commands(command):
    reports = command("reports", cmd_reports,
                      "list the spam and abuse reports users sent with blocks (XEP-0377)")
    reports.add_argument("domain", metavar="DOMAIN", nargs="?",
                         help="only the reports of this domain's users")
    reports.add_argument("--json", action="store_true", help="print JSON")
    reports.add_argument("--clear", metavar="ID", help="delete report ID")


def cmd_reports(args):
    from xmppd.ctl import Failure, _count, _domain, _load_config, _store

    config = _load_config(args.config)
    domains = list(config.hosts) if args.domain is None else [_domain(args.domain)]
    with _store(config) as database:
        store = database.open("hostval", STORE)
        if args.clear is not None:
            if not any(store.delete(domain, args.clear) for domain in domains):
                raise Failure(f"no report {args.clear!r}"
                              + ("" if args.domain is None else f" of {domains[0]}"))
            print(f"deleted report {args.clear}")
            return
        found = sorted(({"id": key, "domain": domain, **json.loads(value)}
                        for domain in domains for key, value in store.items(domain).items()),
                       key=lambda report: int(report["id"]))
    if args.json:
        json.dump(found, sys.stdout, indent=2)
        print()
        return
    for report in found:
        print("\n".join(_lines(report)))
    print(_count(len(found), "report"))


def _lines(report):
    """A report as text lines; what users wrote is quoted (no terminal
    control characters get through)."""
    reason = report["reason"].rpartition(":")[2]
    yield (f"{report['id']}  {report['time']}  {quote(report['reporter'])} reported "
           f"{quote(report['jid'])} for {reason}")
    if "text" in report:
        yield f"  text: {quote(report['text'])}"
    if "stanza_ids" in report:
        yield "  stanza ids: " + ", ".join(quote(sid["id"]) for sid in report["stanza_ids"])
    if "opt_in" in report:
        yield "  may be forwarded: " + ", ".join(report["opt_in"])
    for message in report.get("messages", ()):
        yield f"  message {message['id']} {message['direction']} {message['time']}:"
        yield f"    {quote(message['xml'])}"
