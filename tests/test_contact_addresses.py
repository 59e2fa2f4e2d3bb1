"""Contact addresses (XEP-0157), in memory: the serverinfo form in the
server's disco#info, per host, following a reload, and its checked keys."""

import pytest

from tests.harness import add_user, make_server, reload
from tests.harness import info_forms as forms
from xmppd.config import ConfigError, parse

NS_INFO = "http://jabber.org/protocol/disco#info"
SERVERINFO = "http://jabber.org/network/serverinfo"
MODULES = ("bind", "contact_addresses")
CONFIG = """
[contact_addresses]
admin = ["xmpp:admin@example.com", "mailto:xmpp@example.com"]
abuse = ["mailto:abuse@example.com"]
status = ["https://status.example.com/"]
[hosts."example.com"]
[hosts."other.example"]
[hosts."other.example".contact_addresses]
admin = ["xmpp:root@other.example"]
[hosts."quiet.example"]
"""
ONE_HOST = '[hosts."example.com"]\n'


def make(tmp_path, extra=CONFIG, modules=MODULES):
    server = make_server(tmp_path, hosts=(), modules=modules, extra=extra)
    add_user(server, "alice@example.com")
    return server


def addresses(form):
    return {field.var: field.values for field in form.fieldList}


def test_the_serverinfo_form_lists_the_configured_roles_in_order(tmp_path):
    [form] = forms(make(tmp_path))
    assert (form.formType, form.formNamespace) == ("result", SERVERINFO)
    assert [field.var for field in form.fieldList] == [
        "abuse-addresses", "admin-addresses", "status-addresses"]
    assert {field.fieldType for field in form.fieldList} == {"list-multi"}
    assert addresses(form) == {
        "abuse-addresses": ["mailto:abuse@example.com"],
        "admin-addresses": ["xmpp:admin@example.com", "mailto:xmpp@example.com"],
        "status-addresses": ["https://status.example.com/"]}


def test_a_host_sets_its_own_addresses(tmp_path):
    [form] = forms(make(tmp_path), "other.example")
    assert addresses(form) == {"abuse-addresses": ["mailto:abuse@example.com"],
                               "admin-addresses": ["xmpp:root@other.example"],
                               "status-addresses": ["https://status.example.com/"]}


def test_no_form_where_not_enabled_or_nothing_is_configured(tmp_path):
    only_two = CONFIG.replace('[hosts."other.example"]\n',
                              '[hosts."other.example"]\nmodules_enabled = ["contact_addresses"]\n')
    server = make(tmp_path, extra=only_two, modules=("bind", "disco"))
    server.load_host_modules()
    assert forms(server, "quiet.example") == []
    assert len(forms(server, "other.example")) == 1
    assert forms(make(tmp_path / "bare", extra=ONE_HOST)) == []


def test_a_reload_applies_the_addresses(tmp_path):
    server = make(tmp_path, extra=ONE_HOST)
    reload(server, tmp_path, '[contact_addresses]\nsupport = ["xmpp:help@example.com"]')
    [form] = forms(server)
    assert addresses(form) == {"support-addresses": ["xmpp:help@example.com"]}
    reload(server, tmp_path)
    assert forms(server) == []


@pytest.mark.parametrize("section, message", [
    ('admin = "xmpp:admin@example.com"',
     'contact_addresses.admin: expected an array of strings, got "xmpp:admin@example.com"'),
    ('abuse = ["abuse@example.com"]', 'contact_addresses.abuse[0]: expected a URI such as '
     '"mailto:xmpp@example.com", got "abuse@example.com"'),
    ('support = ["xmpp:ok@example.com", "mailto: x"]', "contact_addresses.support[1]"),
    ('phone = ["tel:+1"]', "contact_addresses.phone: unknown key"),
])
def test_bad_keys_are_refused_naming_the_key(tmp_path, section, message):
    with pytest.raises(ConfigError) as info:
        parse(f'[contact_addresses]\n{section}\n[hosts."example.com"]\n',
              str(tmp_path / "xmppd.toml"))
    assert message in str(info.value) and "\n" not in str(info.value)
