"""The web side of HTTP file upload (XEP-0363 §6): a twisted.web resource
served under ``upload/`` that takes the file of a slot by PUT and gives it
back by GET and HEAD.

- ``PUT /upload/ID/NAME?e=EXPIRES&s=SIGNATURE`` (see :mod:`xmppd.upload`):
  403 unless the signature is the slot's and had not expired when the
  request's headers came (§7: a slow upload begun in time is taken); 411 without
  a ``Content-Length``; 413 for more bytes than announced, 400 for fewer or
  for another ``Content-Type`` than the one announced (§6: "MUST reject the
  file upload if the Content-Length does not match", "SHOULD reject the
  file if the Content-Type has been specified beforehand and does not
  match": a slot asked for without one, ``application/octet-stream``,
  takes any, and an empty header is none); 409 if the slot has its file already
  or another upload to it is under way; 201 once the file is stored (§6).
- ``GET``/``HEAD /upload/ID/NAME``: the stored file with its announced
  ``Content-Type``, ``X-Content-Type-Options: nosniff``, a
  ``Content-Security-Policy`` that lets nothing run, and
  ``Content-Disposition: attachment`` unless it is an image, a video or
  audio; ranges and conditional requests as twisted.web's ``static.File``
  serves them.  404 for anything else.

Files are kept under their slot's id in the private ``files`` directory,
never under a name from the request: no path can leave it.  A file is
written to ``ID.part`` (created exclusively, 0600), then linked to ``ID``
(which fails if the slot has its file already), and only then is the slot
marked stored.
"""

import errno
import os
import re
import shutil

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import http, resource, server, static

from xmppd.upload import DEFAULT_TYPE, ID, inline, disposition, same_type, signed

log = Logger()
CHUNK = 65536
_DIGITS = re.compile(r"[0-9]{1,20}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
SECURITY_HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"content-security-policy": b"default-src 'none'; frame-ancestors 'none'; sandbox",
    b"referrer-policy": b"no-referrer",
}


class Refused(Exception):
    """An HTTP status and a short reason to answer with."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UploadResource(resource.Resource):
    """PUT, GET and HEAD of the files of upload slots.

    ``store`` is the ``uploads`` store (Deferreds), ``files`` the private
    directory of the files, ``secret`` the signing secret, ``clock`` gives
    the time, ``offload(function, *args)`` runs blocking file work and
    returns a Deferred."""

    isLeaf = True

    def __init__(self, store, files, secret, clock, offload=defer.maybeDeferred):
        super().__init__()
        self._store = store
        self._files = os.fspath(files)
        self._secret = secret
        self._clock = clock
        self._offload = offload

    # Requests

    def render_GET(self, request):
        return self._answer(request, self._get)

    render_HEAD = render_GET

    def render_PUT(self, request):
        return self._answer(request, self._put)

    def _answer(self, request, handler):
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        gone = []
        request.notifyFinish().addBoth(gone.append)
        d = defer.maybeDeferred(handler, request)
        d.addErrback(self._failed, request)
        d.addCallback(self._finish, request, gone)
        return server.NOT_DONE_YET

    def _failed(self, failure, request):
        if failure.check(Refused):
            return _text(request, failure.value.status, failure.value.reason)
        log.failure("upload: {method} {uri} failed", failure,
                    method=request.method, uri=request.uri)
        return _text(request, http.INTERNAL_SERVER_ERROR, "the request failed")

    def _finish(self, body, request, gone):
        if gone or body is server.NOT_DONE_YET:
            return
        if body:
            request.write(body)
        request.finish()

    def _slot(self, request):
        """The slot id and file name of the request's path; 404 unless it
        is exactly ``ID/NAME``."""
        if len(request.postpath) != 2:
            raise Refused(http.NOT_FOUND, "no such file")
        slot_id, name = request.postpath
        try:
            slot_id, name = slot_id.decode("ascii"), name.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(http.NOT_FOUND, "no such file") from None
        if not ID.fullmatch(slot_id) or not name:
            raise Refused(http.NOT_FOUND, "no such file")
        return slot_id, name

    # GET, HEAD

    @defer.inlineCallbacks
    def _get(self, request):
        slot_id, name = self._slot(request)
        upload = yield self._store.get(slot_id)
        if upload is None or upload.stored is None or upload.filename != name:
            raise Refused(http.NOT_FOUND, "no such file")
        file = static.File(os.path.join(self._files, slot_id))
        file.type, file.encoding = upload.content_type, None
        if not inline(upload.content_type):
            request.setHeader(b"content-disposition", disposition(upload.filename).encode())
        return file.render(request)

    # PUT

    @defer.inlineCallbacks
    def _put(self, request):
        slot_id, name = self._slot(request)
        expires, given = _argument(request, b"e"), _argument(request, b"s")
        if not (_DIGITS.fullmatch(expires) and _SIGNATURE.fullmatch(given)):
            raise Refused(http.FORBIDDEN, "not a signed upload URL")
        began = getattr(request, "headers_at", None)
        if int(expires) < (self._clock.seconds() if began is None else began):
            raise Refused(http.FORBIDDEN, "the upload URL has expired")
        length = request.getHeader(b"content-length")
        if length is None:
            raise Refused(http.LENGTH_REQUIRED, "Content-Length is required")
        upload = yield self._store.get(slot_id)
        if (upload is None or upload.filename != name
                or not signed(self._secret, slot_id, name, upload.size, upload.content_type,
                              int(expires), given)):
            raise Refused(http.FORBIDDEN, "not a valid upload URL")
        if upload.stored is not None:
            raise Refused(http.CONFLICT, "the file is uploaded already")
        length = length.decode("latin-1").strip()
        if not _DIGITS.fullmatch(length):
            raise Refused(http.BAD_REQUEST, "invalid Content-Length")
        if int(length) > upload.size:
            raise Refused(http.REQUEST_ENTITY_TOO_LARGE,
                          f"the slot is for {upload.size} bytes")
        if int(length) != upload.size:
            raise Refused(http.BAD_REQUEST, f"the slot is for {upload.size} bytes")
        type_ = (request.getHeader(b"content-type") or b"").decode("latin-1").strip()
        if (type_ and upload.content_type != DEFAULT_TYPE
                and not same_type(upload.content_type, type_)):
            raise Refused(http.BAD_REQUEST, f"the slot is for {upload.content_type}")
        yield self._offload(self._write, slot_id, request.content, upload.size)
        try:
            stored = yield self._store.mark_stored(slot_id)
        except Exception:
            yield self._offload(_remove, os.path.join(self._files, slot_id))
            raise
        if not stored:  # the slot went (its account was deleted) during the upload
            yield self._offload(_remove, os.path.join(self._files, slot_id))
            raise Refused(http.GONE, "the slot is gone")
        return _text(request, http.CREATED, "")

    def _write(self, slot_id, content, size):
        """Store the body (blocking): ``ID.part`` created exclusively,
        then linked to ``ID``; Refused (409) if either exists."""
        final = os.path.join(self._files, slot_id)
        part = final + ".part"
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise Refused(http.CONFLICT, "an upload to this slot is under way") from None
        try:
            with os.fdopen(fd, "wb") as out:
                content.seek(0)
                shutil.copyfileobj(content, out, CHUNK)
                if out.tell() != size:
                    raise Refused(http.BAD_REQUEST, f"the slot is for {size} bytes")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(part, final)
            except FileExistsError:
                raise Refused(http.CONFLICT, "the file is uploaded already") from None
        finally:
            _remove(part)


def _argument(request, name):
    values = request.args.get(name)
    if not values or len(values) != 1:
        return ""
    try:
        return values[0].decode("ascii")
    except UnicodeDecodeError:
        return ""


def _text(request, status, reason):
    """A short plain-text answer."""
    request.setResponseCode(status)
    body = (reason + "\n").encode() if reason else b""
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def _remove(file):
    try:
        os.unlink(file)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
