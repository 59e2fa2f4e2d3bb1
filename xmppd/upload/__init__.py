"""HTTP file upload (XEP-0363) pieces the module and its web resource
share: slot ids, signed PUT URLs, file names and content types, and the
private directory the files live in.

A PUT URL is ``BASE/upload/ID/NAME?e=EXPIRES&s=SIGNATURE``: ``ID`` is
random (24 bytes, §8: "long randomized parts"), ``EXPIRES`` the Unix
time after which it is refused, ``SIGNATURE`` the HMAC-SHA256, with the
server's secret, of the path (``ID`` and ``NAME``), the size and content
type announced in the slot request and ``EXPIRES``.  Nothing in it names
the account.  The GET URL is the same without the query.
"""

import hashlib
import hmac
import os
import re
import secrets
import unicodedata
from pathlib import Path
from urllib.parse import quote

NS_UPLOAD = "urn:xmpp:http:upload:0"
PREFIX = "upload"  # the path the web resource is served under
ID = re.compile(r"[A-Za-z0-9_-]{32}")
SECRET_BYTES = 32
MAX_NAME = 255  # characters of a file name (and UTF-8 bytes: most file systems' limit)
MAX_TYPE = 255
DEFAULT_TYPE = "application/octet-stream"
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(
    rf"({_TOKEN})/({_TOKEN})((?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\"))*)")
INLINE = ("image/", "video/", "audio/")  # shown by browsers; anything else is an attachment
NOT_INLINE = ("image/svg+xml",)  # an image that may hold scripts


def new_id():
    """A random slot id (24 bytes, URL-safe base64: 32 characters)."""
    return secrets.token_urlsafe(24)


def signature(secret, slot_id, filename, size, content_type, expires):
    """The signature of a PUT URL (hex HMAC-SHA256)."""
    message = "\0".join(("xmppd-upload-put", slot_id, filename, str(size), content_type,
                         str(expires)))
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def signed(secret, slot_id, filename, size, content_type, expires, given):
    """Whether ``given`` is the signature of this PUT URL (in constant time)."""
    expected = signature(secret, slot_id, filename, size, content_type, expires)
    return hmac.compare_digest(expected, given)


def path(slot_id, filename):
    """The URL path of a slot below the base URL: ``upload/ID/NAME``."""
    return f"{PREFIX}/{slot_id}/{quote(filename, safe='')}"


def put_url(base, secret, slot_id, filename, size, content_type, expires):
    sig = signature(secret, slot_id, filename, size, content_type, expires)
    return f"{base}{path(slot_id, filename)}?e={expires}&s={sig}"


def get_url(base, slot_id, filename):
    return base + path(slot_id, filename)


def sanitise_filename(name):
    """The name a file is served under: the last part of any path in
    ``name``, NFC, without control or format characters, leading dots or
    surrounding blanks, at most :data:`MAX_NAME` characters and UTF-8
    bytes with its extension kept (§4: "keep the file name and especially
    the file ending intact"); ``"file"`` if nothing is left.  The name
    never reaches the file system: files are stored under their slot's id."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = name.strip().lstrip(".").strip()
    if len(name.encode()) > MAX_NAME:
        stem, dot, extension = name.rpartition(".")
        keep = dot + extension if stem and 0 < len(extension) <= 16 else ""
        stem = name[:len(name) - len(keep)]
        while len((stem + keep).encode()) > MAX_NAME:
            stem = stem[:-1]
        name = stem.rstrip() + keep
    return name or "file"


def content_type(value):
    """The content type of a slot request, normalised (type and subtype in
    lower case), or None if it is not a valid ``type/subtype; params``."""
    if value is None or len(value) > MAX_TYPE:
        return None
    match = _CONTENT_TYPE.fullmatch(value.strip())
    if match is None:
        return None
    main, sub, params = match.groups()
    return f"{main.lower()}/{sub.lower()}{params}"


def same_type(announced, given):
    """Whether the ``Content-Type`` of a PUT is the announced one (§6),
    compared without spaces or case (RFC 9110 §8.3.1: the type, the
    subtype and a charset's value are case-insensitive; other parameters
    are compared alike)."""
    given = content_type(given)
    return given is not None and given.replace(" ", "").lower() == \
        announced.replace(" ", "").lower()


def inline(type_):
    """Whether a file of ``type_`` may be shown by a browser rather than
    downloaded: images, video and audio (not SVG)."""
    media = type_.split(";")[0].strip()
    return media.startswith(INLINE) and media not in NOT_INLINE


def disposition(filename):
    """``Content-Disposition: attachment`` with the file's name (RFC 6266)."""
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\%' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def prepare_directory(directory):
    """Create the upload directory and its ``files`` directory, private
    (0700), if need be; returns the ``files`` directory."""
    directory = Path(directory)
    files = directory / "files"
    for each in (directory, files):
        each.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(each, 0o700)
    return files
