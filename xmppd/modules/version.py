"""Software Version (XEP-0092).

The server answers ``jabber:iq:version`` requests addressed to it (§2
"Protocol") with its name and version; the operating system only when
``version.show_os`` is set (the administrator's switch that "Security
Considerations" asks for).  With ``version.hidden`` requests get
``service-unavailable``, as from an entity that does not support the
namespace (§3 "Examples"), and disco#info does not list the feature
("Determining Support").  Both follow a reloaded config: the feature is
listed or withdrawn as ``version.hidden`` changes.
"""

import platform

from twisted.words.xish import domish

import xmppd
from xmppd.core.events import CONFIG_RELOADED, HOST
from xmppd.core.stanzas import StanzaError
from xmppd.options import Option, Options, boolean

NS_VERSION = "jabber:iq:version"

OPTIONS = Options(  # [version]
    hidden=Option(False, boolean),
    show_os=Option(False, boolean),
)


def setup(api):
    os_name = f"{platform.system()} {platform.release()}".strip()

    def answer(stanza):
        if api.options.hidden:
            raise StanzaError("service-unavailable")
        query = domish.Element((NS_VERSION, "query"))
        query.addElement("name", content="xmppd")
        query.addElement("version", content=xmppd.__version__)
        if api.options.show_os and os_name:
            query.addElement("os", content=os_name)
        return query

    def advertise(_config=None):
        if api.options.hidden:
            api.drop_disco_feature(NS_VERSION)
        else:
            api.disco_feature(NS_VERSION)

    advertise()
    api.hook(CONFIG_RELOADED, advertise)
    api.handle_iq("get", HOST, NS_VERSION, answer)
