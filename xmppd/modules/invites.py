"""Invitations: Easy User Onboarding (XEP-0401 v0.5), pre-authenticated
registration (XEP-0445 v0.2) and roster subscription (XEP-0379 v0.1).

Publishes the service ``invites`` (:class:`Invites`): invitations made
(by ``xmppctl invite`` for the operator, or for a user), listed, revoked,
checked and used.  Tokens, records and URIs are those of
:mod:`xmppd.invitations`: the store keeps a token's SHA-256, never the
token.  Registration with a token is the ``register`` module's (XEP-0077
with XEP-0445's ``<preauth/>``); this one serves what the invitation
leads to:

- An account registered with a user's invitation and that user are
  subscribed to each other's presence (XEP-0379 §3: the goal of the
  invitation; XEP-0401 §5.5: items on both rosters, pushed), as Prosody's
  mod_invites_register does.  The items have no name (XEP-0379 §5.4).
- The landing page (XEP-0401 §5.2, XEP-0379 §3.3: for someone who has no
  client yet): ``GET /invite/DOMAIN/TOKEN`` on the HTTP listener, a small
  HTML page with the ``xmpp:`` URI as a link and the clients that take
  invitations; an unknown, used, revoked or expired token is 404, a
  storage failure 503.  The page runs nothing, is not cached and sends no
  referrer (the token is in its URL).

An invitation is valid for ``[invites] expires`` (7 days; XEP-0379 §5.2:
a token MUST have a limited validity) unless its maker says otherwise,
and once unless it is ``reusable``; expired ones are deleted when the
invitations of their domain are listed.
"""

import dataclasses
import html

from twisted.internet import defer
from twisted.web import resource, server

from xmppd import invitations
from xmppd.jid import JID
from xmppd.options import Option, Options
from xmppd.storage import RosterFull, RosterItem

OPTIONS = Options(  # [invites]
    expires=Option(invitations.DEFAULT_LIFETIME, invitations.lifetime),  # seconds, or "7d"
)

# The clients that open invitation URIs (XEP-0401, XEP-0445), as the page
# lists them: those Prosody's mod_register_apps marks as taking them.
CLIENTS = (("Conversations", "Android", "https://conversations.im/"),
           ("yaxim", "Android", "https://yaxim.org/"),
           ("Monal", "iOS, macOS", "https://monal-im.org/"),
           ("Siskin IM", "iOS", "https://siskin.im/"))
SECURITY_HEADERS = {
    b"content-type": b"text/html; charset=utf-8",
    b"content-security-policy": b"default-src 'none'; frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}


class Invites:
    """The service ``invites``."""

    def __init__(self, api):
        self._api = api
        self._store = api.open_store("hostval", invitations.STORE)

    def _now(self):
        return self._api.clock.seconds()

    def _ibr(self, domain):
        """Whether ``domain`` takes registrations with an invitation."""
        register = self._api.service("register")
        return register is not None and register.allows(domain)

    def create(self, domain, inviter=None, expires=None, reusable=False, admin=False):
        """A new invitation to hosted ``domain`` by ``inviter`` (the JID of
        an account of ``domain``, or None for the operator), valid
        ``expires`` seconds (default ``[invites] expires``), making the
        account registered with it an admin of ``domain`` if ``admin``
        (single use, the operator's only): a Deferred of
        the :class:`~xmppd.invitations.Invite`, with its token, URI and
        landing page URL.  ValueError for a domain that is not a password
        host here, an inviter of another domain, or a lifetime of more than
        :data:`~xmppd.invitations.MAX_LIFETIME`."""
        host = self._api.hosts.get(domain)
        if host is None or host.authentication != "password":
            return defer.fail(ValueError(f"{domain} is not a host of password accounts here"))
        if inviter is not None and inviter.domain != domain:
            return defer.fail(ValueError(f"{inviter.bare_str} is not an account of {domain}"))
        if admin and (reusable or inviter is not None):
            return defer.fail(ValueError("an admin invitation is the operator's, for one account"))
        lifetime = expires or self._api.options_for(domain).expires
        if not 0 < lifetime <= invitations.MAX_LIFETIME:
            return defer.fail(ValueError(f"an invitation cannot be valid {lifetime} seconds"))
        invite = invitations.make(
            domain, self._now(), lifetime, None if inviter is None else inviter.bare_str, reusable,
            self._api.http_base_url(domain), self._ibr(domain), admin)
        d = self._store.add(domain, invite.key, invite.value())
        return d.addCallback(lambda _: invite)

    @defer.inlineCallbacks
    def list(self, domain):
        """The valid invitations of ``domain``, oldest first (without
        tokens); the expired ones are deleted."""
        records = yield self._store.items(domain)
        valid = []
        for key, value in records.items():
            invite = invitations.parse(domain, key, value)
            if invite is None:
                continue
            if invite.expired(self._now()):
                yield self._store.delete(domain, key)
            else:
                valid.append(invite)
        return sorted(valid, key=lambda invite: invite.created)

    @defer.inlineCallbacks
    def revoke(self, domain, token):
        """Revoke the invitation of ``token`` (or of an id as listed):
        whether there was one."""
        records = yield self._store.items(domain)
        key = invitations.matching(records, token)
        return key is not None and (yield self._store.delete(domain, key))

    @defer.inlineCallbacks
    def find(self, domain, token):
        """The valid invitation of ``token`` to ``domain``, presented (URI,
        landing page), or None."""
        key = invitations.lookup_key(token)
        value = None if key is None else (yield self._store.get(domain, key))
        invite = None if value is None else invitations.parse(domain, key, value)
        if invite is None or invite.expired(self._now()):
            return None
        return invitations.presented(invite, token, self._api.http_base_url(domain),
                                     self._ibr(domain))

    def use(self, invite):
        """Use ``invite`` (as :meth:`find` gave it): a single-use one is
        taken from the store, atomically; a Deferred of whether it was
        still there (of two registrations with one token, one gets False;
        a revoked one is gone).  Its expiry is not checked again (XEP-0445
        §4: only when the token was presented)."""
        if invite.reusable:
            d = self._store.get(invite.domain, invite.key)
        else:
            d = self._store.take(invite.domain, invite.key)
        return d.addCallback(lambda value: value is not None)

    def restore(self, invite):
        """Give back a single-use ``invite`` that :meth:`use` took for a
        registration that then failed."""
        if invite.reusable:
            return defer.succeed(False)
        return self._store.add(invite.domain, invite.key, invite.value())

    @defer.inlineCallbacks
    def accepted(self, invite, user):
        """Account ``user`` (a bare JID) was registered with ``invite``: an
        inviting user and ``user`` become contacts subscribed both ways
        (XEP-0379 §3), through the ``roster`` service, so both rosters are
        pushed; with an admin invitation, ``user`` becomes an admin of its
        host."""
        if invite.admin:
            yield self._api.service("accounts").make_admin(user, invite.id)
        roster = self._api.service("roster")
        if invite.inviter is None or roster is None:
            return
        inviter = JID.parse(invite.inviter)
        if not (yield self._api.service("accounts").exists(inviter)):
            return
        for owner, contact in ((user, inviter), (inviter, user)):
            try:
                yield roster.change(owner, self._subscribed, roster, owner, contact)
            except RosterFull:
                self._api.log.warn("roster of {owner} is full: {contact} not added",
                                   owner=owner, contact=contact)

    @staticmethod
    @defer.inlineCallbacks
    def _subscribed(roster, owner, contact):
        existing = yield roster.items.get_item(owner.local, owner.domain, contact.bare_str)
        item = RosterItem(jid=contact.bare_str) if existing is None else existing
        yield roster.store(owner, dataclasses.replace(
            item, subscription="both", ask=False, pending_in=False, approved=False))


class LandingPage(resource.Resource):
    """``/invite/DOMAIN/TOKEN``: the landing page of a valid invitation of
    a domain ``enabled(domain)`` says this module serves, else 404."""

    isLeaf = True

    def __init__(self, invites, enabled, log):
        super().__init__()
        self._invites = invites
        self._enabled = enabled
        self._log = log

    def render_GET(self, request):
        path = [segment.decode("utf-8", "replace") for segment in request.postpath]
        if len(path) != 2 or not self._enabled(path[0]):
            return self._page(request, 404, *NOT_FOUND)
        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = self._invites.find(*path)
        d.addCallback(lambda invite: self._page(request, 404, *NOT_FOUND) if invite is None
                      else self._page(request, 200, *invitation_page(invite)))
        d.addErrback(self._unavailable, request)
        d.addCallback(lambda body: finished or (request.write(body), request.finish()))
        return server.NOT_DONE_YET

    def _unavailable(self, failure, request):
        self._log.failure("cannot read an invitation for its landing page", failure)
        return self._page(request, 503, "Try again later",
                          "<p>The invitation cannot be read now. Try again later.</p>")

    @staticmethod
    def _page(request, status, title, body_html):
        request.setResponseCode(status)
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<meta name=\"robots\" content=\"noindex\">"
                f"<title>{html.escape(title)}</title></head>\n<body>\n"
                f"<h1>{html.escape(title)}</h1>\n{body_html}\n</body></html>\n").encode()


NOT_FOUND = ("Invitation not found",
             "<p>This invitation does not exist: it was used, revoked or it expired. "
             "Ask whoever sent it for a new one.</p>")


def invitation_page(invite):
    """The title and body (HTML, everything escaped) of ``invite``'s page
    (XEP-0401 §5.2: who invites, the clients, a link that opens the URI)."""
    domain = html.escape(invite.domain)
    if invite.inviter is None:
        title = f"Invitation to {invite.domain}"
        intro = f"You are invited to create an account on <b>{domain}</b>."
    else:
        title = f"{invite.inviter} invites you to chat"
        inviter = html.escape(invite.inviter)
        intro = (f"<b>{inviter}</b> invites you to chat: your app adds them as a contact"
                 + (f", and can create your account on <b>{domain}</b>." if invite.ibr else "."))
    clients = "\n".join(f"<li><a href=\"{html.escape(url)}\">{html.escape(name)}</a> "
                        f"({html.escape(systems)})</li>" for name, systems, url in CLIENTS)
    expires = invite.expires.strftime("%Y-%m-%d %H:%M UTC")
    body = (f"<p>{intro}</p>\n"
            f"<p><a href=\"{html.escape(invite.uri)}\">Open the invitation in your chat app</a>"
            f"</p>\n<p>If the link opens nothing, install an XMPP app that takes invitations, "
            f"then open this page again and follow the link:</p>\n<ul>\n{clients}\n</ul>\n"
            f"<p>The invitation: <code>{html.escape(invite.uri)}</code></p>\n"
            f"<p>It expires on {html.escape(expires)}.</p>")
    return title, body


def setup(api):
    api.depends("accounts")
    invites = Invites(api)
    api.provide("invites", invites)
    api.http_resource(invitations.PATH, LandingPage(
        invites, lambda domain: domain in api.hosts and api.enabled(domain), api.log))
