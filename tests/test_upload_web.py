"""HTTP file upload (XEP-0363): signing, file names and content types, and
the web resource's answers to PUT, GET and HEAD, through twisted.web's
HTTP parser over an in-memory transport (no reactor)."""

import os
import stat
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from twisted.internet import _producer_helpers, defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web import resource, server

from xmppd import upload as slots
from xmppd.storage.deferred import AsyncStore, immediate_runner
from xmppd.storage.kinds import Upload
from xmppd.storage.sql import SQLStore
from xmppd.upload.web import UploadResource
from tests.storage.conftest import KEYS

SECRET = b"s" * 32
NOW = 1_800_000_000


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def header(self, name):
        return self.headers.get(name.lower())


class Web:
    """A twisted.web ``Site`` serving ``resource`` under ``/upload``,
    driven over string transports with ``clock`` (file bodies are
    produced by a cooperator on that clock)."""

    def __init__(self, upload_resource, clock, monkeypatch):
        root = resource.Resource()
        root.putChild(b"upload", upload_resource)
        self.clock = clock
        self.site = server.Site(root, timeout=None, reactor=clock)
        cooperator = task.Cooperator(scheduler=lambda f: clock.callLater(0, f))
        monkeypatch.setattr(_producer_helpers, "cooperate", cooperator.cooperate)

    def request(self, method, target, body=b"", headers=None):
        headers = dict(headers or {})
        if body or method == "PUT":
            headers.setdefault("Content-Length", str(len(body)))
        lines = [f"{method} {target} HTTP/1.1", "Host: example.com",
                 *(f"{k}: {v}" for k, v in headers.items() if v is not None)]
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        for _ in range(100):
            self.clock.advance(0)
        return parse(transport.value(), method)


def parse(raw, method):
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    if headers.get("transfer-encoding") == "chunked":
        decoded = b""
        while True:
            size, _, body = body.partition(b"\r\n")
            size = int(size, 16)
            if size == 0:
                break
            decoded, body = decoded + body[:size], body[size + 2:]
        body = decoded
    elif "content-length" in headers and method != "HEAD":
        assert len(body) == int(headers["content-length"])
    return Response(status, headers, body)


@pytest.fixture
def sql():
    store = SQLStore("sqlite://")
    store.migrate()
    store.open("accounts").create("alice", "example.com", KEYS)
    yield store
    store.close()


@pytest.fixture
def clock():
    clock = task.Clock()
    clock.advance(NOW)
    return clock


@pytest.fixture
def files(tmp_path):
    return slots.prepare_directory(tmp_path / "uploads")


@pytest.fixture
def web(sql, files, clock, monkeypatch):
    store = AsyncStore(sql, immediate_runner).open("uploads")
    return Web(UploadResource(store, files, SECRET, clock), clock, monkeypatch)


def add_slot(sql, filename="photo.jpg", size=11, content_type="image/jpeg", created=NOW):
    slot_id = slots.new_id()
    sql.open("uploads").add(Upload(slot_id, "alice", "example.com", filename, size,
                                   content_type, datetime.fromtimestamp(created, timezone.utc)))
    return slot_id


def put_target(slot_id, filename="photo.jpg", size=11, content_type="image/jpeg",
               expires=NOW + 300, secret=SECRET):
    url = slots.put_url("/", secret, slot_id, filename, size, content_type, expires)
    return url


def get_target(slot_id, filename="photo.jpg"):
    return slots.get_url("/", slot_id, filename)


class TestSigning:
    def test_signature_binds_every_part(self):
        base = ("id", "a.jpg", 10, "image/jpeg", 100)
        sig = slots.signature(SECRET, *base)
        assert slots.signed(SECRET, *base, sig)
        for i, other in enumerate(("id2", "b.jpg", 11, "image/png", 101)):
            changed = list(base)
            changed[i] = other
            assert not slots.signed(SECRET, *changed, sig)
        assert not slots.signed(b"t" * 32, *base, sig)

    def test_urls_carry_no_account_and_quote_the_name(self):
        put = slots.put_url("https://example.com:5281/", SECRET, "ID", "a b/c?.jpg", 5,
                            "image/jpeg", 42)
        assert put.startswith("https://example.com:5281/upload/ID/a%20b%2Fc%3F.jpg?e=42&s=")
        assert "alice" not in put
        assert slots.get_url("https://x/", "ID", "ä.png") == "https://x/upload/ID/%C3%A4.png"

    def test_new_ids_are_long_and_random(self):
        ids = {slots.new_id() for _ in range(100)}
        assert len(ids) == 100
        assert all(slots.ID.fullmatch(i) for i in ids)

    def test_directory_private(self, tmp_path):
        files = slots.prepare_directory(tmp_path / "a" / "uploads")
        for directory in (files, files.parent):
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


class TestNames:
    @pytest.mark.parametrize("given, kept", [
        ("photo.jpg", "photo.jpg"), ("../../etc/passwd", "passwd"), ("a\\b\\c.txt", "c.txt"),
        ("..", "file"), ("", "file"), (" .hidden ", "hidden"), ("a\x00b\u202ec.exe", "abc.exe"),
        ("e\u0301.png", "\u00e9.png")])
    def test_sanitised(self, given, kept):
        assert slots.sanitise_filename(given) == kept

    def test_long_names_keep_their_extension(self):
        name = slots.sanitise_filename("é" * 300 + ".jpeg")
        assert name.endswith(".jpeg") and len(name.encode()) <= 255

    @pytest.mark.parametrize("given, normal", [
        ("Image/JPEG", "image/jpeg"), ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("text/html\r\nX-Evil: 1", None), ("jpeg", None), ("a/b; c", None), ("x" * 300, None)])
    def test_content_types(self, given, normal):
        assert slots.content_type(given) == normal

    @pytest.mark.parametrize("type_, shown", [
        ("image/png", True), ("video/mp4", True), ("audio/ogg; codecs=opus", True),
        ("image/svg+xml", False), ("text/html", False), ("application/pdf", False)])
    def test_inline(self, type_, shown):
        assert slots.inline(type_) is shown


class TestPut:
    def test_upload_then_download(self, web, sql, files):
        slot_id = add_slot(sql)
        put = web.request("PUT", put_target(slot_id), b"hello world",
                          {"Content-Type": "image/jpeg"})
        assert put.status == 201
        stored = files / slot_id
        assert stored.read_bytes() == b"hello world"
        assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600
        assert sql.open("uploads").get(slot_id).stored == 11
        assert not (files / f"{slot_id}.part").exists()
        got = web.request("GET", get_target(slot_id))
        assert (got.status, got.body) == (200, b"hello world")
        assert got.header("content-type") == "image/jpeg"
        assert got.header("x-content-type-options") == "nosniff"
        assert got.header("content-disposition") is None  # an image is shown

    def test_second_put_refused(self, web, sql, files):
        slot_id = add_slot(sql)
        assert web.request("PUT", put_target(slot_id), b"hello world").status == 201
        again = web.request("PUT", put_target(slot_id), b"HELLO WORLD")
        assert again.status == 409
        assert (files / slot_id).read_bytes() == b"hello world"

    def test_put_while_another_is_under_way(self, web, sql, files):
        slot_id = add_slot(sql)
        (files / f"{slot_id}.part").write_bytes(b"")
        assert web.request("PUT", put_target(slot_id), b"hello world").status == 409
        assert sql.open("uploads").get(slot_id).stored is None

    @pytest.mark.parametrize("target", [
        lambda i: put_target(i, secret=b"x" * 32),  # another secret
        lambda i: put_target(i, size=12),  # signed for another size
        lambda i: put_target(i, content_type="text/html"),
        lambda i: put_target(i).replace("photo.jpg", "other.jpg"),
        lambda i: put_target(i).split("?")[0],  # not signed
        lambda i: put_target(i).replace("&s=", "&s=0"),
        lambda i: put_target(i) + "&e=1",
        lambda i: put_target(i, expires=NOW - 1),  # expired
        lambda i: put_target(slots.new_id()),  # no such slot
    ])
    def test_forbidden(self, web, sql, files, target):
        slot_id = add_slot(sql)
        assert web.request("PUT", target(slot_id), b"hello world").status == 403
        assert os.listdir(files) == []

    def test_url_expires_with_the_clock(self, web, sql, clock):
        slot_id = add_slot(sql)
        target = put_target(slot_id, expires=NOW + 300)
        clock.advance(301)
        assert web.request("PUT", target, b"hello world").status == 403
        clock.advance(-2)
        assert web.request("PUT", target, b"hello world").status == 201

    @pytest.mark.parametrize("body, headers, status", [
        (b"hello world!", {}, 413),  # more than announced
        (b"hello", {}, 400),  # fewer
        (b"hello world", {"Content-Type": "text/html"}, 400),
        (b"hello world", {"Content-Type": "image/png"}, 400),
    ])
    def test_body_must_be_as_announced(self, web, sql, files, body, headers, status):
        slot_id = add_slot(sql)
        assert web.request("PUT", put_target(slot_id), body, headers).status == status
        assert os.listdir(files) == []
        assert sql.open("uploads").get(slot_id).stored is None

    @pytest.mark.parametrize("announced, sent", [
        ("application/octet-stream", "image/png"),  # none announced: any
        ("image/jpeg", ""),  # an empty header (a browser's for an unknown type) is none
    ])
    def test_a_type_not_announced_or_not_sent_is_not_compared(self, web, sql, announced, sent):
        slot_id = add_slot(sql, content_type=announced)
        answer = web.request("PUT", put_target(slot_id, content_type=announced), b"hello world",
                             {"Content-Type": sent})
        assert answer.status == 201

    def test_content_type_compared_without_case(self, web, sql):
        slot_id = add_slot(sql)
        answer = web.request("PUT", put_target(slot_id), b"hello world",
                             {"Content-Type": "Image/JPEG"})
        assert answer.status == 201
        text = "text/plain; charset=utf-8"
        slot_id = add_slot(sql, content_type=text)
        answer = web.request("PUT", put_target(slot_id, content_type=text), b"hello world",
                             {"Content-Type": "text/plain;charset=UTF-8"})
        assert answer.status == 201

    def test_chunked_put_needs_a_length(self, web, sql):
        slot_id = add_slot(sql)
        answer = web.request("PUT", put_target(slot_id), b"b\r\nhello world\r\n0\r\n\r\n",
                             {"Transfer-Encoding": "chunked", "Content-Length": None})
        assert answer.status == 411

    def test_account_deleted_during_upload(self, sql, files, clock, monkeypatch):
        slot_id = add_slot(sql)

        def offload(function, *args):  # the account goes while the file is written
            if sql.open("accounts").exists("alice", "example.com"):
                sql.open("accounts").delete("alice", "example.com")
            return defer.maybeDeferred(function, *args)

        store = AsyncStore(sql, immediate_runner).open("uploads")
        web = Web(UploadResource(store, files, SECRET, clock, offload), clock, monkeypatch)
        assert web.request("PUT", put_target(slot_id), b"hello world").status == 410
        assert os.listdir(files) == []


class TestGet:
    def upload(self, web, sql, filename="photo.jpg", content_type="image/jpeg",
               body=b"hello world"):
        slot_id = add_slot(sql, filename, len(body), content_type)
        target = put_target(slot_id, filename, len(body), content_type)
        assert web.request("PUT", target, body, {"Content-Type": content_type}).status == 201
        return get_target(slot_id, filename)

    def test_attachment_for_other_types(self, web, sql):
        target = self.upload(web, sql, "page ä.html", "text/html")
        got = web.request("GET", target)
        assert got.status == 200
        assert got.header("content-type") == "text/html"
        assert got.header("content-disposition") == (
            "attachment; filename=\"page _.html\"; filename*=UTF-8''page%20%C3%A4.html")
        assert "sandbox" in got.header("content-security-policy")

    def test_head(self, web, sql):
        target = self.upload(web, sql)
        head = web.request("HEAD", target)
        assert (head.status, head.body) == (200, b"")
        assert head.header("content-length") == "11"
        assert head.header("content-type") == "image/jpeg"

    def test_ranges(self, web, sql):
        target = self.upload(web, sql)
        part = web.request("GET", target, headers={"Range": "bytes=6-"})
        assert (part.status, part.body) == (206, b"world")
        assert part.header("content-range") == "bytes 6-10/11"

    @pytest.mark.parametrize("mangle", [
        lambda t: t.replace("photo.jpg", "other.jpg"),
        lambda t: t + "/more",
        lambda t: t.rsplit("/", 1)[0],
        lambda t: t.rsplit("/", 1)[0] + "/%2e%2e%2f%2e%2e%2fsecret",
        lambda t: "/upload/..%2f..%2fsecret/x",
        lambda t: "/upload/../secret",
        lambda t: "/upload/secret/photo.jpg",
        lambda t: "/upload/" + "A" * 32 + "/photo.jpg",
        lambda t: t.replace("photo.jpg", "%ff.jpg"),
    ])
    def test_nothing_else_is_served(self, web, sql, mangle):
        target = self.upload(web, sql)
        got = web.request("GET", mangle(target))
        assert got.status == 404
        assert b"hello" not in got.body and SECRET not in got.body

    def test_pending_slot_not_served(self, web, sql, files):
        slot_id = add_slot(sql)
        (files / slot_id).write_bytes(b"sneaked in")
        assert web.request("GET", get_target(slot_id)).status == 404

    def test_other_methods(self, web, sql):
        target = self.upload(web, sql)
        assert web.request("DELETE", target).status in (405, 501)
        assert web.request("POST", target, b"x").status in (405, 501)
        assert web.request("GET", target).status == 200
