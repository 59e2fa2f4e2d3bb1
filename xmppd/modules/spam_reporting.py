"""Reports attached to blocks (XEP-0377 v0.4, ``urn:xmpp:reporting:1``),
kept for the operator, as Prosody's mod_spam_reporting logs them.

- A ``<report xmlns='urn:xmpp:reporting:1' reason='…'/>`` in an ``<item/>``
  of a blocking command (XEP-0191 §3.3) is a report of that item's JID
  (§6).  The block is done, or refused, exactly as without the report
  (§6: the ``blocking`` module does it, and tells this module through its
  ``on_block``); only a stored block is recorded.
- Recorded (§4, §5): the reporter's bare JID, the reported JID, the
  reason, the first ``<text/>`` (and its ``xml:lang``, §8) cut to
  ``MAX_TEXT`` characters, the ``<stanza-id/>`` elements (XEP-0359) of
  the reported messages (at most ``MAX_STANZA_IDS``), the processing
  opt-ins (``report-origin``, ``third-party``: kept so the operator
  knows what the reporter allowed; nothing is forwarded, §5) and the
  time.  With ``spam_reporting.include_messages``, the reported messages
  the reporter's own message archive (XEP-0313, the ``mam`` module's)
  holds under those ids and exchanged with the reported JID are copied
  into the report, so they outlive the archive's retention.
- A report without a reason, or with a reason other than the two of §4
  (``urn:xmpp:reporting:spam``, ``urn:xmpp:reporting:abuse``), is not
  recorded (logged at info); the block stands.  The legacy payload
  ``urn:xmpp:reporting:0`` is not read.
- A reporter records at most ``spam_reporting.max_per_day`` reports a
  day (UTC days, counted in memory: a restart starts again); the oldest
  are kept, later ones are not recorded (logged once a day per
  reporter), and the block is still done: refusing it with an error
  would break §6.

Reports are kept in the ``hostval`` store ``reports``, under the
reporter's domain, keyed by a time-ordered id (as archive ids are made:
:class:`xmppd.archive.ArchiveIds`), the value JSON.  An account's reports
do not go with the account: they are the operator's record.  Operators
read them with ``xmppctl reports [DOMAIN] [--json]`` and delete one with
``xmppctl reports --clear ID`` (:mod:`xmppd.reports`).

Advertised on the hosts (§3): ``urn:xmpp:reporting:1`` and the reason
URNs of §4, as the reporting reasons registry (§11.4) names them.
"""

import json

from twisted.internet import defer

from xmppd.archive import ArchiveIds
from xmppd.core.stanzas import xep0082_stamp
from xmppd.jid import JID, InvalidJID
from xmppd.options import Option, Options, boolean, integer
from xmppd.reports import STORE
from xmppd.storage import UnknownArchiveId

NS_REPORTING = "urn:xmpp:reporting:1"
REASONS = ("urn:xmpp:reporting:spam", "urn:xmpp:reporting:abuse")
OPT_INS = ("report-origin", "third-party")  # §5
NS_SID = "urn:xmpp:sid:0"
NS_XML = "http://www.w3.org/XML/1998/namespace"
ARCHIVE = ("archive", "mam")  # the mam module's store: the reporter's messages
MAX_TEXT = 2000  # characters of a report's text kept
MAX_STANZA_IDS = 20  # stanza ids kept per report
MAX_ID = 255  # characters of one stanza id
DAY = 86400

OPTIONS = Options(  # [spam_reporting], and [hosts."DOMAIN".spam_reporting]
    max_per_day=Option(10, integer(0)),  # reports one account records a day
    include_messages=Option(True, boolean),
)


def parse(item):
    """The report of a blocking command's ``<item/>`` as a dict (without
    reporter, JID, time), None if it has none, or a string saying why it
    is not recorded."""
    report = next(item.elements(NS_REPORTING, "report"), None)
    if report is None:
        return None
    reason = report.getAttribute("reason")
    if reason not in REASONS:
        return f"unknown reason {reason!r}" if reason else "no reason"
    found = {"reason": reason}
    text = next(report.elements(NS_REPORTING, "text"), None)
    if text is not None and str(text).strip():
        found["text"] = str(text).strip()[:MAX_TEXT]
        lang = text.attributes.get((NS_XML, "lang"))
        if lang:
            found["lang"] = lang[:35]
    ids = [{"id": sid["id"], "by": sid.getAttribute("by", "")}
           for sid in report.elements(NS_SID, "stanza-id")
           if 0 < len(sid.getAttribute("id", "")) <= MAX_ID]
    if ids:
        found["stanza_ids"] = ids[:MAX_STANZA_IDS]
    opt_ins = [name for name in OPT_INS if next(report.elements(NS_REPORTING, name), None)]
    if opt_ins:
        found["opt_in"] = opt_ins
    return found


def _with(reported, jid_text):
    """Whether a message exchanged with ``jid_text`` is one with
    ``reported`` (matched as blocking matches, XEP-0191 §6)."""
    try:
        other = JID.parse(jid_text)
    except InvalidJID:
        return False
    return reported in (other.full, other.bare_str, other.domain)


class Reports:
    """Recording reports, with the per-reporter daily cap."""

    def __init__(self, api):
        self._api = api
        self.store = api.open_store("hostval", STORE)
        self._archive = api.open_store(*ARCHIVE)
        self._ids = ArchiveIds(api.clock)
        self._day = None
        self._counts = {}  # reporter (bare JID) -> reports recorded today

    def blocked(self, user, items):
        """The ``blocking`` service's ``on_block`` handler."""
        if not self._api.enabled(user.domain):
            return None
        recorded = []
        for jid, item in items.items():
            report = parse(item)
            if isinstance(report, str):
                self._api.log.info("report of {jid} by {user} not recorded: {why}",
                                   jid=jid, user=user, why=report)
            elif report is not None and self._admit(user):
                recorded.append(self.record(user, jid, report))
        return defer.gatherResults(recorded, consumeErrors=True) if recorded else None

    def _admit(self, user):
        """Count a report of ``user`` today; False beyond the cap."""
        day = int(self._api.clock.seconds() // DAY)
        if day != self._day:
            self._day, self._counts = day, {}
        count = self._counts.get(user, 0)
        cap = self._api.options_for(user.domain).max_per_day
        if count < cap:
            self._counts[user] = count + 1
            return True
        if count == cap:
            self._counts[user] = count + 1
            self._api.log.warn("{user} sent more than {cap} reports today: "
                               "the next ones are not recorded", user=user, cap=cap)
        return False

    @defer.inlineCallbacks
    def record(self, user, jid, report):
        report = {"reporter": user.full, "jid": jid, **report,
                  "time": xep0082_stamp(self._api.clock.seconds())}
        if report.get("stanza_ids") and self._api.options_for(user.domain).include_messages:
            messages = yield self._messages(user, jid, report["stanza_ids"])
            if messages:
                report["messages"] = messages
        key = self._ids.next()
        yield self.store.add(user.domain, key, json.dumps(report))
        self._api.log.info("report {key} of {jid} by {user}: {reason}", key=key, jid=jid,
                           user=user, reason=report["reason"])

    @defer.inlineCallbacks
    def _messages(self, user, jid, stanza_ids):
        """The messages of the reporter's archive under ``stanza_ids``
        exchanged with ``jid``."""
        found = []
        for sid in stanza_ids:
            try:
                page = yield self._archive.find(user.local, user.domain, ids=[sid["id"]],
                                                limit=1)
            except UnknownArchiveId:
                continue
            found += [{"id": m.id, "with": m.with_jid, "direction": m.direction,
                       "time": xep0082_stamp(m.timestamp), "xml": m.xml}
                      for m in page.items if _with(jid, m.with_jid)]
        return found


def setup(api):
    api.depends("blocking")
    reports = Reports(api)
    api.service("blocking").on_block(reports.blocked)
    for feature in (NS_REPORTING, *REASONS):
        api.disco_feature(feature)

