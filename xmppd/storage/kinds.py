"""The kinds of store, as interfaces (``typing.Protocol``).

A module asks for a store by kind, ``server.storage.open(kind, name)``
(``ModuleAPI.open_store``); ``KINDS`` maps each kind to its interface.  The
``accounts``, ``roster``, ``offline`` and ``uploads`` stores are shared by every module;
``keyval``, ``hostval``, ``archive``, ``pubsub``, ``rooms`` and ``room_archive`` stores
are scoped: each name is a store of its own (``SCOPED``).  The SQL
implementation's methods block; the server's
(:class:`xmppd.storage.deferred.AsyncStore`) return Deferreds of the same
results, built from these interfaces.

Users are identified by ``(username, domain)``, both already normalised by
the caller (RFC 7622).  Methods marked :func:`bulk` are high-volume writes
that may wait behind the reads logins and interactive requests need.
"""

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from . import RosterItem, ScramKeys

INTERACTIVE = "interactive"
BULK = "bulk"


def bulk(method):
    """Mark an interface method as a bulk write (see
    :class:`xmppd.storage.deferred.StoragePool`)."""
    method.lane = BULK
    return method


def lane(method) -> str:
    """The lane calls of an interface method run in."""
    return getattr(method, "lane", INTERACTIVE)


class AccountStore(Protocol):
    """Accounts and their SCRAM keys (RFC 5802 §3), by hash name
    (``"SHA-1"``, ``"SHA-256"``, ``"SHA-512"``): never a password."""

    def create(self, username: str, domain: str, keys: dict[str, ScramKeys]) -> None:
        """Create an account; UserExists if it exists."""

    def set_credentials(self, username: str, domain: str, keys: dict[str, ScramKeys]) -> None:
        """Replace all the keys of an account; UserNotFound if none."""

    def get_credentials(self, username: str, domain: str) -> dict[str, ScramKeys] | None:
        """The keys of an account; None if no such account."""

    def add_credentials(
        self, username: str, domain: str, keys: dict[str, ScramKeys],
        current: dict[str, ScramKeys],
    ) -> bool:
        """Add ``keys`` (of hash names the account lacks) if the account's
        keys are still ``current``; whether they were added (not if the
        account is gone or its password changed meanwhile)."""

    def delete(self, username: str, domain: str) -> None:
        """Delete an account and everything stored for it; UserNotFound if
        none."""

    def exists(self, username: str, domain: str) -> bool:
        """Whether the account exists."""

    def list(self, domain: str | None = None) -> list[tuple[str, str]]:
        """All ``(username, domain)`` pairs, or those of one domain, sorted."""


class RosterStore(Protocol):
    """Rosters (RFC 6121 §2) with the subscription states of §3; each change
    increments the roster version (§2.6)."""

    def get(self, username: str, domain: str) -> tuple[int, list[RosterItem]]:
        """The version and the items sorted by JID; UserNotFound if no such
        account."""

    def get_item(self, username: str, domain: str, jid: str) -> RosterItem | None:
        """One item; None if absent (or no such account)."""

    def set_item(
        self, username: str, domain: str, item: RosterItem, max_items: int | None = None
    ) -> int:
        """Add or replace the item for ``item.jid``; the new version.
        RosterFull if a new item would make the roster exceed ``max_items``."""

    def remove_item(self, username: str, domain: str, jid: str) -> int | None:
        """Remove the item for ``jid``; the new version, or None if there
        was no such item."""


class KeyValueStore(Protocol):
    """One named store of small values per user (vCard, private XML, block
    list...): text values under text keys (namespaces, bare JIDs...)."""

    def get(self, username: str, domain: str, key: str) -> str | None:
        """The value of ``key``; None if absent (or no such account)."""

    def get_all(self, username: str, domain: str) -> dict[str, str]:
        """Every value by key; empty if no such account."""

    def set(self, username: str, domain: str, key: str, value: str) -> None:
        """Set the value of ``key``; UserNotFound if no such account."""

    def set_many(self, username: str, domain: str, values: Mapping[str, str | None]) -> None:
        """Set (or, for None, delete) several keys in one transaction: if
        one fails, none is written."""

    def delete(self, username: str, domain: str, key: str) -> None:
        """Delete ``key`` (nothing if absent or no such account)."""

    def delete_all(self, username: str, domain: str) -> None:
        """Delete every value of the user in this store."""


class HostValueStore(Protocol):
    """Values of a hosted domain rather than of an account (invitations,
    API tokens, abuse reports...), by key; ``domain`` may be ``""`` for
    values of the whole server.  Nothing here goes with an account."""

    def get(self, domain: str, key: str) -> str | None:
        """The value of ``key``; None if there is none."""

    def items(self, domain: str) -> dict[str, str]:
        """Every value of ``domain``, by key."""

    def add(self, domain: str, key: str, value: str) -> bool:
        """Store ``value`` under a new ``key``; False (and nothing changed)
        if the key exists."""

    def set(self, domain: str, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any."""

    def take(self, domain: str, key: str) -> str | None:
        """Delete ``key`` and return its value, atomically: of two callers
        taking one key, one gets the value and the other None."""

    def delete(self, domain: str, key: str) -> bool:
        """Delete ``key``; whether it existed."""


class Appended(enum.Enum):
    """What became of one message appended to the offline store."""

    STORED = "stored"
    FULL = "full"  # the account already has as many messages as the limit allows
    NO_ACCOUNT = "no-account"


class OfflineStore(Protocol):
    """Messages (serialised XML) kept for users who are offline (RFC 6121
    §8.5.2.2.1, XEP-0160), returned oldest first.  ``limit`` is the number of
    messages an account may have (None: no limit)."""

    @bulk
    def append(self, username: str, domain: str, stanza: str, limit: int | None) -> bool:
        """Keep ``stanza``; False (nothing kept) if the account is full,
        UserNotFound if there is no such account."""

    @bulk
    def append_many(
        self, messages: Sequence[tuple[str, str, str]], limit: int | None
    ) -> list[Appended]:
        """Keep several ``(username, domain, stanza)`` in one transaction
        (accounts may differ); what became of each, in order."""

    def take_all(self, username: str, domain: str) -> list[str]:
        """Remove and return the user's messages; empty if no such account."""

    def peek(self, username: str, domain: str) -> list[str]:
        """The user's messages, left in place (for an export); empty if no
        such account."""

    def count(self, username: str, domain: str) -> int:
        """How many messages the user has (0 if no such account)."""

    def total(self) -> int:
        """How many messages all users have."""


DIRECTIONS = ("in", "out")  # received by the owner, sent by the owner

ID_TIME_SHIFT = 12  # an archive id: microseconds since the Unix epoch << 12 | 12 low bits
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def archive_id_time(archive_id: str) -> datetime:
    """The time (UTC) the archive id ``archive_id`` carries."""
    return _EPOCH + timedelta(microseconds=int(archive_id) >> ID_TIME_SHIFT)


def first_archive_id(moment: datetime) -> int:
    """The smallest archive id of the microsecond ``moment`` (timezone-aware)."""
    if moment.tzinfo is None:
        raise ValueError(f"a time needs a time zone: {moment!r}")
    return ((moment - _EPOCH) // _MICROSECOND) << ID_TIME_SHIFT


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    """One message of an archive (XEP-0313 §4): ``id`` is the archive's own
    id for it (its XEP-0359 stanza-id), ``stanza_id`` the id the stanza
    carried."""

    id: str
    with_jid: str
    stanza_id: str | None
    timestamp: datetime  # UTC, archive_id_time(id)
    direction: str  # one of DIRECTIONS
    xml: str


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """One message to archive for the account ``username@domain`` under the
    archive id ``id`` (:meth:`ArchiveStore.append_many`)."""

    username: str
    domain: str
    id: str
    with_jid: str  # a normalised bare or full JID
    stanza_id: str | None
    direction: str  # one of DIRECTIONS
    xml: str


@dataclass(frozen=True, slots=True)
class ArchivePage:
    """One page of a query (XEP-0059 §2, XEP-0313 §4.3): its messages in
    chronological order, the ids of the first and last (None on an empty
    page), whether the page completes the result in the direction of
    paging (the ``complete`` attribute of XEP-0313's ``<fin/>``), and, when
    asked for, how many messages the whole result holds (XEP-0059 §2.7
    ``<count/>``)."""

    items: list[ArchivedMessage]
    first: str | None
    last: str | None
    complete: bool
    count: int | None = None


class ArchiveStore(Protocol):
    """A named message archive per user (XEP-0313).

    The caller gives each message its archive id (its XEP-0359 stanza-id),
    so that it can stamp a message before the store has it: the decimal
    string of an integer from 1 to 2**63 - 1, without leading zeros,
    unique in the named archive (over all users), and carrying the time
    the message was archived (microseconds since the epoch in the bits
    above ``ID_TIME_SHIFT``, :func:`first_archive_id`).  The archive's order
    (XEP-0313 §3.1) and its ``start``/``end`` filters (§4.1.2) are by id.
    Storing an id the named archive already holds is a StorageError."""

    @bulk
    def append(
        self,
        username: str,
        domain: str,
        with_jid: str,
        stanza_id: str | None,
        direction: str,
        xml: str,
        *,
        id: str,
    ) -> None:
        """Archive a message exchanged with ``with_jid`` (a normalised bare
        or full JID) under the archive id ``id``.  UserNotFound if no such
        account."""

    @bulk
    def append_many(self, entries: Sequence[ArchiveRecord]) -> list[bool]:
        """Archive several messages (accounts may differ) in one
        transaction; for each, in order, whether it was stored (False: no
        such account, the others are stored all the same)."""

    def last_id(self) -> str | None:
        """The largest id the named archive holds, over all users; None if
        it is empty."""

    def find(
        self,
        username: str,
        domain: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        with_jid: str | None = None,
        ids: Sequence[str] | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        after: str | None = None,
        before: str | None = None,
        limit: int = 50,
        count: bool = False,
    ) -> ArchivePage:
        """A page of at most ``limit`` messages from ``start`` to ``end``
        (timezone-aware, both inclusive to the microsecond, XEP-0313
        §4.1.2: by the time their ids carry), exchanged with ``with_jid``: a
        bare JID matches it and its full JIDs, a full JID only itself
        (§4.1.1); only those of ``ids``, only those after the id
        ``after_id`` and before the id ``before_id`` (exclusive, §4.1.3).
        Paging (XEP-0059 §2.2, §2.5): the first messages after the id
        ``after``; or the last ones before the id ``before``
        (``before=""``: the last page); else the first page.  With
        ``count``, the page tells how many messages match the filters (a
        pass over them all: costly for a large archive).  An id of
        ``ids``, ``after_id``, ``before_id``, ``after`` or ``before`` that
        the user's archive does not hold is UnknownArchiveId (XEP-0313
        §4.1.3, XEP-0059 §2.4)."""

    def bounds(
        self, username: str, domain: str
    ) -> tuple[ArchivedMessage | None, ArchivedMessage | None]:
        """The first and the last message of the user's archive (XEP-0313
        §5 metadata); both None if it is empty (or no such account)."""

    def replace(self, username: str, domain: str, archive_id: str, xml: str) -> bool:
        """Replace the stanza of the user's message ``archive_id`` by
        ``xml`` (a tombstone, XEP-0425 §5); False if there is no such
        message."""

    def remove(self, username: str, domain: str, archive_id: str) -> bool:
        """Delete the user's message ``archive_id`` (one the server refused
        after archiving it, XEP-0313 §5.1); False if there is no such
        message."""

    @bulk
    def trim(self, username: str, domain: str, keep: int) -> int:
        """Delete the user's messages but the newest ``keep`` (a quota: only
        the oldest go, XEP-0313 §3.2); how many went."""

    @bulk
    def delete_until(
        self,
        *,
        up_to: str | None = None,
        before: datetime | None = None,
        username: str | None = None,
        domain: str | None = None,
    ) -> int:
        """Delete the messages up to the id ``up_to`` (inclusive) and/or
        those whose id carries a time before ``before`` (retention), of one user or, without
        ``username``/``domain``, of every user; how many went."""


AFFILIATIONS = ("owner", "publisher", "publish-only", "member", "outcast")  # XEP-0060 §4.1
SUBSCRIPTION_STATES = ("subscribed", "pending", "unconfigured")  # XEP-0060 §4.2

FormValues = Mapping[str, str | list[str]]  # data form values by field var (XEP-0004)


@dataclass(frozen=True, slots=True)
class PubSubItem:
    """One item of a node (XEP-0060 §7.1): ``id`` is its ItemID,
    ``payload`` the serialised XML of its payload ("" for none)."""

    id: str
    publisher: str  # JID text
    payload: str
    published: datetime  # timezone-aware; read back in UTC


@dataclass(frozen=True, slots=True)
class PubSubNode:
    """A node (XEP-0060 §8.1) and its configuration by field var
    (``pubsub#max_items``...)."""

    name: str
    config: dict[str, str | list[str]]


@dataclass(frozen=True, slots=True)
class PubSubSubscription:
    """A subscription to a node (XEP-0060 §6.1): its subscriber (a full or
    bare JID), SubID, state (one of SUBSCRIPTION_STATES) and subscription
    options by field var (§6.3)."""

    jid: str
    subid: str
    state: str
    options: dict[str, str | list[str]]


class PubSubStore(Protocol):
    """Nodes of publish-subscribe services (XEP-0060): ``service`` is a
    bare JID (an account's personal eventing service, XEP-0163,
    ``"user@domain"``) or a domain (``"pubsub.example.com"``).  The items
    of a node are in the order of their publication (a republished item is
    the newest); reads of an unknown node find nothing.  A NodeID has at
    most 1023 characters, an ItemID or a SubID 255: a longer one is a
    ValueError, as is a value of a configuration or of subscription options
    that is neither a string nor a list of strings."""

    def create_node(self, service: str, node: str, config: FormValues,
                    account: tuple[str, str] | None = None,
                    max_nodes: int | None = None) -> None:
        """Create a node (XEP-0060 §8.1): NodeExists if it exists,
        TooManyNodes if the service already has ``max_nodes`` nodes.  With
        ``account`` (username, domain), the node belongs to that account
        and goes when it is deleted: UserNotFound if no such account."""

    def get_node(self, service: str, node: str) -> PubSubNode | None:
        """A node; None if absent."""

    def nodes(self, service: str) -> list[PubSubNode]:
        """Every node of the service, sorted by name."""

    def configure_node(self, service: str, node: str, config: FormValues) -> None:
        """Replace the configuration of a node (XEP-0060 §8.2);
        NodeNotFound if absent."""

    def delete_node(self, service: str, node: str) -> bool:
        """Delete a node with its items, affiliations and subscriptions
        (XEP-0060 §8.4); False if absent."""

    def publish(self, service: str, node: str, item: PubSubItem,
                max_items: int | None = None) -> list[str]:
        """Store an item (XEP-0060 §7.1): one with the same id is replaced
        and becomes the newest.  Then keep only the newest ``max_items``
        (None: no limit; 0: none, not even this one); the ids of the items
        removed to make room, oldest first (not the replaced one, nor this
        one).  NodeNotFound if the node is absent."""

    def get_items(self, service: str, node: str, ids: Sequence[str] | None = None,
                  limit: int | None = None) -> list[PubSubItem]:
        """Items of a node, newest first (XEP-0060 §6.5): with ``ids``,
        only those of them that exist; with ``limit``, the newest
        ``limit``."""

    def last_items(self, service: str, nodes: Sequence[str]) -> dict[str, PubSubItem]:
        """The newest item of each node of ``nodes`` that has one, by
        node (XEP-0060 §6.1.7), read at once."""

    def count_items(self, service: str, node: str) -> int:
        """How many items a node has."""

    def retract(self, service: str, node: str, item_id: str) -> bool:
        """Delete an item (XEP-0060 §7.2); False if absent."""

    def purge(self, service: str, node: str) -> list[str]:
        """Delete every item of a node (XEP-0060 §8.5); their ids, oldest
        first."""

    def affiliations(self, service: str, node: str) -> dict[str, str]:
        """The affiliation (one of AFFILIATIONS) of each JID that has one
        (XEP-0060 §8.9), by bare JID."""

    def set_affiliation(self, service: str, node: str, jid: str,
                        affiliation: str | None) -> None:
        """Set the affiliation of a bare JID (XEP-0060 §8.9); None or
        ``"none"`` removes it.  NodeNotFound if the node is absent."""

    def subscriptions(self, service: str, node: str) -> list[PubSubSubscription]:
        """The subscriptions to a node (XEP-0060 §8.8), sorted by JID and
        SubID."""

    def subscribe(self, service: str, node: str, subscription: PubSubSubscription) -> None:
        """Add the subscription, or replace the one of the same JID and
        SubID (XEP-0060 §6.1); NodeNotFound if the node is absent."""

    def unsubscribe(self, service: str, node: str, jid: str, subid: str | None = None) -> bool:
        """Remove the subscription of ``jid`` with ``subid``, or with None
        every subscription of ``jid`` (XEP-0060 §6.2); False if there was
        none."""

    def subscriptions_of(self, service: str, jid: str) -> list[tuple[str, PubSubSubscription]]:
        """The subscriptions of ``jid`` (that very JID text) to every node
        of the service (XEP-0060 §5.6), as ``(node, subscription)`` sorted
        by node and SubID."""

    def delete_service(self, service: str) -> None:
        """Delete every node of the service."""


ROOM_AFFILIATIONS = ("owner", "admin", "member", "outcast")  # XEP-0045 §5.2


@dataclass(frozen=True, slots=True)
class Room:
    """A room of a multi-user chat service (XEP-0045): its name (the room's
    localpart, normalised), its configuration by muc#roomconfig field var
    (§10.2), the ``<message/>`` that set its subject (serialised XML, ""
    for none, §8.1) and its affiliations (one of ROOM_AFFILIATIONS) by bare
    JID (§5.2)."""

    name: str
    config: dict[str, str | list[str]]
    subject: str
    affiliations: dict[str, str]


class RoomStore(Protocol):
    """Rooms of multi-user chat services (XEP-0045): ``service`` is the
    service's domain (``conference.example.com``).  A room name has 1 to
    1023 characters: another is a ValueError, as is an affiliation not of
    ROOM_AFFILIATIONS or a configuration value that is neither a string nor
    a list of strings.  The ``room_archive`` store of the same name holds
    the rooms' archives (XEP-0313 §5)."""

    def create_room(self, service: str, room: Room, max_rooms: int | None = None) -> None:
        """Create a room with its configuration, subject and affiliations
        (XEP-0045 §10.1): RoomExists if it exists, TooManyRooms if the
        service already has ``max_rooms`` rooms."""

    def get_room(self, service: str, name: str) -> Room | None:
        """A room; None if absent."""

    def rooms(self, service: str) -> list[Room]:
        """Every room of the service, sorted by name, with its affiliations
        (read in two queries, whatever the number of rooms)."""

    def configure_room(self, service: str, name: str, config: FormValues) -> None:
        """Replace the configuration of a room (XEP-0045 §10.2);
        RoomNotFound if absent."""

    def set_subject(self, service: str, name: str, subject: str) -> None:
        """Replace the ``<message/>`` that set the subject (XEP-0045 §8.1,
        "" for none); RoomNotFound if absent."""

    def set_affiliation(self, service: str, name: str, jid: str,
                        affiliation: str | None) -> None:
        """Set the affiliation of a bare JID (XEP-0045 §9, §10); None or
        ``"none"`` removes it.  RoomNotFound if the room is absent."""

    def owned_rooms(self, service: str, jid: str) -> list[str]:
        """The names of the rooms of the service of which the bare JID
        ``jid`` is an owner, sorted."""

    def delete_room(self, service: str, name: str) -> bool:
        """Delete a room with its affiliations and its archive (XEP-0045
        §10.9); False if absent."""


@dataclass(frozen=True, slots=True)
class Upload:
    """A slot of an HTTP upload service (XEP-0363 §4) of the account
    ``username@domain``: ``id`` is the random part of its URLs (1 to 64
    characters), ``size`` the bytes announced, ``stored`` the bytes
    uploaded (None until the file is stored, then ``size``)."""

    id: str
    username: str
    domain: str
    filename: str  # sanitised, 1 to 255 characters
    size: int
    content_type: str  # at most 255 characters
    created: datetime  # timezone-aware; read back in UTC
    stored: int | None = None


class UploadStore(Protocol):
    """Slots and uploaded files of HTTP upload services (XEP-0363): only
    their metadata (the files are kept elsewhere).  A slot goes with its
    account.  A *pending* slot is one whose file is not stored yet."""

    def add(self, upload: Upload, *, quota: int | None = None,
            daily_quota: int | None = None, pending_since: datetime | None = None) -> None:
        """Record a new slot, refused (nothing recorded) with QuotaExceeded
        if the bytes of the account's slots would exceed ``quota``
        (``kind="quota"``) or those of its slots created in the 24 hours
        up to ``upload.created`` would exceed ``daily_quota``
        (``kind="daily"``, with the time at which enough of them are older
        than 24 hours as ``retry``).  Pending slots created before
        ``pending_since`` (their URL expired) do not count.  UserNotFound
        if no such account; ValueError for an id, filename or content type
        out of bounds; a duplicate id is a StorageError."""

    def get(self, id: str) -> Upload | None:
        """A slot; None if absent."""

    def mark_stored(self, id: str) -> bool:
        """The file of pending slot ``id`` is stored (``stored`` becomes
        its size); False if there is no such pending slot (absent, or
        stored already)."""

    def uploads(self, username: str, domain: str) -> list[Upload]:
        """The account's slots, oldest first (empty if no such account)."""

    def expired(self, domain: str, before: datetime, pending_before: datetime,
                limit: int) -> list[str]:
        """The ids of at most ``limit`` slots of the accounts of ``domain``
        created before ``before``, or pending and created before
        ``pending_before``, oldest first."""

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` that are slots."""

    def delete(self, ids: Sequence[str]) -> int:
        """Delete the slots ``ids``; how many there were."""


KINDS = {
    "accounts": AccountStore,
    "roster": RosterStore,
    "keyval": KeyValueStore,
    "hostval": HostValueStore,
    "offline": OfflineStore,
    "archive": ArchiveStore,
    "pubsub": PubSubStore,
    "rooms": RoomStore,
    # ArchiveStore where a user (username, domain) is a room (name, service)
    # of the rooms store of the same name: UserNotFound if there is no such room.
    "room_archive": ArchiveStore,
    "uploads": UploadStore,
}
SCOPED = frozenset({"keyval", "hostval", "archive", "pubsub", "rooms", "room_archive"})


def methods(kind: str) -> dict[str, object]:
    """The methods of the interface of ``kind``, by name; ValueError for
    an unknown kind."""
    try:
        interface = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown store kind {kind!r}; expected one of {sorted(KINDS)}") from None
    return {name: value for name, value in vars(interface).items()
            if callable(value) and not name.startswith("_")}
