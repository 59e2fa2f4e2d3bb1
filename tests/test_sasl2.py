"""SASL2 (XEP-0388) and Bind 2 (XEP-0386) on client streams, with the
features negotiated inline: stream management (enable and resume),
carbons, client state indication."""

import base64

import pytest

from tests.harness import Client, add_user, make_config, make_server
from xmppd.config import ConfigError
from xmppd.core import scram
from xmppd.jid import JID
from xmppd.modules.sasl2 import NS_SASL2, NS_SCRAM_UPGRADE, NS_UPGRADE
from xmppd.tap import MODULES

NS_BIND2 = "urn:xmpp:bind:0"
NS_SM = "urn:xmpp:sm:3"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
ALICE = JID.parse("alice@example.com")
UA = "<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>Test</software>" \
     "<device>Phone</device></user-agent>"


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path)
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    return server


def b64(data):
    return base64.b64encode(data).decode()


def plain(user="alice", password="secret"):
    return b64(f"\0{user}\0{password}".encode())


def authenticate(client, inner="", mechanism="PLAIN", response=None, upgrades=()):
    """Send <authenticate/> after STARTTLS, asking for the XEP-0480
    ``upgrades`` (task names); everything the server answered."""
    asked = "".join(f"<upgrade xmlns='{NS_UPGRADE}'>{task}</upgrade>" for task in upgrades)
    initial = "" if response is None else f"<initial-response>{response}</initial-response>"
    client.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='{mechanism}'>"
                f"{initial}{asked}{inner}</authenticate>")
    return client.take()


def connected(server):
    client = Client(server)
    client.starttls()
    features = client.open()
    return client, features


def child(element, namespace, name):
    return next(element.elements(namespace, name), None)


def test_the_feature_lists_mechanisms_upgrades_and_inline_features(server):
    _, features = connected(server)
    authentication = child(features, NS_SASL2, "authentication")
    mechanisms = [str(m) for m in authentication.elements(NS_SASL2, "mechanism")]
    legacy = [str(m) for m in child(features, NS_SASL, "mechanisms").elements()]
    assert mechanisms == legacy and "SCRAM-SHA-256" in mechanisms
    upgrades = [str(u) for u in authentication.elements(NS_UPGRADE, "upgrade")]
    assert upgrades == ["UPGR-SCRAM-SHA-1", "UPGR-SCRAM-SHA-256", "UPGR-SCRAM-SHA-512"]
    inline = child(authentication, NS_SASL2, "inline")
    bind = child(inline, NS_BIND2, "bind")
    assert child(inline, NS_SM, "sm") is not None
    assert {f["var"] for f in child(bind, NS_BIND2, "inline").elements()} == {
        "urn:xmpp:carbons:2", "urn:xmpp:csi:0", NS_SM}


def test_plain_success_without_restart_then_the_authenticated_features(server):
    client, _ = connected(server)
    success, features = authenticate(client, UA, response=plain())
    assert (success.uri, success.name) == (NS_SASL2, "success")
    assert str(child(success, NS_SASL2, "authorization-identifier")) == "alice@example.com"
    assert features.name == "features"
    names = {e.name for e in features.elements()}
    assert "bind" in names and "authentication" not in names
    # the same stream goes on: legacy binding works without a new header
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    [result] = client.take()
    assert result["type"] == "result"


def test_a_wrong_password_fails_with_the_rfc6120_condition_and_text(server):
    client, _ = connected(server)
    [failure] = authenticate(client, response=plain(password="wrong"))
    assert (failure.uri, failure.name) == (NS_SASL2, "failure")
    assert child(failure, NS_SASL, "not-authorized") is not None
    # the stream is unchanged: the right password may follow
    success, _ = authenticate(client, response=plain())
    assert success.name == "success"


def test_failures_count_with_rfc6120_ones_and_end_the_stream(server):
    client, _ = connected(server)
    client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain(password='x')}</auth>")
    answered = client.take()
    answered += authenticate(client, response=plain(password="y"))
    answered += authenticate(client, response=plain(password="z"))
    assert answered[-1].name == "failure"  # the second waits 2 s, the third 4 more
    for _ in range(6):
        server.clock.advance(1)
        answered += client.take()
    *failures, error = answered
    assert [(f.uri, f.name) for f in failures] == [
        (NS_SASL, "failure"), (NS_SASL2, "failure"), (NS_SASL2, "failure")]
    assert error.name == "error" and child(
        error, "urn:ietf:params:xml:ns:xmpp-streams", "policy-violation") is not None
    assert client.closed


def test_an_unknown_mechanism_and_bad_base64_fail(server):
    client, _ = connected(server)
    [failure] = authenticate(client, mechanism="DIGEST-MD5", response=plain())
    assert child(failure, NS_SASL, "invalid-mechanism") is not None
    server.clock.advance(10)
    client.take()
    answered = authenticate(client, response="***")
    server.clock.advance(10)
    [failure] = answered + client.take()
    assert child(failure, NS_SASL, "incorrect-encoding") is not None


def scram_client(hash_name, password="secret", user="alice"):
    """A SCRAM client (RFC 5802 §3) as generators of its messages."""
    nonce = "clientnonce123"
    bare = f"n={user},r={nonce}"
    server_first = yield ("n,," + bare).encode()
    fields = dict(f.split("=", 1) for f in server_first.decode().split(","))
    salted = scram.salted_password(hash_name, password.encode(), base64.b64decode(fields["s"]),
                                   int(fields["i"]))
    without_proof = f"c={b64(b'n,,')},r={fields['r']}"
    auth_message = f"{bare},{server_first.decode()},{without_proof}".encode()
    key = scram.client_key(hash_name, salted)
    signature = scram.client_signature(hash_name, scram.stored_key(hash_name, key),
                                       auth_message)
    proof = bytes(a ^ b for a, b in zip(key, signature))
    server_final = yield f"{without_proof},p={b64(proof)}".encode()
    expected = scram.server_signature(hash_name, scram.server_key(hash_name, salted),
                                      auth_message)
    assert server_final == b"v=" + base64.b64encode(expected)
    yield salted


def test_scram_with_challenge_response_and_additional_data(server):
    client, _ = connected(server)
    scram_run = scram_client("SHA-256")
    [challenge] = authenticate(client, mechanism="SCRAM-SHA-256",
                               response=b64(next(scram_run)))
    assert challenge.name == "challenge"
    final = scram_run.send(base64.b64decode(str(challenge)))
    client.send(f"<response xmlns='{NS_SASL2}'>{b64(final)}</response>")
    success, _ = client.take()
    scram_run.send(base64.b64decode(str(child(success, NS_SASL2, "additional-data"))))


def only_sha1(server):
    """alice keeps only her SHA-1 verifier; returns it."""
    keys = server.sql.get_credentials("alice", "example.com")["SHA-1"]
    server.sql.set_credentials("alice", "example.com", {"SHA-1": keys})
    return keys


def scram_sha1(client, upgrades, inner=""):
    """Authenticate with SCRAM-SHA-1 (a PLAIN login would add every
    verifier itself) asking for ``upgrades``: what the last response got."""
    scram_run = scram_client("SHA-1")
    [challenge] = authenticate(client, inner, mechanism="SCRAM-SHA-1", upgrades=upgrades,
                               response=b64(next(scram_run)))
    client.send(f"<response xmlns='{NS_SASL2}'>"
                f"{b64(scram_run.send(base64.b64decode(str(challenge))))}</response>")
    return client.take()


def upgrade_task(client, task, password=b"secret"):
    """Run the offered task (XEP-0480 §3): everything the server answered."""
    client.send(f"<next xmlns='{NS_SASL2}' task='{task}'/>")
    [data] = client.take()
    assert data.name == "task-data"
    salt = child(data, NS_SCRAM_UPGRADE, "salt")
    hash_name = task.removeprefix("UPGR-SCRAM-")
    salted = scram.salted_password(hash_name, password, base64.b64decode(str(salt)),
                                   int(salt["iterations"]))
    client.send(f"<task-data xmlns='{NS_SASL2}'><hash xmlns='{NS_SCRAM_UPGRADE}'>"
                f"{b64(salted)}</hash></task-data>")
    return client.take()


def test_a_scram_upgrade_task_stores_the_new_verifier(server):
    sha1 = only_sha1(server)
    client, _ = connected(server)
    scram_run = scram_client("SHA-1")
    [challenge] = authenticate(client, mechanism="SCRAM-SHA-1", upgrades=["UPGR-SCRAM-SHA-256"],
                               response=b64(next(scram_run)))
    client.send(f"<response xmlns='{NS_SASL2}'>"
                f"{b64(scram_run.send(base64.b64decode(str(challenge))))}</response>")
    [proceed] = client.take()
    assert proceed.name == "continue"
    assert [str(t) for t in child(proceed, NS_SASL2, "tasks").elements()] == [
        "UPGR-SCRAM-SHA-256"]
    scram_run.send(base64.b64decode(str(child(proceed, NS_SASL2, "additional-data"))))
    success, _ = upgrade_task(client, "UPGR-SCRAM-SHA-256")
    assert success.name == "success"
    stored = server.sql.get_credentials("alice", "example.com")
    assert scram.check_password("secret", stored["SHA-256"])
    assert stored["SHA-1"] == sha1


def test_upgrade_tasks_run_one_after_the_other_for_hashes_not_offered_too(server):
    only_sha1(server)
    client, _ = connected(server)
    [first] = scram_sha1(client, ["UPGR-SCRAM-SHA-512", "UPGR-SCRAM-SHA-256"])
    assert [str(t) for t in child(first, NS_SASL2, "tasks").elements()] == [
        "UPGR-SCRAM-SHA-512"]
    [second] = upgrade_task(client, "UPGR-SCRAM-SHA-512")
    assert second.name == "continue"
    assert [str(t) for t in child(second, NS_SASL2, "tasks").elements()] == [
        "UPGR-SCRAM-SHA-256"]
    success, _ = upgrade_task(client, "UPGR-SCRAM-SHA-256")
    assert success.name == "success"
    assert set(server.sql.get_credentials("alice", "example.com")) == {
        "SHA-1", "SHA-256", "SHA-512"}


def test_a_wrong_task_or_hash_fails_and_stores_nothing(server):
    only_sha1(server)
    client, _ = connected(server)
    scram_sha1(client, ["UPGR-SCRAM-SHA-256"])
    client.send(f"<next xmlns='{NS_SASL2}' task='UPGR-SCRAM-SHA-512'/>")
    [failure] = client.take()
    assert failure.name == "failure"
    client, _ = connected(server)
    scram_sha1(client, ["UPGR-SCRAM-SHA-256"])
    client.send(f"<next xmlns='{NS_SASL2}' task='UPGR-SCRAM-SHA-256'/>")
    client.take()
    client.send(f"<task-data xmlns='{NS_SASL2}'><hash xmlns='{NS_SCRAM_UPGRADE}'>"
                f"{b64(b'short')}</hash></task-data>")
    server.clock.advance(60)  # a second failure of the account waits
    assert client.take()[0].name == "failure"
    assert set(server.sql.get_credentials("alice", "example.com")) == {"SHA-1"}


def test_no_upgrade_task_when_the_account_has_the_hash(server):
    client, _ = connected(server)
    success, _ = authenticate(client, UA, response=plain(), upgrades=["UPGR-SCRAM-SHA-256"])
    assert success.name == "success"


def test_an_upgrade_not_offered_is_not_run(server):
    only_sha1(server)
    client, _ = connected(server)
    success, _ = scram_sha1(client, ["UPGR-SCRAM-MD5"])
    assert success.name == "success"


def test_a_fast_token_cannot_set_a_password_verifier(server):
    import hmac
    only_sha1(server)
    client, _ = connected(server)
    success, _ = scram_sha1(client, [], UA + "<request-token xmlns='urn:xmpp:fast:0' "
                            "mechanism='HT-SHA-256-NONE'/>")
    token = child(success, "urn:xmpp:fast:0", "token")["token"]
    proof = hmac.digest(token.encode(), b"Initiator", "sha256")
    client, _ = connected(server)
    success, _ = authenticate(client, UA + "<fast xmlns='urn:xmpp:fast:0'/>",
                              mechanism="HT-SHA-256-NONE", response=b64(b"alice\0" + proof),
                              upgrades=["UPGR-SCRAM-SHA-256"])
    assert success.name == "success"  # no task: a token holder may not know the password
    assert set(server.sql.get_credentials("alice", "example.com")) == {"SHA-1"}


def test_another_authenticate_during_a_task_ends_the_stream(server):
    only_sha1(server)
    client, _ = connected(server)
    [proceed] = scram_sha1(client, ["UPGR-SCRAM-SHA-256"])
    assert proceed.name == "continue"
    authenticate(client, response=plain())
    assert client.closed
    client, _ = connected(server)
    scram_sha1(client, ["UPGR-SCRAM-SHA-256"])
    client.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain()}</auth>")
    assert client.closed


def test_authenticate_again_after_success_ends_the_stream(server):
    client, _ = connected(server)
    authenticate(client, response=plain())
    authenticate(client, response=plain())
    assert client.closed


def test_bind2_binds_a_stable_resource_from_the_tag_and_user_agent(server):
    resources, clients = [], []
    for _ in range(2):
        client, _ = connected(server)
        success, features = authenticate(
            client, UA + f"<bind xmlns='{NS_BIND2}'><tag>Test</tag></bind>", response=plain())
        jid = str(child(success, NS_SASL2, "authorization-identifier"))
        assert child(success, NS_BIND2, "bound") is not None
        assert "bind" not in {e.name for e in features.elements()}
        resources.append(jid.split("/", 1)[1])
        clients.append(client)
    assert resources[0] == resources[1] and resources[0].startswith("Test/")
    assert "d4565fa7" not in resources[0]
    # the same client's earlier session is replaced (XEP-0386 §3.2)
    assert clients[0].closed and not clients[1].closed
    assert len(server.sessions.resources(ALICE)) == 1


def test_bind2_without_user_agent_or_tag_gets_a_random_resource(server):
    jids = set()
    for _ in range(2):
        client, _ = connected(server)
        success, _ = authenticate(client, f"<bind xmlns='{NS_BIND2}'/>", response=plain())
        jids.add(str(child(success, NS_SASL2, "authorization-identifier")))
    assert len(jids) == 2 and all(j.startswith("alice@example.com/") for j in jids)


def test_bind2_enables_carbons_csi_and_stream_management_inline(server):
    client, _ = connected(server)
    success, features = authenticate(
        client, UA + f"<bind xmlns='{NS_BIND2}'><tag>T</tag>"
        "<enable xmlns='urn:xmpp:carbons:2'/><inactive xmlns='urn:xmpp:csi:0'/>"
        f"<enable xmlns='{NS_SM}' resume='true'/></bind>", response=plain())
    enabled = child(child(success, NS_BIND2, "bound"), NS_SM, "enabled")
    assert enabled is not None and enabled["resume"] == "true"
    assert child(features, NS_SM, "sm") is None  # enabled already
    [session] = server.sessions.resources(ALICE)
    assert "carbons" in session.flags
    assert "csi" in session.state
    assert session.client == "Test (Phone)"  # the user agent, for xmppctl sessions


def test_sm_resume_inline_skips_binding_and_resends_what_was_unacknowledged(server):
    client, _ = connected(server)
    success, _ = authenticate(
        client, UA + f"<bind xmlns='{NS_BIND2}'><tag>T</tag>"
        f"<enable xmlns='{NS_SM}' resume='true'/></bind>", response=plain())
    previd = child(child(success, NS_BIND2, "bound"), NS_SM, "enabled")["id"]
    full = str(child(success, NS_SASL2, "authorization-identifier"))
    client.send("<presence/>")
    client.take()
    bob = Client(server)
    bob.login("bob@example.com")
    bob.send(f"<message to='{full}' type='chat'><body>while away</body></message>")
    client.lose()

    again, _ = connected(server)
    success, features, *received = authenticate(
        again, UA + f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>"
        f"<bind xmlns='{NS_BIND2}'><tag>T</tag></bind>", response=plain())
    assert features.name == "features"
    assert child(success, NS_SM, "resumed") is not None
    assert child(success, NS_BIND2, "bound") is None
    assert str(child(success, NS_SASL2, "authorization-identifier")) == full
    assert [str(m.body) for m in received if m.name == "message"] == ["while away"]


def test_a_failed_inline_resume_reports_failed_and_binds_anew(server):
    client, _ = connected(server)
    success, _ = authenticate(
        client, UA + f"<resume xmlns='{NS_SM}' previd='nope' h='0'/>"
        f"<bind xmlns='{NS_BIND2}'><tag>T</tag></bind>", response=plain())
    assert child(success, NS_SM, "failed") is not None
    assert child(success, NS_BIND2, "bound") is not None


def test_mechanisms_are_configured_per_host(tmp_path):
    server = make_server(tmp_path, hosts=("example.com", "example.org"), extra=(
        '[sasl]\nmechanisms = ["SCRAM-SHA-256", "PLAIN"]\n'
        '[hosts."example.org".sasl]\nmechanisms = ["SCRAM-SHA-512"]\n'))
    for domain, expected in (("example.com", ["SCRAM-SHA-256", "PLAIN"]),
                             ("example.org", ["SCRAM-SHA-512"])):
        client = Client(server, domain=domain)
        client.starttls()
        features = client.open()
        authentication = child(features, NS_SASL2, "authentication")
        assert [str(m) for m in authentication.elements(NS_SASL2, "mechanism")] == expected
        assert [str(m) for m in child(features, NS_SASL, "mechanisms").elements()] == expected


def test_bind2_lists_only_the_inline_features_the_host_serves(tmp_path):
    server = make_server(tmp_path, extra='[hosts."example.org"]\ndisabled_modules = ["carbons"]')
    for domain, carbons in (("example.com", True), ("example.org", False)):
        client = Client(server, domain=domain)
        client.starttls()
        inline = child(child(client.open(), NS_SASL2, "authentication"), NS_SASL2, "inline")
        listed = {f["var"] for f in child(child(inline, NS_BIND2, "bind"), NS_BIND2,
                                          "inline").elements()}
        assert ("urn:xmpp:carbons:2" in listed) == carbons and "urn:xmpp:csi:0" in listed


def test_an_unknown_mechanism_in_the_config_names_its_key(tmp_path):
    with pytest.raises(ConfigError, match=r"sasl\.mechanisms.*DIGEST-MD5"):
        make_config(tmp_path, extra='[sasl]\nmechanisms = ["DIGEST-MD5"]\n')


def test_bind2_reports_the_archive_metadata_where_mam_serves(tmp_path):
    server = make_server(tmp_path, modules=(*MODULES, "mam"))
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    bob = Client(server)
    bob.login("bob@example.com")
    bob.send("<message to='alice@example.com' type='chat'><body>archived</body></message>")
    server.clock.advance(1)
    client, _ = connected(server)
    success, _ = authenticate(client, UA + f"<bind xmlns='{NS_BIND2}'/>", response=plain())
    metadata = child(child(success, NS_BIND2, "bound"), "urn:xmpp:mam:2", "metadata")
    assert metadata is not None
    assert child(metadata, "urn:xmpp:mam:2", "end")["id"]
