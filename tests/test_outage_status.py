"""Service outage status (XEP-0455), in memory: the urn:xmpp:sos:0 form in
the server's disco#info, per host, following a reload, and its checked key."""

import pytest

from tests.harness import add_user, make_server, reload
from tests.harness import info_forms as forms
from xmppd.config import ConfigError, parse

NS_INFO = "http://jabber.org/protocol/disco#info"
STATUS = "https://status.example.com/xmpp.json"
MIRROR = "https://status.elsewhere.example/example.com.json"


def make(tmp_path, extra):
    server = make_server(tmp_path, hosts=(), modules=("bind", "outage_status"), extra=extra)
    add_user(server, "alice@example.com")
    return server


def test_the_status_addresses_are_in_the_server_info(tmp_path):
    server = make(tmp_path, f'[outage_status]\nurl = "{STATUS}"\n[hosts."example.com"]\n'
                            f'[hosts."other.example".outage_status]\n'
                            f'url = ["{STATUS}", "{MIRROR}"]')
    [form] = forms(server)
    assert (form.formType, form.formNamespace) == ("result", "urn:xmpp:sos:0")
    [field] = form.fieldList
    assert (field.var, field.fieldType, field.values) == (
        "external-status-addresses", "list-multi", [STATUS])
    [other] = forms(server, "other.example")
    assert other.fields["external-status-addresses"].values == [STATUS, MIRROR]


def test_no_form_without_a_url_and_a_reload_applies_it(tmp_path):
    server = make(tmp_path, '[hosts."example.com"]')
    assert forms(server) == []
    reload(server, tmp_path, f'[outage_status]\nurl = "{STATUS}"')
    [form] = forms(server)
    assert form.fields["external-status-addresses"].values == [STATUS]
    reload(server, tmp_path)
    assert forms(server) == []


@pytest.mark.parametrize("value, message", [
    ('"ftp://status.example.com/x.json"',
     'outage_status.url: expected an http or https URL, got "ftp://status.example.com/x.json"'),
    ('"status.example.com"', "outage_status.url: expected an http or https URL"),
    (f'["{STATUS}", "https://"]', 'outage_status.url[1]: expected an http or https URL'),
    ('""', "outage_status.url: expected an http or https URL"),
    ("3", "outage_status.url: expected an array of strings, got 3"),
])
def test_a_bad_url_is_refused_naming_the_key(tmp_path, value, message):
    with pytest.raises(ConfigError) as info:
        parse(f'[outage_status]\nurl = {value}\n[hosts."example.com"]\n',
              str(tmp_path / "xmppd.toml"))
    assert message in str(info.value)
