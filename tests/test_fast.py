"""FAST (XEP-0484) with the HT-SHA-256 mechanisms (draft-schmaus-kitten-sasl-ht),
in memory: the token store (issue, use, rotation, expiry, replay,
invalidation, password change), the secret file, and the SASL2 side
(inline feature, mechanisms, tokens in the success)."""

import base64
import hashlib
import hmac
import json
import os
import stat
from dataclasses import dataclass

import pytest
from twisted.python.failure import Failure
from twisted.words.xish import domish

from tests.harness import Client, add_user, make_server
from xmppd.core.sasl import SaslFailure, Success
from xmppd.core.scram import derive_all
from xmppd.core.xmlstream import parse_stanza
from xmppd.datafiles import load_secret
from xmppd.modules import fast
from xmppd.modules.fast import NS_FAST, Tokens

DAY = 86400
NONE, EXPR, ENDP = "HT-SHA-256-NONE", "HT-SHA-256-EXPR", "HT-SHA-256-ENDP"
AGENT = "d4565fa7-4d72-4749-b3d3-740edbf87770"
SECRET = b"k" * 32


def result(d):
    """What the Deferred ``d`` (already fired) gave; its exception raised."""
    outcome = []
    d.addBoth(outcome.append)
    [value] = outcome
    if isinstance(value, Failure):
        value.raiseException()
    return value


def condition(d):
    with pytest.raises(SaslFailure) as failed:
        result(d)
    return failed.value.condition


def mac(token, label, cb_data=b""):
    """The client's side of HT §3: HMAC-SHA-256(token, label || cb-data)."""
    return hmac.new(token.encode(), label + cb_data, hashlib.sha256).digest()


def make(tmp_path, extra=""):
    server = make_server(tmp_path, modules=(), extra=extra)
    add_user(server, "alice@example.com")
    add_user(server, "bob@example.com")
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


def store(server):
    return server.storage.open("keyval", "fast")


def tokens_of(server, secret=SECRET):
    return Tokens(store(server), server.storage.open("accounts"), secret, server.clock,
                  lambda domain: server.config.options("fast", domain))


@pytest.fixture
def tokens(server):
    return tokens_of(server)


def issue(tokens, mechanism=NONE, agent=AGENT, user="alice"):
    token, expiry = result(tokens.issue(user, "example.com", agent, mechanism))
    return token


def verify(tokens, token, mechanism=NONE, cb_data=b"", count=None, agent=AGENT, user="alice",
           proof=None):
    return tokens.verify(user, "example.com", agent, mechanism,
                         proof or mac(token, b"Initiator", cb_data), cb_data, count)


def use(tokens, token, invalidate=False, rotate=None, **kw):
    """Authenticate with ``token`` and apply it (as a success does); the
    token issued then, if any."""
    used = result(verify(tokens, token, **kw))
    issued = result(tokens.used(used, invalidate, rotate))
    return issued and issued[0]


def stored(server, user="alice"):
    return server.sql.open("keyval", "fast").get_all(user, "example.com")


# The token store


def test_issued_token_authenticates_with_the_responder_proof(server, tokens):
    token, expiry = result(tokens.issue("alice", "example.com", AGENT, NONE))
    assert expiry == server.clock.seconds() + 21 * DAY
    assert len(base64.urlsafe_b64decode(token + "=")) == 32  # 256 random-looking bits
    used = result(verify(tokens, token))
    assert used.username == "alice"
    assert used.responder == mac(token, b"Responder")


def test_the_database_holds_no_token(server, tokens):
    token = issue(tokens)
    [value] = stored(server).values()
    assert token not in value
    record = json.loads(value)["new"]
    assert set(record) == {"nonce", "mechanism", "issued", "expiry", "credentials"}
    assert list(stored(server)) == [hashlib.sha256(AGENT.encode()).hexdigest()]
    # Without the secret, the stored record gives another token.
    assert condition(verify(tokens_of(server, b"x" * 32), token)) == "not-authorized"


def test_wrong_token_unknown_agent_account_or_mechanism_fail_alike(server, tokens):
    token = issue(tokens)
    other = issue(tokens, agent="another agent")
    for attempt in (verify(tokens, token[:-2] + "AA"),
                    verify(tokens, token, proof=b"\0" * 32),
                    verify(tokens, token, agent="unknown"),
                    verify(tokens, other),  # another agent's token
                    verify(tokens, token, user="bob"),
                    verify(tokens, token, user="nobody"),
                    verify(tokens, token, mechanism=EXPR)):
        assert condition(attempt) == "not-authorized"


def test_token_expires(server, tokens):
    token = issue(tokens)
    server.clock.advance(21 * DAY - 1)
    assert result(verify(tokens, token)).username == "alice"
    server.clock.advance(1)
    assert condition(verify(tokens, token)) == "credentials-expired"  # §4.2


def test_token_lifetime_is_configurable(tmp_path):
    server = make(tmp_path, "[fast]\ntoken_lifetime = 0.5")
    token, expiry = result(tokens_of(server).issue("alice", "example.com", AGENT, NONE))
    assert expiry == server.clock.seconds() + DAY / 2


def test_rotation_keeps_the_old_token_until_the_new_one_is_used(server, tokens):
    first = issue(tokens)
    assert use(tokens, first) is None  # not due yet: nothing new
    server.clock.advance(DAY)
    second = use(tokens, first, rotate=NONE)
    assert second not in (None, first)
    # The client may not have received the new token: the old one still works,
    # and is rotated again (the unused new one is replaced).
    third = use(tokens, first, rotate=NONE)
    assert condition(verify(tokens, second)) == "not-authorized"
    assert use(tokens, third) is None
    # Once the new token is used, the old one is gone.
    assert condition(verify(tokens, first)) == "not-authorized"
    assert result(verify(tokens, third)).slot == "current"


def test_rotation_due_after_rotate_after_days(tmp_path):
    server = make(tmp_path, "[fast]\nrotate_after = 2")
    tokens = tokens_of(server)
    token = issue(tokens)
    server.clock.advance(2 * DAY - 1)
    assert not tokens.rotation_due(result(verify(tokens, token)))
    server.clock.advance(1)
    assert tokens.rotation_due(result(verify(tokens, token)))


def test_a_new_token_replaces_an_unused_one(server, tokens):
    first = issue(tokens)
    second = issue(tokens)
    assert condition(verify(tokens, first)) == "not-authorized"
    assert result(verify(tokens, second)).slot == "new"


def test_a_password_login_requesting_a_token_keeps_the_current_one(server, tokens):
    current = issue(tokens)
    use(tokens, current)
    new = issue(tokens)
    assert result(verify(tokens, current)).slot == "current"
    assert result(verify(tokens, new)).slot == "new"


def test_count_must_increase(server, tokens):
    token = issue(tokens)
    assert use(tokens, token, count=1) is None
    for replay in (1, 0, None):
        assert condition(verify(tokens, token, count=replay)) == "credentials-expired"
    use(tokens, token, count=5)
    assert condition(verify(tokens, token, count=5)) == "credentials-expired"
    assert result(verify(tokens, token, count=6)).count == 6


def test_without_count_a_token_is_reusable(server, tokens):
    token = issue(tokens)
    use(tokens, token)
    use(tokens, token)
    assert result(verify(tokens, token, count=1)).count == 1


def test_invalidate_revokes_the_agents_tokens(server, tokens):
    token = issue(tokens)
    use(tokens, token)
    kept = issue(tokens, agent="other")
    assert use(tokens, token, invalidate=True) is None
    assert condition(verify(tokens, token)) == "not-authorized"
    assert list(stored(server)) == [fast.agent_key("other")]
    assert result(verify(tokens, kept, agent="other")).username == "alice"


def test_invalidate_with_a_request_gives_a_new_token(server, tokens):
    token = issue(tokens)
    new = use(tokens, token, invalidate=True, rotate=NONE)
    assert condition(verify(tokens, token)) == "not-authorized"
    assert result(verify(tokens, new)).slot == "new"


def test_password_change_invalidates_every_token(server, tokens):
    token = issue(tokens)
    other = issue(tokens, agent="other")
    server.sql.set_credentials("alice", "example.com", derive_all("new password"))
    assert condition(verify(tokens, token)) == "credentials-expired"
    assert condition(verify(tokens, other, agent="other")) == "credentials-expired"
    # The next token issued drops the dead ones.
    issue(tokens, agent="third")
    assert list(stored(server)) == [fast.agent_key("third")]


def test_a_verifier_added_for_another_hash_keeps_the_tokens(server, tokens):
    # A SCRAM upgrade (XEP-0388 §2.8) adds a verifier; the password is the same.
    keys = derive_all("secret")
    server.sql.set_credentials("alice", "example.com", {"SHA-1": keys["SHA-1"]})
    token = issue(tokens)
    server.sql.set_credentials("alice", "example.com", keys)
    assert result(verify(tokens, token)).username == "alice"
    server.sql.set_credentials("alice", "example.com", derive_all("secret"))
    assert condition(verify(tokens, token)) == "credentials-expired"


def test_channel_binding_is_part_of_the_proof(server, tokens):
    exporter = bytes(range(32))
    token = issue(tokens, EXPR)
    used = result(verify(tokens, token, EXPR, cb_data=exporter))
    assert used.responder == hmac.new(token.encode(), b"Responder" + exporter,
                                      hashlib.sha256).digest()
    for wrong in (b"", bytes(32)):
        assert condition(verify(tokens, token, EXPR, cb_data=wrong,
                                proof=mac(token, b"Initiator", exporter))) == "not-authorized"
    # Bound to its mechanism: not usable without channel binding.
    assert condition(verify(tokens, token, NONE)) == "not-authorized"


def test_expired_and_excess_clients_are_dropped(tmp_path):
    server = make(tmp_path, "[fast]\nmax_clients = 2")
    tokens = tokens_of(server)
    issue(tokens, agent="a")
    server.clock.advance(1)
    issue(tokens, agent="b")
    server.clock.advance(1)
    issue(tokens, agent="c")
    assert set(stored(server)) == {fast.agent_key("b"), fast.agent_key("c")}
    server.clock.advance(21 * DAY)
    issue(tokens, agent="d")
    assert set(stored(server)) == {fast.agent_key("d")}


def test_unreadable_records_are_ignored(server, tokens):
    key = fast.agent_key(AGENT)
    for value in ("not json", "[]", json.dumps({"new": {"nonce": 1}})):
        server.sql.open("keyval", "fast").set("alice", "example.com", key, value)
        assert condition(verify(tokens, "x")) == "not-authorized"
    token = issue(tokens)
    assert result(verify(tokens, token)).slot == "new"


# The secret


def test_secret_file_is_made_private_once(tmp_path):
    path = str(tmp_path / "fast.secret")
    secret = load_secret(path)
    assert len(secret) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret(path) == secret


def test_short_secret_file_refused(tmp_path):
    path = tmp_path / "fast.secret"
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="fewer than 32 bytes"):
        load_secret(str(path))


def test_secret_file_beside_the_database_or_configured(server, tmp_path):
    assert fast.secret_path(server.config) == str(tmp_path / "fast.secret")
    configured = make_server(tmp_path, modules=(), extra='[fast]\nsecret_file = "keys/f"')
    assert fast.secret_path(configured.config) == str(tmp_path / "keys" / "f")


# The SASL2 side, with a stand-in for the sasl2 service


class Sasl2:
    """What the fast module registers with the sasl2 service."""

    def __init__(self):
        self.inline = []
        self.mechanisms = {}
        self.success = []

    def add_inline(self, builder):
        self.inline.append(builder)

    def add_mechanism(self, name, factory):
        self.mechanisms[name] = factory

    def on_success(self, handler, priority=0):
        self.success.append((priority, handler))


class Stream:
    """The stream as the fast module sees it."""

    def __init__(self, domain="example.com", bindings=None, secure=True):
        self.domain = domain
        self.secure = secure
        self.bindings = bindings or {}
        self.state = {}
        self.user = None

    def channel_binding(self, kind):
        return self.bindings.get(kind)


@dataclass
class Request:
    element: domish.Element
    mechanism: str
    user_agent: str | None
    software: str | None = None
    device: str | None = None


def loaded(tmp_path, extra='[hosts."anon.example"]\nauthentication = "anonymous"'):
    """A server with the fast module on a stand-in sasl2 service."""
    server = make_server(tmp_path, modules=(), extra=extra)
    add_user(server, "alice@example.com")
    sasl2 = server.services["sasl2"] = Sasl2()
    server.loaded.add("sasl2")
    server.load(fast)
    return server, sasl2


@pytest.fixture
def sasl2(tmp_path):
    return loaded(tmp_path)


def authenticate(mechanism, *children, agent=AGENT):
    xml = (f"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='{mechanism}'>"
           + (f"<user-agent id='{agent}'/>" if agent else "") + "".join(children)
           + "</authenticate>")
    return Request(parse_stanza(xml), mechanism, agent)


def request_token(mechanism=NONE):
    return f"<request-token xmlns='{NS_FAST}' mechanism='{mechanism}'/>"


def fast_element(**attributes):
    return f"<fast xmlns='{NS_FAST}' " + " ".join(
        f"{name}='{value}'" for name, value in attributes.items()) + "/>"


def offered(sasl2, stream):
    [builder] = sasl2.inline
    element = builder(stream)
    return None if element is None else [str(m) for m in element.elements(NS_FAST, "mechanism")]


def succeed(sasl2, stream, request, user="alice"):
    """Run the success handlers as the sasl2 module does; the <success/>."""
    from xmppd.jid import JID

    stream.user = JID(user, stream.domain, None)
    success = domish.Element(("urn:xmpp:sasl:2", "success"))
    for _, handler in sorted(sasl2.success, key=lambda h: -h[0]):
        d = handler(stream, request, success)
        if d is not None:
            result(d)
    return success


def token_of(success):
    element = next(success.elements(NS_FAST, "token"), None)
    return element and (element["token"], element["expiry"])


def ht_login(sasl2, stream, token, mechanism=NONE, cb_data=b"", fast_attributes=None,
             children=(), user="alice", agent=AGENT):
    request = authenticate(mechanism, fast_element(**(fast_attributes or {})), *children,
                           agent=agent)
    exchange = sasl2.mechanisms[mechanism](stream, request)
    step = exchange.step(user.encode() + b"\0" + mac(token, b"Initiator", cb_data))
    return request, step


def test_setup_registers_the_mechanisms_and_makes_the_secret(tmp_path, sasl2):
    server, service = sasl2
    assert list(service.mechanisms) == [EXPR, ENDP, NONE]
    assert stat.S_IMODE(os.stat(tmp_path / "fast.secret").st_mode) == 0o600


def test_inline_offers_the_channel_bindings_the_stream_has(sasl2):
    _, service = sasl2
    assert offered(service, Stream()) == [NONE]
    assert offered(service, Stream(bindings={"tls-exporter": b"x",
                                             "tls-server-end-point": b"y"})) == [EXPR, ENDP, NONE]
    # tls-unique is not offered (see xmppd.core.sasl): no HT-SHA-256-UNIQ.
    assert offered(service, Stream(bindings={"tls-unique": b"z"})) == [NONE]


def test_inline_offers_nothing_on_anonymous_hosts_or_without_tls(sasl2):
    _, service = sasl2
    assert offered(service, Stream("anon.example")) is None
    assert offered(service, Stream(secure=False)) is None


def test_login_with_a_password_then_a_token(sasl2):
    server, service = sasl2
    stream = Stream()
    success = succeed(service, stream, authenticate("SCRAM-SHA-256", request_token()))
    token, expiry = token_of(success)
    assert expiry == "1970-01-22T00:00:00.000000Z"  # the clock starts at 0
    stream = Stream()
    request, step = ht_login(service, stream, token)
    done = result(step)
    assert done == Success("alice", mac(token, b"Responder"))
    assert token_of(succeed(service, stream, request)) is None  # not due for rotation
    server.clock.advance(DAY)
    stream = Stream()
    request, step = ht_login(service, stream, token)
    result(step)
    rotated, _ = token_of(succeed(service, stream, request))
    assert rotated != token


def test_no_token_without_a_user_agent_id_or_for_a_mechanism_not_offered(sasl2):
    _, service = sasl2
    assert token_of(succeed(service, Stream(), authenticate(
        "PLAIN", request_token(), agent=None))) is None
    assert token_of(succeed(service, Stream(), authenticate("PLAIN", request_token(EXPR)))) \
        is None
    assert token_of(succeed(service, Stream(), authenticate("PLAIN"))) is None
    bound = Stream(bindings={"tls-exporter": b"x"})
    assert token_of(succeed(service, bound, authenticate("PLAIN", request_token(EXPR))))


def test_channel_bound_login(sasl2):
    _, service = sasl2
    exporter = b"\x01" * 32
    stream = Stream(bindings={"tls-exporter": exporter})
    token, _ = token_of(succeed(service, stream, authenticate("PLAIN", request_token(EXPR))))
    stream = Stream(bindings={"tls-exporter": exporter})
    _, step = ht_login(service, stream, token, EXPR, exporter)
    assert result(step).additional_data == hmac.new(
        token.encode(), b"Responder" + exporter, hashlib.sha256).digest()
    # Another TLS connection has other keying material.
    other = Stream(bindings={"tls-exporter": b"\x02" * 32})
    _, step = ht_login(service, other, token, EXPR, exporter)
    assert condition(step) == "not-authorized"


def test_a_channel_binding_mechanism_without_the_binding_is_refused(sasl2):
    _, service = sasl2
    _, step = ht_login(service, Stream(), "whatever", ENDP)
    assert condition(step) == "invalid-mechanism"


def test_invalidate_logs_out(sasl2):
    _, service = sasl2
    token, _ = token_of(succeed(service, Stream(), authenticate("PLAIN", request_token())))
    stream = Stream()
    request, step = ht_login(service, stream, token, fast_attributes={"invalidate": "true"})
    result(step)
    assert token_of(succeed(service, stream, request)) is None
    _, step = ht_login(service, Stream(), token)
    assert condition(step) == "not-authorized"


def test_replayed_count_refused(sasl2):
    _, service = sasl2
    token, _ = token_of(succeed(service, Stream(), authenticate("PLAIN", request_token())))
    stream = Stream()
    request, step = ht_login(service, stream, token, fast_attributes={"count": "1"})
    result(step)
    succeed(service, stream, request)
    _, step = ht_login(service, Stream(), token, fast_attributes={"count": "1"})
    assert condition(step) == "credentials-expired"
    _, step = ht_login(service, Stream(), token, fast_attributes={"count": "2"})
    assert result(step).username == "alice"


def test_a_success_not_applied_is_not_applied_later(sasl2):
    # A token's success the sasl2 module then refused (a locked account)
    # does not change what a later password login does.
    _, service = sasl2
    token, _ = token_of(succeed(service, Stream(), authenticate("PLAIN", request_token())))
    stream = Stream()
    _, step = ht_login(service, stream, token, fast_attributes={"invalidate": "1"})
    result(step)
    succeed(service, stream, authenticate("PLAIN"))
    _, step = ht_login(service, Stream(), token)
    assert result(step).username == "alice"


@pytest.mark.parametrize("data, children, expected", [
    (b"alice", (fast_element(),), "malformed-request"),
    (b"\0" + bytes(32), (fast_element(),), "malformed-request"),
    (b"alice\0" + bytes(31), (fast_element(),), "malformed-request"),
    (None, (fast_element(),), "malformed-request"),
    (b"alice\0" + bytes(32), (), "malformed-request"),
    (b"alice\0" + bytes(32), (fast_element(count="-1"),), "malformed-request"),
    (b"al@ce\0" + bytes(32), (fast_element(),), "not-authorized"),
    (b"\xff\0" + bytes(32), (fast_element(),), "malformed-request"),
])
def test_bad_initial_responses(sasl2, data, children, expected):
    _, service = sasl2
    exchange = service.mechanisms[NONE](Stream(), authenticate(NONE, *children))
    assert condition(exchange.step(data)) == expected
    assert condition(exchange.step(data)) == "malformed-request"  # the exchange is over


def test_no_user_agent_id_fails_as_a_wrong_token(sasl2):
    _, service = sasl2
    _, step = ht_login(service, Stream(), "token", agent=None)
    assert condition(step) == "not-authorized"


# On client streams, through SASL2 (XEP-0388)

NS_SASL2 = "urn:xmpp:sasl:2"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


@pytest.fixture
def stream_server(tmp_path):
    server = make_server(tmp_path, modules=("sasl2", "bind", "fast"),
                         extra='[hosts."anon.example"]\nauthentication = "anonymous"')
    add_user(server, "alice@example.com")
    return server


def connect(server, bindings=None, domain="example.com"):
    """A client after STARTTLS (with ``bindings``: channel binding data by
    type); the FAST mechanisms offered inline, or None."""
    client = Client(server, domain)
    if bindings is not None:
        client.stream.channel_binding = bindings.get
    client.starttls()
    features = client.open()
    authentication = next(features.elements(NS_SASL2, "authentication"), None)
    inline = authentication and next(authentication.elements(NS_SASL2, "inline"), None)
    element = inline and next(inline.elements(NS_FAST, "fast"), None)
    return client, element and [str(m) for m in element.elements(NS_FAST, "mechanism")]


def send_authenticate(client, mechanism, data, *children, agent=AGENT):
    """Send ``<authenticate/>``; what the server answered."""
    response = base64.b64encode(data).decode()
    user_agent = f"<user-agent id='{agent}'/>" if agent else ""
    client.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='{mechanism}'>"
                f"<initial-response>{response}</initial-response>{user_agent}"
                + "".join(children) + "</authenticate>")
    return client.take()


def password_login(server, *children, bindings=None, agent=AGENT):
    client, _ = connect(server, bindings)
    success, _ = send_authenticate(client, "PLAIN", b"\0alice\0secret", *children, agent=agent)
    assert success.name == "success", success.toXml()
    return token_of(success)


def token_login(server, token, mechanism=NONE, bindings=None, cb_data=b"", children=None):
    """Log in with ``token``: (the <success/> or <failure/>, the client)."""
    client, _ = connect(server, bindings)
    answer = send_authenticate(client, mechanism,
                               b"alice\0" + mac(token, b"Initiator", cb_data),
                               *(children if children is not None else (fast_element(),)))
    server.clock.advance(10)  # a failure's delay
    return (answer + client.take())[0], client


def additional_data(success):
    return base64.b64decode(str(next(success.elements(NS_SASL2, "additional-data"))))


def test_stream_offers_fast_inline(stream_server):
    assert connect(stream_server)[1] == [NONE]
    assert connect(stream_server, {"tls-exporter": b"e" * 32,
                                   "tls-server-end-point": b"p" * 32})[1] == [EXPR, ENDP, NONE]
    # Tokens take no password: not among the SASL2 mechanisms.
    client = Client(stream_server)
    client.starttls()
    authentication = next(client.open().elements(NS_SASL2, "authentication"))
    assert not any(str(m).startswith("HT-") for m in authentication.elements(NS_SASL2,
                                                                              "mechanism"))
    assert connect(stream_server, domain="anon.example")[1] is None


def test_stream_token_lifecycle(stream_server):
    token, expiry = password_login(stream_server, request_token())
    assert expiry == "1970-01-22T00:00:00.000000Z"
    success, client = token_login(stream_server, token)
    assert success.name == "success"
    assert additional_data(success) == mac(token, b"Responder")
    assert str(next(success.elements(NS_SASL2, "authorization-identifier"))) == \
        "alice@example.com"
    assert client.stream.user.full == "alice@example.com"
    assert token_of(success) is None
    # A day later, the success brings a new token.  A client that missed
    # it still logs in with the old one, and gets another (the missed one
    # goes); once the new one is used, the old one is gone.
    stream_server.clock.advance(DAY)
    missed, _ = token_of(token_login(stream_server, token)[0])
    rotated, _ = token_of(token_login(stream_server, token)[0])
    assert token_login(stream_server, missed)[0].name == "failure"
    assert token_login(stream_server, rotated)[0].name == "success"
    assert token_login(stream_server, token)[0].name == "failure"
    # It expires.
    stream_server.clock.advance(21 * DAY)
    failure, _ = token_login(stream_server, rotated)
    assert failure.name == "failure" and next(failure.elements(NS_SASL, "credentials-expired"))


def test_stream_wrong_token_and_replay_fail(stream_server):
    token, _ = password_login(stream_server, request_token())
    failures = [token_login(stream_server, "wrong")[0]]
    assert token_login(stream_server, token, children=(fast_element(count="3"),))[0].name \
        == "success"
    failures.append(token_login(stream_server, token, children=(fast_element(count="3"),))[0])
    failures.append(token_login(stream_server, token)[0])
    assert [(f.name, next(f.elements(NS_SASL)).name) for f in failures] == [
        ("failure", "not-authorized")] + [("failure", "credentials-expired")] * 2
    assert token_login(stream_server, token, children=(fast_element(count="4"),))[0].name \
        == "success"


def test_stream_password_change_invalidates_tokens(stream_server):
    token, _ = password_login(stream_server, request_token())
    stream_server.sql.set_credentials("alice", "example.com", derive_all("secret"))
    failure, _ = token_login(stream_server, token)
    assert failure.name == "failure"
    # The password still works, and gives a new token on request.
    assert password_login(stream_server, request_token()) is not None


def test_stream_channel_bound_tokens(stream_server):
    bindings = {"tls-exporter": b"e" * 32, "tls-server-end-point": b"p" * 32}
    for mechanism, kind in ((EXPR, "tls-exporter"), (ENDP, "tls-server-end-point")):
        token, _ = password_login(stream_server, request_token(mechanism), bindings=bindings)
        success, _ = token_login(stream_server, token, mechanism, bindings, bindings[kind])
        assert success.name == "success"
        assert additional_data(success) == hmac.new(
            token.encode(), b"Responder" + bindings[kind], hashlib.sha256).digest()
        other = {kind: b"o" * 32}
        failure, _ = token_login(stream_server, token, mechanism, other, bindings[kind])
        assert failure.name == "failure"
        failure, _ = token_login(stream_server, token, NONE)
        assert failure.name == "failure"


def test_stream_invalidate(stream_server):
    token, _ = password_login(stream_server, request_token())
    success, _ = token_login(stream_server, token,
                             children=(fast_element(invalidate="true"), request_token()))
    new, _ = token_of(success)
    assert token_login(stream_server, token)[0].name == "failure"
    success, _ = token_login(stream_server, new, children=(fast_element(invalidate="1"),))
    assert success.name == "success" and token_of(success) is None
    assert token_login(stream_server, new)[0].name == "failure"


def test_stream_no_token_without_user_agent(stream_server):
    assert password_login(stream_server, request_token(), agent=None) is None


def test_stream_failures_count_for_the_account(tmp_path):
    server = make_server(tmp_path, modules=("sasl2", "fast"),
                         extra="[limits]\nauth_account_lock_after = 2")
    add_user(server, "alice@example.com")
    token, _ = password_login(server, request_token())
    for _ in range(2):
        assert token_login(server, "wrong")[0].name == "failure"
    # Locked: the right token and the password are refused alike for a while.
    failure, _ = token_login(server, token)
    assert [c.name for c in failure.elements()] == ["not-authorized", "text"]
    client, _ = connect(server)
    answer = send_authenticate(client, "PLAIN", b"\0alice\0secret")
    server.clock.advance(10)
    assert (answer + client.take())[0].name == "failure"
    server.clock.advance(300)
    assert token_login(server, token)[0].name == "success"
