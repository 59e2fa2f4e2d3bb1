"""Benchmark accounts and rosters for xmppd, Prosody and ejabberd.

Accounts are named by a pattern (``bench{}`` gives bench0, bench1, ...) and
share one password.  The first ``roster_users`` accounts get rosters of
``roster_size`` contacts each (see :func:`contacts`), every item with
subscription ``both``, as if each pair had completed the RFC 6121 §3
handshake both ways.  More rosters can be given as a mapping of account
numbers to their contacts' numbers, such as a :func:`star`: one account
with many contacts, each with that one account only.

Two ways per server:

- xmppd, ``sql`` (fast): rows written in one transaction through the models
  of ``xmppd.storage``, every account with the same SCRAM verifier (one key
  derivation for all: the accounts then also share a salt).  ``xmppctl``
  (slow: a process and a key derivation per account, about 0.3 s each):
  ``xmppctl adduser`` per account, no rosters.
- Prosody, ``files`` (fast): the ``accounts`` and ``roster`` files of its
  internal storage written directly (the layout of util/datamanager: one
  Lua table per user in DATA/HOST/STORE/USER.dat, names %-encoded).
  ``prosodyctl`` (slow: a Lua process per account): ``prosodyctl register``
  per account, no rosters.
- ejabberd (about 1 s per ``ejabberdctl register``): a XEP-0227 file of
  every account with its SCRAM-SHA-1 verifier and roster, which
  ``ejabberdctl import_piefxis`` reads into the running server (10,000
  accounts in about 2 s).  ejabberd 23.01 reads the verifier's values
  base64-encoded twice (the text it stores, encoded again), as its
  ``export_piefxis`` writes them.

The fast paths store SCRAM keys derived with :data:`ITERATIONS` iterations
(Prosody's own default is 10000, xmppd's 4096), so that PLAIN logins cost
every server one PBKDF2 of the same length (SHA-256 for xmppd, SHA-1 for
Prosody and ejabberd, whose stores have only SCRAM-SHA-1 keys).
"""

import argparse
import base64
import hashlib
import hmac
import subprocess
import sys
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ITERATIONS = 4096
DEFAULT_PATTERN = "bench{}"
DEFAULT_PASSWORD = "bench-password"


def names(pattern, count, start=0):
    """The localparts ``pattern.format(i)`` for i in [start, start+count)."""
    return [pattern.format(i) for i in range(start, start + count)]


def contacts(index, users, size):
    """The roster of user ``index`` among the first ``users``: the ``size``
    nearest neighbours on a ring (``size`` even, < ``users``), so every
    contact relation is mutual."""
    half = size // 2
    return [(index + step) % users for offset in range(1, half + 1)
            for step in (offset, -offset)]


def star(hub, size):
    """Rosters of a star: account ``hub`` with the ``size`` accounts after
    it as contacts, each of them with ``hub`` as its only contact."""
    leaves = list(range(hub + 1, hub + 1 + size))
    return {hub: leaves, **{leaf: [hub] for leaf in leaves}}


def all_rosters(roster_users, roster_size, rosters=None):
    """Account number -> its contacts' numbers: the ring of the first
    ``roster_users``, then ``rosters`` (accounts outside the ring)."""
    found = {i: contacts(i, roster_users, roster_size) for i in range(roster_users)}
    for i, items in (rosters or {}).items():
        if i in found:
            raise ValueError(f"account {i} has a roster in the ring already")
        found[i] = list(items)
    return found


def check_roster_shape(users, size):
    if size % 2 or size >= users:
        raise ValueError(f"roster size {size} must be even and smaller than the "
                         f"{users} users with rosters")


# xmppd


def _engine(config_path):
    """An engine on the database of an xmppd configuration (SQLite with
    foreign keys enforced, so deleting an account deletes its rows)."""
    from sqlalchemy import create_engine, event

    from xmppd import config as configuration

    url = configuration.load(str(config_path)).storage.url
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect",
                     lambda connection, _: connection.execute("PRAGMA foreign_keys=ON"))
    return engine


def xmppd_create_sql(config_path, domain, localparts, password, roster_users=0, roster_size=0,
                     rosters=None):
    """Accounts (and rosters, see :func:`all_rosters`) written straight
    into the database of ``config_path`` in one transaction."""
    from sqlalchemy import insert, select

    from xmppd.core.scram import derive_all
    from xmppd.storage.models import Account, RosterEntry, ScramCredential

    keys = derive_all(password, iterations=ITERATIONS)
    engine = _engine(config_path)
    try:
        with engine.begin() as db:
            db.execute(insert(Account.__table__),
                       [{"username": name, "domain": domain, "roster_version": 1}
                        for name in localparts])
            ids = dict(db.execute(select(Account.username, Account.id)
                                  .where(Account.domain == domain)).all())
            db.execute(insert(ScramCredential.__table__), [
                {"account_id": ids[name], "hash_name": hash_name, "salt": k.salt,
                 "iterations": k.iterations, "stored_key": k.stored_key,
                 "server_key": k.server_key}
                for name in localparts for hash_name, k in keys.items()])
            rows = [{"account_id": ids[localparts[i]], "jid": f"{localparts[j]}@{domain}",
                     "name": None, "subscription": "both", "ask": False,
                     "pending_in": False, "approved": False}
                    for i, items in all_rosters(roster_users, roster_size, rosters).items()
                    for j in items]
            if rows:
                db.execute(insert(RosterEntry.__table__), rows)
    finally:
        engine.dispose()


def xmppd_delete_sql(config_path, domain, localparts):
    from sqlalchemy import delete

    from xmppd.storage.models import Account

    engine = _engine(config_path)
    try:
        with engine.begin() as db:
            for start in range(0, len(localparts), 500):
                db.execute(delete(Account).where(Account.domain == domain,
                                                 Account.username.in_(localparts[start:start + 500])))
    finally:
        engine.dispose()


def _xmppctl():
    return [sys.executable, str(Path(sys.executable).parent / "xmppctl")]


def xmppd_create_xmppctl(config_path, domain, localparts, password):
    for name in localparts:
        subprocess.run([*_xmppctl(), "-c", str(config_path), "adduser", f"{name}@{domain}",
                        "--password", password], check=True, stdout=subprocess.DEVNULL)


def xmppd_delete_xmppctl(config_path, domain, localparts):
    for name in localparts:
        subprocess.run([*_xmppctl(), "-c", str(config_path), "deluser", f"{name}@{domain}"],
                       check=True, stdout=subprocess.DEVNULL)


# Prosody


def _encode(text):
    """util/datamanager's path encoding: every non-alphanumeric as %xx."""
    return "".join(c if c.isalnum() and c.isascii() else f"%{ord(c):02x}" for c in text)


def _lua_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _user_file(data_dir, domain, store, localpart):
    return Path(data_dir) / _encode(domain) / store / f"{_encode(localpart)}.dat"


def scram_sha1(password, salt):
    """The SCRAM-SHA-1 StoredKey and ServerKey of ``password`` with ``salt``
    (bytes) and :data:`ITERATIONS` (RFC 5802 §3)."""
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha1")
    return hashlib.sha1(client_key).digest(), hmac.digest(salted, b"Server Key", "sha1")


def prosody_account_file(password, salt):
    """The ``accounts`` entry of mod_auth_internal_hashed: SCRAM-SHA-1 keys
    in hex with their salt and iteration count."""
    stored_key, server_key = scram_sha1(password, salt.encode())
    return (f'return {{\n\t["iteration_count"] = {ITERATIONS};\n'
            f'\t["salt"] = {_lua_string(salt)};\n'
            f'\t["server_key"] = {_lua_string(server_key.hex())};\n'
            f'\t["stored_key"] = {_lua_string(stored_key.hex())};\n}};\n')


def prosody_roster_file(domain, contact_names):
    """A roster (core/rostermanager): items keyed by JID, metadata at [false]."""
    items = "".join(f'\t[{_lua_string(f"{name}@{domain}")}] = {{\n'
                    '\t\t["subscription"] = "both";\n\t\t["groups"] = {};\n\t};\n'
                    for name in contact_names)
    return ('return {\n\t[false] = {\n\t\t["version"] = 1;\n\t\t["pending"] = {};\n\t};\n'
            f'{items}}};\n')


def prosody_create_files(data_dir, domain, localparts, password, roster_users=0, roster_size=0,
                         rosters=None):
    account = prosody_account_file(password, str(uuid.uuid4()))
    for name in localparts:
        path = _user_file(data_dir, domain, "accounts", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(account)
    for i, items in all_rosters(roster_users, roster_size, rosters).items():
        path = _user_file(data_dir, domain, "roster", localparts[i])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(prosody_roster_file(domain, [localparts[j] for j in items]))


def prosody_delete_files(data_dir, domain, localparts):
    for store in ("accounts", "roster"):
        for name in localparts:
            _user_file(data_dir, domain, store, name).unlink(missing_ok=True)


def prosody_create_prosodyctl(prosody_config, domain, localparts, password):
    for name in localparts:
        subprocess.run(["prosodyctl", "--config", str(prosody_config), "register", name, domain,
                        password], check=True, stdout=subprocess.DEVNULL)


def prosody_delete_prosodyctl(prosody_config, domain, localparts):
    for name in localparts:
        subprocess.run(["prosodyctl", "--config", str(prosody_config), "deluser",
                        f"{name}@{domain}"], check=True, stdout=subprocess.DEVNULL)


# ejabberd


def ejabberd_piefxis_file(path, domain, localparts, password, roster_users=0, roster_size=0,
                          rosters=None):
    """Write the XEP-0227 file of the accounts and rosters for
    ``ejabberdctl import_piefxis``."""
    def twice(data):
        return base64.b64encode(base64.b64encode(data)).decode()

    salt = uuid.uuid4().bytes
    stored_key, server_key = scram_sha1(password, salt)
    credentials = ("<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>"
                   f"<iter-count>{ITERATIONS}</iter-count><salt>{twice(salt)}</salt>"
                   f"<server-key>{twice(server_key)}</server-key>"
                   f"<stored-key>{twice(stored_key)}</stored-key></scram-credentials>")
    all_items = all_rosters(roster_users, roster_size, rosters)
    with open(path, "w") as f:
        f.write(f"<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='urn:xmpp:pie:0'>"
                f"<host jid='{domain}'>\n")
        for i, name in enumerate(localparts):
            items = "".join(f"<item jid='{localparts[j]}@{domain}' subscription='both'/>"
                            for j in all_items.get(i, ()))
            roster = f"<query xmlns='jabber:iq:roster'>{items}</query>" if items else ""
            f.write(f"<user name='{name}'>{credentials}{roster}</user>\n")
        f.write("</host></server-data>\n")


# Command line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("create", "delete"))
    parser.add_argument("--server", choices=("xmppd", "prosody"), required=True)
    parser.add_argument("--via", choices=("fast", "xmppctl", "prosodyctl"), default="fast",
                        help="fast: database rows (xmppd) or storage files (Prosody); "
                             "otherwise one admin command per account (no rosters)")
    parser.add_argument("--config", help="xmppd.toml (xmppd) or prosody.cfg.lua (prosodyctl)")
    parser.add_argument("--data-dir", help="Prosody's data_path (fast path)")
    parser.add_argument("--domain", required=True)
    parser.add_argument("--pattern", default=DEFAULT_PATTERN)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--password", default=DEFAULT_PASSWORD)
    parser.add_argument("--roster-users", type=int, default=0)
    parser.add_argument("--roster-size", type=int, default=0)
    parser.add_argument("--star-size", type=int, default=0,
                        help="then one account with this many contacts (the accounts after "
                             "it), each with that account only: the pep phase's rosters")
    args = parser.parse_args(argv)
    if args.via == {"xmppd": "prosodyctl", "prosody": "xmppctl"}[args.server]:
        parser.error(f"--via {args.via} is not for {args.server}")
    localparts = names(args.pattern, args.count)
    if args.roster_users:
        check_roster_shape(args.roster_users, args.roster_size)
    rosters = star(args.roster_users, args.star_size) if args.star_size else None
    if rosters and args.count < args.roster_users + 1 + args.star_size:
        parser.error("--count is too small for the ring and the star")
    create = args.action == "create"
    if args.server == "xmppd" and args.via == "fast":
        if create:
            xmppd_create_sql(args.config, args.domain, localparts, args.password,
                             args.roster_users, args.roster_size, rosters)
        else:
            xmppd_delete_sql(args.config, args.domain, localparts)
    elif args.server == "xmppd":
        (xmppd_create_xmppctl(args.config, args.domain, localparts, args.password) if create
         else xmppd_delete_xmppctl(args.config, args.domain, localparts))
    elif args.via == "fast":
        if create:
            prosody_create_files(args.data_dir, args.domain, localparts, args.password,
                                 args.roster_users, args.roster_size, rosters)
        else:
            prosody_delete_files(args.data_dir, args.domain, localparts)
    else:
        (prosody_create_prosodyctl(args.config, args.domain, localparts, args.password) if create
         else prosody_delete_prosodyctl(args.config, args.domain, localparts))
    print(f"{args.action}d {len(localparts)} accounts on {args.server} ({args.via})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
