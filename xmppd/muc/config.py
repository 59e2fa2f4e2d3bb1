"""Room configuration (XEP-0045 §10.2, the ``muc#roomconfig`` form of
§15.5.3) and the room's disco#info (§6.4, ``muc#roominfo``).

A configuration is a dict of field var to text (booleans ``"true"`` or
``"false"``).  Keys beginning with ``x-`` are the room's own data that no
form shows (the salt of its occupant ids, its vCard).  :func:`read_form`
checks a submitted form: a bad value is ``not-acceptable`` (§10.2), an
unknown field is ignored."""

from xmppd.core.stanzas import StanzaError
from xmppd.wokkel_compat import data_form

from . import NS_ROOMCONFIG, NS_ROOMINFO

WHOIS = ("moderators", "anyone")
ALLOW_PM = ("anyone", "participants", "moderators", "none")
MAX_TEXT = 1024

# var -> (field type, choices or None, label)
FIELDS = {
    "muc#roomconfig_roomname": ("text-single", None, "Room name"),
    "muc#roomconfig_roomdesc": ("text-single", None, "Description"),
    "muc#roomconfig_persistentroom": ("boolean", None, "Keep the room when it is empty"),
    "muc#roomconfig_publicroom": ("boolean", None, "List the room in the directory"),
    "muc#roomconfig_membersonly": ("boolean", None, "Only members may enter"),
    "muc#roomconfig_moderatedroom": ("boolean", None, "Only occupants with voice may speak"),
    "muc#roomconfig_passwordprotectedroom": ("boolean", None, "A password is needed to enter"),
    "muc#roomconfig_roomsecret": ("text-private", None, "Password"),
    "muc#roomconfig_maxusers": ("text-single", None, "Maximum number of occupants"),
    "muc#roomconfig_whois": ("list-single", WHOIS, "Who may see real JIDs"),
    "muc#roomconfig_changesubject": ("boolean", None, "Occupants may change the subject"),
    "muc#roomconfig_allowinvites": ("boolean", None, "Occupants may invite others"),
    "muc#roomconfig_allowpm": ("list-single", ALLOW_PM, "Who may send private messages"),
    "muc#roomconfig_enablelogging": ("boolean", None,
                                     "Keep the history in the room's archive for queries"),
}

DEFAULTS = {  # an instant room (§10.1.2): Prosody's and ejabberd's defaults
    "muc#roomconfig_roomname": "",
    "muc#roomconfig_roomdesc": "",
    "muc#roomconfig_persistentroom": "false",
    "muc#roomconfig_publicroom": "true",
    "muc#roomconfig_membersonly": "false",
    "muc#roomconfig_moderatedroom": "false",
    "muc#roomconfig_passwordprotectedroom": "false",
    "muc#roomconfig_roomsecret": "",
    "muc#roomconfig_maxusers": "200",
    "muc#roomconfig_whois": "moderators",
    "muc#roomconfig_changesubject": "false",
    "muc#roomconfig_allowinvites": "false",
    "muc#roomconfig_allowpm": "anyone",
    "muc#roomconfig_enablelogging": "true",
}

_TRUE, _FALSE = ("1", "true"), ("0", "false")


def flag(config, name):
    """Whether boolean ``muc#roomconfig_NAME`` is on."""
    return config.get(f"muc#roomconfig_{name}", DEFAULTS[f"muc#roomconfig_{name}"]) == "true"


def value(config, name):
    return config.get(f"muc#roomconfig_{name}", DEFAULTS[f"muc#roomconfig_{name}"])


def _value(var, field, max_users):
    type_, choices, _ = FIELDS[var]
    text = str(field.value if field.value is not None else "").strip()
    if type_ == "boolean":
        if text.lower() in _TRUE:
            return "true"
        if text.lower() in _FALSE:
            return "false"
        raise StanzaError("not-acceptable", f"{var} is a boolean, not {text!r}")
    if choices is not None and text not in choices:
        raise StanzaError("not-acceptable", f"{var} is one of {', '.join(choices)}")
    if var == "muc#roomconfig_maxusers":
        if not (text.isdigit() and 0 < int(text) <= max_users):
            raise StanzaError("not-acceptable", f"{var} is a number from 1 to {max_users}")
        return str(int(text))
    if len(text) > MAX_TEXT:
        raise StanzaError("not-acceptable", f"{var} is too long")
    return text


def read_form(x, max_users):
    """The configuration a submitted form sets; ``max_users``: the most
    occupants a room may have."""
    try:
        form = data_form.Form.fromElement(x)
    except Exception as e:  # wokkel raises plain errors on malformed forms
        raise StanzaError("bad-request", f"malformed data form: {e}")
    if form.formType != "submit" or form.formNamespace not in (NS_ROOMCONFIG, None):
        raise StanzaError("bad-request", f"expected a submitted {NS_ROOMCONFIG} form")
    return {var: _value(var, field, max_users) for var, field in form.fields.items()
            if var in FIELDS}


def config_form(config):
    """The form of the room's configuration (§10.2)."""
    form = data_form.Form("form", title="Room configuration", formNamespace=NS_ROOMCONFIG)
    for var, (type_, choices, label) in FIELDS.items():
        current = config.get(var, DEFAULTS[var])
        if type_ == "boolean":
            field = data_form.Field(type_, var=var, value=current == "true", label=label)
        else:
            field = data_form.Field(type_, var=var, value=current, label=label,
                                    options=[data_form.Option(c) for c in choices]
                                    if choices else None)
        form.addField(field)
    return form.toElement()


def features(config):
    """The room's disco#info features of its configuration (§6.4, §15.4.2)."""
    return [
        "muc_public" if flag(config, "publicroom") else "muc_hidden",
        "muc_persistent" if flag(config, "persistentroom") else "muc_temporary",
        "muc_membersonly" if flag(config, "membersonly") else "muc_open",
        "muc_moderated" if flag(config, "moderatedroom") else "muc_unmoderated",
        "muc_passwordprotected" if flag(config, "passwordprotectedroom") else "muc_unsecured",
        "muc_nonanonymous" if value(config, "whois") == "anyone" else "muc_semianonymous",
    ]


def info_form(config, occupants, subject, avatar_hash=None):
    """The ``muc#roominfo`` extended information (§15.5.4)."""
    form = data_form.Form("result", formNamespace=NS_ROOMINFO)
    form.addField(data_form.Field(var="muc#roominfo_description",
                                  value=value(config, "roomdesc"), label="Description"))
    form.addField(data_form.Field(var="muc#roominfo_occupants", value=str(occupants),
                                  label="Number of occupants"))
    form.addField(data_form.Field(var="muc#roominfo_subject", value=subject, label="Subject"))
    form.addField(data_form.Field("boolean", var="muc#roominfo_subjectmod",
                                  value=flag(config, "changesubject"),
                                  label="Occupants may change the subject"))
    form.addField(data_form.Field(var="muc#roomconfig_roomname",
                                  value=value(config, "roomname"), label="Room name"))
    if avatar_hash is not None:
        form.addField(data_form.Field("text-multi", var="muc#roominfo_avatarhash",
                                      values=[avatar_hash]))
    return form.toElement()
