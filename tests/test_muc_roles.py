"""The affiliation and role rules of XEP-0045 (§5, §8-§10) and the room
configuration form (§10.2), without a server."""

import pytest

from xmppd.core.stanzas import StanzaError
from xmppd.muc.config import DEFAULTS, config_form, features, read_form
from xmppd.muc.roles import check_affiliation_change, check_role_change, entry_role
from xmppd.wokkel_compat import data_form

CONFIG = "http://jabber.org/protocol/muc#roomconfig"


def refused(check, *args):
    with pytest.raises(StanzaError) as error:
        check(*args)
    return error.value.condition


@pytest.mark.parametrize("affiliation, moderated, role", [
    ("owner", False, "moderator"), ("admin", True, "moderator"), ("member", True, "participant"),
    ("none", False, "participant"), ("none", True, "visitor"),
])
def test_the_role_an_affiliation_enters_with(affiliation, moderated, role):
    assert entry_role(affiliation, moderated) == role


@pytest.mark.parametrize("actor, target, role, condition", [
    # (affiliation, role) of the actor and of the target
    (("none", "participant"), ("none", "participant"), "none", "forbidden"),
    (("member", "participant"), ("none", "visitor"), "participant", "forbidden"),
    (("none", "moderator"), ("none", "participant"), "none", None),  # a moderator kicks
    (("none", "moderator"), ("none", "visitor"), "participant", None),  # grants voice
    (("none", "moderator"), ("none", "participant"), "moderator", "forbidden"),
    (("none", "moderator"), ("none", "moderator"), "none", "not-allowed"),
    (("member", "moderator"), ("admin", "moderator"), "none", "not-allowed"),
    (("admin", "moderator"), ("owner", "moderator"), "participant", "not-allowed"),
    (("admin", "moderator"), ("none", "participant"), "moderator", None),
    (("admin", "moderator"), ("member", "moderator"), "participant", None),
    (("admin", "moderator"), ("none", "participant"), "chief", "bad-request"),
])
def test_who_may_change_whose_role(actor, target, role, condition):
    if condition is None:
        check_role_change(*actor, *target, role)
    else:
        assert refused(check_role_change, *actor, *target, role) == condition


@pytest.mark.parametrize("actor, target, affiliation, owners, condition", [
    ("member", "none", "member", 1, "forbidden"),
    ("none", "none", "outcast", 1, "forbidden"),
    ("admin", "none", "member", 1, None),
    ("admin", "member", "outcast", 1, None),
    ("admin", "none", "admin", 1, "forbidden"),
    ("admin", "admin", "none", 1, "not-allowed"),
    ("admin", "owner", "outcast", 1, "not-allowed"),
    ("owner", "admin", "outcast", 1, None),
    ("owner", "none", "owner", 1, None),
    ("owner", "owner", "admin", 2, None),
    ("owner", "owner", "member", 1, "conflict"),  # the last owner stays
    ("owner", "none", "king", 1, "bad-request"),
])
def test_who_may_change_whose_affiliation(actor, target, affiliation, owners, condition):
    if condition is None:
        check_affiliation_change(actor, target, affiliation, owners)
    else:
        assert refused(check_affiliation_change, actor, target, affiliation, owners) == condition


def submitted(**fields):
    form = data_form.Form("submit", formNamespace=CONFIG)
    for var, value in fields.items():
        form.addField(data_form.Field(var=f"muc#roomconfig_{var}", value=value))
    return form.toElement()


def test_the_configuration_form_round_trip():
    form = data_form.Form.fromElement(config_form(DEFAULTS))
    assert form.formNamespace == CONFIG and form.formType == "form"
    assert form.fields["muc#roomconfig_whois"].value == "moderators"
    assert str(form.fields["muc#roomconfig_persistentroom"].value) in ("false", "0")
    config = read_form(submitted(persistentroom="1", whois="anyone", maxusers="50",
                                 roomname="Lobby", unknown="x"), 100)
    assert config == {"muc#roomconfig_persistentroom": "true",
                      "muc#roomconfig_whois": "anyone", "muc#roomconfig_maxusers": "50",
                      "muc#roomconfig_roomname": "Lobby"}
    assert "muc_persistent" in features({**DEFAULTS, **config})
    assert "muc_nonanonymous" in features({**DEFAULTS, **config})


@pytest.mark.parametrize("fields", [
    {"persistentroom": "maybe"}, {"whois": "everyone"}, {"maxusers": "101"},
    {"maxusers": "0"}, {"allowpm": "all"}, {"roomname": "x" * 1025},
])
def test_bad_configuration_values_are_not_acceptable(fields):
    assert refused(read_form, submitted(**fields), 100) == "not-acceptable"


def test_a_form_of_another_kind_is_a_bad_request():
    other = data_form.Form("submit", formNamespace="urn:example").toElement()
    assert refused(read_form, other, 100) == "bad-request"
    assert refused(read_form, data_form.Form("form", formNamespace=CONFIG).toElement(),
                   100) == "bad-request"
