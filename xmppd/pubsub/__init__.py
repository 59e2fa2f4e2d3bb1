"""Publish-subscribe (XEP-0060) pieces shared by personal eventing
(XEP-0163, :mod:`xmppd.modules.pep`) and pubsub services: namespaces, the
errors of XEP-0060 with their application-specific conditions (§7, §16.6),
node configuration (:mod:`.config`) and access models (:mod:`.access`)."""

from twisted.words.xish import domish

from xmppd.core.stanzas import StanzaError

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS_PUBSUB + "#owner"
NS_EVENT = NS_PUBSUB + "#event"
NS_ERRORS = NS_PUBSUB + "#errors"
NS_NODE_CONFIG = NS_PUBSUB + "#node_config"
NS_PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"


def error(condition, pubsub_condition=None, text=None, feature=None):
    """A StanzaError with the XEP-0060 condition ``pubsub_condition``
    (``precondition-not-met``...) or, with ``feature``, ``<unsupported
    feature/>`` (§16.6)."""
    application = None
    if feature is not None:
        application = domish.Element((NS_ERRORS, "unsupported"))
        application["feature"] = feature
    elif pubsub_condition is not None:
        application = (NS_ERRORS, pubsub_condition)
    return StanzaError(condition, text, application=application)
