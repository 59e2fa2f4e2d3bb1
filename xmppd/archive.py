"""Message archive queries (XEP-0313 v1.1, ``urn:xmpp:mam:2``) with result
set management (XEP-0059): what an account's archive
(:mod:`xmppd.modules.mam`) and a room's (:mod:`xmppd.modules.muc`, §5)
share.

- Archive ids (:class:`ArchiveIds`) come from the server's clock, so a
  message is not held up waiting for the database; an id is also the
  message's time (:data:`~xmppd.storage.kinds.ID_TIME_SHIFT`).
- A query (§4): the data form's filters (``with``, ``start``, ``end``; of
  ``#extended``: ``before-id``, ``after-id``, ``ids``), XEP-0059 paging
  (``max``, ``after``, ``before`` with or without an id for the last
  page) and ``<flip-page/>``; one ``<message><result queryid
  id><forwarded><delay/>ORIGINAL`` per item, then the ``<fin>`` of the iq
  result.  A page larger than the operator allows is ``policy-violation``,
  an unknown id ``item-not-found``, a bad form ``bad-request``.
- Metadata (§6.2): the first and last archived messages.
"""

import secrets
from datetime import datetime

from twisted.words.xish import domish

from xmppd.core.stanzas import StanzaError, make_stanza, xep0082_stamp
from xmppd.core.xmlstream import parse_stanza
from xmppd.jid import JID, InvalidJID
from xmppd.storage import UnknownArchiveId
from xmppd.storage.kinds import ID_TIME_SHIFT
from xmppd.wokkel_compat import data_form

NS_MAM = "urn:xmpp:mam:2"
NS_EXTENDED = "urn:xmpp:mam:2#extended"
NS_SID = "urn:xmpp:sid:0"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
FORM_FIELDS = ("with", "start", "end", "before-id", "after-id", "ids")


RANDOM_DRAWN = 1024  # the low bits of this many ids drawn from the system at once


class ArchiveIds:
    """Archive ids from the clock: microseconds since the epoch, shifted,
    plus random low bits (not guessable from the time alone; drawn from
    the system's random source for many ids at once, a system call each
    costing more than the rest of an id), always increasing.  An id is
    also the time its message was archived."""

    def __init__(self, clock):
        self._clock = clock
        self._last = 0
        self._random = []

    def seen(self, archive_id):
        """An id given before (the store's last, at start)."""
        if archive_id is not None:
            self._last = max(self._last, int(archive_id))

    def next(self):
        if not self._random:
            drawn = secrets.randbits(RANDOM_DRAWN * ID_TIME_SHIFT)
            mask = (1 << ID_TIME_SHIFT) - 1
            self._random = [drawn >> shift & mask
                            for shift in range(0, RANDOM_DRAWN * ID_TIME_SHIFT, ID_TIME_SHIFT)]
        self._last = max(self._last + 1, int(self._clock.seconds() * 1_000_000) << ID_TIME_SHIFT
                         | self._random.pop())
        return str(self._last)


def by_payload(handlers):
    """An iq handler calling ``handlers[payload name]``."""
    def handle(stanza):
        handler = handlers.get(stanza.payload.name)
        if handler is None:
            raise StanzaError("feature-not-implemented")
        return handler(stanza)
    return handle


def parse_time(text, name):
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise StanzaError("bad-request", f"{name} is not a XEP-0082 DateTime") from None
    if moment.tzinfo is None:
        raise StanzaError("bad-request", f"{name} needs a time zone")
    return moment


def query_form():
    form = data_form.Form("form", formNamespace=NS_MAM)
    form.addField(data_form.Field("jid-single", var="with"))
    for var in ("start", "end", "before-id", "after-id"):
        form.addField(data_form.Field("text-single", var=var))
    form.addField(data_form.Field("text-multi", var="ids"))
    return form


def form_answer():
    """The answer to an iq-get ``<query/>``: the form (§4.1)."""
    query = domish.Element((NS_MAM, "query"))
    query.addChild(query_form().toElement())
    return query


def parse_filters(query):
    """The keyword filters of the query's form (§4.1)."""
    x = next(query.elements(data_form.NS_X_DATA, "x"), None)
    if x is None:
        return {}
    try:
        form = data_form.Form.fromElement(x)
    except data_form.Error:
        raise StanzaError("bad-request", "a malformed data form") from None
    if form.formNamespace != NS_MAM:
        raise StanzaError("bad-request", f"the form's FORM_TYPE must be {NS_MAM}")
    filters = {}
    for var, field in form.fields.items():
        if var not in FORM_FIELDS:  # §4.1.5
            raise StanzaError("feature-not-implemented", f"unknown field {var}")
        values = [str(value) for value in field.values if str(value).strip()]
        if not values:
            continue
        if var == "with":
            try:
                filters["with_jid"] = str(JID.parse(values[0]))
            except InvalidJID:
                raise StanzaError("jid-malformed", "with is not a JID") from None
        elif var in ("start", "end"):
            filters[var] = parse_time(values[0], var)
        elif var == "ids":
            filters["ids"] = values
        else:
            filters[var.replace("-", "_")] = values[0]
    return filters


def paging(query, page, max_page):
    """``max``, ``after``, ``before`` of XEP-0059 §2 (``before`` is "" for
    the last page); ``page`` items unless ``max`` says, at most
    ``max_page``."""
    limit, after, before = page, None, None
    rsm = next(query.elements(NS_RSM, "set"), None)
    if rsm is not None:
        for child in rsm.elements(NS_RSM):
            text = str(child).strip()
            if child.name == "max":
                if not text.isdigit():
                    raise StanzaError("bad-request", "max is a number")
                limit = int(text)
            elif child.name == "after":
                if not text:
                    raise StanzaError("bad-request", "after needs an id")
                after = text
            elif child.name == "before":
                before = text
            elif child.name == "index":  # XEP-0059 §2.6: paging by index is not offered
                raise StanzaError("feature-not-implemented", "no paging by index")
    if limit > max_page:
        raise StanzaError("policy-violation", f"at most {max_page} per page")
    return limit, after, before


def query(store, owner, stanza, page, max_page, send):
    """Answer the query ``stanza`` on the archive of ``owner`` (a bare
    JID: an account, or a room in a room archive) in ``store``: each
    result goes through ``send(element)``; a Deferred of the ``<fin>``."""
    request = stanza.payload
    filters = parse_filters(request)
    limit, after, before = paging(request, page, max_page)
    flip = next(request.elements(NS_MAM, "flip-page"), None) is not None
    # Counted (XEP-0059 §2.7) when cheap (one correspondent) or asked for
    # alone (max 0): counting a whole archive takes a scan.
    count = limit == 0 or "with_jid" in filters
    d = store.find(owner.local, owner.domain, limit=limit, after=after, before=before,
                   count=count, **filters)
    d.addCallbacks(_send_page, _unknown_id, callbackArgs=(
        stanza.sender.full, owner.full, request.getAttribute("queryid"), flip, send))
    return d


def _send_page(page, to, archive, queryid, flip, send):
    items = page.items
    for item in reversed(items) if flip else items:
        send(result_message(to, archive, queryid, item))
    fin = domish.Element((NS_MAM, "fin"))
    if page.complete:
        fin["complete"] = "true"
    rsm = fin.addElement((NS_RSM, "set"))
    if items:  # in the archive's order, flipped or not (§4.3.4: the same results)
        rsm.addElement("first", content=items[0].id)
        rsm.addElement("last", content=items[-1].id)
    if page.count is not None:
        rsm.addElement("count", content=str(page.count))
    return fin


def _unknown_id(failure):
    failure.trap(UnknownArchiveId)
    raise StanzaError("item-not-found", "no such archived message")


def result_message(to, archive, queryid, item):
    """``<message><result queryid id><forwarded><delay/>ORIGINAL`` (§4.2)."""
    message = make_stanza("message", to=to, from_=archive)
    result = message.addElement((NS_MAM, "result"))
    if queryid is not None:
        result["queryid"] = queryid
    result["id"] = item.id
    forwarded = result.addElement((NS_FORWARD, "forwarded"))
    forwarded.addElement((NS_DELAY, "delay"))["stamp"] = xep0082_stamp(item.timestamp)
    forwarded.addChild(parse_stanza(item.xml))
    return message


def metadata(store, owner):
    """Deferred: the ``<metadata/>`` of the archive of ``owner`` (§6.2)."""
    def answer(bounds):
        element = domish.Element((NS_MAM, "metadata"))
        for name, item in zip(("start", "end"), bounds):
            if item is not None:
                edge = element.addElement(name)
                edge["id"], edge["timestamp"] = item.id, xep0082_stamp(item.timestamp)
        return element

    return store.bounds(owner.local, owner.domain).addCallback(answer)
