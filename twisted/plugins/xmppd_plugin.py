"""twistd plugin: ``twistd -n xmppd --config FILE``."""

from twisted.application.service import ServiceMaker

xmppd = ServiceMaker(
    "xmppd",
    "xmppd.tap",
    "A federated, TLS-only XMPP server",
    "xmppd",
)
