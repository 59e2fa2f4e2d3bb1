"""Service outage status (XEP-0455).

The server's disco#info carries the extended information form of
XEP-0128 with the FORM_TYPE ``urn:xmpp:sos:0`` and the ``list-multi``
field ``external-status-addresses`` (§2.1 "Discovery", §8.1 "Field
Standardization"): the addresses of the status document, a JSON file in
the format of §2.2 that the operator keeps (``{}`` while all is well)
and that clients fetch and cache, so they can still explain an outage
when the server cannot be reached (§4 "Business Rules").  The addresses
are ``outage_status.url``: one ``http``/``https`` URL, or several (say,
one on a host outside the server's own network), served without
authentication (§2.1); a host may have its own
(``[hosts."DOMAIN".outage_status]``).  Without one, no form.  Read on
every request, so a reload applies them.
"""

from urllib.parse import urlsplit

from xmppd.options import Option, Options, expected, strings
from xmppd.wokkel_compat import data_form

FORM_TYPE = "urn:xmpp:sos:0"
FIELD = "external-status-addresses"


def urls(value, key):
    """One http(s) URL or an array of them, as a tuple."""
    if isinstance(value, str):
        return (_url(value, key),)
    return tuple(_url(url, f"{key}[{i}]") for i, url in enumerate(strings(value, key)))


def _url(value, key):
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or not value.isprintable() \
            or " " in value:
        raise expected(key, "an http or https URL", value)
    return value


OPTIONS = Options(  # [outage_status]
    url=Option((), urls),
)


def form(options):
    """The ``urn:xmpp:sos:0`` form of ``options``, or None without a URL."""
    if not options.url:
        return None
    result = data_form.Form("result", formNamespace=FORM_TYPE)
    result.addField(data_form.Field("list-multi", var=FIELD, values=list(options.url)))
    return result


def setup(api):
    api.depends("disco")
    api.service("disco").add_form(
        lambda domain: form(api.options_for(domain)) if api.enabled(domain) else None)
