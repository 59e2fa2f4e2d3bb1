"""HTTP file upload (XEP-0363 v1.1): an upload service at ``upload.HOST``
(``upload.subdomain``) for each host it is enabled on, a service domain of
its own, whose files are served by the HTTP listener under ``upload/``.

- Discovery (§3): disco#info of the service gives the identity
  ``store/file``, the feature ``urn:xmpp:http:upload:0`` and the
  ``max-file-size`` form (XEP-0128); the host's disco#items lists the
  service.
- Slot requests (§4): an iq-get with ``<request filename size
  content-type/>`` from an account of the host (anyone else:
  ``forbidden``) gets a PUT URL, signed and valid for
  ``upload.slot_lifetime`` seconds (§7: a short validity), and a GET URL,
  both under a random path with the (sanitised) file name and nothing
  of the account (see :mod:`xmppd.upload`).
- Errors (§5): a file larger than ``upload.max_file_size`` (or than a
  quota could ever allow) is ``not-acceptable`` with ``<file-too-large>``
  and its ``<max-file-size>``; a request that would take the account over
  ``upload.quota`` bytes (its files and the slots it may still use) is
  ``resource-constraint``, over ``upload.daily_quota`` bytes within 24
  hours ``resource-constraint`` with ``<retry stamp/>``: when enough of
  the day's uploads are older than 24 hours.  A missing or invalid
  filename, size or content type is ``bad-request``.
- The upload and the download (§6) are the web resource's
  (:mod:`xmppd.upload.web`); the database (the ``uploads`` store) holds
  only the metadata, the files are in ``upload.directory`` (private,
  0700; files 0600).  An account's slots go with it; its files go at the
  next sweep.
- Expiry (§7): every ``upload.sweep_interval`` seconds the files older
  than ``upload.max_age`` days (0: kept for ever), the slots never used
  within their validity (and an hour after it, for an upload begun in
  time, ``UPLOAD_GRACE``), and the files no slot knows (their account was
  deleted) are deleted, ``upload.sweep_batch`` at a time.

The signing secret is made at random the first time and kept in
``DIRECTORY/secret`` (0600): only the server reads it; replacing it
invalidates the PUT URLs handed out, not the files.  Every origin may PUT
and GET under ``upload/`` (CORS, whatever ``[http] cors_origins`` says):
a web client of another origin uploads, and fetches encrypted files; the
signed URLs are the only credentials.  The ``max-file-size``
limit is also the HTTP listener's request size limit for ``upload/``, so
a larger body is refused before it is read.
"""

import os
import re
from datetime import datetime, timedelta, timezone

from twisted.internet import defer
from twisted.words.xish import domish

from xmppd import upload as slots
from xmppd.core.events import HOST, SERVER_STOPPING
from xmppd.core.stanzas import StanzaError, xep0082_stamp
from xmppd.datafiles import data_path, load_secret
from xmppd.modules.disco import NS_INFO, NS_ITEMS, info_element, items_element
from xmppd.options import (Option, Options, dns_label, integer, non_negative_number,
                           optional_string, positive_number)
from xmppd.storage import QuotaExceeded, UserNotFound
from xmppd.storage.kinds import Upload
from xmppd.upload.web import UploadResource
from xmppd.wokkel_compat import data_form

NS_UPLOAD = slots.NS_UPLOAD
IDENTITY = ("store", "file", "HTTP File Upload")
FEATURES = (NS_INFO, NS_ITEMS, NS_UPLOAD)
MIB = 1024 * 1024
FIRST_SWEEP = 60.0  # seconds after start
PART_AGE = 3600.0  # seconds after which a leftover ``ID.part`` file is removed
UPLOAD_GRACE = 3600.0  # seconds an unused slot is kept past its lifetime: an upload begun in time


OPTIONS = Options(  # [upload]
    subdomain=Option("upload", dns_label),
    # The files and the signing secret; default: "uploads" beside the
    # SQLite database, else beside the config file.  Relative to the
    # config file's directory.
    directory=Option(None, optional_string),
    max_file_size=Option(10 * MIB, integer(1)),  # bytes
    quota=Option(1024 * MIB, integer(0)),  # bytes per account; 0: none
    daily_quota=Option(100 * MIB, integer(0)),  # bytes per account in 24 hours; 0: none
    max_age=Option(30.0, non_negative_number),  # days; 0: kept for ever
    slot_lifetime=Option(300.0, positive_number),  # seconds a PUT URL is valid
    sweep_interval=Option(3600.0, positive_number),  # seconds
    sweep_batch=Option(500, integer(1)),  # files deleted at a time
)


def directory(config):
    """The upload directory ``config`` gives (see ``upload.directory``)."""
    return data_path(config, config.options("upload").directory, "uploads")


def file_too_large(limit):
    """§5: the error for a file over ``limit`` bytes."""
    application = domish.Element((NS_UPLOAD, "file-too-large"))
    application.addElement("max-file-size", content=str(limit))
    return StanzaError("not-acceptable", f"File too large. The maximum file size is "
                       f"{limit} bytes", "modify", application)


class UploadService:
    """The slot requests and discovery of the upload services."""

    def __init__(self, api, store, secret):
        self._api = api
        self._store = store
        self._secret = secret

    def limit(self, host):
        """The largest file an account of ``host`` may ever upload."""
        options = self._api.options_for(host)
        return min(x for x in (options.max_file_size, options.quota, options.daily_quota) if x)

    def info(self, stanza):
        if stanza.payload.getAttribute("node") is not None:
            raise StanzaError("item-not-found")
        query = info_element([IDENTITY], sorted(FEATURES))
        form = data_form.Form("result", formNamespace=NS_UPLOAD)
        form.addField(data_form.Field(
            var="max-file-size", value=str(self.limit(self._api.owner(stanza.recipient.domain)))))
        query.addChild(form.toElement())
        return query

    def items(self, stanza):
        if stanza.payload.getAttribute("node") is not None:
            raise StanzaError("item-not-found")
        return items_element([])

    @defer.inlineCallbacks
    def request(self, stanza):
        """§4: a slot, or the error of §5."""
        service = stanza.recipient.domain
        host = self._api.owner(service)
        sender = stanza.sender
        if sender is None or sender.local is None or sender.domain != host:
            raise StanzaError("forbidden", "only accounts of this server may upload files")
        request = stanza.payload
        if request.name != "request":
            raise StanzaError("bad-request")
        filename, size = request.getAttribute("filename"), request.getAttribute("size")
        if not filename or not size or not re.fullmatch(r"[0-9]{1,20}", size):
            raise StanzaError("bad-request", "a filename and a size in bytes are required")
        size = int(size)
        type_ = request.getAttribute("content-type")
        content_type = (slots.DEFAULT_TYPE if type_ is None or not type_.strip()
                        else slots.content_type(type_))
        if content_type is None:
            raise StanzaError("bad-request", "invalid content-type")
        if size > self.limit(host):
            raise file_too_large(self.limit(host))
        base = self._api.http_base_url(host)
        if base is None:
            raise StanzaError("service-unavailable", "no HTTP listener is configured")
        options, lifetime = self._api.options_for(host), self._api.options.slot_lifetime
        now = self._api.clock.seconds()
        created = datetime.fromtimestamp(now, timezone.utc)
        upload = Upload(slots.new_id(), sender.local, host, slots.sanitise_filename(filename),
                        size, content_type, created)
        try:
            yield self._store.add(upload, quota=options.quota or None,
                                  daily_quota=options.daily_quota or None,
                                  pending_since=created - timedelta(seconds=lifetime))
        except UserNotFound:
            raise StanzaError("forbidden", "only accounts of this server may upload files")
        except QuotaExceeded as exceeded:
            if exceeded.kind == "quota":
                raise StanzaError("resource-constraint", "Quota reached: delete files or wait "
                                  "until they expire", "wait") from None
            retry = None
            if exceeded.retry is not None:
                retry = domish.Element((NS_UPLOAD, "retry"))
                retry["stamp"] = xep0082_stamp(exceeded.retry)
            raise StanzaError("resource-constraint", "Daily quota reached", "wait",
                              retry) from None
        expires = int(now + lifetime)
        slot = domish.Element((NS_UPLOAD, "slot"))
        slot.addElement("put")["url"] = slots.put_url(
            base, self._secret, upload.id, upload.filename, size, content_type, expires)
        slot.addElement("get")["url"] = slots.get_url(base, upload.id, upload.filename)
        return slot


class Sweep:
    """The background deletion of expired files and slots (§7)."""

    def __init__(self, api, store, files, hosts):
        self._api = api
        self._store = store
        self._files = str(files)
        self._hosts = hosts
        self._timer = api.clock.callLater(FIRST_SWEEP, self.run)
        api.hook(SERVER_STOPPING, self.stop)

    def stop(self, _=None):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return False

    @defer.inlineCallbacks
    def run(self):
        """One sweep; then the next is scheduled."""
        try:
            deleted = yield self.sweep()
            if deleted:
                self._api.log.info("upload expiry: {count} file(s) or slot(s) deleted",
                                   count=deleted)
        except Exception:
            self._api.log.failure("upload expiry failed")
        finally:
            if self._timer is not None:
                self._timer = self._api.clock.callLater(self._api.options.sweep_interval,
                                                        self.run)

    @defer.inlineCallbacks
    def sweep(self):
        """Delete what has expired, in batches; how many slots and files
        without a slot went."""
        now = self._api.clock.seconds()
        options = self._api.options
        batch = options.sweep_batch
        pending = datetime.fromtimestamp(now - options.slot_lifetime - UPLOAD_GRACE,
                                         timezone.utc)
        deleted = 0
        for host in self._hosts:
            max_age = self._api.options_for(host).max_age
            before = datetime.fromtimestamp(now - max_age * 86400 if max_age else 0,
                                            timezone.utc)
            while True:
                ids = yield self._store.expired(host, before, pending, batch)
                if not ids:
                    break
                yield self._api.streams.offload(self._remove, ids)
                deleted += yield self._store.delete(ids)
                if len(ids) < batch:
                    break
        names = yield self._api.streams.offload(self._list, now)
        for start in range(0, len(names), batch):
            chunk = names[start:start + batch]
            known = yield self._store.existing(chunk)
            orphans = [name for name in chunk if name not in known]
            yield self._api.streams.offload(self._remove, orphans)
            deleted += len(orphans)
        return deleted

    def _list(self, now):
        """The slot files in the directory (blocking); leftover ``.part``
        files older than :data:`PART_AGE` are removed on the way."""
        names = []
        with os.scandir(self._files) as entries:
            for entry in entries:
                if slots.ID.fullmatch(entry.name):
                    names.append(entry.name)
                elif (entry.name.endswith(".part") and slots.ID.fullmatch(entry.name[:-5])
                      and entry.stat(follow_symlinks=False).st_mtime < now - PART_AGE):
                    self._remove([entry.name])
        return names

    def _remove(self, names):
        for name in names:
            try:
                os.unlink(os.path.join(self._files, name))
            except FileNotFoundError:
                pass


def setup(api):
    root = directory(api.config)
    files = slots.prepare_directory(root)
    secret = load_secret(os.path.join(root, "secret"))
    store = api.open_store("uploads")
    service = UploadService(api, store, secret)
    served = api.add_services(lambda host: api.options_for(host).subdomain, "HTTP File Upload")
    hosts = [host for host, _ in served]
    for host, domain in served:
        api.handle_iq("get", HOST, NS_UPLOAD, service.request, host=domain)
        api.handle_iq("get", HOST, NS_INFO, service.info, host=domain)
        api.handle_iq("get", HOST, NS_ITEMS, service.items, host=domain)
        if api.http_base_url(host) is None:
            api.log.warn("upload: no [http] listener: {domain} answers slot requests with "
                         "service-unavailable", domain=domain)
    api.http_resource(slots.PREFIX, UploadResource(store, files, secret, api.clock,
                                                   api.streams.offload),
                      max_request_size=lambda: max(
                          (api.options_for(host).max_file_size for host in hosts), default=0),
                      cors="*")
    Sweep(api, store, files, hosts)
