"""Contact addresses of the server (XEP-0157).

The addresses the operator lists in ``[contact_addresses]`` (and a host
in ``[hosts."DOMAIN".contact_addresses]``) are added to the server's
disco#info as the extended information form of XEP-0128 with the
FORM_TYPE ``http://jabber.org/network/serverinfo`` (§3 "XMPP
Addresses"): one ``list-multi`` field ``ROLE-addresses`` per role that
has addresses, in the order of the registered fields (§7.1 "Field
Standardization", with ``status-addresses`` the XMPP Registrar's
serverinfo registry has since), each value a URI such as
``mailto:xmpp@example.com`` or ``xmpp:admin@example.com`` (§4
"Deployment Notes").  A host with no addresses shows no form.  Read on
every request, so a reload applies them.

What is listed is public to anyone on the network (§5 "Security
Considerations", XEP-0128 §5).
"""

import re

from xmppd.options import Option, Options, expected, strings
from xmppd.wokkel_compat import data_form

FORM_TYPE = "http://jabber.org/network/serverinfo"
ROLES = ("abuse", "admin", "feedback", "sales", "security", "status", "support")
# RFC 3986 §3.1: a scheme, a colon, and something after it.
URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


def uris(value, key):
    """An array of URIs (``mailto:``, ``xmpp:``, ``https:``...)."""
    found = strings(value, key)
    for i, uri in enumerate(found):
        if not URI.fullmatch(uri):
            raise expected(f"{key}[{i}]", 'a URI such as "mailto:xmpp@example.com"', uri)
    return found


OPTIONS = Options(**{role: Option((), uris) for role in ROLES})  # [contact_addresses]


def form(options):
    """The serverinfo form of ``options``, or None if they list nothing."""
    fields = [data_form.Field("list-multi", var=f"{role}-addresses",
                              values=list(getattr(options, role)))
              for role in ROLES if getattr(options, role)]
    if not fields:
        return None
    result = data_form.Form("result", formNamespace=FORM_TYPE)
    for field in fields:
        result.addField(field)
    return result


def setup(api):
    api.depends("disco")
    api.service("disco").add_form(
        lambda domain: form(api.options_for(domain)) if api.enabled(domain) else None)
