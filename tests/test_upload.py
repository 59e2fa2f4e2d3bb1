"""The upload service (XEP-0363) at upload.example.com: discovery, slot
requests and their errors, the slot's URLs used on the module's web
resource, and the expiry sweep on the server's clock."""

import os
import stat
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from twisted.internet.address import IPv4Address

from tests.harness import (Client, TLSStringTransport, add_user, error_condition, make_server,
                           online)
from tests.test_upload_web import Web
from xmppd.config import parse
from xmppd.core.websocket import WebSocketFactory
from xmppd.http.listener import WebSite
from xmppd.modules import upload as module
from xmppd.storage.kinds import Upload
from xmppd.tap import MODULES

SERVICE = "upload.example.com"
NS = "urn:xmpp:http:upload:0"
MIB = 1024 * 1024
HTTP = '[http]\nlisten = ["ssl:5281"]\n'


def make(tmp_path, extra="", hosts=("example.com",)):
    server = make_server(tmp_path, hosts=hosts, modules=MODULES + ("upload",),
                         extra=HTTP + f'[upload]\ndirectory = "uploads"\n{extra}')
    for user in ("alice@example.com", "bob@example.com"):
        add_user(server, user)
    return server


@pytest.fixture
def server(tmp_path):
    return make(tmp_path)


@pytest.fixture
def alice(server):
    return online(server, "alice@example.com")


@pytest.fixture
def web(server, monkeypatch):
    resource, _ = server.http_resources[("upload",)]
    return Web(resource, server.clock, monkeypatch)


def ask(client, xml, to=SERVICE, id_="q"):
    client.send(f"<iq type='get' id='{id_}' to='{to}'>{xml}</iq>")
    return next(e for e in client.take() if e.name == "iq" and e.getAttribute("id") == id_)


def request(client, filename="photo.jpg", size=11, content_type="image/jpeg", to=SERVICE):
    attributes = f" filename='{filename}'" if filename is not None else ""
    attributes += f" size='{size}'" if size is not None else ""
    attributes += f" content-type='{content_type}'" if content_type is not None else ""
    return ask(client, f"<request xmlns='{NS}'{attributes}/>", to)


def urls(answer):
    assert answer["type"] == "result", answer.toXml()
    slot = next(answer.elements(NS, "slot"))
    return (next(slot.elements(NS, "put"))["url"], next(slot.elements(NS, "get"))["url"])


def target(url):
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def named(element, name):
    """The children of ``element`` called ``name``, whatever their namespace."""
    return [child for child in element.elements() if child.name == name]


def error_child(answer, name):
    (error,) = named(answer, "error")
    return next(error.elements(NS, name), None)


class TestDiscovery:
    def test_listed_in_the_hosts_items(self, alice):
        answer = ask(alice, "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                     to="example.com")
        jids = [item["jid"] for item in answer.firstChildElement().elements()]
        assert SERVICE in jids

    def test_info_with_the_max_file_size_form(self, alice):
        answer = ask(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        query = answer.firstChildElement()
        identities = [(i["category"], i["type"]) for i in named(query, "identity")]
        assert identities == [("store", "file")]
        assert NS in [f["var"] for f in named(query, "feature")]
        form = next(query.elements("jabber:x:data", "x"))
        values = {f["var"]: str(named(f, "value")[0])
                  for f in named(form, "field")}
        assert values == {"FORM_TYPE": NS, "max-file-size": str(10 * MIB)}

    def test_items_of_the_service_empty(self, alice):
        answer = ask(alice, "<query xmlns='http://jabber.org/protocol/disco#items'/>")
        assert answer["type"] == "result"
        assert list(answer.firstChildElement().elements()) == []


class TestSlots:
    def test_slot_urls(self, alice, server):
        put, get = urls(request(alice, "my photo.jpg"))
        assert put.startswith("https://example.com:5281/upload/")
        assert get.startswith("https://example.com:5281/upload/")
        assert put.split("?")[0] == get and get.endswith("/my%20photo.jpg")
        assert "alice" not in put
        (upload,) = server.sql.open("uploads").uploads("alice", "example.com")
        assert (upload.filename, upload.size, upload.content_type, upload.stored) == (
            "my photo.jpg", 11, "image/jpeg", None)
        assert upload.id in get

    def test_filename_sanitised_and_type_defaulted(self, alice):
        put, get = urls(request(alice, "../../etc/passwd", content_type=None))
        assert get.endswith("/passwd")
        assert "etc" not in get

    @pytest.mark.parametrize("filename, size, content_type", [
        (None, 11, "image/jpeg"), ("", 11, "image/jpeg"), ("a.jpg", None, "image/jpeg"),
        ("a.jpg", "-1", "image/jpeg"), ("a.jpg", "1e3", "image/jpeg"),
        ("a.jpg", 11, "text/html&#13;&#10;X: y"), ("a.jpg", 11, "nonsense")])
    def test_bad_requests(self, alice, server, filename, size, content_type):
        answer = request(alice, filename, size, content_type)
        assert error_condition(answer) == "bad-request"
        assert server.sql.open("uploads").uploads("alice", "example.com") == []

    def test_file_too_large(self, alice):
        answer = request(alice, size=10 * MIB + 1)
        assert answer["type"] == "error"
        assert error_condition(answer) == "not-acceptable"
        assert named(answer, "error")[0]["type"] == "modify"
        too_large = error_child(answer, "file-too-large")
        assert str(next(too_large.elements(NS, "max-file-size"))) == str(10 * MIB)
        assert urls(request(alice, size=10 * MIB))  # the limit itself is fine

    @pytest.mark.parametrize("closed", [True, False])
    def test_accounts_of_other_hosts_refused(self, tmp_path, closed):
        modules = MODULES + ("upload",)
        if not closed:
            modules = tuple(m for m in modules if m != "closed_domain")
        server = make_server(tmp_path, hosts=("example.com", "example.net"), modules=modules,
                             extra=HTTP + '[upload]\ndirectory = "uploads"\n')
        add_user(server, "carol@example.net")
        carol = Client(server, "example.net")
        carol.login("carol@example.net")
        # The closed domain refuses first; without it, the service does.
        expected = "service-unavailable" if closed else "forbidden"
        assert error_condition(request(carol)) == expected
        assert server.sql.open("uploads").uploads("carol", "example.net") == []

    def test_quota(self, tmp_path):
        server = make(tmp_path, "quota = 20\ndaily_quota = 0\n")
        alice, bob = online(server, "alice@example.com"), online(server, "bob@example.com")
        assert urls(request(alice, size=15))
        answer = request(alice, size=6)
        assert error_condition(answer) == "resource-constraint"
        assert named(answer, "error")[0]["type"] == "wait"
        assert error_child(answer, "retry") is None
        assert urls(request(bob, size=20))  # bob's own quota
        # A slot never used stops counting once its URL has expired.
        server.clock.advance(301)
        assert urls(request(alice, size=6))

    def test_daily_quota_retry(self, tmp_path, monkeypatch):
        server = make(tmp_path, "daily_quota = 20\n")
        alice = online(server, "alice@example.com")
        start = server.clock.seconds()
        put, _ = urls(request(alice, size=15))
        web = Web(server.http_resources[("upload",)][0], server.clock, monkeypatch)
        assert web.request("PUT", target(put), b"x" * 15, {"Content-Type": "image/jpeg"}
                           ).status == 201
        server.clock.advance(3600)
        answer = request(alice, size=6)
        assert error_condition(answer) == "resource-constraint"
        retry = error_child(answer, "retry")["stamp"]
        expected = datetime.fromtimestamp(start, timezone.utc) + timedelta(days=1)
        assert datetime.fromisoformat(retry.replace("Z", "+00:00")) == expected
        assert retry.endswith("Z")

    def test_file_larger_than_a_quota_allows(self, tmp_path):
        server = make(tmp_path, "daily_quota = 100\n")
        alice = online(server, "alice@example.com")
        answer = request(alice, size=101)
        assert error_condition(answer) == "not-acceptable"
        assert str(next(error_child(answer, "file-too-large").elements())) == "100"

    def test_no_http_listener(self, tmp_path):
        server = make_server(tmp_path, modules=MODULES + ("upload",),
                             extra='[upload]\ndirectory = "uploads"\n')
        add_user(server, "alice@example.com")
        alice = online(server, "alice@example.com")
        assert error_condition(request(alice)) == "service-unavailable"


class TestFiles:
    def test_upload_and_download(self, alice, web, server, tmp_path):
        put, get = urls(request(alice, "notes.txt", 5, "text/plain"))
        assert web.request("PUT", target(put), b"notes", {"Content-Type": "text/plain"}
                           ).status == 201
        got = web.request("GET", target(get))
        assert (got.status, got.body) == (200, b"notes")
        assert got.header("content-disposition").startswith("attachment;")
        assert web.request("PUT", target(put), b"again", {"Content-Type": "text/plain"}
                           ).status == 409
        root = tmp_path / "uploads"
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(root / "secret").st_mode) == 0o600

    def test_slot_of_one_account_not_usable_for_another_size(self, alice, web):
        put, _ = urls(request(alice, size=5))
        assert web.request("PUT", target(put), b"x" * 6, {"Content-Type": "image/jpeg"}
                           ).status == 413

    def test_deleted_account(self, alice, web, server, tmp_path):
        put, get = urls(request(alice, "a.png", 3, "image/png"))
        assert web.request("PUT", target(put), b"png", {"Content-Type": "image/png"}
                           ).status == 201
        server.sql.delete_account("alice", "example.com")
        assert web.request("GET", target(get)).status == 404
        server.clock.advance(module.FIRST_SWEEP)  # the sweep removes the file
        assert os.listdir(tmp_path / "uploads" / "files") == []


class TestExpiry:
    def test_old_files_and_unused_slots_go_in_batches(self, tmp_path, monkeypatch):
        server = make(tmp_path, "sweep_batch = 2\nmax_age = 2.0\n")
        web = Web(server.http_resources[("upload",)][0], server.clock, monkeypatch)
        alice = online(server, "alice@example.com")
        files = tmp_path / "uploads" / "files"
        old = []
        for i in range(3):
            put, get = urls(request(alice, f"{i}.jpg", 1))
            assert web.request("PUT", target(put), b"x", {"Content-Type": "image/jpeg"}
                               ).status == 201
            old.append(get)
        urls(request(alice, "unused.jpg", 1))
        server.clock.advance(86400)  # sweeps ran: only the unused slot has expired
        names = {u.filename for u in server.sql.open("uploads").uploads("alice", "example.com")}
        assert names == {"0.jpg", "1.jpg", "2.jpg"}
        put, young = urls(request(alice, "young.jpg", 1))
        assert web.request("PUT", target(put), b"y", {"Content-Type": "image/jpeg"}
                           ).status == 201
        (files / ("A" * 32)).write_bytes(b"no slot")  # its account was deleted
        (files / ("B" * 32 + ".part")).write_bytes(b"")  # an upload under way
        assert len(os.listdir(files)) == 6
        server.clock.advance(86400 + 3600)  # the old ones are over 2 days old now
        names = {u.filename for u in server.sql.open("uploads").uploads("alice", "example.com")}
        assert names == {"young.jpg"}
        assert [web.request("GET", target(get)).status for get in old] == [404] * 3
        assert web.request("GET", target(young)).status == 200
        assert sorted(os.listdir(files)) == sorted([young.split("/")[-2], "B" * 32 + ".part"])

    def test_kept_for_ever_with_max_age_0(self, tmp_path, monkeypatch):
        server = make(tmp_path, "max_age = 0.0\n")
        alice = online(server, "alice@example.com")
        web = Web(server.http_resources[("upload",)][0], server.clock, monkeypatch)
        put, get = urls(request(alice, "a.jpg", 1))
        assert web.request("PUT", target(put), b"x", {"Content-Type": "image/jpeg"}
                           ).status == 201
        server.clock.advance(400 * 86400)
        server.clock.advance(module.FIRST_SWEEP)
        assert web.request("GET", target(get)).status == 200


    def test_a_slow_upload_begun_in_time_is_taken(self, server, alice):
        put, get = urls(request(alice, size=11))
        transport = TLSStringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        channel = WebSite(server, WebSocketFactory(server, tls=True)).buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(f"PUT {target(put)} HTTP/1.1\r\nHost: example.com\r\n"
                             "Content-Type: image/jpeg\r\nContent-Length: 11\r\n\r\n"
                             "hello".encode())
        server.clock.advance(module.OPTIONS.defaults.slot_lifetime + 60)  # the sweep ran too
        channel.dataReceived(b" world")
        for _ in range(20):
            server.clock.advance(0)
        assert transport.value().startswith(b"HTTP/1.1 201 ")


class TestOptions:
    def test_directory_defaults_beside_the_sqlite_database(self, tmp_path):
        config = parse('[storage]\nurl = "sqlite:///data/x.sqlite"\n[hosts."example.com"]\n',
                       str(tmp_path / "xmppd.toml"))
        assert module.directory(config) == str(tmp_path / "data" / "uploads")
        config = parse('[storage]\nurl = "postgresql+psycopg://x@/y"\n[upload]\n'
                       'directory = "/srv/files"\n[hosts."example.com"]\n',
                       str(tmp_path / "xmppd.toml"))
        assert module.directory(config) == "/srv/files"

    def test_request_size_limit_is_the_largest_file(self, server):
        _, limit = server.http_resources[("upload",)]
        assert limit() == 10 * MIB

    def test_upload_rows_are_metadata_only(self, alice, server):
        urls(request(alice))
        (upload,) = server.sql.open("uploads").uploads("alice", "example.com")
        assert isinstance(upload, Upload) and upload.stored is None
