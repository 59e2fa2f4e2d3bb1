"""``xmppctl export`` and ``xmppctl import``: accounts in and out of xmppd in
the Portable Import/Export Format (XEP-0227 v1.1), as Prosody's
``prosody-migrator`` (``xep0227`` store) and ejabberd's ``ejabberdctl
export_piefxis`` write it.  See docs/migrating.md.

Both work on the database directly, like ``xmppctl adduser``, so the
server may be running: each write is a transaction of its own.  ``import``
reads every file through once before writing anything, so a file that is
not XEP-0227 data (not XML, another namespace, a DTD...) fails on one line
with nothing imported; then it imports account by account (see
:mod:`xmppd.portable.importer`: checked first, then written), and prints
what it did and everything it left out, with why.  Running it again
changes nothing.  The modules (:mod:`reader`, :mod:`importer`,
:mod:`exporter`) are imported by the commands only, so ``xmppctl --help``
stays light.
"""

import sys

from xmppd.ctl import Failure, _count, _domain, _load_config, _store

OUTCOMES = ("created", "updated", "unchanged", "skipped")


def add_commands(command):
    export = command("export", cmd_export,
                     "write accounts and their data to a XEP-0227 file (mode 0600)")
    export.add_argument("file", metavar="FILE")
    export.add_argument("--domain", metavar="D", help="only the accounts of this domain")
    imported = command("import", cmd_import,
                       "import accounts and their data from XEP-0227 files "
                       "(Prosody, ejabberd, xmppd exports)")
    imported.add_argument("files", metavar="FILE", nargs="+")
    imported.add_argument("--dry-run", action="store_true",
                          help="read the files and report what would be imported, "
                               "writing nothing")


def cmd_export(args):
    from .exporter import export

    config = _load_config(args.config)
    domain = None if args.domain is None else _domain(args.domain)
    anonymous = {name for name, host in config.hosts.items()
                 if host.authentication == "anonymous"}
    with _store(config) as store:
        accounts = [pair for pair in store.list_accounts(domain) if pair[1] not in anonymous]
        try:
            counts = export(store, accounts, args.file)
        except OSError as e:
            raise Failure(f"{args.file}: {e.strerror}") from None
    print(f"exported {_count(counts.pop('accounts', 0), 'account')} to {args.file}"
          + "".join(f", {_amount(number, kind)}" for kind, number in counts.items()))


def _amount(number, kind):
    """``number`` of ``kind`` (a plural noun), e.g. "1 vCard", "2 vCards"."""
    return f"{number} {kind if number != 1 else kind.removesuffix('s')}"


def cmd_import(args):
    from .reader import BadFile, Reader

    config = _load_config(args.config)
    try:
        for path in args.files:  # all of it readable, before any write
            Reader(lambda domain, user: None, lambda what, why: None).read(path)
    except BadFile as e:
        raise Failure(e) from None
    with _store(config) as store:
        run = _Import(config, store, args.dry_run)
        try:
            for path in args.files:
                Reader(run.user, run.skip).read(path)
        except BadFile as e:  # changed under us
            raise Failure(e) from None
    run.report()


class _Import:
    """One run: the accounts of the files, one at a time, and the summary."""

    def __init__(self, config, store, dry_run):
        self.config = config
        self.store = store
        self.dry_run = dry_run
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.totals = {}
        self.sha1_only = 0

    def skip(self, what, why):
        print(f"skipped {what}: {why}")

    def user(self, domain, element):
        from .importer import read_user, write_user

        data = read_user(self.config, domain, element, self.skip)
        if data is None:
            self.outcomes["skipped"] += 1
            return
        outcome, counts = write_user(self.store, data, self.dry_run)
        if outcome is None:
            self.skip(data.jid.bare_str, "no password or SCRAM credentials to log in with")
            self.outcomes["skipped"] += 1
            return
        self.outcomes[outcome] += 1
        if outcome == "created" and "SHA-256" not in data.keys:
            self.sha1_only += 1
        for kind, number in counts.items():
            self.totals[kind] = self.totals.get(kind, 0) + number
        details = ", ".join(_amount(number, kind) for kind, number in counts.items())
        print(f"{outcome} {data.jid.bare_str}" + (f": {details}" if details else ""))

    def report(self):
        prefix = "dry run, nothing written: " if self.dry_run else ""
        print(prefix + "accounts: " + ", ".join(f"{number} {outcome}"
                                                for outcome, number in self.outcomes.items()))
        if self.totals:
            print(prefix + ", ".join(_amount(number, kind) for kind, number in self.totals.items()))
        if self.sha1_only:
            print(f"xmppctl: note: {_count(self.sha1_only, 'account')} came with SCRAM-SHA-1 "
                  f"keys only, which a client choosing SCRAM-SHA-256 cannot log in to: "
                  f"see 'Passwords' in docs/migrating.md", file=sys.stderr)

