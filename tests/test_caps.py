"""Entity capabilities of the server (XEP-0115): the verification string
against the XEP's examples, the stream feature, and the caps node."""

from twisted.words.xish import domish

from tests.harness import Client, add_user, error_condition, make_config, make_server
from xmppd.modules.caps import NODE, verification_string

NS_CAPS = "http://jabber.org/protocol/caps"
NS_INFO = "http://jabber.org/protocol/disco#info"
MODULES = ("bind", "disco", "caps", "ping", "version")
HOSTS = """
[hosts."example.com"]
[hosts."nodisco.example"]
disabled_modules = ["disco"]
"""

# XEP-0115 §5.2
SIMPLE = """
<query xmlns='http://jabber.org/protocol/disco#info'>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/caps'/>
</query>"""

# XEP-0115 §5.3
COMPLEX = """
<query xmlns='http://jabber.org/protocol/disco#info'
       node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='\u03a8 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'>
      <value>urn:xmpp:dataforms:softwareinfo</value>
    </field>
    <field var='ip_version'>
      <value>ipv6</value>
      <value>ipv4</value>
    </field>
    <field var='os'><value>Mac</value></field>
    <field var='os_version'><value>10.5.1</value></field>
    <field var='software'><value>Psi</value></field>
    <field var='software_version'><value>0.11</value></field>
  </x>
</query>"""


def parse(xml):
    stream = domish.elementStream()
    elements = []
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = elements.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(f"<root>{xml}</root>".encode())
    return elements[0]


def test_simple_generation_example():
    assert verification_string(parse(SIMPLE)) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_complex_generation_example_with_a_form():
    assert verification_string(parse(COMPLEX)) == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_form_without_form_type_is_ignored():
    without = parse(SIMPLE)
    form = without.addElement(("jabber:x:data", "x"))
    form.addElement("field")["var"] = "os"
    assert verification_string(without) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_form_whose_form_type_is_not_hidden_is_ignored():
    """§5.4: only a hidden FORM_TYPE field names an extended information form."""
    visible = COMPLEX.replace("<field var='FORM_TYPE' type='hidden'>", "<field var='FORM_TYPE'>")
    without_form = COMPLEX[:COMPLEX.index("  <x ")] + "</query>"
    assert verification_string(parse(visible)) == verification_string(parse(without_form))
    assert verification_string(parse(visible)) != "q07IKJEyjvHSyhy//CH0CxmKi8w="


# The server


def server_with_alice(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=MODULES, extra=HOSTS)
    add_user(server, "alice@example.com")
    add_user(server, "erin@nodisco.example")
    return server


def features_after_auth(client, user):
    client.starttls()
    client.open()
    assert client.auth_plain(user).name == "success"
    return client.open()


def caps_of(features):
    return next(features.elements(NS_CAPS, "c"), None)


def disco_info(client, node=None):
    node_attr = "" if node is None else f" node='{node}'"
    client.send(f"<iq type='get' id='i' to='{client.domain}'>"
                f"<query xmlns='{NS_INFO}'{node_attr}/></iq>")
    [answer] = client.take()
    return answer


def test_stream_feature_after_authentication_matches_disco_info(tmp_path):
    server = server_with_alice(tmp_path)
    client = Client(server)
    client.starttls()
    assert caps_of(client.open()) is None  # not before authentication
    assert client.auth_plain("alice@example.com").name == "success"
    caps = caps_of(client.open())
    assert (caps["hash"], caps["node"]) == ("sha-1", NODE)
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    client.take()
    info = disco_info(client).firstChildElement()
    assert caps["ver"] == verification_string(info)
    assert NS_CAPS in [f["var"] for f in info.elements(NS_INFO, "feature")]


def test_caps_node_answers_like_disco_info(tmp_path):
    server = server_with_alice(tmp_path)
    client = Client(server)
    ver = caps_of(features_after_auth(client, "alice@example.com"))["ver"]
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    client.take()
    plain = disco_info(client).firstChildElement()
    answer = disco_info(client, f"{NODE}#{ver}")
    assert answer["type"] == "result"
    query = answer.firstChildElement()
    assert query["node"] == f"{NODE}#{ver}"
    assert [c.toXml() for c in query.elements()] == [c.toXml() for c in plain.elements()]
    assert error_condition(disco_info(client, f"{NODE}#stale=")) == "item-not-found"


def test_no_caps_where_disco_is_disabled(tmp_path):
    server = server_with_alice(tmp_path)
    client = Client(server, domain="nodisco.example")
    assert caps_of(features_after_auth(client, "erin@nodisco.example")) is None


def test_ver_changes_with_the_enabled_features(tmp_path):
    hosts = HOSTS + '[hosts."quiet.example"]\ndisabled_modules = ["version"]\n'
    server = make_server(tmp_path, hosts=(), modules=MODULES, extra=hosts)
    add_user(server, "alice@example.com")
    add_user(server, "dave@quiet.example")
    vers = {caps_of(features_after_auth(Client(server, domain=user.split("@")[1]), user))["ver"]
            for user in ("alice@example.com", "dave@quiet.example")}
    assert len(vers) == 2


def test_ver_follows_a_reload_that_changes_the_features(tmp_path):
    server = make_server(tmp_path, hosts=(), modules=MODULES, extra=HOSTS)
    add_user(server, "alice@example.com")
    before = caps_of(features_after_auth(Client(server), "alice@example.com"))["ver"]
    assert caps_of(features_after_auth(Client(server), "alice@example.com"))["ver"] == before
    server.reconfigure(make_config(
        tmp_path, hosts=(), extra=HOSTS.replace('[hosts."example.com"]',
                                                '[hosts."example.com"]\n'
                                                'disabled_modules = ["version"]')),
        server.certificates)
    after = caps_of(features_after_auth(Client(server), "alice@example.com"))["ver"]
    assert after != before
