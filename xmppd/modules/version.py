"""Software Version (XEP-0092).

The server answers ``jabber:iq:version`` requests addressed to it (§2
"Protocol") with its name and version; the operating system only when
``version.show_os`` is set (the administrator's switch that "Security
Considerations" asks for).  With ``version.hidden`` the module registers
nothing: requests get the router's ``service-unavailable``, as from an
entity that does not support the namespace (§3 "Examples"), and disco#info
does not list the feature ("Determining Support").  ``version.hidden`` is
read at start only (a feature cannot be withdrawn from disco at run time);
``version.show_os`` follows a reloaded config.
"""

import platform

from twisted.words.xish import domish

import xmppd
from xmppd.core.events import HOST
from xmppd.options import Option, Options, boolean

NS_VERSION = "jabber:iq:version"

OPTIONS = Options(  # [version]
    hidden=Option(False, boolean),
    show_os=Option(False, boolean),
)


def setup(api):
    if api.options.hidden:
        return
    os_name = f"{platform.system()} {platform.release()}".strip()

    def answer(stanza):
        query = domish.Element((NS_VERSION, "query"))
        query.addElement("name", content="xmppd")
        query.addElement("version", content=xmppd.__version__)
        if api.options.show_os and os_name:
            query.addElement("os", content=os_name)
        return query

    api.disco_feature(NS_VERSION)
    api.handle_iq("get", HOST, NS_VERSION, answer)
