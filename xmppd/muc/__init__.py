"""Multi-user chat (XEP-0045 v1.34) pieces the service
(:mod:`xmppd.modules.muc`) builds on: namespaces and status codes, the
affiliation and role rules (:mod:`.roles`), the room configuration form
(:mod:`.config`) and a room's occupants and the stanzas they are sent
(:mod:`.room`)."""

NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_OWNER = NS_MUC + "#owner"
NS_REQUEST = NS_MUC + "#request"
NS_ROOMCONFIG = NS_MUC + "#roomconfig"
NS_ROOMINFO = NS_MUC + "#roominfo"
NS_SELF_PING = NS_MUC + "#self-ping-optimization"  # XEP-0410 §3
NS_STABLE_ID = NS_MUC + "#stable_id"  # XEP-0045 v1.31: stanza-ids of the room
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"  # XEP-0421
NS_CONFERENCE = "jabber:x:conference"  # XEP-0249
NS_VCARD = "vcard-temp"
NS_VCARD_UPDATE = "vcard-temp:x:update"

# Status codes (XEP-0045 §15.6.2)
NON_ANONYMOUS = "100"
AFFILIATION_CHANGED = "101"
CONFIG_CHANGED = "104"
SELF = "110"
LOGGING_ON = "170"
LOGGING_OFF = "171"
NOW_NON_ANONYMOUS = "172"
NOW_SEMI_ANONYMOUS = "173"
CREATED = "201"
BANNED = "301"
NEW_NICK = "303"
KICKED = "307"
AFFILIATION_REMOVED = "321"
MEMBERS_ONLY_REMOVED = "322"
SHUTDOWN = "332"
TECHNICAL_REMOVAL = "333"
