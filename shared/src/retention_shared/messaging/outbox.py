"""The transactional outbox: events are rows written in the same transaction as the state change.

The relay publishes unpublished rows in id order and marks them published in the same DB
transaction that read them, after the broker acknowledged every one. A crash between the two
re-publishes those rows; consumers drop the repeats through their inbox.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from retention_shared.clock import Clock
from retention_shared.db import UTCDateTime, copy_text, driver_cursor
from retention_shared.events.catalogue import spec_for
from retention_shared.events.envelope import Envelope
from retention_shared.messaging.ports import Publisher
from retention_shared.metrics import EVENTS_PUBLISHED, OUTBOX_BACKLOG

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MessagingTables:
    outbox: Table
    inbox: Table


def messaging_tables(metadata: MetaData) -> MessagingTables:
    """Declare the outbox and inbox tables in a service's own metadata (each service has its own DB)."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(200), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("key", String(300), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("published_at", UTCDateTime(), nullable=True),
    )
    Index(
        "ix_outbox_unpublished",
        outbox.c.id,
        postgresql_where=outbox.c.published_at.is_(None),
        sqlite_where=outbox.c.published_at.is_(None),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer_group", String(200), nullable=False),
        Column("shop_id", String(128), nullable=False),
        Column("event_id", String(200), nullable=False),
        Column("processed_at", UTCDateTime(), nullable=False),
        PrimaryKeyConstraint("consumer_group", "shop_id", "event_id"),
    )
    # The consumer asks "which of these event ids has this group seen?" for a whole poll at once;
    # without an index led by (group, event id) that question scans the ever-growing inbox.
    Index("ix_inbox_lookup", inbox.c.consumer_group, inbox.c.event_id)
    return MessagingTables(outbox=outbox, inbox=inbox)


class OutboxWriter:
    """Collects a unit of work's outgoing events and writes them when it commits.

    On PostgreSQL the rows go in one COPY, in text format built here: a consumer's poll or an
    ingest batch adds hundreds of events, and executemany would cost a statement each. COPY keeps
    the order of the rows, so ids (and the relay's publishing order) follow the order of `add`.
    Elsewhere (SQLite, the embedded mode) they go through one executemany.
    """

    def __init__(self, session: Session, tables: MessagingTables, clock: Clock) -> None:
        self._session = session
        self._tables = tables
        self._clock = clock
        self._pending: list[tuple[str, str, str, str]] = []
        self._postgresql = session.get_bind().dialect.name == "postgresql"

    def add(self, envelope: Envelope) -> None:
        self.add_serialized(
            event_id=envelope.id,
            topic=spec_for(envelope.type).topic.name,
            key=envelope.key,
            envelope=envelope.model_dump_json(),
        )

    def add_serialized(self, *, event_id: str, topic: str, key: str, envelope: str) -> None:
        """Like `add`, for an envelope its caller has already validated and turned into JSON."""
        self._pending.append((event_id, topic, key, envelope))

    def discard(self) -> None:
        """Forget events of a handler attempt that was rolled back."""
        self._pending = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        created_at = self._clock.now()
        if not self._postgresql:
            self._session.execute(
                insert(self._tables.outbox),
                [
                    {"event_id": e, "topic": t, "key": k, "payload": p, "created_at": created_at}
                    for e, t, k, p in rows
                ],
            )
            return
        created = created_at.isoformat()
        lines = "".join(
            f"{copy_text(e)}\t{copy_text(t)}\t{copy_text(k)}\t{copy_text(p)}\t{created}\n"
            for e, t, k, p in rows
        )
        statement = f"COPY {self._tables.outbox.name} (event_id, topic, key, payload, created_at) FROM STDIN"
        with driver_cursor(self._session) as cursor, cursor.copy(statement) as copy:
            copy.write(lines)


class Inbox:
    """Remembers which events a consumer group has applied, so redeliveries have no effect.

    Consumers ask about and record a whole poll at once. On PostgreSQL each is one statement
    whatever the poll's size: the ids travel as binary arrays (`%b`; psycopg quotes each item of a
    text-format array in Python) and `unnest` / `= ANY` turn them back into rows.
    """

    def __init__(self, session: Session, tables: MessagingTables, clock: Clock) -> None:
        self._session = session
        self._table = tables.inbox
        self._clock = clock
        self._postgresql = session.get_bind().dialect.name == "postgresql"

    def seen_many(self, group: str, identities: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (shop_id, event_id) pairs were applied already."""
        if not identities:
            return set()
        wanted = set(identities)
        event_ids = sorted({event_id for _, event_id in identities})
        if self._postgresql:
            with driver_cursor(self._session) as cursor:
                # One parameter however long the poll, and the lookup uses ix_inbox_lookup.
                cursor.execute(
                    f"SELECT shop_id, event_id FROM {self._table.name}"
                    " WHERE consumer_group = %s AND event_id = ANY(%b::text[])",
                    (group, event_ids),
                )
                return {pair for pair in cursor.fetchall() if pair in wanted}
        found: set[tuple[str, str]] = set()
        for start in range(0, len(event_ids), 500):
            rows = self._session.execute(
                select(self._table.c.shop_id, self._table.c.event_id).where(
                    self._table.c.consumer_group == group,
                    self._table.c.event_id.in_(event_ids[start : start + 500]),
                )
            )
            found.update(pair for pair in ((r.shop_id, r.event_id) for r in rows) if pair in wanted)
        return found

    def record_many(self, group: str, identities: list[tuple[str, str]]) -> None:
        if not identities:
            return
        now = self._clock.now()
        if self._postgresql:
            with driver_cursor(self._session) as cursor:
                # A plain INSERT: an identity recorded meanwhile by another consumer of the group
                # fails the batch instead of being applied twice.
                cursor.execute(
                    f"INSERT INTO {self._table.name} (consumer_group, shop_id, event_id, processed_at)"
                    " SELECT %s, shop_id, event_id, %s"
                    " FROM unnest(%b::text[], %b::text[]) AS i(shop_id, event_id)",
                    (group, now, [shop_id for shop_id, _ in identities], [e for _, e in identities]),
                )
            return
        self._session.execute(
            insert(self._table),
            [
                {"consumer_group": group, "shop_id": shop_id, "event_id": event_id, "processed_at": now}
                for shop_id, event_id in identities
            ],
        )

    def record(self, group: str, shop_id: str, event_id: str) -> None:
        self.record_many(group, [(shop_id, event_id)])

    def purge_older_than(self, age: timedelta) -> int:
        result = self._session.execute(
            delete(self._table).where(self._table.c.processed_at < self._clock.now() - age)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class OutboxRelay:
    """Publishes a service's outbox. On PostgreSQL an advisory lock keeps one active relay per
    service, which preserves per-customer order when several replicas run."""

    def __init__(
        self,
        *,
        service: str,
        engine: Engine,
        tables: MessagingTables,
        publisher: Publisher,
        clock: Clock,
        namespace: str = "",
        batch_size: int = 1000,
    ) -> None:
        self._service = service
        self._engine = engine
        self._outbox = tables.outbox
        self._publisher = publisher
        self._clock = clock
        self._namespace = namespace
        self._batch_size = batch_size
        self._lock_key = _advisory_key(f"outbox:{service}")
        self.wakeup = threading.Event()

    def relay_once(self) -> int:
        """Publish one batch; return how many rows were published."""
        table = self._outbox
        with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                got_lock = connection.execute(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": self._lock_key}
                ).scalar()
                if not got_lock:
                    return 0
            rows = connection.execute(
                select(table.c.id, table.c.topic, table.c.key, table.c.payload)
                .where(table.c.published_at.is_(None))
                .order_by(table.c.id)
                .limit(self._batch_size)
            ).all()
            if not rows:
                return 0
            for row in rows:
                topic = f"{self._namespace}.{row.topic}" if self._namespace else row.topic
                self._publisher.send(topic, row.key, row.payload.encode())
            self._publisher.flush()
            connection.execute(
                update(table)
                .where(table.c.id.in_([row.id for row in rows]))
                .values(published_at=self._clock.now())
            )
        EVENTS_PUBLISHED.labels(self._service).inc(len(rows))
        return len(rows)

    def backlog(self) -> int:
        with self._engine.connect() as connection:
            count = connection.execute(
                select(func.count()).select_from(self._outbox).where(self._outbox.c.published_at.is_(None))
            ).scalar_one()
        OUTBOX_BACKLOG.labels(self._service).set(count)
        return int(count)

    def purge_published(self, older_than: timedelta) -> int:
        """Published rows are kept a while for inspection, then deleted."""
        with self._engine.begin() as connection:
            result = connection.execute(
                delete(self._outbox).where(
                    self._outbox.c.published_at.is_not(None),
                    self._outbox.c.published_at < self._clock.now() - older_than,
                )
            )
        return int(result.rowcount or 0)


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
