"""SQLAlchemy models of the xmppd database.

The schema is created and upgraded by the Alembic migrations in
``xmppd.storage.migrations``: any change here needs a new migration (the
storage tests check that the migrated schema matches these models).
"""

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    column,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from . import SUBSCRIPTIONS
from .kinds import AFFILIATIONS, DIRECTIONS, ROOM_AFFILIATIONS, SUBSCRIPTION_STATES

PART_LENGTH = 1023  # octets in a localpart or domainpart (RFC 7622 §3.2, §3.3)
BARE_JID_LENGTH = 2 * PART_LENGTH + 1
JID_LENGTH = BARE_JID_LENGTH + 1 + PART_LENGTH  # a full JID
NAME_LENGTH = 1023  # roster item and group names
HASH_NAMES = ("SHA-1", "SHA-256", "SHA-512")  # SCRAM hash functions, as named by IANA
STORE_NAME_LENGTH = 64
VALUE_KEY_LENGTH = BARE_JID_LENGTH  # keys are namespaces or bare JIDs
HOST_VALUE_KEY_LENGTH = 255  # ids and token hashes
STANZA_ID_LENGTH = 1023
NODE_NAME_LENGTH = 1023  # pubsub NodeIDs: namespaces, mostly
PUBSUB_ID_LENGTH = 255  # pubsub ItemIDs and SubIDs
ROOM_NAME_LENGTH = PART_LENGTH  # a room's name is its localpart
UPLOAD_ID_LENGTH = 64  # the random part of an upload's URLs
UPLOAD_NAME_LENGTH = 255  # an uploaded file's name, and its content type
# 64-bit ids; SQLite's INTEGER is 64-bit already.
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("domain", "username"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(PART_LENGTH))
    domain: Mapped[str] = mapped_column(String(PART_LENGTH))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    roster_version: Mapped[int] = mapped_column(default=0)

    credentials: Mapped[list["ScramCredential"]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class ScramCredential(Base):
    __tablename__ = "scram_credentials"
    __table_args__ = (CheckConstraint(column("hash_name").in_(HASH_NAMES), name="hash_name"),)

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    hash_name: Mapped[str] = mapped_column(String(16), primary_key=True)
    salt: Mapped[bytes] = mapped_column(LargeBinary)
    iterations: Mapped[int]
    stored_key: Mapped[bytes] = mapped_column(LargeBinary)
    server_key: Mapped[bytes] = mapped_column(LargeBinary)


class RosterEntry(Base):
    """A row of ``roster_items`` (named so as not to clash with
    ``xmppd.storage.RosterItem``, the value the store returns)."""

    __tablename__ = "roster_items"
    __table_args__ = (
        UniqueConstraint("account_id", "jid"),
        CheckConstraint(column("subscription").in_(SUBSCRIPTIONS), name="subscription"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    jid: Mapped[str] = mapped_column(String(BARE_JID_LENGTH))
    name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    subscription: Mapped[str] = mapped_column(String(4))
    ask: Mapped[bool]
    pending_in: Mapped[bool]
    approved: Mapped[bool]

    groups: Mapped[list["RosterGroup"]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class RosterGroup(Base):
    __tablename__ = "roster_groups"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("roster_items.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)


class UserValue(Base):
    """One value of a small per-user key/value store (vCard, private XML,
    block list...), the stores named by the callers."""

    __tablename__ = "user_values"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    store: Mapped[str] = mapped_column(String(STORE_NAME_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(VALUE_KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class HostValue(Base):
    """One value of a hosted domain (or of the server, domain ``""``) in
    the store named by its caller: invitations, API tokens, reports."""

    __tablename__ = "host_values"

    store: Mapped[str] = mapped_column(String(STORE_NAME_LENGTH), primary_key=True)
    domain: Mapped[str] = mapped_column(String(PART_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(HOST_VALUE_KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class OfflineMessage(Base):
    """A message stanza (serialised XML) kept for an offline user; ``id``
    orders them oldest first."""

    __tablename__ = "offline_messages"
    __table_args__ = (Index("ix_offline_messages_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    stanza: Mapped[str] = mapped_column(Text)
    stored_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ArchivedColumns:
    """The columns of a message of a named archive (XEP-0313), whoever owns
    it: the correspondent's JID split in its bare JID and resource (empty
    for a bare JID), so that a query matches either (§4.1.1); ``id``, the
    archive id the caller gave it, is unique in the named archive, orders
    them and carries the time it was archived
    (``xmppd.storage.kinds.first_archive_id``)."""

    id: Mapped[int] = mapped_column(BIG_ID, autoincrement=False)
    store: Mapped[str] = mapped_column(String(STORE_NAME_LENGTH))
    with_bare: Mapped[str] = mapped_column(String(BARE_JID_LENGTH))
    with_resource: Mapped[str] = mapped_column(String(PART_LENGTH))
    stanza_id: Mapped[str | None] = mapped_column(String(STANZA_ID_LENGTH))
    direction: Mapped[str] = mapped_column(String(3))
    stanza: Mapped[str] = mapped_column(Text)


def archive_table_args(table: str, owner: str) -> tuple:
    """The keys, indexes and constraints of the archive ``table`` whose
    column ``owner`` is its rows' owner."""
    return (
        PrimaryKeyConstraint("store", "id"),
        Index(f"ix_{table}_{owner}_store_id", owner, "store", "id"),
        Index(f"ix_{table}_{owner}_store_with_bare_id", owner, "store", "with_bare", "id"),
        CheckConstraint(column("direction").in_(DIRECTIONS), name="direction"),
    )


class ArchiveEntry(ArchivedColumns, Base):
    """A message of a named archive of one account."""

    __tablename__ = "archive_messages"
    __table_args__ = archive_table_args(__tablename__, "account_id")

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))


class PubSubNodeRow(Base):
    """A node of a pubsub service (XEP-0060) in the named store; one of an
    account (its personal eventing service, XEP-0163) goes with it."""

    __tablename__ = "pubsub_nodes"
    __table_args__ = (
        UniqueConstraint("store", "service", "name"),
        Index("ix_pubsub_nodes_account_id", "account_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    store: Mapped[str] = mapped_column(String(STORE_NAME_LENGTH))
    service: Mapped[str] = mapped_column(String(BARE_JID_LENGTH))
    name: Mapped[str] = mapped_column(String(NODE_NAME_LENGTH))
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"))
    config: Mapped[str] = mapped_column(Text)  # JSON


class PubSubItemRow(Base):
    """An item of a node; ``seq`` orders the items of a node by
    publication, the newest highest."""

    __tablename__ = "pubsub_items"
    __table_args__ = (
        PrimaryKeyConstraint("node_id", "id"),
        Index("ix_pubsub_items_node_id_seq", "node_id", "seq", unique=True),
    )

    node_id: Mapped[int] = mapped_column(ForeignKey("pubsub_nodes.id", ondelete="CASCADE"))
    id: Mapped[str] = mapped_column(String(PUBSUB_ID_LENGTH))
    seq: Mapped[int] = mapped_column(BIG_ID)
    publisher: Mapped[str] = mapped_column(String(JID_LENGTH))
    payload: Mapped[str] = mapped_column(Text)
    published: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PubSubAffiliationRow(Base):
    """The affiliation of a bare JID with a node (XEP-0060 §4.1)."""

    __tablename__ = "pubsub_affiliations"
    __table_args__ = (
        CheckConstraint(column("affiliation").in_(AFFILIATIONS), name="affiliation"),
    )

    node_id: Mapped[int] = mapped_column(
        ForeignKey("pubsub_nodes.id", ondelete="CASCADE"), primary_key=True)
    jid: Mapped[str] = mapped_column(String(BARE_JID_LENGTH), primary_key=True)
    affiliation: Mapped[str] = mapped_column(String(12))


class PubSubSubscriptionRow(Base):
    """A subscription to a node (XEP-0060 §4.2), its options as JSON."""

    __tablename__ = "pubsub_subscriptions"
    __table_args__ = (
        Index("ix_pubsub_subscriptions_jid_node_id", "jid", "node_id"),
        CheckConstraint(column("state").in_(SUBSCRIPTION_STATES), name="state"),
    )

    node_id: Mapped[int] = mapped_column(
        ForeignKey("pubsub_nodes.id", ondelete="CASCADE"), primary_key=True)
    jid: Mapped[str] = mapped_column(String(JID_LENGTH), primary_key=True)
    subid: Mapped[str] = mapped_column(String(PUBSUB_ID_LENGTH), primary_key=True)
    state: Mapped[str] = mapped_column(String(12))
    options: Mapped[str] = mapped_column(Text)  # JSON


class MucRoomRow(Base):
    """A room of a multi-user chat service (XEP-0045) in the named store:
    its configuration as JSON, the message that set its subject."""

    __tablename__ = "muc_rooms"
    __table_args__ = (UniqueConstraint("store", "service", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    store: Mapped[str] = mapped_column(String(STORE_NAME_LENGTH))
    service: Mapped[str] = mapped_column(String(PART_LENGTH))
    name: Mapped[str] = mapped_column(String(ROOM_NAME_LENGTH))
    config: Mapped[str] = mapped_column(Text)  # JSON
    subject: Mapped[str] = mapped_column(Text)


class MucAffiliationRow(Base):
    """The affiliation of a bare JID with a room (XEP-0045 §5.2)."""

    __tablename__ = "muc_affiliations"
    __table_args__ = (
        Index("ix_muc_affiliations_jid_room_id", "jid", "room_id"),
        CheckConstraint(column("affiliation").in_(ROOM_AFFILIATIONS), name="affiliation"),
    )

    room_id: Mapped[int] = mapped_column(
        ForeignKey("muc_rooms.id", ondelete="CASCADE"), primary_key=True)
    jid: Mapped[str] = mapped_column(String(BARE_JID_LENGTH), primary_key=True)
    affiliation: Mapped[str] = mapped_column(String(7))


class RoomArchiveEntry(ArchivedColumns, Base):
    """A message of a named archive of one room (XEP-0313 §5): it goes with
    the room."""

    __tablename__ = "room_archive_messages"
    __table_args__ = archive_table_args(__tablename__, "room_id")

    room_id: Mapped[int] = mapped_column(ForeignKey("muc_rooms.id", ondelete="CASCADE"))


class UploadRow(Base):
    """A slot of an HTTP upload service (XEP-0363) and, once uploaded, its
    file's metadata (the file is kept outside the database); it goes with
    the account."""

    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_account_id_created", "account_id", "created"),
        Index("ix_uploads_created", "created"),
    )

    id: Mapped[str] = mapped_column(String(UPLOAD_ID_LENGTH), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(UPLOAD_NAME_LENGTH))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(UPLOAD_NAME_LENGTH))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stored: Mapped[int | None] = mapped_column(BigInteger)  # bytes; NULL until uploaded
