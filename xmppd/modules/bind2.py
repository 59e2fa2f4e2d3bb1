"""Bind 2 (XEP-0386): resource binding inside a SASL2 authentication.

- Discovery (§3.1): ``<bind xmlns='urn:xmpp:bind:0'>`` in SASL2's
  ``<inline/>``, listing in its own ``<inline/>`` the features a client may
  enable with the binding (:meth:`Bind2.add_inline`: carbons, client state,
  stream management).
- Binding (§3.2): a ``<bind/>`` in the ``<authenticate/>`` is processed
  after a successful authentication (and after a resumption, which skips
  it), before ``<success/>``.  The resource is ``TAG/ID`` (§3.2.1): the
  client's ``<tag/>`` (if a valid resourcepart of at most
  :data:`MAX_TAG` characters, else none) and an identifier that is stable
  for one account, tag and SASL2 ``<user-agent id>`` (a hash: the id, a
  random UUID, is not revealed), random without a user-agent id.  So a client
  reconnecting gets its resource back, and its earlier session is
  replaced (``conflict``), as §3.2 asks.  Then each child of ``<bind/>`` in
  a listed namespace goes to its module, which may add its answer to the
  ``<bound/>`` element of ``<success/>``; the other modules'
  :meth:`Bind2.on_bound` handlers add what every binding reports: the
  archive's ``<metadata/>`` (XEP-0313 §6.2) when the ``mam`` module
  serves the host, as §3.2 recommends.
- The limit of resources per account (``c2s.max_resources``) applies as
  for RFC 6120 binding; past it the stream ends with ``policy-violation``
  (the authentication has succeeded by then).
- Offline messages are delivered as after any binding, not dropped as
  §3.2 suggests: a message kept offline is not always in the archive
  (archiving preferences), and none may be lost.  Those that are archived
  carry the archive's stanza id, so a client can tell them apart.
"""

import hashlib
import secrets

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd.jid import InvalidJID, normalize_resourcepart

NS_BIND2 = "urn:xmpp:bind:0"
MAX_TAG = 64


class Bind2:
    """The service ``bind2``."""

    def __init__(self, api):
        self._api = api
        self._inline = {}  # namespace -> (handler(stream, session, element, bound), serves)
        self._bound = []  # handler(stream, session, bound)

    def add_inline(self, namespace, handler, serves):
        """List ``namespace`` as a feature to enable with the binding on
        the hosts where ``serves(domain)`` (its module's); ``handler(stream,
        session, element, bound)`` gets each child of ``<bind/>`` in it,
        once the session is bound."""
        self._inline[namespace] = (handler, serves)

    def on_bound(self, handler):
        """``handler(stream, session, bound)`` after each Bind 2 binding:
        it may add elements to ``<bound/>``, and return a Deferred that
        ``<success/>`` waits for."""
        self._bound.append(handler)

    def feature(self, stream):
        if not self._api.enabled(stream.domain):
            return None
        element = domish.Element((NS_BIND2, "bind"))
        served = [namespace for namespace, (_, serves) in self._inline.items()
                  if serves(stream.domain)]
        if served:
            inline = element.addElement("inline")
            for namespace in served:
                inline.addElement("feature")["var"] = namespace
        return element

    def succeeded(self, stream, request, success):
        """Bind as the ``<bind/>`` of the request asks, unless resumed."""
        bind = next(request.element.elements(NS_BIND2, "bind"), None)
        if bind is None or stream.session is not None or not self._api.enabled(stream.domain):
            return
        api = self._api
        resource = self._resource(stream.user, _tag(bind), request.user_agent)
        user = stream.user
        if (api.sessions.count(user) >= api.config.c2s.max_resources
                and api.sessions.get(user.with_resource(resource)) is None):
            stream.close("policy-violation", "too many resources bound")
            return
        session = api.streams.bind(stream, resource)
        bound = success.addElement((NS_BIND2, "bound"))
        for child in bind.elements():
            handler, serves = self._inline.get(child.uri, (None, None))
            if handler is not None and serves(stream.domain):
                handler(stream, session, child, bound)
        waits = [d for handler in self._bound
                 if (d := handler(stream, session, bound)) is not None]
        if not waits:
            return None
        return defer.gatherResults(waits, consumeErrors=True).addErrback(
            lambda failure: api.log.failure("reporting a Bind 2 binding failed", failure))

    def _resource(self, user, tag, user_agent):
        if user_agent is None:
            identifier = secrets.token_hex(6)
        else:
            identifier = hashlib.sha256(
                f"{user}\0{tag}\0{user_agent}".encode()).hexdigest()[:12]
        return f"{tag}/{identifier}" if tag else identifier


def _tag(bind):
    """The client's tag if it may start a resource, else None."""
    tag = next(bind.elements(NS_BIND2, "tag"), None)
    if tag is None:
        return None
    try:
        text = normalize_resourcepart(str(tag).strip())
    except InvalidJID:
        return None
    return text if len(text) <= MAX_TAG else None


def setup(api):
    api.depends("sasl2")
    service = Bind2(api)
    api.provide("bind2", service)
    sasl2 = api.service("sasl2")
    sasl2.add_inline(service.feature)
    sasl2.on_success(service.succeeded)
