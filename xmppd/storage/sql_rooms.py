"""The SQL rooms store (:class:`xmppd.storage.kinds.RoomStore`, XEP-0045):
rooms in ``muc_rooms``, keyed by the name of the store, the service and the
room's name, with their affiliations in ``muc_affiliations``; a room's
archive (the ``room_archive`` store of the same name,
:mod:`xmppd.storage.sql_archive`) goes with it.

Setting an affiliation locks the room's row, but not against the archive's
appends, which share it.  For a service, concurrent creations may overshoot
``max_rooms`` on PostgreSQL.  Configurations are kept as JSON."""

import json

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from . import RoomExists, RoomNotFound, TooManyRooms
from .kinds import ROOM_AFFILIATIONS, FormValues, Room
from .models import ROOM_NAME_LENGTH, MucAffiliationRow, MucRoomRow
from .sql_pubsub import form_json
from .sql_stores import put_value

Row, Affiliation = MucRoomRow, MucAffiliationRow


def _check_name(name: str) -> None:
    if not 0 < len(name) <= ROOM_NAME_LENGTH:
        raise ValueError(f"a room name has 1 to {ROOM_NAME_LENGTH} characters")


def _check_affiliation(affiliation: str) -> None:
    if affiliation not in ROOM_AFFILIATIONS:
        raise ValueError(f"invalid affiliation {affiliation!r}; expected one of "
                         f"{ROOM_AFFILIATIONS} or none")


def _room(row, affiliations: dict[str, str]) -> Room:
    return Room(row.name, json.loads(row.config), row.subject, affiliations)


class SQLRooms:
    """The rooms store named ``name`` of every multi-user chat service."""

    def __init__(self, database, name: str) -> None:
        self._db = database
        self.name = name

    def _of(self, service: str) -> ColumnElement[bool]:
        return (Row.store == self.name) & (Row.service == service)

    def _named(self, service: str, name: str) -> ColumnElement[bool]:
        return self._of(service) & (Row.name == name)

    def create_room(self, service: str, room: Room, max_rooms: int | None = None) -> None:
        _check_name(room.name)
        for affiliation in room.affiliations.values():
            _check_affiliation(affiliation)
        row = Row(store=self.name, service=service, name=room.name,
                  config=form_json(room.config), subject=room.subject)
        with self._db.writing() as session:
            session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:
                raise RoomExists(f"room {room.name!r} exists at {service}") from exc
            if max_rooms is not None and session.scalar(
                    select(func.count()).where(self._of(service))) > max_rooms:
                raise TooManyRooms(f"{service} has {max_rooms} rooms already")
            session.add_all(Affiliation(room_id=row.id, jid=jid, affiliation=affiliation)
                            for jid, affiliation in room.affiliations.items())

    def get_room(self, service: str, name: str) -> Room | None:
        with self._db.reading() as session:
            row = session.execute(select(Row.id, Row.name, Row.config, Row.subject)
                                  .where(self._named(service, name))).first()
            if row is None:
                return None
            affiliations = dict(session.execute(
                select(Affiliation.jid, Affiliation.affiliation)
                .where(Affiliation.room_id == row.id)).all())
        return _room(row, affiliations)

    def rooms(self, service: str) -> list[Room]:
        with self._db.reading() as session:
            rows = session.execute(select(Row.id, Row.name, Row.config, Row.subject)
                                   .where(self._of(service))).all()
            affiliations = {row.id: {} for row in rows}
            for room_id, jid, affiliation in session.execute(
                    select(Affiliation.room_id, Affiliation.jid, Affiliation.affiliation)
                    .join(Row, Affiliation.room_id == Row.id).where(self._of(service))):
                affiliations[room_id][jid] = affiliation
        return sorted((_room(row, affiliations[row.id]) for row in rows),
                      key=lambda room: room.name)

    def _update(self, service: str, name: str, **values) -> None:
        with self._db.writing() as session:
            if not session.execute(
                    update(Row).where(self._named(service, name)).values(**values)).rowcount:
                raise RoomNotFound(f"no room {name!r} at {service}")

    def configure_room(self, service: str, name: str, config: FormValues) -> None:
        self._update(service, name, config=form_json(config))

    def set_subject(self, service: str, name: str, subject: str) -> None:
        self._update(service, name, subject=subject)

    def set_affiliation(self, service: str, name: str, jid: str,
                        affiliation: str | None) -> None:
        if affiliation == "none":
            affiliation = None
        if affiliation is not None:
            _check_affiliation(affiliation)
        with self._db.writing() as session:
            room_id = session.scalar(select(Row.id).where(self._named(service, name))
                                     .with_for_update(key_share=True))
            if room_id is None:
                raise RoomNotFound(f"no room {name!r} at {service}")
            put_value(session, Affiliation, (room_id, jid), "affiliation", affiliation,
                      room_id=room_id, jid=jid)

    def owned_rooms(self, service: str, jid: str) -> list[str]:
        with self._db.reading() as session:
            names = session.scalars(
                select(Row.name).join(Affiliation, Affiliation.room_id == Row.id)
                .where(self._of(service), Affiliation.jid == jid,
                       Affiliation.affiliation == "owner")).all()
        return sorted(names)

    def delete_room(self, service: str, name: str) -> bool:
        with self._db.writing() as session:
            return session.execute(delete(Row).where(self._named(service, name))).rowcount > 0
