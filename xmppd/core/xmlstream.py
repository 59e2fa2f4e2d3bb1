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
XML, ``policy-violation`` for a stanza larger than the limit (§13.12).

A stream's content namespace (``jabber:client`` or ``jabber:server``) is read
as ``jabber:client`` so that stanzas look the same whatever stream carried
them; serialisation writes them without a namespace declaration, inheriting
the stream's default namespace (RFC 6120 §4.8.3).
"""

import pyexpat

from twisted.words.xish import domish

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_CLIENT = "jabber:client"
NS_SERVER = "jabber:server"
NS_XML = "http://www.w3.org/XML/1998/namespace"


class StreamError(Exception):
    """A stream-level error (RFC 6120 §4.9): the stream is closed with it."""

    def __init__(self, condition, text=None):
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text


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

    def __init__(self, on_start, on_element, on_end, max_stanza_size,
                 content_namespaces=(NS_CLIENT,)):
        self._on_start = on_start
        self._on_element = on_element
        self._on_end = on_end
        self._max = max_stanza_size
        self._content_ns = frozenset(content_namespaces)
        self._stopped = False
        self._started = False
        self._fed = 0
        self._boundary = 0
        self._stanza_start = 0
        self._current = None
        self._default_ns = [""]
        self._prefixes = {}
        self._depth = 0

        p = self._parser = pyexpat.ParserCreate("UTF-8", " ")
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

    def feed(self, data):
        """Parse ``data``; raises :class:`StreamError` on any violation."""
        if self._stopped:
            return
        self._fed += len(data)
        try:
            self._parser.Parse(data, False)
        except _Stop:
            return
        except pyexpat.ExpatError as e:
            at = self._parser.ErrorByteIndex - (self._fed - len(data))
            start = data.rfind(b"<!", 0, at + 1)
            if 0 <= at - start <= 2 and data[start:start + 9] != b"<![CDATA[":
                # A DTD declaration inside the stream: not merely malformed.
                raise StreamError("restricted-xml") from None
            raise StreamError("not-well-formed", str(e)) from None
        if self._started and self._fed - self._boundary > self._max:
            raise StreamError("policy-violation",
                              f"stanza larger than {self._max} bytes")

    def stop(self):
        """Ignore the rest of the current and every later buffer."""
        self._stopped = True

    def _restricted(self, *args):
        raise StreamError("restricted-xml")

    def _start_ns(self, prefix, uri):
        if prefix is None:
            self._default_ns.append(NS_CLIENT if uri in self._content_ns else uri)
        else:
            self._prefixes[prefix] = uri

    def _end_ns(self, prefix):
        if prefix is None:
            self._default_ns.pop()

    def _start(self, name, attrs):
        uri, _, local = name.rpartition(" ")
        if uri in self._content_ns:
            uri = NS_CLIENT
        for key in [k for k in attrs if " " in k]:
            auri, _, aname = key.rpartition(" ")
            attrs[(auri, aname)] = attrs.pop(key)
        element = domish.Element((uri, local), self._default_ns[-1], attrs,
                                 self._prefixes or None)
        self._prefixes = {}
        self._depth += 1
        if self._depth == 1:
            self._started = True
            self._boundary = self._parser.CurrentByteIndex
            self._on_start(element)
            self._check_stopped()
        else:
            if self._current is not None:
                self._current.children.append(element)
                element.parent = self._current
            else:
                self._stanza_start = self._parser.CurrentByteIndex
            self._current = element

    def _end(self, name):
        self._depth -= 1
        if self._depth == 0:
            self._on_end()
            self._check_stopped()
            return
        element = self._current
        self._current = element.parent
        if self._depth == 1:
            element.parent = None
            self._boundary = self._parser.CurrentByteIndex
            if self._boundary - self._stanza_start > self._max:
                raise StreamError("policy-violation", f"stanza larger than {self._max} bytes")
            self._on_element(element)
            self._check_stopped()

    def _text(self, data):
        if self._current is not None:
            self._current.children.append(data)
        else:
            self._boundary = self._parser.CurrentByteIndex

    def _check_stopped(self):
        if self._stopped:
            raise _Stop()


_STREAM_PREFIX = {NS_STREAMS: "stream"}


def serialize(element):
    """An element as UTF-8 bytes, in the stream's default namespace, with the
    ``stream:`` prefix the header declared."""
    return element.toXml(prefixes=_STREAM_PREFIX, defaultUri=NS_CLIENT,
                         prefixesInScope=[["stream"]]).encode("utf-8")


def stream_error_element(condition, text=None):
    """``<stream:error>`` for ``condition`` (RFC 6120 §4.9.2)."""
    error = domish.Element((NS_STREAMS, "error"))
    error.addElement((NS_STREAM_ERRORS, condition))
    if text:
        error.addElement((NS_STREAM_ERRORS, "text"), content=text)
    return error


def stream_header(stream_ns, stream_id, from_=None, to=None, lang="en"):
    """The opening ``<stream:stream>`` tag as bytes (RFC 6120 §4.7)."""
    attrs = [f"xmlns='{stream_ns}'", f"xmlns:stream='{NS_STREAMS}'",
             f"id='{stream_id}'", "version='1.0'",
             f"xml:lang='{domish.escapeToXml(lang, True)}'"]
    if from_:
        attrs.append(f"from='{domish.escapeToXml(from_, True)}'")
    if to:
        attrs.append(f"to='{domish.escapeToXml(to, True)}'")
    return f"<?xml version='1.0'?><stream:stream {' '.join(attrs)}>".encode()
