"""Last Activity (XEP-0012).

- To the server (§5): its uptime, seconds since this module was set up.
- To an account's bare JID (§3), answered by the server on the account's
  behalf: 0 seconds while the account has an available resource, else the
  seconds since its last available resource went unavailable, with the
  status text of that unavailable presence.  Only the account itself and
  entities with a presence subscription (``from`` or ``both``, RFC 6121 §3)
  may ask; others get ``forbidden`` (§3, §8).  A request for an account that
  does not exist is ``service-unavailable`` (RFC 6121 §8.5.1); for an
  account that never logged out since this was recorded, ``item-not-found``.
- To a full JID (§4): routed to the client, not handled here.

The logout time is recorded on ``session/unavailable`` when no other
resource of the account is available, in the ``keyval`` store named
``last`` under the key ``logout`` as ``"UNIX_SECONDS STATUS"``.
"""

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.core.events import BARE, HOST, SESSION_UNAVAILABLE
from xmppd.core.stanzas import StanzaError
from xmppd.core.xmlstream import NS_CLIENT
from xmppd.storage import UserNotFound

NS_LAST = "jabber:iq:last"
STORE, KEY = "last", "logout"


def last_element(seconds, status=""):
    query = domish.Element((NS_LAST, "query"))
    query["seconds"] = str(max(0, int(seconds)))
    if status:
        query.addContent(status)
    return query


def setup(api):
    started = api.clock.seconds()
    accounts, logouts = api.open_store("accounts"), api.open_store("keyval", STORE)

    def uptime(stanza):
        return last_element(api.clock.seconds() - started)

    @defer.inlineCallbacks
    def account_last(stanza):
        user = stanza.recipient
        if not (yield accounts.exists(user.local, user.domain)):
            raise StanzaError("service-unavailable")
        if not (yield api.service("roster").sees_presence(user, stanza.sender)):
            raise StanzaError("forbidden")
        if any(session.available for session in api.sessions.resources(user)):
            return last_element(0)
        logout = yield logouts.get(user.local, user.domain, KEY)
        if logout is None:
            raise StanzaError("item-not-found", "no logout recorded")
        seconds, _, status = logout.partition(" ")
        return last_element(api.clock.seconds() - int(seconds), status)

    def record_logout(session):
        user = session.jid.bare
        if not api.enabled(user.domain) or any(
                other.available for other in api.sessions.resources(user) if other is not session):
            return
        value = f"{int(api.clock.seconds())} {_status(session.presence)}"
        d = logouts.set(user.local, user.domain, KEY, value)
        d.addErrback(lambda failure: failure.trap(UserNotFound))  # the account was deleted
        d.addErrback(lambda failure: api.log.failure(
            "cannot record the logout of {user}", failure, user=user))

    api.disco_feature(NS_LAST)
    api.handle_iq("get", HOST, NS_LAST, uptime)
    api.handle_iq("get", BARE, NS_LAST, account_last)
    api.hook(SESSION_UNAVAILABLE, record_logout)


def _status(presence):
    """The ``<status/>`` text of a presence element, or ""."""
    if presence is None:
        return ""
    return next((str(status) for status in presence.elements(NS_CLIENT, "status")), "")
