"""The admin socket: how xmppctl reaches a running server.

``[admin] socket`` is a UNIX socket with mode 0600, so only the server's user
and root reach it.  It answers one JSON request per line with one JSON object
per line, ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``:

- ``{"command": "status"}``: uptime, hosts, connection and session counts;
- ``{"command": "reload"}``: re-read the configuration (:mod:`xmppd.control`);
- ``{"command": "sessions", "domain": D}``: the bound sessions (of domain D
  if given), each with its full JID, client address, TLS version and the
  time it was bound (``since``, seconds since the epoch);
- ``{"command": "end-sessions", "jid": J, "reason": R}``: close with the
  stream error of :data:`END_REASONS` [R] the client streams of J: for a bare
  JID, every stream authenticated as that account, bound or not, and its
  hibernating sessions; for a full JID, the one bound to it.  The answer lists them (``ended``).
  With R ``account-deleted``, the server also forgets what it keeps in
  memory of the account (disabled, admin: the ``accounts`` service);
- ``{"command": "admin-revoked", "jid": J}``: J is no admin by invitation
  any more (``xmppctl admins --revoke`` changed the database).

xmppctl is the client (:func:`xmppd.ctl.ask`).
"""

import json
import os
import stat

from twisted.application import service
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from xmppd.errors import StartupError
from xmppd.jid import JID, InvalidJID, normalize_domain
from xmppd.preflight import socket_answers

# Stream errors (RFC 6120 §4.9.3) closing the streams of an account, by reason.
END_REASONS = {
    # §4.9.3.12, as Prosody does when an account is deleted.
    "account-deleted": ("not-authorized", "the account was deleted"),
    # §4.9.3.16: the keys the stream was authenticated with are gone.
    "password-changed": ("reset", "the password was changed"),
    # §4.9.3.14, the condition of ejabberd's kick.
    "kicked": ("policy-violation", "ended by an administrator"),
}


class Refused(Exception):
    """A request the admin socket answers with ``{"ok": false, "error": ...}``."""


class AdminProtocol(LineOnlyReceiver):
    delimiter = b"\n"

    def lineReceived(self, line):
        try:
            request = json.loads(line)
            run = COMMANDS[request["command"]]
        except (ValueError, TypeError, KeyError):
            answer = {"ok": False, "error": "unknown command"}
        else:
            try:
                answer = run(self.factory.controller, request)
            except Refused as e:
                answer = {"ok": False, "error": str(e)}
        self.sendLine(json.dumps(answer).encode())


def _status(controller, request):
    return {"ok": True, "status": controller.status()}


def _reload(controller, request):
    lines = controller.reload()
    return {"ok": not lines[-1].startswith("error"), "messages": lines}


def _sessions(controller, request):
    domain = request.get("domain")
    if domain is not None:
        domain = _parse(normalize_domain, domain, "domain")
    sessions = [describe_session(s) for s in controller.server.sessions.all()
                if domain in (None, s.jid.domain)]
    return {"ok": True, "sessions": sorted(sessions, key=lambda s: s["jid"])}


def _end_sessions(controller, request):
    if not isinstance(request.get("reason"), str) or request["reason"] not in END_REASONS:
        raise Refused(f"unknown reason {request.get('reason')!r}")
    condition, text = END_REASONS[request["reason"]]
    jid = _parse(JID.parse, request.get("jid"), "JID")
    if jid.local is None:
        raise Refused(f"{jid} is not an account JID: expected user@domain[/resource]")
    accounts = controller.server.services.get("accounts")
    if request["reason"] == "account-deleted" and accounts is not None:
        accounts.forget(jid)  # before the sessions end: nothing can fail after them
    ended = controller.server.negotiation.end_account(jid, condition, text)
    return {"ok": True, "ended": sorted(ended)}


def _admin_revoked(controller, request):
    """``xmppctl admins --revoke`` took an account's admin invitation back."""
    _accounts(controller).forget(_parse(JID.parse, request.get("jid"), "JID"), admin_only=True)
    return {"ok": True}


def _accounts(controller):
    accounts = controller.server.services.get("accounts")
    if accounts is None:
        raise Refused("the server has no accounts service")
    return accounts


COMMANDS = {"status": _status, "reload": _reload, "sessions": _sessions,
            "end-sessions": _end_sessions, "admin-revoked": _admin_revoked}


def _parse(parser, text, what):
    if not isinstance(text, str):
        raise Refused(f"expected a {what}, not {text!r}")
    try:
        return parser(text)
    except InvalidJID as e:
        raise Refused(f"invalid {what} {text!r}: {e}") from None


def describe_session(session):
    """What ``xmppctl sessions`` shows of *session*: its full JID, client
    address (``host:port``), TLS version, when it was bound, and the
    software and device its client gave (SASL2's user agent)."""
    carrier = session.carrier
    return {"jid": session.jid.full, "address": carrier and carrier.peer,
            "tls": carrier and carrier.tls_version(), "since": session.since,
            "client": session.client}


class AdminFactory(Factory):
    protocol = AdminProtocol
    noisy = False

    def __init__(self, controller):
        self.controller = controller


class AdminSocketService(service.Service):
    """Listens on the admin UNIX socket, readable by its owner only.

    Start-up fails with :class:`~xmppd.errors.StartupError` naming the
    configuration file, ``admin.socket`` and the path when the socket cannot
    be made: its directory is missing, another server answers on it, or
    something that is not a socket is in its place.  A socket left over by a
    server that did not stop cleanly is replaced.
    """

    def __init__(self, path, controller, reactor):
        self.path = path
        self.factory = AdminFactory(controller)
        self.reactor = reactor
        self._port = None

    def startService(self):
        self._prepare_path()
        old = os.umask(0o177)
        try:
            self._port = self.reactor.listenUNIX(self.path, self.factory, mode=0o600)
        except CannotListenError as e:
            raise self._error(f"cannot listen: {e.socketError}") from None
        finally:
            os.umask(old)
        super().startService()

    def _prepare_path(self):
        directory = os.path.dirname(self.path) or "."
        if not os.path.isdir(directory):
            raise self._error(f"the directory {directory} does not exist")
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise self._error("exists and is not a socket")
        if socket_answers(self.path):
            raise self._error("another xmppd is using this admin socket")
        os.unlink(self.path)

    def _error(self, problem):
        config = self.factory.controller.server.config.path
        return StartupError(f"{config}: admin.socket: {self.path}: {problem}")

    def stopService(self):
        super().stopService()
        if self._port is not None:
            return self._port.stopListening()
