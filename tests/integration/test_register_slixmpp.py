"""In-band registration (XEP-0077) and invitations (XEP-0401, XEP-0445) on
the real server, with slixmpp's xep_0077 plugin: an account registered
before login then logging in, its password changed and the account
removed in-band; registration refused on a host that does not allow it;
a user's invitation made with ``xmppctl invite``, its landing page fetched
over real HTTPS from the HTTP listener, then used to register an account
that becomes the inviter's contact.

The module's server hosts ``example.test`` (registration allowed) and
``closed.example.test`` (not), under the certificate of ``conftest.py``
(``*.example.test``); every client connects from 127.0.0.1, so the limit
per address is raised.
"""

import asyncio
import re

import pytest
import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatcherId

from tests.integration.conftest import (
    DOMAIN, STEP_TIMEOUT, Client, LoginFailed, prepare_web, run_xmppctl)
from tests.integration.test_c2s_slixmpp import (
    STREAM_OPEN, exchange, parse_stream, roster_items, roster_request)
from tests.integration.test_upload_http import fetch

CLOSED = f"closed.{DOMAIN}"
NS_REGISTER = "jabber:iq:register"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_PARS = "urn:xmpp:pars:0"
PASSWORD = "a long first password"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    deployment, port = prepare_web(
        tmp_path_factory.mktemp("xmppd-register"),
        "[register]\nallow = true\nmax_per_ip_burst = 50\nmax_per_ip_per_hour = 100.0\n"
        f'[hosts."{CLOSED}"]\n[hosts."{CLOSED}".register]\nallow = false\n')
    deployment.process.start()
    yield deployment, port
    deployment.process.check_clean_exit()


def registering(clients, user, password=PASSWORD, domain=DOMAIN, token=None):
    """A slixmpp client of ``user@domain`` that registers the account in
    band when the server offers it (XEP-0077 §3.1.1, after giving
    ``token`` with XEP-0445's ``<preauth/>``), then logs in with it; not
    connected yet.  Its ``forms`` lists the registration forms it got."""
    xmpp = slixmpp.ClientXMPP(f"{user}@{domain}", password)
    xmpp.ca_certs = clients.deployment.ca_file
    xmpp.enable_direct_tls, xmpp.enable_starttls, xmpp.enable_plaintext = False, True, False
    xmpp.register_plugin("xep_0077")
    client = Client(xmpp, ("127.0.0.1", clients.deployment.c2s_port))
    client.forms = []

    async def register(form):
        client.forms.append(form)
        if token is not None:
            client.preauth = await preauth(xmpp, domain, token)
        iq = xmpp.make_iq_set()
        iq["register"]["username"] = xmpp.boundjid.user
        iq["register"]["password"] = password
        await iq.send(timeout=STEP_TIMEOUT)

    xmpp.add_event_handler("register", register)
    clients.all.append(client)
    return client


async def preauth(xmpp, domain, token):
    """Give ``token`` (XEP-0445 §4): slixmpp has no plugin for it and holds
    back, before login, the iqs of plugins it does not know, so this one
    goes raw; the answer (a slixmpp stanza)."""
    answer = asyncio.get_running_loop().create_future()
    id_ = xmpp.new_id()
    xmpp.register_handler(Callback("preauth answer", MatcherId(id_),
                                   lambda stanza: answer.set_result(stanza), once=True))
    xmpp.send_raw(f"<iq type='set' id='{id_}' to='{domain}'>"
                  f"<preauth xmlns='{NS_PARS}' token='{token}'/></iq>")
    return await asyncio.wait_for(answer, STEP_TIMEOUT)


def accounts(deployment):
    return run_xmppctl("-c", deployment.process.config_path, "users").split()


def test_register_log_in_change_the_password_and_remove_the_account(web, run):
    deployment, _ = web

    async def body(clients):
        newbie = registering(clients, "newbie")
        newbie.connect()
        await newbie.wait_started()
        assert newbie.jid.startswith(f"newbie@{DOMAIN}/")
        [form] = newbie.forms
        assert {"username", "password"} <= set(form["register"]["fields"])
        assert f"newbie@{DOMAIN}" in await asyncio.to_thread(accounts, deployment)

        other = await clients.login("newbie", "other", password=PASSWORD)
        await newbie.xmpp.plugin["xep_0077"].change_password("a new second password",
                                                            timeout=STEP_TIMEOUT)
        await other.wait_disconnected()
        assert other.stream_errors == ["reset"]
        with pytest.raises(LoginFailed):
            await clients.login("newbie", "old", password=PASSWORD)
        again = await clients.login("newbie", "again", password="a new second password")

        await newbie.xmpp.plugin["xep_0077"].cancel_registration(timeout=STEP_TIMEOUT)
        await newbie.wait_disconnected()
        await again.wait_disconnected()
        assert newbie.stream_errors == ["not-authorized"]
        assert again.stream_errors == ["not-authorized"]
        with pytest.raises(LoginFailed):
            await clients.login("newbie", "gone", password="a new second password")
        assert f"newbie@{DOMAIN}" not in await asyncio.to_thread(accounts, deployment)

    run(deployment, body)


def test_a_closed_host_refuses_registration(web, run):
    deployment, _ = web

    async def body(clients):
        # slixmpp registers only where the stream offers it: not here, so
        # it goes on to authenticate an account that does not exist.
        client = registering(clients, "newbie", domain=CLOSED)
        client.connect()
        with pytest.raises(LoginFailed):
            await client.wait_started()
        assert client.forms == [] and set(client.failed_auth) == {"not-authorized"}

        # An explicit request is refused with service-unavailable (§3.1).
        request = (STREAM_OPEN.format(to=CLOSED)
                   + f"<iq type='get' id='g'><query xmlns='{NS_REGISTER}'/></iq>"
                   + f"<iq type='set' id='s'><query xmlns='{NS_REGISTER}'><username>newbie"
                   f"</username><password>{PASSWORD}</password></query></iq>"
                   + "</stream:stream>")
        data = await exchange(deployment.direct_tls_port, request.encode(),
                              ca_file=deployment.ca_file, server_hostname=CLOSED)
        elements, ended = parse_stream(data)
        features, *answers = elements
        assert not [f for f in features if f.tag.endswith("}register")]
        assert [(a.get("id"), a.get("type")) for a in answers] == [("g", "error"),
                                                                 ("s", "error")]
        for answer in answers:
            assert answer.find(f"{{jabber:client}}error/{{{NS_STANZAS}}}service-unavailable") \
                is not None
        assert PASSWORD.encode() not in data and ended

    run(deployment, body)
    assert f"newbie@{CLOSED}" not in accounts(deployment)


def test_an_invitation_landing_page_then_registration(web, run):
    deployment, port = web
    config = deployment.process.config_path
    out = run_xmppctl("-c", config, "invite", DOMAIN, "--inviter", f"alice@{DOMAIN}")
    _, uri, url = out.splitlines()
    [token] = re.findall(r"preauth=([A-Za-z0-9_-]+)", uri)
    assert uri == f"xmpp:alice@{DOMAIN}?roster;preauth={token};ibr=y"
    assert url == f"https://{DOMAIN}:{port}/invite/{DOMAIN}/{token}"

    status, headers, page = fetch(deployment, "GET", url)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert f'href="{uri}"'.encode() in page and f"alice@{DOMAIN}".encode() in page
    assert fetch(deployment, "GET", url.replace(token, "no-such-token"))[0] == 404

    async def body(clients):
        alice = await clients.login("alice", "desk")
        assert roster_items(await roster_request(alice, "get")) == {}  # pushes come now
        invited = registering(clients, "invitee", token=token)
        invited.connect()
        await invited.wait_started()
        assert invited.preauth["type"] == "result"
        # XEP-0401 §5.5: the inviter learns of its new contact at once.
        push = await alice.next_roster_push()
        assert roster_items(push) == {f"invitee@{DOMAIN}": (None, "both", [])}
        roster = await roster_request(invited, "get")
        assert roster_items(roster) == {f"alice@{DOMAIN}": (None, "both", [])}

    run(deployment, body)
    # Single use: the page and the token are gone.
    assert fetch(deployment, "GET", url)[0] == 404
