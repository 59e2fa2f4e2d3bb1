"""The SQL pubsub store (:class:`xmppd.storage.kinds.PubSubStore`,
XEP-0060): nodes in ``pubsub_nodes``, keyed by the name of the store, the
service and the NodeID, with their items, affiliations and subscriptions.

Writes to a node lock its row, so that publications to it are numbered
one after the other.  Creating a node of an account locks the account's
row, so that ``max_nodes`` holds for its service (for a service of no
account, concurrent creations may overshoot it on PostgreSQL).
Configurations and subscription options are kept as JSON; timestamps in
UTC."""

import json
from collections.abc import Sequence
from datetime import datetime, timezone

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from . import NodeExists, NodeNotFound, TooManyNodes
from .kinds import (
    AFFILIATIONS,
    SUBSCRIPTION_STATES,
    FormValues,
    PubSubItem,
    PubSubNode,
    PubSubSubscription,
)
from .models import (
    NODE_NAME_LENGTH,
    PUBSUB_ID_LENGTH,
    PubSubAffiliationRow,
    PubSubItemRow,
    PubSubNodeRow,
    PubSubSubscriptionRow,
)
from .sql_stores import account as find_account, put_value

Node, Item = PubSubNodeRow, PubSubItemRow
Affiliation, Subscription = PubSubAffiliationRow, PubSubSubscriptionRow


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"a timestamp needs a time zone: {moment!r}")
    return moment.astimezone(timezone.utc)


def _read_utc(moment: datetime) -> datetime:
    """SQLite gives back the UTC time without its zone; PostgreSQL with it."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def check_length(text: str, limit: int, what: str) -> None:
    """ValueError if ``text`` (a ``what``) has more than ``limit`` characters."""
    if len(text) > limit:
        raise ValueError(f"a {what} has at most {limit} characters")


def form_json(values: FormValues) -> str:
    """JSON of data form values; ValueError unless each is a string or a
    list of strings."""
    form = {}
    for var, value in values.items():
        if not isinstance(value, str):
            value = list(value)
            if not all(isinstance(part, str) for part in value):
                raise ValueError(f"the value of {var!r} is neither a string nor a list of strings")
        form[var] = value
    return json.dumps(form)


_ITEM = select(Item.id, Item.publisher, Item.payload, Item.published)


def _item(row) -> PubSubItem:
    return PubSubItem(row.id, row.publisher, row.payload, _read_utc(row.published))


def _subscription(row) -> PubSubSubscription:
    return PubSubSubscription(row.jid, row.subid, row.state, json.loads(row.options))


class SQLPubSub:
    """The pubsub store named ``name`` of every service."""

    def __init__(self, database, name: str) -> None:
        self._db = database
        self.name = name

    def _of(self, service: str) -> ColumnElement[bool]:
        return (Node.store == self.name) & (Node.service == service)

    def _node_id(self, service: str, node: str):
        """A scalar subquery: the id of the node, NULL if none."""
        return select(Node.id).where(self._of(service), Node.name == node).scalar_subquery()

    def _lock(self, session, service: str, node: str) -> int | None:
        """The id of the node, its row locked; None if no such node."""
        return session.scalar(select(Node.id).where(self._of(service), Node.name == node)
                              .with_for_update())

    def _locked(self, session, service: str, node: str) -> int:
        """The id of the node, its row locked; NodeNotFound if none."""
        node_id = self._lock(session, service, node)
        if node_id is None:
            raise NodeNotFound(f"no node {node!r} at {service}")
        return node_id

    # Nodes (XEP-0060 §8)

    def create_node(self, service: str, node: str, config: FormValues,
                    account: tuple[str, str] | None = None,
                    max_nodes: int | None = None) -> None:
        check_length(node, NODE_NAME_LENGTH, "NodeID")
        row = Node(store=self.name, service=service, name=node, config=form_json(config))
        with self._db.writing() as session:
            if account is not None:
                row.account_id = find_account(session, *account, lock=True).id
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:
                raise NodeExists(f"node {node!r} exists at {service}") from exc
            if max_nodes is not None and session.scalar(
                    select(func.count()).where(self._of(service))) > max_nodes:
                raise TooManyNodes(f"{service} has {max_nodes} nodes already")

    def get_node(self, service: str, node: str) -> PubSubNode | None:
        with self._db.reading() as session:
            config = session.scalar(
                select(Node.config).where(self._of(service), Node.name == node))
        return None if config is None else PubSubNode(node, json.loads(config))

    def nodes(self, service: str) -> list[PubSubNode]:
        with self._db.reading() as session:
            rows = session.execute(select(Node.name, Node.config).where(self._of(service))
                                   .order_by(Node.name)).all()
        return [PubSubNode(row.name, json.loads(row.config)) for row in rows]

    def configure_node(self, service: str, node: str, config: FormValues) -> None:
        text = form_json(config)
        with self._db.writing() as session:
            node_id = self._locked(session, service, node)
            session.execute(update(Node).where(Node.id == node_id).values(config=text))

    def delete_node(self, service: str, node: str) -> bool:
        with self._db.writing() as session:
            return session.execute(
                delete(Node).where(self._of(service), Node.name == node)).rowcount > 0

    def delete_service(self, service: str) -> None:
        with self._db.writing() as session:
            session.execute(delete(Node).where(self._of(service)))

    # Items (XEP-0060 §6.5, §7)

    def publish(self, service: str, node: str, item: PubSubItem,
                max_items: int | None = None) -> list[str]:
        check_length(item.id, PUBSUB_ID_LENGTH, "ItemID")
        if max_items is not None and max_items < 0:
            raise ValueError(f"keep 0 items or more, not {max_items}")
        published = _utc(item.published)
        with self._db.writing() as session:
            node_id = self._locked(session, service, node)
            newest = session.scalar(select(func.max(Item.seq)).where(Item.node_id == node_id))
            values = dict(seq=(newest or 0) + 1, publisher=item.publisher,
                          payload=item.payload, published=published)
            if not session.execute(update(Item).where(Item.node_id == node_id,
                                                      Item.id == item.id)
                                   .values(**values)).rowcount:
                session.execute(insert(Item).values(node_id=node_id, id=item.id, **values))
            if max_items is None:
                return []
            newest_gone = session.scalar(select(Item.seq).where(Item.node_id == node_id)
                                         .order_by(Item.seq.desc()).offset(max_items).limit(1))
            if newest_gone is None:
                return []
            gone = (Item.node_id == node_id) & (Item.seq <= newest_gone)
            removed = session.scalars(select(Item.id).where(gone).order_by(Item.seq)).all()
            session.execute(delete(Item).where(gone))
        return [item_id for item_id in removed if item_id != item.id]

    def get_items(self, service: str, node: str, ids: Sequence[str] | None = None,
                  limit: int | None = None) -> list[PubSubItem]:
        if limit is not None and limit < 0:
            raise ValueError(f"get 0 items or more, not {limit}")
        query = _ITEM.where(Item.node_id == self._node_id(service, node))
        if ids is not None:
            query = query.where(Item.id.in_(sorted(set(ids))))
        with self._db.reading() as session:
            rows = session.execute(query.order_by(Item.seq.desc()).limit(limit)).all()
        return [_item(row) for row in rows]

    def last_items(self, service: str, nodes: Sequence[str]) -> dict[str, PubSubItem]:
        if not nodes:
            return {}
        newer = aliased(Item)
        newest = select(func.max(newer.seq)).where(newer.node_id == Node.id).scalar_subquery()
        query = (_ITEM.add_columns(Node.name).join(Node, Item.node_id == Node.id)
                 .where(self._of(service), Node.name.in_(sorted(set(nodes))),
                        Item.seq == newest))
        with self._db.reading() as session:
            rows = session.execute(query).all()
        return {row.name: _item(row) for row in rows}

    def count_items(self, service: str, node: str) -> int:
        with self._db.reading() as session:
            return session.scalar(select(func.count()).where(
                Item.node_id == self._node_id(service, node)))

    def retract(self, service: str, node: str, item_id: str) -> bool:
        with self._db.writing() as session:
            return session.execute(delete(Item).where(
                Item.node_id == self._node_id(service, node), Item.id == item_id)).rowcount > 0

    def purge(self, service: str, node: str) -> list[str]:
        with self._db.writing() as session:
            node_id = self._lock(session, service, node)
            removed = session.scalars(select(Item.id).where(Item.node_id == node_id)
                                      .order_by(Item.seq)).all()
            session.execute(delete(Item).where(Item.node_id == node_id))
        return list(removed)

    # Affiliations and subscriptions (XEP-0060 §4, §6.1, §6.2, §8.8, §8.9)

    def affiliations(self, service: str, node: str) -> dict[str, str]:
        with self._db.reading() as session:
            return dict(session.execute(
                select(Affiliation.jid, Affiliation.affiliation)
                .where(Affiliation.node_id == self._node_id(service, node))).all())

    def set_affiliation(self, service: str, node: str, jid: str,
                        affiliation: str | None) -> None:
        if affiliation == "none":
            affiliation = None
        if affiliation is not None and affiliation not in AFFILIATIONS:
            raise ValueError(f"invalid affiliation {affiliation!r}; expected one of "
                             f"{AFFILIATIONS} or none")
        with self._db.writing() as session:
            node_id = self._locked(session, service, node)
            put_value(session, Affiliation, (node_id, jid), "affiliation", affiliation,
                      node_id=node_id, jid=jid)

    def subscriptions(self, service: str, node: str) -> list[PubSubSubscription]:
        with self._db.reading() as session:
            rows = session.scalars(
                select(Subscription)
                .where(Subscription.node_id == self._node_id(service, node))
                .order_by(Subscription.jid, Subscription.subid)).all()
            return [_subscription(row) for row in rows]

    def subscribe(self, service: str, node: str, subscription: PubSubSubscription) -> None:
        if subscription.state not in SUBSCRIPTION_STATES:
            raise ValueError(f"invalid subscription state {subscription.state!r}; "
                             f"expected one of {SUBSCRIPTION_STATES}")
        check_length(subscription.subid, PUBSUB_ID_LENGTH, "SubID")
        options = form_json(subscription.options)
        with self._db.writing() as session:
            node_id = self._locked(session, service, node)
            row = session.get(Subscription, (node_id, subscription.jid, subscription.subid))
            if row is None:
                session.add(Subscription(node_id=node_id, jid=subscription.jid,
                                         subid=subscription.subid, state=subscription.state,
                                         options=options))
            else:
                row.state, row.options = subscription.state, options

    def unsubscribe(self, service: str, node: str, jid: str, subid: str | None = None) -> bool:
        conditions = [Subscription.node_id == self._node_id(service, node),
                      Subscription.jid == jid]
        if subid is not None:
            conditions.append(Subscription.subid == subid)
        with self._db.writing() as session:
            return session.execute(delete(Subscription).where(*conditions)).rowcount > 0

    def subscriptions_of(self, service: str, jid: str) -> list[tuple[str, PubSubSubscription]]:
        with self._db.reading() as session:
            rows = session.execute(
                select(Node.name, Subscription)
                .join(Node, Subscription.node_id == Node.id)
                .where(self._of(service), Subscription.jid == jid)
                .order_by(Node.name, Subscription.subid)).all()
            return [(name, _subscription(row)) for name, row in rows]

