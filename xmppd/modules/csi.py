"""Client State Indication (XEP-0352).

- Discovery (§4.1): ``<csi xmlns='urn:xmpp:csi:0'/>`` is offered in the
  stream features after authentication.
- Indicating state (§4.2): a stream begins active; a bound session's
  ``<inactive/>`` and ``<active/>`` switch it, with no reply.  Before
  binding they are not claimed (the core refuses them as any other element).
  The state is the stream's, independent of the user's presence (§5).
- Server behaviour (§3.2): while a session is inactive, presence updates
  (available or unavailable, RFC 6121 §4) and messages with nothing but
  chat states (XEP-0085), also inside carbons (XEP-0280 §7, §8), are held
  back.  A newer one from the same sender supersedes the one held, which is
  dropped: the newest presence per contact's full JID, the newest chat
  state per conversation (sender, recipient, thread).  Everything else is
  important and goes out at once: messages with a body or any other payload
  (encrypted, receipts, invitations...), message errors, subscription
  requests and answers, presence errors, iqs.  What is held goes out before
  it, in order, so the client sees the order of RFC 6120 §10.1 minus the
  superseded stanzas.  Once ``csi.max_held`` stanzas are held, they go out
  too (the session stays inactive).
- In-order processing (§5.1): ``<active/>`` sends what is held before the
  stream's next element is processed (the connection's serial queue).
- Stream resumption (§5.2): the state is the stream's, so it is not
  restored when a stream management module (XEP-0198 §5) resumes the
  session: when the carrier is lost, what is held is sent through the
  session, so that stream management, whose outbound filter runs after this
  one, counts and keeps it for the resumed stream, and the session is
  active again.  A client that wants to stay inactive says so after
  resuming.  Nothing is held for a session without a carrier.  A stream
  that resumes the session while the old one is still there (the old one
  closed with ``conflict``) begins active too: what is held goes to stream
  management's queue as if the old carrier had been lost, and out after
  ``<resumed/>`` with the stanzas it resends.

The outbound filter runs before stream management's (priority
:data:`FILTER_PRIORITY`) and costs one dict lookup for an active session.
``xmppd_csi_held_total`` counts stanzas held back,
``xmppd_csi_dropped_total`` those superseded (never sent), and
``xmppd_csi_flushes_total{reason}`` when held stanzas went out.
"""

from prometheus_client import Counter
from twisted.words.xish import domish

from xmppd.core.api import AUTHENTICATED
from xmppd.core.events import SESSION_RESUMED, SESSION_UNBOUND
from xmppd.core.negotiation import SESSION_CARRIER_LOST
from xmppd.core.stanzas import NS_CARBONS
from xmppd.core.xmlstream import NS_CLIENT
from xmppd.options import Option, Options, integer

NS_CSI = "urn:xmpp:csi:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_FORWARD = "urn:xmpp:forward:0"
# Namespaces of what may come with chat states in a message that says
# nothing else, besides its thread (RFC 6121 §5.2.5): hints (XEP-0334) and
# stanza ids (XEP-0359).
INCIDENTAL = ("urn:xmpp:hints", "urn:xmpp:sid:0")
PRESENCE_UPDATES = (None, "unavailable")
FILTER_PRIORITY = 10  # before stream management (0), which counts what goes out
CARRIER_LOST_PRIORITY = 10  # before a module that keeps the session hibernating
REASONS = ("important", "active", "full", "carrier-lost")

OPTIONS = Options(  # [csi]
    max_held=Option(100, integer(1)),
)


class Inactive:
    """The state of an inactive session: what is held, by what a newer
    stanza supersedes it, in the order it came."""

    __slots__ = ("held", "flushing")

    def __init__(self):
        self.held = {}
        self.flushing = False


def setup(api):
    registry = api.metrics.registry
    held_back = Counter("xmppd_csi_held", "Stanzas held back from inactive clients",
                        registry=registry)
    dropped = Counter("xmppd_csi_dropped",
                      "Stanzas held back and superseded by a newer one, never sent",
                      registry=registry)
    flushes = Counter("xmppd_csi_flushes", "Times held stanzas went out, by reason",
                      ["reason"], registry=registry)
    flushed = {reason: flushes.labels(reason) for reason in REASONS}

    def offer(stream):
        if api.enabled(stream.domain):
            return domish.Element((NS_CSI, "csi"))
        return None

    def inactive(stream, element):
        session = stream.session
        if session is None or not api.enabled(stream.domain):
            return False
        session.state.setdefault("csi", Inactive())
        return True

    def active(stream, element):
        session = stream.session
        if session is None or not api.enabled(stream.domain):
            return False
        become_active(session, "active")
        return True

    def become_active(session, reason):
        state = session.state.pop("csi", None)
        if state is not None:
            flush(session, state, reason)

    def hold(session, element):
        state = session.state.get("csi")
        if state is None or state.flushing or session.carrier is None:
            return element
        key = superseding_key(element)
        if key is None:
            flush(session, state, "important")
            return element
        held = state.held
        held_back.inc()
        if held.pop(key, None) is not None:
            dropped.inc()
        held[key] = element
        if len(held) >= api.options.max_held:
            flush(session, state, "full")
        return None

    def flush(session, state, reason):
        """Send what ``state`` holds, in order, through the later filters."""
        held, state.held = state.held, {}
        if not held:
            return
        flushed[reason].inc()
        state.flushing = True
        try:
            for element in held.values():
                session.send(element)
        finally:
            state.flushing = False

    def carrier_lost(session):
        become_active(session, "carrier-lost")
        return False  # never keeps the session: stream management may

    def taken_over(session):
        """Resumed on a new stream: active, what is held through stream
        management's queue with no carrier, so it goes out after
        ``<resumed/>``."""
        carrier, session.carrier = session.carrier, None
        try:
            become_active(session, "carrier-lost")
        finally:
            session.carrier = carrier

    def unbound(session):
        session.state.pop("csi", None)

    def bind2_state(stream, session, element, bound):
        """XEP-0386 §3.2: the session begins in the state the client asks."""
        if element.name == "inactive":
            session.state.setdefault("csi", Inactive())

    api.depends("bind2")
    api.service("bind2").add_inline(NS_CSI, bind2_state, api.enabled)
    api.stream_feature(offer, AUTHENTICATED)
    api.streams.on_element(NS_CSI, "inactive", inactive)
    api.streams.on_element(NS_CSI, "active", active)
    api.streams.add_outbound_filter(hold, priority=FILTER_PRIORITY)
    api.hook(SESSION_CARRIER_LOST, carrier_lost, priority=CARRIER_LOST_PRIORITY)
    api.hook(SESSION_RESUMED, taken_over)
    api.hook(SESSION_UNBOUND, unbound)


def superseding_key(element):
    """The key of ``element`` if it may be held back (a held stanza with the
    same key is superseded by it), or None if it is important."""
    type_ = element.getAttribute("type")
    if element.name == "presence":
        return ("presence", element.getAttribute("from")) if type_ in PRESENCE_UPDATES else None
    if element.name == "message" and type_ != "error":
        message = carried(element)
        if chat_states_only(message):
            thread = next(message.elements(NS_CLIENT, "thread"), None)
            return ("chat states", message.getAttribute("from"), message.getAttribute("to"),
                    None if thread is None else str(thread))
    return None


def carried(message):
    """The message a carbon carries (XEP-0280 §7, §8, XEP-0297), else
    ``message`` itself."""
    for direction in message.elements():
        if direction.uri == NS_CARBONS and direction.name in ("received", "sent"):
            for forwarded in direction.elements(NS_FORWARD, "forwarded"):
                return next(forwarded.elements(NS_CLIENT, "message"), message)
    return message


def chat_states_only(message):
    """Whether ``message`` has chat states (XEP-0085) and nothing a user
    reads: no body, no other payload."""
    states = False
    for child in message.elements():
        if child.uri == NS_CHATSTATES:
            states = True
        elif child.uri not in INCIDENTAL and (child.uri, child.name) != (NS_CLIENT, "thread"):
            return False
    return states
