"""Reading XEP-0227 files one ``<user/>`` at a time.

The XML is restricted as xmppd's streams are (:mod:`xmppd.core.xmlstream`):
no DTD, so no entity declarations and no entity but the predefined ones
(no "billion laughs", no external entities), UTF-8 only, and a ``<user/>``
nested at most :data:`~xmppd.core.xmlstream.MAX_DEPTH` levels deep and of
at most :data:`MAX_USER_ELEMENTS` elements.  Comments and processing
instructions, harmless in a file, are ignored.

XInclude (XEP-0227 §5): an ``<xi:include href='...'/>`` child of
``<server-data/>`` (a file whose root is a ``<host/>``) or of ``<host/>``
(a file whose root is a ``<user/>``) is read, as ejabberd's
``export_piefxis`` writes them; ``href`` must be a relative reference to a
file under the directory of the file given on the command line.  An
include inside a ``<user/>`` is user data and is not processed (§6).
"""

import os
import pyexpat
from urllib.parse import unquote, urlsplit

from twisted.words.xish import domish

from xmppd.core.xmlstream import MAX_DEPTH

NS_PIE = "urn:xmpp:pie:0"
NS_PIE_DRAFT = "http://www.xmpp.org/extensions/xep-0227.html#ns"  # before version 1.0
PIE_NAMESPACES = (NS_PIE, NS_PIE_DRAFT)
NS_XINCLUDE = "http://www.w3.org/2001/XInclude"
MAX_USER_ELEMENTS = 1_000_000  # elements of one <user/>: its archive included
MAX_INCLUDE_DEPTH = 8
CHUNK = 65536

# What each structural element may hold, and what an include there must be.
_CHILD = {"server-data": "host", "host": "user"}


class BadFile(Exception):
    """The file cannot be read as XEP-0227 data; the message names it."""


class Reader:
    """Reads files and calls ``on_user(domain, user)`` for each complete
    ``<user/>`` element (``domain`` the ``jid`` of its ``<host/>``, as
    written) and ``on_skip(what, why)`` for what is not read."""

    def __init__(self, on_user, on_skip):
        self.on_user = on_user
        self.on_skip = on_skip

    def read(self, path):
        """Read the file at ``path`` (a ``<server-data/>``); BadFile."""
        path = os.path.abspath(path)
        _File(self, path, os.path.dirname(path), "server-data", None, (path,)).parse()


def _name(element):
    return f"<{element[1]} xmlns='{element[0]}'/>"


class _File:
    """One file of the data, its root expected to be ``root``."""

    def __init__(self, reader, path, top, root, host, chain):
        self.reader = reader
        self.path = path
        self.top = top  # the directory includes must stay under
        self.root = root
        self.host = host
        self.chain = chain  # the files including this one, for loops
        self.levels = []  # structural elements open: "server-data", "host", "skip"
        self.user = None  # the <user/> element being built
        self.current = None
        self.depth = 0  # inside the <user/>
        self.elements = 0
        self.text = []
        self.defaults = [""]
        self.parser = parser = pyexpat.ParserCreate("UTF-8", " ")
        parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.buffer_text = True
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        parser.StartNamespaceDeclHandler = self._start_ns
        parser.EndNamespaceDeclHandler = self._end_ns
        for handler in ("StartDoctypeDeclHandler", "EntityDeclHandler",
                        "ExternalEntityRefHandler", "SkippedEntityHandler"):
            setattr(parser, handler, self._restricted)

    def fail(self, message):
        raise BadFile(f"{self.path}: {message}")

    def parse(self):
        try:
            with open(self.path, "rb") as f:
                while chunk := f.read(CHUNK):
                    if b"\0" in chunk:
                        self.fail("not UTF-8 XML (XEP-0227 files are UTF-8)")
                    self.parser.Parse(chunk, False)
                self.parser.Parse(b"", True)
        except pyexpat.ExpatError as e:
            self.fail(f"not well-formed XML: {e}")
        except OSError as e:
            self.fail(f"cannot read: {e.strerror}")

    def _restricted(self, *args):
        self.fail("a DTD or entity declaration is not allowed (restricted XML, as in XMPP)")

    def _start_ns(self, prefix, uri):
        if prefix is None:
            self.defaults.append(uri)

    def _end_ns(self, prefix):
        if prefix is None:
            self.defaults.pop()

    def _start(self, name, attrs):
        uri, _, local = name.rpartition(" ")
        for key in [k for k in attrs if " " in k]:
            auri, _, aname = key.rpartition(" ")
            attrs[(auri, aname)] = attrs.pop(key)
        if self.user is not None:
            self._child(uri, local, attrs)
        elif not self.levels:
            self._root(uri, local, attrs)
        else:
            self._structure(uri, local, attrs)

    def _root(self, uri, local, attrs):
        if uri not in PIE_NAMESPACES or local != self.root:
            self.fail(f"not XEP-0227 data: the root element is {_name((uri, local))}, "
                      f"expected <{self.root} xmlns='{NS_PIE}'/>")
        if local == "user":
            self._begin_user(uri, local, attrs)
        else:
            self._open(local, attrs)

    def _open(self, local, attrs):
        if local == "host":
            self.host = attrs.get("jid")
            if not self.host:
                self.reader.on_skip(f"{self.path}: <host/>", "it has no jid")
                local = "skip"
        self.levels.append(local)

    def _structure(self, uri, local, attrs):
        level = self.levels[-1]
        child = _CHILD.get(level)
        if level == "skip":
            self.levels.append("skip")
        elif uri in PIE_NAMESPACES and local == child:
            if local == "user":
                self._begin_user(uri, local, attrs)
            else:
                self._open(local, attrs)
        elif (uri, local) == (NS_XINCLUDE, "include"):
            self._include(attrs, child)
            self.levels.append("skip")
        else:
            self.reader.on_skip(f"{self.path}: {_name((uri, local))} in <{level}/>",
                                "unknown element")
            self.levels.append("skip")

    def _include(self, attrs, root):
        """Read the file an XInclude names, its root being ``root``."""
        href = attrs.get("href", "")
        parts = urlsplit(href)
        where = f"{self.path}: <xi:include href='{href}'/>"
        if attrs.get("parse", "xml") != "xml" or "xpointer" in attrs or not href:
            self.reader.on_skip(where, "only href, without parse or xpointer, is supported")
            return
        target = os.path.normpath(os.path.join(os.path.dirname(self.path), unquote(parts.path)))
        if parts.scheme or parts.netloc or os.path.isabs(unquote(parts.path)) \
                or os.path.commonpath([self.top, target]) != self.top:
            self.reader.on_skip(where, f"not a relative reference to a file under {self.top}")
            return
        if target in self.chain:
            self.fail(f"{href} includes itself")
        if len(self.chain) > MAX_INCLUDE_DEPTH:
            self.fail(f"{href}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
        _File(self.reader, target, self.top, root, self.host, self.chain + (target,)).parse()

    def _begin_user(self, uri, local, attrs):
        if self.host is None:
            self.fail("a <user/> outside a <host/>")
        self.user = self.current = domish.Element((uri, local), self.defaults[-1], attrs)
        self.depth, self.elements = 1, 1
        self.levels.append("user")

    def _child(self, uri, local, attrs):
        self.elements += 1
        self.depth += 1
        if self.elements > MAX_USER_ELEMENTS:
            self.fail(f"a <user/> of more than {MAX_USER_ELEMENTS} elements")
        if self.depth > MAX_DEPTH:
            self.fail(f"a <user/> nested deeper than {MAX_DEPTH} levels")
        self._flush_text()
        element = domish.Element((uri, local), self.defaults[-1], attrs)
        self.current.children.append(element)
        element.parent = self.current
        self.current = element

    def _end(self, name):
        if self.user is None:
            self.levels.pop()
            return
        self._flush_text()
        self.depth -= 1
        if self.depth:
            self.current = self.current.parent
            return
        user, self.user, self.current = self.user, None, None
        self.levels.pop()
        self.reader.on_user(self.host, user)

    def _text(self, data):
        if self.current is not None:
            self.text.append(data)

    def _flush_text(self):
        if self.text:
            self.current.children.append("".join(self.text))
            self.text = []
