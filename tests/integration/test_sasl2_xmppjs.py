"""xmpp.js, a client written elsewhere, against xmppd's SASL2 (XEP-0388),
Bind2 (XEP-0386) and FAST (XEP-0484, HT-SHA-256-NONE).

``tests/xmppjs/fast.mjs`` (node, npm ``@xmpp/client`` 0.14) connects with
STARTTLS to 127.0.0.1, trusting the test CA through ``NODE_EXTRA_CA_CERTS``,
and logs in three times with one ``<user-agent id=.../>``: with the password,
Bind2 and a FAST token requested; with that token tampered and a wrong
password (refused); with the token and a wrong password (only FAST can
succeed), then it sends a message to a slixmpp client and waits for its
reply.  It prints what each login sent and received; this test asserts on
that.  Skipped, with the reason, without node or the packages of
``npm ci --prefix tests/xmppjs``.
"""

import json
import shutil
from datetime import datetime, timezone

import pytest

from tests.integration.conftest import (DOMAIN, REPO, STEP_TIMEOUT, new_accounts, node_script,
                                       replier)

XMPPJS_DIR = REPO / "tests" / "xmppjs"
NODE = shutil.which("node")
NODE_TIMEOUT = 60.0  # seconds for the whole script (each of its steps is bounded by STEP_TIMEOUT)
TAG = "xmppjs-test"  # the Bind2 <tag/>
HT = "HT-SHA-256-NONE"
SASL2_BIND = "{urn:xmpp:bind:0}bind"
SASL2_FAST = "{urn:xmpp:fast:0}fast"
LEGACY_BIND = "{urn:ietf:params:xml:ns:xmpp-bind}bind"
SM = "{urn:xmpp:sm:3}sm"


def missing():
    """Why the xmpp.js test cannot run here, or None."""
    if NODE is None:
        return "no node"
    if not (XMPPJS_DIR / "node_modules" / "@xmpp" / "client" / "package.json").exists():
        return "no @xmpp/client in tests/xmppjs (npm ci --prefix tests/xmppjs)"
    return None


pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


async def xmppjs(options, ca_file, wire):
    """Run fast.mjs with ``options``; its JSON result.  What its streams
    carried (the file ``wire``) and the result are printed, for pytest to
    show if the test fails."""
    wire.touch()
    status, result, stderr = await node_script(
        XMPPJS_DIR / "fast.mjs", {**options, "wire": str(wire)}, NODE_TIMEOUT,
        {"NODE_EXTRA_CA_CERTS": str(ca_file)})
    print(f"--- {wire} ---\n{wire.read_text()}")
    print(f"--- fast.mjs result ---\n{json.dumps(result)}")
    assert status == 0 and "error" not in result, (
        f"fast.mjs failed: {result.get('error')}\n{stderr}")
    return result


def only_attempt(login):
    """The one SASL2 <authenticate/> of a login, which succeeded."""
    assert len(login["attempts"]) == 1, login["attempts"]
    attempt = login["attempts"][0]
    assert attempt["outcome"]["result"] == "success", attempt
    return attempt


def assert_bound(login, bare, user_agent_id):
    """A Bind2 login: online with a full JID whose resource the server made
    from the <tag/> (XEP-0386 §3.3: tag first, then its own part, never the
    user-agent id), given in <authorization-identifier/> with <bound/>."""
    assert login["online"], login.get("error")
    assert login["ping"] is True, login["ping"]  # the server answers the session
    jid = login["jid"]
    assert jid.startswith(f"{bare}/"), jid
    resource = jid.split("/", 1)[1]
    assert resource.startswith(TAG) and len(resource) > len(TAG) + 1, resource
    assert user_agent_id not in resource
    outcome = login["attempts"][-1]["outcome"]
    assert outcome["authorizationIdentifier"] == jid
    assert outcome["bound"]
    # RFC 6120 SASL and binding were never used.  The features after
    # <success/> (XEP-0388 §2.6.1, no restart) offer neither RFC 6120 bind
    # nor, once Bind2 enabled it, stream management: xmpp.js would bind
    # again, or send a second <enable/>, refused, after which it takes
    # stream management as off (checked after a ping's round trip).
    assert not login["legacyAuth"] and not login["legacyBind"]
    assert login["featuresAfterSuccess"] is not None, "no <stream:features/> after <success/>"
    assert LEGACY_BIND not in login["featuresAfterSuccess"]
    assert login["attempts"][-1]["outcome"]["smEnabled"] is not None
    assert SM not in login["featuresAfterSuccess"]
    assert login["smSent"] == [] and login["sm"]
    assert login["streamHeaderFrom"] == bare  # XEP-0484 §6.1


def test_xmppjs_logs_in_with_sasl2_bind2_then_with_its_fast_token(server, run, tmp_path):
    user, peer = new_accounts(server, "xmppjs", "peer")
    bare, peer_bare = f"{user}@{DOMAIN}", f"{peer}@{DOMAIN}"
    text = "Hello from xmpp.js after a FAST login"
    received = []

    async def body(clients):
        await replier(clients, peer, received)
        result = await xmppjs({
            "service": f"xmpp://127.0.0.1:{server.c2s_port}",
            "domain": DOMAIN,
            "username": user,
            "password": server.passwords[user],
            "wrongPassword": "not-" + server.passwords[user],
            "tag": TAG,
            "peer": peer_bare,
            "body": text,
            "stepTimeout": int(STEP_TIMEOUT * 1000),
        }, server.ca_file, tmp_path / "xmppjs-wire.log")
        user_agent_id = result["userAgentId"]
        first = result["first"]

        # 1. SASL2 offered with Bind2 and FAST inline; xmpp.js took it, with
        # its SCRAM-SHA-1, the Bind2 <tag/> and a token requested.
        offered = first["authentication"]
        assert offered is not None, "no SASL2 <authentication/> among the stream features"
        assert "SCRAM-SHA-1" in offered["mechanisms"]
        assert {SASL2_BIND, SASL2_FAST} <= set(offered["inline"])
        assert HT in offered["fastMechanisms"]
        attempt = only_attempt(first)
        assert attempt["mechanism"] == "SCRAM-SHA-1" and attempt["fast"] is None
        assert attempt["userAgent"]["id"] == user_agent_id
        assert attempt["bind"]["tag"] == TAG
        assert attempt["requestToken"] == HT
        assert attempt["outcome"]["additionalData"]  # SCRAM's server signature, verified
        assert first["errors"] == []
        assert_bound(first, bare, user_agent_id)

        # 2. The token came in <success/>, for HT-SHA-256-NONE, expiring
        # later; xmpp.js handed it to its fast.saveToken.
        token = attempt["outcome"]["token"]
        assert token is not None, attempt["outcome"]["children"]
        expiry = datetime.fromisoformat(token["expiry"].replace("Z", "+00:00"))
        assert expiry > datetime.now(timezone.utc)
        assert token["length"] >= 16
        assert first["saved"] == [{"mechanism": HT, **token}]

        # 4. A tampered token is not-authorized; xmpp.js then tries the
        # (wrong) password on the same stream, refused too.
        tampered = result["tampered"]
        assert not tampered["online"]
        assert tampered["error"]["condition"] == "not-authorized"
        fast_attempt, password_attempt = tampered["attempts"]
        assert fast_attempt["mechanism"] == HT and fast_attempt["fast"] is not None
        assert fast_attempt["outcome"]["result"] == "failure"
        assert fast_attempt["outcome"]["condition"] == "not-authorized"
        assert password_attempt["mechanism"] == "SCRAM-SHA-1"
        assert password_attempt["outcome"]["result"] == "failure"
        assert password_attempt["outcome"]["condition"] == "not-authorized"
        assert tampered["saved"] == []

        # 3. The token with a wrong password: one HT-SHA-256-NONE
        # <authenticate/> with <fast/>, accepted with the server's proof
        # (HMAC of "Responder", checked by xmpp.js), Bind2 again.
        fast = result["fast"]
        attempt = only_attempt(fast)
        assert attempt["mechanism"] == HT
        assert attempt["fast"] is not None and attempt["requestToken"] is None
        assert attempt["userAgent"]["id"] == user_agent_id
        assert attempt["outcome"]["additionalData"]
        assert fast["errors"] == []
        assert_bound(fast, bare, user_agent_id)
        # The same account, tag and user agent get the same resource back
        # (XEP-0386 §3.2.1 allows it; xmppd's bind2 does it).
        assert fast["jid"] == first["jid"]

        # 5. The FAST session exchanges messages.
        assert result["reply"] == {"from": f"{peer_bare}/tcp", "type": "chat",
                                   "body": f"{peer} read: {text}"}
        assert [(str(m["from"]), m["body"]) for m in received] == [(fast["jid"], text)]

    run(server, body, timeout=NODE_TIMEOUT + 2 * STEP_TIMEOUT)
