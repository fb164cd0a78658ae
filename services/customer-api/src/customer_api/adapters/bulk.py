"""Bulk writes for the history import: thousands of events per transaction.

On PostgreSQL the rows travel with COPY, in text format built here (psycopg's per-row adaptation
costs more than the rest of an event's preparation). A chunk is first copied straight into
`ingested_events`; if one of its events is stored already, the unique key stops the copy, and the
caller writes the chunk again the careful way: copied into a temporary table, then moved with
`INSERT … ON CONFLICT DO NOTHING RETURNING`. (Looking the ids up before copying costs more than
the occasional failed copy: a new import conflicts nowhere.)

On SQLite (the embedded mode) the transaction holds the database's write lock from its start, so
looking up the stored ids and inserting the others with one executemany cannot race.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_json
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from customer_api.adapters import tables
from retention_shared.db import copy_text, driver_cursor
from retention_shared.events.envelope import SPEC_VERSION

EVENT_COLUMNS = "shop_id, event_id, type, customer_id, occurred_at, received_at, payload"
_LOOKUP_BATCH = 500


class AlreadyStored(Exception):
    """Some of the chunk's events are stored already; write it again with `careful=True`."""


@dataclass(slots=True)
class SerializedEvent:
    """An event ready to store: its data and its whole envelope already JSON."""

    event_id: str
    type: str
    customer_id: str
    occurred_at: datetime  # aware
    occurred_text: str  # the same in RFC 3339, as the envelope has it
    payload: str  # the data, as ingested_events.payload
    envelope: str  # the envelope, as the outbox's payload


def encode_json(value: Any) -> str:
    """Compact JSON, as pydantic writes it in an envelope (and several times faster than json)."""
    return to_json(value).decode()


def rfc3339(moment: datetime) -> str:
    """As pydantic writes an aware datetime: UTC as Z."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def serialize_event(
    *,
    event_id: str,
    event_type: str,
    customer_id: str,
    occurred_at: datetime,
    data: dict[str, Any],
    source: str,
    shop_json: str,
    correlation_json: str,
) -> SerializedEvent:
    """The event and its envelope as JSON, exactly as `build_envelope(...).model_dump_json()` writes
    it (a unit test holds the two equal), without building a model per event: that took a third of
    the time an event costs to write. The ids and the type need no escaping: they were checked
    against the envelope's id pattern and the catalogue; `shop_json` and `correlation_json` are
    already JSON."""
    payload = encode_json(data)
    moment = rfc3339(occurred_at)
    envelope = (
        f'{{"specversion":"{SPEC_VERSION}","id":"{event_id}","type":"{event_type}",'
        f'"source":"{source}","time":"{moment}","schemaversion":1,"shop_id":{shop_json},'
        f'"customer_id":"{customer_id}","correlation_id":{correlation_json},"data":{payload}}}'
    )
    return SerializedEvent(event_id, event_type, customer_id, occurred_at, moment, payload, envelope)


def store_new_events(
    session: Session,
    shop_id: str,
    events: Sequence[SerializedEvent],
    received_at: datetime,
    *,
    careful: bool = False,
) -> set[str]:
    """Insert the events into `ingested_events` unless (shop, event id) is there; return the ids
    inserted (an id given twice is inserted once). On PostgreSQL, unless `careful`, raises
    AlreadyStored if any of them is there: the transaction is then lost, and the caller starts over."""
    if not events:
        return set()
    if _dialect(session) == "postgresql":
        if careful:
            return _copy_through_stage(session, shop_id, events, received_at)
        unique = {event.event_id: event for event in reversed(events)}  # the first of each id wins
        _copy_into_table(session, shop_id, reversed(unique.values()), received_at)
        return set(unique)
    existing = _stored_ids(session, shop_id, [event.event_id for event in events])
    fresh: dict[str, SerializedEvent] = {}
    for event in events:
        if event.event_id not in existing and event.event_id not in fresh:
            fresh[event.event_id] = event
    if fresh:
        session.execute(
            insert(tables.ingested_events),
            [
                {
                    "shop_id": shop_id,
                    "event_id": event.event_id,
                    "type": event.type,
                    "customer_id": event.customer_id,
                    "occurred_at": event.occurred_at,
                    "received_at": received_at,
                    "payload": event.payload,
                }
                for event in fresh.values()
            ],
        )
    return set(fresh)


def _stored_ids(session: Session, shop_id: str, event_ids: list[str]) -> set[str]:
    table = tables.ingested_events
    found: set[str] = set()
    wanted = sorted(set(event_ids))
    for start in range(0, len(wanted), _LOOKUP_BATCH):
        found.update(
            session.execute(
                select(table.c.event_id).where(
                    table.c.shop_id == shop_id, table.c.event_id.in_(wanted[start : start + _LOOKUP_BATCH])
                )
            ).scalars()
        )
    return found


def _event_lines(shop_id: str, events: Iterable[SerializedEvent], received_at: datetime) -> str:
    shop = copy_text(shop_id)
    received = received_at.isoformat()
    return "".join(
        f"{shop}\t{copy_text(e.event_id)}\t{e.type}\t{copy_text(e.customer_id)}\t"
        f"{e.occurred_text}\t{received}\t{copy_text(e.payload)}\n"
        for e in events
    )


def _copy_into_table(
    session: Session, shop_id: str, events: Iterable[SerializedEvent], received_at: datetime
) -> None:
    from psycopg.errors import UniqueViolation

    with driver_cursor(session) as cursor:
        try:
            with cursor.copy(f"COPY {tables.ingested_events.name} ({EVENT_COLUMNS}) FROM STDIN") as copy:
                copy.write(_event_lines(shop_id, events, received_at))
        except UniqueViolation as exc:
            raise AlreadyStored(str(exc)) from exc


def _copy_through_stage(
    session: Session, shop_id: str, events: Sequence[SerializedEvent], received_at: datetime
) -> set[str]:
    table = tables.ingested_events.name
    with driver_cursor(session) as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE import_stage (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        with cursor.copy(f"COPY import_stage ({EVENT_COLUMNS}) FROM STDIN") as copy:
            copy.write(_event_lines(shop_id, events, received_at))
        cursor.execute(
            f"INSERT INTO {table} ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM import_stage "
            "ON CONFLICT DO NOTHING RETURNING event_id"
        )
        inserted = {record[0] for record in cursor.fetchall()}
        cursor.execute("DROP TABLE import_stage")
    return inserted


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name
