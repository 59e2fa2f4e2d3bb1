"""Entity Time (XEP-0202).

The server answers ``urn:xmpp:time`` requests addressed to it with
``<utc/>``, the time of its clock as a XEP-0082 dateTime in UTC, and
``<tzo/>``, a XEP-0082 time zone offset ("Protocol Definition"): ``+00:00``,
since the server keeps UTC and so reveals nothing of where it runs
("Security Considerations").
"""

from datetime import datetime, timezone

from twisted.words.xish import domish

from xmppd.core.events import HOST

NS_TIME = "urn:xmpp:time"


def time_element(seconds):
    """``<time/>`` for ``seconds`` since the epoch (XEP-0082 §3.3, UTC)."""
    element = domish.Element((NS_TIME, "time"))
    element.addElement("tzo", content="+00:00")
    utc = datetime.fromtimestamp(int(seconds), timezone.utc)
    element.addElement("utc", content=utc.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return element


def setup(api):
    api.disco_feature(NS_TIME)
    api.handle_iq("get", HOST, NS_TIME, lambda stanza: time_element(api.clock.seconds()))
