"""The XML stream parser: restricted XML with per-stanza size limits.

RFC 6120 §11.1 restricts XMPP to a subset of XML: no comments, processing
instructions, internal or external DTD subsets, or entity references other
than the predefined ones.  Twisted's ``domish`` expat stream accepts all of
these (and expands internal entities, the "billion laughs"), and cannot bound
the bytes of one stanza before it is complete, so xmppd drives pyexpat
itself.  It builds the same ``domish.Element`` trees that the rest of Twisted
Words and wokkel understand.

Violations raise :class:`StreamError` with the RFC 6120 §4.9.3 condition:
``restricted-xml`` for the forbidden constructs, ``not-well-formed`` for broken
XML, ``unsupported-encoding`` for a stream in UTF-16 or UTF-32 (expat would
detect and accept them, but XMPP is UTF-8 only: §11.6), ``bad-format`` for a
stream header inside the stream, and ``policy-violation`` (§13.12) for a
stream header or stanza larger than the size limit, a stanza nested deeper
than :data:`MAX_DEPTH` levels (deeper trees would exhaust the recursion of
domish's serialiser) or made of more than :data:`MAX_ELEMENTS` elements (a
tree costs tens of times its size in memory), or more than
:data:`MAX_PREFIXES` namespace prefixes declared at once (domish's serialiser
takes time quadratic in their number).

The namespace prefixes a sender declared are kept on the stream header only
(where ``xmlns:db`` says that a peer supports dialback, XEP-0220), not on
stanzas: serialisation then declares its own, so that no sender can make a
recipient's stream ill-formed (domish reuses declared prefixes by name, and
would write two attributes with one name).

A stream's content namespace (``jabber:client`` or ``jabber:server``) is read
as ``jabber:client`` so that stanzas look the same whatever stream carried
them; serialisation writes them without a namespace declaration, inheriting
the stream's default namespace (RFC 6120 §4.8.3).
"""

import functools
import pyexpat
from xml.sax.saxutils import quoteattr

from twisted.words.xish import domish

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_CLIENT = "jabber:client"
NS_SERVER = "jabber:server"
NS_XML = "http://www.w3.org/XML/1998/namespace"

MAX_DEPTH = 128  # levels of elements in a stanza, the stanza included
MAX_PREFIXES = 64  # namespace prefixes declared in scope at once
MAX_ELEMENTS = 10000  # elements in one stanza: each costs far more memory than its bytes
TEXT_BUFFER = 1024  # bytes of text expat collects before a CharacterDataHandler call
TAIL = 512  # bytes of the last reads a parser keeps: a stream header fits


class StreamError(Exception):
    """A stream-level error (RFC 6120 §4.9): the stream is closed with it."""

    def __init__(self, condition, text=None):
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text


@functools.lru_cache(maxsize=None)
def _namespaces(namespaces):
    """One frozenset of a stream kind's content namespaces for all its parsers."""
    return frozenset(namespaces)


class _Stop(Exception):
    """Raised inside expat callbacks to abandon the rest of the buffer."""


class StreamParser:
    """Parses one XML stream (from its header to a restart or its end).

    Callbacks: ``on_start(element)`` with the stream header (an element with
    no children), ``on_element(element)`` for each top-level child,
    ``on_end()`` for ``</stream:stream>``.  A callback may call :meth:`stop`
    to drop everything after the current element (used before a stream
    restart, so bytes sent ahead of a TLS handshake are never processed:
    RFC 6120 §5.4.3.3).
    """

    __slots__ = ("_offset", "_priming", "_header", "_header_default", "_on_start",
                 "_on_element", "_on_end", "_max", "_content_ns", "_stopped", "_started",
                 "_fed", "_tail", "_boundary", "_stanza_start", "_elements", "_current",
                 "_text_parts", "_default_ns", "_prefixes", "_prefixes_in_scope", "_depth",
                 "_parser")

    def __init__(self, on_start, on_element, on_end, max_stanza_size,
                 content_namespaces=(NS_CLIENT,)):
        self._offset = 0  # the position in the stream of the expat parser's byte 0
        self._priming = False
        self._header = None  # (qualified name, default namespace) to re-create the parser
        self._header_default = None  # the default namespace the header declared
        self._on_start = on_start
        self._on_element = on_element
        self._on_end = on_end
        self._max = max_stanza_size
        self._content_ns = _namespaces(tuple(content_namespaces))
        self._stopped = False
        self._started = False
        self._fed = 0
        # The last bytes fed (at most TAIL, at least 8 unless fewer came):
        # to place syntax errors, and to tell whether a tag is half fed.
        self._tail = b""
        self._boundary = 0
        self._stanza_start = 0
        self._elements = 0
        self._current = None
        self._text_parts = []  # text of the current element, across reads
        self._default_ns = [""]
        self._prefixes = {}
        self._prefixes_in_scope = 0
        self._depth = 0
        self._parser = self._new_expat()

    def _new_expat(self):
        p = pyexpat.ParserCreate("UTF-8", " ")
        # Text comes in chunks of up to TEXT_BUFFER bytes: never one string
        # per line of a newline flood, and each idle stream keeps 1 KB, not
        # expat's default 8 KB.
        p.buffer_size = TEXT_BUFFER
        p.buffer_text = True
        p.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text
        p.StartNamespaceDeclHandler = self._start_ns
        p.EndNamespaceDeclHandler = self._end_ns
        p.StartDoctypeDeclHandler = self._restricted
        p.EntityDeclHandler = self._restricted
        p.ProcessingInstructionHandler = self._restricted
        p.CommentHandler = self._restricted
        p.ExternalEntityRefHandler = self._restricted
        p.SkippedEntityHandler = self._restricted
        return p

    def feed(self, data):
        """Parse ``data``; raises :class:`StreamError` on any violation."""
        if self._stopped:
            return
        if b"\0" in data:  # never in UTF-8 XML, always in UTF-16 and UTF-32
            raise StreamError("not-well-formed" if self._started else "unsupported-encoding")
        if self._parser is None:
            self._recreate()
        self._fed += len(data)
        try:
            self._parser.Parse(data, False)
        except _Stop:
            return
        except pyexpat.ExpatError as e:
            raise self._syntax_error(e, data) from None
        # A slice of a short read is the read itself: nothing is copied.
        self._tail = data[-TAIL:] if len(data) >= 8 else (self._tail + data)[-TAIL:]
        if self._fed - self._boundary > self._max:
            what = "stanza" if self._started else "stream header"
            raise StreamError("policy-violation", f"{what} larger than {self._max} bytes")

    def _syntax_error(self, error, data):
        """``restricted-xml`` for a DTD declaration inside the stream (expat
        sees a syntax error just after its ``<!``, which may have come in an
        earlier read), else ``not-well-formed``."""
        window = self._tail + data
        at = self._parser.ErrorByteIndex + self._offset - (self._fed - len(window))
        start = window.rfind(b"<!", max(at - 2, 0), at + 1)
        if start >= 0 and window[start + 2:start + 3].isalpha():
            return StreamError("restricted-xml")
        return StreamError("not-well-formed", str(error))

    def stop(self):
        """Ignore the rest of the current and every later buffer."""
        self._stopped = True

    def release(self):
        """Drop the expat parser (~10 KB) of a stream that waits between
        stanzas, with no partial tag fed; the next :meth:`feed` makes a new
        one, primed with the stream header's namespaces.  Say whether it
        was dropped."""
        if (self._parser is None or self._header is None or self._stopped
                or not self.between_stanzas()):
            return False
        self._parser = None
        self._boundary = self._fed
        self._tail = b""  # no tag is half fed: a syntax error will be in later reads
        return True

    def between_stanzas(self):
        """Whether all fed so far ends between two stanzas: none begun, no
        tag half fed (as far as the last bytes tell)."""
        return self._depth == 1 and self._current is None and self._between()

    def _between(self):
        """Whether the bytes fed end between two tags (no tag half fed), as
        far as the tail tells."""
        last = self._tail.rfind(b"<")
        if last < 0:
            return False  # cannot tell
        tag = self._tail[last:].rstrip()
        return tag.endswith(b">") and tag.count(b"'") % 2 == 0 and tag.count(b'"') % 2 == 0

    def _recreate(self):
        """A new expat parser in the state of the released one: inside the
        stream header, at byte ``self._fed`` of the stream."""
        name, default = self._header
        declarations = "".join(f" xmlns:{prefix}={quoteattr(uri)}"
                               for prefix, uri in self._prefixes.items())
        if default is not None:
            declarations += f" xmlns={quoteattr(default)}"
        header = f"<{name}{declarations}>".encode()
        self._parser = self._new_expat()
        self._default_ns, self._prefixes_in_scope, self._depth = [""], 0, 0
        self._priming = True
        try:
            self._parser.Parse(header, False)
        finally:
            self._priming = False
        self._offset = self._fed - len(header)

    def _restricted(self, *args):
        raise StreamError("restricted-xml")

    def _start_ns(self, prefix, uri):
        if prefix is None:
            self._default_ns.append(NS_CLIENT if uri in self._content_ns else uri)
            if self._depth == 0:
                self._header_default = uri
            return
        self._prefixes_in_scope += 1
        if self._prefixes_in_scope > MAX_PREFIXES:
            raise StreamError("policy-violation",
                              f"more than {MAX_PREFIXES} namespace prefixes declared")
        if self._depth == 0:
            self._prefixes[prefix] = uri

    def _end_ns(self, prefix):
        if prefix is None:
            self._default_ns.pop()
        else:
            self._prefixes_in_scope -= 1

    def _start(self, name, attrs):
        uri, _, local = name.rpartition(" ")
        if uri in self._content_ns:
            uri = NS_CLIENT
        for key in [k for k in attrs if " " in k]:
            auri, _, aname = key.rpartition(" ")
            attrs[(auri, aname)] = attrs.pop(key)
        element = domish.Element((uri, local), self._default_ns[-1], attrs,
                                 self._prefixes if self._depth == 0 else None)
        self._depth += 1
        if self._depth == 2 and (uri, local) == (NS_STREAMS, "stream"):
            raise StreamError("bad-format", "a stream header inside the stream")
        if self._depth > MAX_DEPTH + 1:
            raise StreamError("policy-violation",
                              f"a stanza nested deeper than {MAX_DEPTH} levels")
        if self._depth == 1:
            if self._priming:
                return
            self._started = True
            self._boundary = self._parser.CurrentByteIndex + self._offset
            self._header = self._header_name(uri, local)
            self._on_start(element)
            self._check_stopped()
        else:
            if self._current is not None:
                self._elements += 1
                if self._elements > MAX_ELEMENTS:
                    raise StreamError("policy-violation",
                                      f"a stanza of more than {MAX_ELEMENTS} elements")
                self._end_text()
                self._current.children.append(element)
                element.parent = self._current
            else:
                self._stanza_start = self._parser.CurrentByteIndex + self._offset
                self._elements = 1
            self._current = element

    def _header_name(self, uri, local):
        """How to write the header again (a qualified name and the default
        namespace), or None if its prefix cannot be told."""
        default = self._header_default
        if uri == default:
            return local, default
        prefix = next((p for p, u in self._prefixes.items() if u == uri), None)
        return None if prefix is None else (f"{prefix}:{local}", default)

    def _end(self, name):
        self._depth -= 1
        if self._depth == 0:
            self._on_end()
            self._check_stopped()
            return
        element = self._current
        self._end_text()
        self._current = element.parent
        if self._depth == 1:
            element.parent = None
            self._boundary = self._parser.CurrentByteIndex + self._offset
            if self._boundary - self._stanza_start > self._max:
                raise StreamError("policy-violation", f"stanza larger than {self._max} bytes")
            self._on_element(element)
            self._check_stopped()

    def _text(self, data):
        if self._current is not None:
            self._text_parts.append(data)
        else:
            self._boundary = self._parser.CurrentByteIndex + self._offset

    def _end_text(self):
        """Add the text read since the last tag as one child, even when it
        came in several reads (``str(element)`` is the first text child)."""
        if self._text_parts:
            self._current.children.append("".join(self._text_parts))
            self._text_parts = []

    def _check_stopped(self):
        if self._stopped:
            raise _Stop()


# What frames are parsed in (FrameParser): a client stream's header.
_WRAPPER = f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>".encode()


class FrameParser:
    """Elements that come one a frame: a WebSocket's text frames (RFC 7395
    §3.3.1), BOSH request bodies (XEP-0124 §4), parsed with the stream's
    restrictions as if in a ``jabber:client`` stream.  One expat parser
    serves all the frames (a new one per frame cost a tenth of a frame's
    handling); :meth:`release` drops it while the connection is quiet."""

    def __init__(self, max_size):
        self._max = max_size
        self._parser = None
        self._elements = []

    def parse(self, payload):
        """The one element of ``payload``; StreamError if it is not exactly
        one well-formed element of at most ``max_size`` bytes."""
        if self._parser is None:
            self._parser = StreamParser(lambda header: None, self._elements.append,
                                        lambda: None, self._max)
            self._parser.feed(_WRAPPER)
        try:
            self._parser.feed(payload)
            if len(self._elements) != 1 or not self._parser.between_stanzas():
                raise StreamError("not-well-formed", "a frame holds one complete element")
            return self._elements[0]
        except StreamError:
            self._parser = None
            raise
        finally:
            self._elements.clear()

    def release(self):
        """Drop the expat parser (~10 KB); the next frame makes a new one."""
        released, self._parser = self._parser is not None, None
        return released


STREAM_PREFIXES = {NS_STREAMS: "stream"}


def _prefixed(prefixes):
    """The namespaces domish writes with a prefix, each with the prefix
    :func:`_write` writes itself (those the stream header declared), or
    None (xml's, and prefixes not declared around the element: domish's)."""
    return {**{namespace: None for namespace in domish.G_PREFIXES}, **prefixes}


_STREAM_PREFIXED = _prefixed(STREAM_PREFIXES)


class _Unusual(Exception):
    """An element :func:`_write` leaves to domish's serialiser."""


def serialize(element, prefixes=STREAM_PREFIXES, default=NS_CLIENT, declared=True):
    """An element as UTF-8 bytes, in the stream's default namespace, with the
    prefixes the stream header declared (``{namespace: prefix}``).  For an
    element on its own (a WebSocket frame, RFC 7395 §3.3.3), ``default``
    is ``""`` (the element declares its namespace) and ``declared`` False
    (a prefixed child declares its prefix).

    Written as domish's ``toXml`` writes it, but by :func:`_write`, about
    twice as fast, for what stanzas and stream elements are made of
    (default namespaces, the declared prefixes such as ``stream:``, ``xml:``
    attributes); an element with a namespace prefix of its own goes to
    ``toXml``."""
    if not declared:
        prefixed = dict.fromkeys((*prefixes, *domish.G_PREFIXES))
    else:
        prefixed = _STREAM_PREFIXED if prefixes is STREAM_PREFIXES else _prefixed(prefixes)
    out = []
    try:
        _write(element, default, prefixed, out)
    except _Unusual:
        in_scope = [list(prefixes.values())] if declared else None
        return element.toXml(prefixes=dict(prefixes), defaultUri=default,
                             prefixesInScope=in_scope).encode("utf-8")
    return "".join(out).encode("utf-8")


def _write(element, parent_default, prefixed, out):
    if element.localPrefixes:
        raise _Unusual
    default = element.defaultUri
    if default is None:
        default = parent_default
    uri = element.uri
    if uri is None:
        uri = default
    name = element.name
    if uri != default or uri in prefixed:
        prefix = prefixed.get(uri)
        if prefix is None or element.defaultUri != uri:
            raise _Unusual
        # A declared prefix: its children are in the scope's default namespace.
        name, default = f"{prefix}:{name}", parent_default
    out.append("<" + name if default == parent_default else f"<{name} xmlns='{default}'")
    for key, value in element.attributes.items():
        if key.__class__ is tuple:
            if key[0] != NS_XML:
                raise _Unusual
            key = "xml:" + key[1]
        out.append(f" {key}='{_escape_attribute(value)}'")
    children = element.children
    if not children:
        out.append("/>")
        return
    out.append(">")
    for child in children:
        if child.__class__ is str:
            out.append(child.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        elif isinstance(child, domish.SerializedXML):
            out.append(child)
        elif isinstance(child, str):
            out.append(domish.escapeToXml(child))
        else:
            _write(child, default, prefixed, out)
    out.append(f"</{name}>")


def _escape_attribute(value):
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


def parse_stanza(text):
    """The element serialised in ``text`` (a stored stanza), parsed with the
    same restrictions as a stream, in ``jabber:client``."""
    data = f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>{text}".encode()
    elements = []
    StreamParser(lambda header: None, elements.append, lambda: None, len(data)).feed(data)
    return elements[0]


def stream_error_element(condition, text=None):
    """``<stream:error>`` for ``condition`` (RFC 6120 §4.9.2)."""
    error = domish.Element((NS_STREAMS, "error"))
    error.addElement((NS_STREAM_ERRORS, condition))
    if text:
        error.addElement((NS_STREAM_ERRORS, "text"), content=text)
    return error


def stream_header(stream_ns, stream_id=None, from_=None, to=None, lang="en",
                  prefixes=STREAM_PREFIXES):
    """The opening ``<stream:stream>`` tag as bytes (RFC 6120 §4.7), declaring
    ``prefixes``; the initiating side sends no ``id`` (§4.7.3)."""
    attrs = [f"xmlns='{stream_ns}'"]
    attrs += [f"xmlns:{prefix}='{ns}'" for ns, prefix in prefixes.items()]
    attrs += ["version='1.0'", f"xml:lang='{domish.escapeToXml(lang, True)}'"]
    for name, value in (("id", stream_id), ("from", from_), ("to", to)):
        if value:
            attrs.append(f"{name}='{domish.escapeToXml(value, True)}'")
    return f"<?xml version='1.0'?><stream:stream {' '.join(attrs)}>".encode()


def stream_error_condition(element):
    """The defined condition of a received ``<stream:error/>`` (RFC 6120 §4.9.3)."""
    for child in element.elements(NS_STREAM_ERRORS):
        if child.name != "text":
            return child.name
    return "undefined-condition"
