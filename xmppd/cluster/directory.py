"""The session directory of a cluster: this node's sessions, and a mirror
of every other node's (the :class:`~xmppd.core.sessions.SessionDirectory`
interface, docs/cluster.md).

Each node keeps its own bound sessions in a
:class:`~xmppd.core.sessions.LocalSessionDirectory` and writes their
records (full JID, presence state of RFC 6121 §4, flags) to Redis, where
the other nodes read them at start and follow them through the directory
channel.  So a look-up (``get``, ``resources``) never waits for Redis: the
router stays synchronous, and a record of another node is a
:class:`RemoteRecord`, whose ``send`` and ``close`` go to its node's stream.

``all()`` and ``count()`` without a JID are about this node's sessions
(pings, ``xmppctl sessions``, the sessions gauge); ``count(user)`` and
``resources(user)`` are about the whole cluster (resource limits, presence,
delivery).
"""

import json

from xmppd.core.sessions import NO_FLAGS, LocalSessionDirectory
from xmppd.core.xmlstream import serialize
from xmppd.jid import JID, InvalidJID


def encode(session):
    """A session's record as Redis keeps it (JSON text)."""
    presence = session.presence
    return json.dumps({
        "a": session.available, "p": session.priority, "f": sorted(session.flags),
        "x": "" if presence is None else serialize(presence, default="",
                                                   declared=False).decode(),
        "h": session.hibernating,
    }, separators=(",", ":"))


def _jid(full):
    """The JID of a record's key ``full`` (text from Redis), or None."""
    try:
        return JID.normalised(full)
    except (InvalidJID, AttributeError, TypeError):
        return None


class RemoteRecord:
    """A session bound on another node (a ``SessionRecord``): what its node
    last published of it; ``send`` and ``close`` go to that node."""

    __slots__ = ("jid", "node", "available", "priority", "flags", "hibernating",
                 "_presence", "_presence_xml", "_cluster")

    def __init__(self, jid, node, fields, cluster):
        self.jid = jid
        self.node = node
        self.available = bool(fields["a"])
        self.priority = int(fields["p"])
        self.flags = frozenset(fields["f"]) or NO_FLAGS
        self.hibernating = bool(fields["h"])
        self._presence_xml = fields["x"]
        self._presence = None
        self._cluster = cluster

    @property
    def presence(self):
        """The last presence of the client, parsed when first asked for."""
        if self._presence is None and self._presence_xml:
            self._presence = self._cluster.parse(self._presence_xml.encode())
        return self._presence

    def send(self, element):
        self._cluster.forward(self.node, self.jid, element)

    def close(self, condition, text=None):
        self._cluster.forward_close(self.node, self.jid, condition, text)

    def __repr__(self):
        return f"<RemoteRecord {self.jid} on {self.node}>"


class ClusterDirectory:
    """This node's sessions (``local``) and the mirror of the other nodes';
    ``cluster`` publishes this node's changes and reaches other nodes
    (:class:`xmppd.cluster.node.ClusterNode`)."""

    def __init__(self, cluster, local=None, offline=None):
        self._cluster = cluster
        self.local = local if local is not None else LocalSessionDirectory()
        self._remote = {}  # bare JID -> {resource: RemoteRecord}
        # Called with a bare JID whose last session, on other nodes, ended
        # while none is bound here.
        self._offline = offline

    # SessionDirectory

    def get(self, full_jid):
        session = self.local.get(full_jid)
        if session is None:
            session = self._remote.get(full_jid.bare, {}).get(full_jid.resource)
        return session

    def resources(self, bare_jid):
        records = self.local.resources(bare_jid)
        remote = self._remote.get(bare_jid)
        if remote:
            records.extend(remote.values())
        return records

    def all(self):
        """This node's sessions."""
        return self.local.all()

    def count(self, bare_jid=None):
        """The sessions of ``bare_jid`` on every node, or this node's sessions."""
        if bare_jid is None:
            return self.local.count()
        return self.local.count(bare_jid) + len(self._remote.get(bare_jid, ()))

    def here(self, bare_jid):
        return self.local.count(bare_jid)

    def add(self, session):
        """Bind ``session`` here; the record it replaces may be another node's."""
        old = self.local.add(session)
        if old is None:
            old = self._drop(session.jid, None)
        self._cluster.publish_set(session)
        return old

    def remove(self, session):
        removed = self.local.remove(session)
        if removed:
            self._cluster.publish_del(session)
        return removed

    def set_presence(self, session, available, priority, presence):
        self.local.set_presence(session, available, priority, presence)
        if self.local.get(session.jid) is session:  # not one unbound already
            self._cluster.publish_set(session)

    def set_flag(self, session, name, on=True):
        self.local.set_flag(session, name, on)
        if self.local.get(session.jid) is session:
            self._cluster.publish_set(session)

    # The mirror, kept by ClusterNode

    def record(self, node, full, text):
        """The record ``text`` node ``node`` published for ``full`` (a
        string), or None if either is malformed."""
        jid = _jid(full)
        if jid is None:
            return None
        try:
            return RemoteRecord(jid, node, json.loads(text), self._cluster)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def mirror_set(self, node, full, text):
        """Node ``node`` published the record ``text`` of ``full`` (a string)."""
        record = self.record(node, full, text)
        if record is not None:
            self._remote.setdefault(record.jid.bare, {})[record.jid.resource] = record

    def mirror_del(self, node, full):
        """Node ``node`` unbound ``full``."""
        jid = _jid(full)
        if jid is not None:
            self._drop(jid, node)

    def mirror_load(self, node, records, kept=()):
        """Node ``node``'s records are ``records`` (full JID string to
        record text): those it no longer has are dropped; those of ``kept``
        (full JID strings: heard of since ``records`` were read) stay as
        they are."""
        listed = set()
        for full, text in records.items():
            jid = _jid(full)
            if jid is None:
                continue
            listed.add(jid)
            if full not in kept:
                self.mirror_set(node, full, text)
        for record in list(self._records(node)):
            if record.jid not in listed and record.jid.full not in kept:
                self._drop(record.jid, node)

    def mirrored_nodes(self):
        """The nodes the mirror holds records of."""
        return {record.node for record in self._records()}

    def _records(self, node=None):
        """The records of the mirror (of ``node``)."""
        for resources in self._remote.values():
            for record in resources.values():
                if node is None or record.node == node:
                    yield record

    def mirror_forget(self, node):
        """Node ``node`` is gone: its records, which are dropped."""
        return [self._drop(record.jid, node) for record in list(self._records(node))]

    def remote_count(self, node=None):
        """How many records of other nodes (of ``node``) the mirror holds."""
        return sum(1 for _ in self._records(node))

    def _drop(self, jid, node):
        resources = self._remote.get(jid.bare)
        record = resources.get(jid.resource) if resources else None
        if record is None or node is not None and record.node != node:
            return None
        del resources[jid.resource]
        if not resources:
            del self._remote[jid.bare]
            if node is not None:  # not replaced by a session bound here
                self._went_offline(jid.bare)
        return record

    def _went_offline(self, bare):
        if self._offline is not None and not self.local.count(bare):
            self._offline(bare)
