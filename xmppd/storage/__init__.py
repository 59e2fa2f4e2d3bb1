"""Storage for xmppd: accounts with SCRAM keys, RFC 6121 rosters, offline
messages, small per-user key/value stores, message archives,
publish-subscribe nodes, the rooms of multi-user chat services with their
archives, and the metadata of uploaded files.

The package is called, it never calls back: it imports neither
``xmppd.core`` nor ``xmppd.modules``.  Users are identified by the pair
``(username, domain)``, both already normalised by the caller (RFC 7622).

``xmppd.storage.kinds`` defines the kinds of store as interfaces;
``xmppd.storage.sql.SQLStore`` is the SQLAlchemy implementation with blocking
methods (used directly by ``xmppctl``); ``xmppd.storage.deferred.AsyncStore``
runs the same methods in a thread pool for the server, where reads that
logins need never wait behind bulk writes (``StoragePool``).
"""

from dataclasses import dataclass, field


class StorageError(Exception):
    """A storage operation failed (database unreachable, constraint...)."""


class UserExists(StorageError):
    """The account already exists."""


class UserNotFound(StorageError):
    """No such account."""


class RosterFull(StorageError):
    """Adding the item would make the roster exceed its maximum size."""


class UnknownArchiveId(StorageError):
    """A page of an archive was asked for relative to an id it does not
    hold (XEP-0059 §2.6: ``item-not-found``)."""


class NodeExists(StorageError):
    """The pubsub node already exists (XEP-0060 §8.1: ``conflict``)."""


class NodeNotFound(StorageError):
    """No such pubsub node (XEP-0060: ``item-not-found``)."""


class TooManyNodes(StorageError):
    """The pubsub service already has as many nodes as it may."""


class RoomExists(StorageError):
    """The multi-user chat room already exists (XEP-0045 §10.1)."""


class RoomNotFound(StorageError):
    """No such multi-user chat room (XEP-0045: ``item-not-found``)."""


class TooManyRooms(StorageError):
    """The multi-user chat service already has as many rooms as it may."""


class QuotaExceeded(StorageError):
    """A new upload slot would exceed the account's quota (``kind``
    ``"quota"``) or daily quota (``"daily"``, which frees at ``retry``, a
    timezone-aware time, or None if it never will)."""

    def __init__(self, message, kind, retry=None):
        super().__init__(message)
        self.kind = kind
        self.retry = retry


class SchemaOutdated(StorageError):
    """The database schema is missing or older than this xmppd's."""


@dataclass(frozen=True, slots=True)
class ScramKeys:
    """SCRAM verifier for one hash function (RFC 5802 §3): never a password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


SUBSCRIPTIONS = ("none", "to", "from", "both")
SUBSCRIBERS = ("from", "both")  # the contact receives the user's presence
SUBSCRIBED_TO = ("to", "both")  # the user receives the contact's presence


@dataclass(frozen=True, slots=True)
class RosterItem:
    """One roster item (RFC 6121 §2.1.2) plus the server-side subscription
    state of RFC 6121 §3 (outbound request pending, inbound request pending,
    pre-approval)."""

    jid: str
    name: str | None = None
    subscription: str = "none"
    ask: bool = False  # outbound subscription request pending ("ask='subscribe'")
    pending_in: bool = False  # inbound subscription request awaiting the user
    approved: bool = False  # subscription pre-approved (RFC 6121 §3.4)
    groups: tuple[str, ...] = field(default_factory=tuple)
