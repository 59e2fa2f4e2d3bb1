"""Entity Capabilities of the server (XEP-0115).

The server offers its capabilities as a stream feature after authentication
(§6.3): ``<c hash='sha-1' node=NODE ver=VER/>``, where VER is the
verification string (§5.1) of the server's disco#info for the stream's
domain, so a client knows the server's features without asking.  A
disco#info request to the server for the node ``NODE#VER`` gets the same
answer as one without a node (§6.2); the ``caps`` feature is advertised
(§7).  Builds on the ``disco`` service, so it is loaded after ``disco``; on
hosts where service discovery is disabled nothing is offered.
"""

import base64
import hashlib

from twisted.words.xish import domish

from xmppd.core.events import CONFIG_RELOADED
from xmppd.core.xmlstream import NS_XML
from xmppd.wokkel_compat import data_form

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NODE = "https://xmppd.example/caps"
IDENTITY_ATTRIBUTES = ("category", "type", (NS_XML, "lang"), "name")
# The hash functions a verification string may use (§5.1), by their IANA
# names, with hashlib's.
HASHES = {"sha-1": "sha1", "sha-256": "sha256", "sha-512": "sha512"}


def verification_string(query, hash_name="sha-1"):
    """The verification string of a disco#info ``<query/>`` (§5.1):
    identities, features and extended information forms (XEP-0128), each
    sorted, joined with '<', hashed with ``hash_name`` (one of ``HASHES``)
    and base64-encoded.  Python's string order is code point order, which
    is the UTF-8 "i;octet" order asked for."""
    identities = sorted(
        tuple(identity.getAttribute(name, "") for name in IDENTITY_ATTRIBUTES)
        for identity in query.elements(NS_DISCO_INFO, "identity"))
    parts = ["/".join(identity) for identity in identities]
    parts += sorted(feature["var"] for feature in query.elements(NS_DISCO_INFO, "feature"))
    for form_type, fields in sorted(_forms(query)):
        parts.append(form_type)
        for var, values in sorted(fields):
            parts.append(var)
            parts += sorted(values)
    digest = hashlib.new(HASHES[hash_name],
                         "".join(part + "<" for part in parts).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


def _forms(query):
    """``(FORM_TYPE, [(var, [values])])`` of each extended information form
    (XEP-0128), read as XEP-0004 forms by wokkel; a form without a hidden
    FORM_TYPE field is ignored (§5.4)."""
    for element in query.elements(data_form.NS_X_DATA, "x"):
        form = data_form.Form.fromElement(element)
        if form.formNamespace:
            yield form.formNamespace, [(field.var or "", field.values)
                                       for field in form.fieldList]


def setup(api):
    disco = api.service("disco")
    if disco is None:
        return  # service discovery is not loaded (it must be loaded first)
    api.disco_feature(NS_CAPS)

    versions = {}  # domain -> its verification string, until a reload

    def offer(stream):
        domain = stream.domain
        if not disco.serves(domain):
            return None
        ver = versions.get(domain)
        if ver is None:
            ver = versions[domain] = verification_string(disco.info(domain))
        caps = domish.Element((NS_CAPS, "c"))
        caps["hash"] = "sha-1"
        caps["node"] = NODE
        caps["ver"] = ver
        return caps

    def node_info(domain, node):
        info = disco.info(domain, node)
        return info if node == f"{NODE}#{verification_string(info)}" else None

    api.stream_feature(offer)
    api.hook(CONFIG_RELOADED, lambda config: versions.clear())
    disco.add_node(node_info)
