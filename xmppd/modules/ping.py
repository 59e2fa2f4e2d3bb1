"""XMPP Ping (XEP-0199).

- Client-to-server pings (§4.2): the server answers pings addressed to it,
  and those with no ``to``, which RFC 6120 §10.3.3 has the server handle on
  behalf of the sending account (the router posts them as to the account's
  bare JID).  A ping to an account's bare JID, the sender's own or another
  one's, is answered by the server on the account's behalf (§4.4: "a ping
  sent to a bare JID will be handled by the server on behalf of the
  client"; Prosody does the same); for an account that does not exist it
  is ``service-unavailable`` (RFC 6121 §8.5.1).  Pings to a full JID are
  routed to that client.
- Server-to-client pings (§4.1): a session that has sent nothing for
  ``ping.idle_timeout`` seconds (0: never) is pinged; its answer, a result
  or an error iq (a client without ping support answers
  ``service-unavailable``, which proves it alive just the same), must come
  within ``ping.timeout`` seconds or its connection is closed with the
  stream error ``connection-timeout`` (RFC 6120 §4.9.3.4): the session
  ends, unless stream management keeps it for resumption (XEP-0198 §5).
  A session hibernating so, without a connection, is not pinged: its
  resumption or its timeout ends it.  One ping at most is
  outstanding per session.  Each session has one timer on the server clock:
  the next idleness check, or the deadline of its ping.
"""

from twisted.internet import defer

from xmppd.core.events import (BARE, CONFIG_RELOADED, HOST, SESSION_BOUND, SESSION_UNBOUND,
                               iq_event)
from xmppd.core.stanzas import StanzaError, make_stanza
from xmppd.options import Option, Options, non_negative_number, positive_number

NS_PING = "urn:xmpp:ping"

OPTIONS = Options(  # [ping]
    idle_timeout=Option(300.0, non_negative_number),  # 0: never ping
    timeout=Option(60.0, positive_number),
)


class _Watch:
    """Ping state of one session: its timer and the id of the ping awaiting
    an answer, if any."""

    __slots__ = ("timer", "pending")

    def __init__(self):
        self.timer = None
        self.pending = None


class IdlePinger:
    """Pings idle sessions and closes those that do not answer, with the
    ``[ping]`` settings in force (a reloaded config restarts every watch)."""

    def __init__(self, api):
        self._api = api

    def watch(self, session):
        idle_timeout = self._api.options.idle_timeout
        if idle_timeout and self._api.enabled(session.jid.domain):
            session.state["ping"] = _Watch()
            self._check_later(session, idle_timeout)

    def forget(self, session):
        watch = session.state.pop("ping", None)
        if watch is not None and watch.timer.active():
            watch.timer.cancel()

    def rewatch(self, _config):
        for session in self._api.sessions.all():
            self.forget(session)
            self.watch(session)

    def answered(self, stanza):
        """Claim the answer to an outstanding ping from the pinged session."""
        session = stanza.origin
        watch = session.state.get("ping") if session is not None else None
        if watch is None or watch.pending is None:
            return False
        if stanza.element.getAttribute("id") != watch.pending:
            return False
        watch.timer.cancel()
        watch.pending = None
        self._check_later(session, self._api.options.idle_timeout)
        return True

    def _check_later(self, session, delay):
        session.state["ping"].timer = self._api.clock.callLater(delay, self._check, session)

    def _check(self, session):
        settings = self._api.options
        idle = self._api.clock.seconds() - session.last_active
        if session.carrier is None:  # hibernating: stream management ends it
            self._check_later(session, settings.idle_timeout)
            return
        if idle < settings.idle_timeout:
            self._check_later(session, settings.idle_timeout - idle)
            return
        watch = session.state["ping"]
        watch.pending = self._api.next_id()
        ping = make_stanza("iq", to=session.jid.full, from_=session.jid.domain,
                           type_="get", id_=watch.pending)
        ping.addElement((NS_PING, "ping"))
        session.send(ping)
        watch.timer = self._api.clock.callLater(settings.timeout, self._expire, session)

    def _expire(self, session):
        if session.carrier is None:  # the connection went: hibernating, not dead
            session.state["ping"].pending = None
            self._check_later(session, self._api.options.idle_timeout)
            return
        self.forget(session)
        # The connection is dead, not the session: one kept for resumption
        # (XEP-0198) hibernates, any other ends.
        session.carrier.close("connection-timeout", "no answer to a ping")


def setup(api):
    accounts = api.open_store("accounts")

    @defer.inlineCallbacks
    def account_ping(stanza):
        account = stanza.recipient
        if stanza.sender is not None and stanza.sender.bare == account:
            return None
        if not (yield accounts.exists(account.local, account.domain)):
            raise StanzaError("service-unavailable")
        return None

    api.disco_feature(NS_PING)
    api.handle_iq("get", HOST, NS_PING, lambda stanza: None)
    api.handle_iq("get", BARE, NS_PING, account_ping)
    pinger = IdlePinger(api)
    api.hook(SESSION_BOUND, pinger.watch)
    api.hook(SESSION_UNBOUND, pinger.forget)
    api.hook(CONFIG_RELOADED, pinger.rewatch)
    for type_ in ("result", "error"):
        for target in (HOST, BARE):
            api.hook(iq_event(type_, target), pinger.answered)
