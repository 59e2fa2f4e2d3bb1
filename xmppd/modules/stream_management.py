"""Stream management (XEP-0198 v1.6, ``urn:xmpp:sm:3``): acknowledgements
and resumption, with no stanza lost.

- Enabling (§3): ``<sm/>`` is offered after authentication; ``<enable/>``
  from a bound session answers ``<enabled/>`` (with ``id``, ``resume='true'``
  and ``max`` when resumption is on: ``c2s.resume_timeout`` seconds, or the
  client's smaller ``max``).  Before binding, or a second time, it is
  ``<failed>`` with ``unexpected-request``.
- Acknowledgements (§4): the stanzas (message, presence, iq: not these
  nonzas) handled in each direction are counted from zero, modulo 2^32.
  ``<r/>`` from the client is answered with ``<a h/>`` once every stanza
  received before it is handled (the connection processes its elements in
  order, RFC 6120 §10.1: an offline message counts once committed).  What
  the server sends is kept until the client's ``<a h/>`` covers it; the
  server asks (``<r/>``) once ``ack_request_after`` stanzas wait, or
  ``ack_request_delay`` seconds after the first.  An ``h`` above what was
  sent ends the stream with ``undefined-condition`` (its text says
  ``handled-count-too-high``, §4).
- Resumption (§5): when the connection breaks (not when the client closes
  its stream or the server ends the session), the session hibernates: it
  stays bound and available to its contacts, and what is sent to it is
  kept, for the resumption timeout.  ``<resume previd h/>`` on a stream
  authenticated as the same account re-attaches it: ``<resumed h previd/>``,
  then every stanza the client has not acknowledged, in order, once; a
  connection still carrying the session is closed with ``conflict``.  An
  unknown, expired or other account's id is ``<failed>`` with
  ``item-not-found`` (with the ``h`` of the ended session when it was this
  account's and ended lately), and the client binds anew.
- Nothing is dropped silently (§4: as for a stanza to an unavailable
  resource, RFC 6121 §8.5.3.2): when a session with unacknowledged stanzas
  is unbound (its timeout passed, its stream closed, or the server ended
  it: it has left the session directory already, and its unavailable
  presence goes out), its messages go to offline storage
  (``message/offline``) or, when that does not keep them and they have a
  body, back to their sender as ``service-unavailable``; iq requests get
  ``service-unavailable``; presence, errors, headlines, groupchat messages
  and carbon copies are dropped (they are state, or copies of what another
  resource got).
- Bounds: at most ``max_queue`` unacknowledged stanzas per session and
  ``max_queue_total`` in all; past either, a connected client is
  disconnected with ``policy-violation`` and a hibernating one ends, their
  stanzas handled as above.

Ids are ``NODE.RANDOM``: NODE names the process that holds the session
(its cluster node name, else a random tag).  A session is resumed only on
its node; a ``<resume/>`` that reaches another node fails with
``item-not-found`` and that node tells the session's node to end it at
once, its unacknowledged messages going to offline storage
(docs/cluster.md).  The state lives in memory, so it survives a
``reload``; a hibernating session has no connection for the ping module
to test, and resumption or its timeout ends it instead.
"""

import secrets
from collections import OrderedDict, deque

from twisted.words.xish import domish

from xmppd.core.api import AUTHENTICATED
from xmppd.core.events import SESSION_HIBERNATING, SESSION_UNBOUND
from xmppd.core.negotiation import SESSION_CARRIER_LOST
from xmppd.core.stanzas import NS_STANZAS
from xmppd.core.stream import cancelled
from xmppd.options import Option, Options, integer, positive_number

NS_SM = "urn:xmpp:sm:3"
NAME = "stream_management"
MASK = 0xFFFFFFFF  # counters wrap at 2^32 (§4)
SM_ABANDON = "stream_management/abandon"  # from another cluster node: "BARE-JID ID"
ENDED_REMEMBERED = 10000  # ids of ended sessions whose h a failed resume tells

OPTIONS = Options(  # [stream_management]
    ack_request_after=Option(5, integer(1)),
    ack_request_delay=Option(5.0, positive_number),
    max_queue=Option(1000, integer(1)),
    max_queue_total=Option(100000, integer(1)),
)


class StreamState:
    """Stream management of one session: the counters, the stanzas sent and
    not acknowledged, and its timers."""

    __slots__ = ("id", "timeout", "handled", "sent", "unacked", "requested", "request_timer",
                 "expiry")

    def __init__(self, id_, timeout):
        self.id = id_  # None: not resumable
        self.timeout = timeout
        self.handled = 0  # stanzas received from the client and handled
        self.sent = 0  # stanzas sent to the client
        self.unacked = deque()  # the last len(unacked) of them
        self.requested = False  # an <r/> waits for its <a/>
        self.request_timer = None
        self.expiry = None  # while hibernating


def nonza(name, **attributes):
    element = domish.Element((NS_SM, name))
    for key, value in attributes.items():
        element[key] = str(value)
    return element


def failed(condition, h=None):
    element = nonza("failed") if h is None else nonza("failed", h=h)
    element.addElement((NS_STANZAS, condition))
    return element


def counter(text):
    """An ``h`` attribute: an unsigned 32-bit integer, or None."""
    if text is None or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MASK else None


class StreamManagement:
    """The ``<enable/>``, ``<r/>``, ``<a/>`` and ``<resume/>`` handlers,
    the stanza counters (session filters), hibernation and its end."""

    def __init__(self, api):
        self._api = api
        self._node = api.node or secrets.token_hex(4)
        self._queued = 0  # unacknowledged stanzas of all sessions
        self._ended = OrderedDict()  # id -> (bare JID, h) of sessions that ended

    # Negotiation

    def feature(self, stream):
        """``<sm/>`` until the session has enabled it (with Bind 2, before
        the features that follow a SASL2 success)."""
        session = stream.session
        if not self._api.enabled(stream.domain) or (
                session is not None and NAME in session.state):
            return None
        return nonza("sm")

    def enable(self, stream, element):
        stream.send(self.enabled(stream.session, element))
        return True

    def enabled(self, session, element):
        """The answer to ``<enable/>`` for ``session`` (None before binding)."""
        if (session is None or NAME in session.state
                or not self._api.enabled(session.jid.domain)):
            return failed("unexpected-request")
        timeout = self._api.config.c2s.resume_timeout
        asked = counter(element.getAttribute("max"))
        if asked:
            timeout = min(timeout, asked)
        if timeout and element.getAttribute("resume") in ("true", "1"):
            state = StreamState(f"{self._node}.{secrets.token_urlsafe(18)}", timeout)
            self._api.streams.remember((NAME, state.id), session)
            enabled = nonza("enabled", id=state.id, resume="true", max=int(timeout))
        else:
            state = StreamState(None, 0)
            enabled = nonza("enabled")
        session.state[NAME] = state
        return enabled

    def request(self, stream, element):
        """``<r/>``: every stanza before it is handled (in-order processing)."""
        state = self._state(stream)
        if state is not None:
            stream.send(nonza("a", h=state.handled))
        return True

    def answer(self, stream, element):
        """``<a h/>`` from the client."""
        state = self._state(stream)
        if state is None:
            return True
        h = counter(element.getAttribute("h"))
        if h is None:
            stream.session.close("bad-format", "h is not an unsigned 32-bit integer")
        else:
            self._acknowledged(stream.session, state, h)
        return True

    def _state(self, stream):
        session = stream.session
        state = session.state.get(NAME) if session is not None else None
        if state is None:
            stream.send(failed("unexpected-request"))
        return state

    def _acknowledged(self, session, state, h):
        """Drop what ``h`` (the client's count) acknowledges; False (and
        the stream closed) if it counts more than was sent."""
        waiting = len(state.unacked)
        new = (h - (state.sent - waiting)) & MASK
        if new > waiting:
            session.close("undefined-condition",
                          f"handled-count-too-high: h={h}, send-count={state.sent}")
            return False
        for _ in range(new):
            state.unacked.popleft()
        self._queued -= new
        state.requested = False
        if state.unacked and session.carrier is not None:
            self._request_later(session, state)
        return True

    def resume(self, stream, element):
        answer, resend = self.resumed(stream, element)
        if answer is not None:
            stream.send(answer)
        if resend is not None:
            resend()
        return True

    def resumed(self, stream, element):
        """Resume as ``<resume/>`` asks: the answer (``<resumed/>``,
        ``<failed/>``, or None when the stream was closed instead) and the
        call that resends what the client has not acknowledged, to make
        once the answer is sent (or None)."""
        if stream.user is None or stream.session is not None:
            return failed("unexpected-request"), None
        previd = element.getAttribute("previd") or ""
        h = counter(element.getAttribute("h"))
        if h is None:
            return failed("bad-request"), None
        session = self._api.streams.find((NAME, previd))
        state = session.state.get(NAME) if session is not None else None
        if (state is None or session.unbound or session.ending
                or session.jid.bare != stream.user):
            if session is None and previd.rpartition(".")[0] not in ("", self._node):
                # Kept by another node: it ends the session at once (its
                # unacknowledged messages go to offline storage).
                self._api.tell_cluster(SM_ABANDON, f"{stream.user.full} {previd}")
            ended = self._ended.get(previd)
            known = ended is not None and ended[0] == stream.user
            return failed("item-not-found", ended[1] if known else None), None
        state.expiry = cancelled(state.expiry)
        self._api.streams.resume(stream, session)
        if not self._acknowledged(session, state, h):
            return None, None
        return (nonza("resumed", h=state.handled, previd=previd),
                lambda: self._resend(session, state))

    def abandon(self, argument):
        """Another node's client could not resume session ``previd`` there:
        end it here if it hibernates (docs/cluster.md)."""
        user, _, previd = (argument or "").partition(" ")
        session = self._api.streams.find((NAME, previd))
        if session is not None and session.hibernating and session.jid.bare.full == user:
            session.close("conflict", "resumed on another node")

    def _resend(self, session, state):
        carrier = session.carrier
        if carrier is None:
            return
        for stanza in state.unacked:
            carrier.send_element(stanza)
        if state.unacked:
            self._send_request(session, state)
        self._api.log.info("{jid} resumed with {count} stanza(s) resent", jid=session.jid,
                           count=len(state.unacked))

    # Inline in SASL2 (XEP-0388) and Bind 2 (XEP-0386)

    def sasl2_feature(self, stream):
        return nonza("sm") if self._api.enabled(stream.domain) else None

    def sasl2_resume(self, stream, request, success):
        """``<resume/>`` in ``<authenticate/>`` (XEP-0198 §5 with XEP-0388):
        its answer in ``<success/>``; a failure lets Bind 2 bind anew."""
        resume = next(request.element.elements(NS_SM, "resume"), None)
        if resume is None or not self._api.enabled(stream.domain):
            return
        answer, resend = self.resumed(stream, resume)
        if answer is not None:
            success.addChild(answer)
        if resend is not None:
            request.after.append(resend)

    def bind2_enable(self, stream, session, element, bound):
        if element.name == "enable":
            bound.addChild(self.enabled(session, element))

    # Counting (session filters)

    def inbound(self, session, element):
        state = session.state.get(NAME)
        if state is not None:
            state.handled = (state.handled + 1) & MASK
        return element

    def outbound(self, session, element):
        state = session.state.get(NAME)
        if state is None:
            return element
        state.unacked.append(element)
        state.sent = (state.sent + 1) & MASK
        self._queued += 1
        options = self._api.options
        if len(state.unacked) > options.max_queue or self._queued > options.max_queue_total:
            self._overflow(session)
        elif session.carrier is not None and not state.requested:
            if len(state.unacked) >= options.ack_request_after:
                self._request_later(session, state, 0)
            else:
                self._request_later(session, state)
        return element

    def _request_later(self, session, state, delay=None):
        timer = state.request_timer
        if timer is not None and timer.active():
            if delay == 0:
                timer.reset(0)
            return
        if delay is None:
            delay = self._api.options.ack_request_delay
        state.request_timer = self._api.clock.callLater(delay, self._timed_request, session)

    def _timed_request(self, session):
        state = session.state.get(NAME)
        if state is not None and state.unacked and not state.requested:
            self._send_request(session, state)

    def _send_request(self, session, state):
        carrier = session.carrier
        if carrier is not None:
            state.requested = True
            carrier.send_element(nonza("r"))

    def _overflow(self, session):
        self._api.log.info("{jid} does not acknowledge what it is sent: ending the session",
                           jid=session.jid)
        # The stanza being sent is queued already: it is handled with the
        # rest once the session is unbound.
        session.close("policy-violation", "too many unacknowledged stanzas")

    # Hibernation and the end

    def carrier_lost(self, session):
        """Keep a resumable session bound for its timeout (§5)."""
        state = session.state.get(NAME)
        if state is None or state.id is None:
            return False
        state.request_timer = cancelled(state.request_timer)
        state.requested = False
        state.expiry = self._api.clock.callLater(state.timeout, self._expired, session)
        self._api.log.info("{jid} hibernating for {timeout:g} s", jid=session.jid,
                           timeout=state.timeout)
        self._api.notify(SESSION_HIBERNATING, (session, tuple(state.unacked)))
        return True

    def _expired(self, session):
        state = session.state.get(NAME)
        if state is not None:
            state.expiry = None
        self._api.log.info("{jid} not resumed in time", jid=session.jid)
        session.close("connection-timeout")

    def unbound(self, session):
        """The session ended: its unacknowledged stanzas are handled."""
        state = session.state.pop(NAME, None)
        if state is None:
            return
        cancelled(state.request_timer)
        cancelled(state.expiry)
        if state.id is not None:
            self._api.streams.forget((NAME, state.id))
            self._ended[state.id] = (session.jid.bare, state.handled)
            while len(self._ended) > ENDED_REMEMBERED:
                self._ended.popitem(last=False)
        self._queued -= len(state.unacked)
        for element in state.unacked:
            self._api.undeliverable(session.jid, element)

def setup(api):
    api.depends("bind2")
    sm = StreamManagement(api)
    api.stream_feature(sm.feature, AUTHENTICATED)
    api.service("sasl2").add_inline(sm.sasl2_feature)
    api.service("sasl2").on_success(sm.sasl2_resume, priority=10)
    api.service("bind2").add_inline(NS_SM, sm.bind2_enable, api.enabled)
    for name, handler in (("enable", sm.enable), ("r", sm.request), ("a", sm.answer),
                          ("resume", sm.resume)):
        api.streams.on_element(NS_SM, name, handler)
    api.streams.add_inbound_filter(sm.inbound)
    api.streams.add_outbound_filter(sm.outbound)
    api.hook(SESSION_CARRIER_LOST, sm.carrier_lost)
    api.hook(SESSION_UNBOUND, sm.unbound)
    api.hook(SM_ABANDON, sm.abandon)
