"""The embedded mode's in-process bus: a durable log in one SQLite file.

It offers the same contract as Kafka (ordered log, consumer groups with committed offsets,
at-least-once delivery), so the outbox relay, the consumer runner and the handlers are the
same code in both modes, and a restart loses nothing that was published.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from retention_shared.messaging.ports import Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT,
    value BLOB NOT NULL,
    headers TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS ix_bus_records_topic_id ON bus_records (topic, id);
CREATE TABLE IF NOT EXISTS bus_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    next_id INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic)
);
"""


class LocalLog:
    """The shared log; producers append, and consumers waiting on it are woken up."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._local = threading.local()
        self._appended = threading.Condition()
        with self._connection() as connection:
            connection.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self._path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    def append(self, records: Sequence[tuple[str, str, bytes, Sequence[tuple[str, bytes]]]]) -> None:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(
                "INSERT INTO bus_records (topic, key, value, headers) VALUES (?, ?, ?, ?)",
                [
                    (topic, key, value, json.dumps([[k, v.decode(errors="replace")] for k, v in headers]))
                    for topic, key, value, headers in records
                ],
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        with self._appended:
            self._appended.notify_all()

    def read(self, topics: Sequence[str], after: dict[str, int], limit: int) -> list[Record]:
        connection = self._connection()
        records: list[Record] = []
        for topic in topics:
            rows = connection.execute(
                "SELECT id, key, value, headers FROM bus_records"
                " WHERE topic = ? AND id > ? ORDER BY id LIMIT ?",
                (topic, after.get(topic, 0), limit - len(records)),
            ).fetchall()
            for row_id, key, value, headers in rows:
                records.append(
                    Record(
                        topic=topic,
                        partition=0,
                        offset=row_id,
                        key=key.encode() if key is not None else None,
                        value=bytes(value),
                        headers=tuple((k, v.encode()) for k, v in json.loads(headers)),
                    )
                )
            if len(records) >= limit:
                break
        return records

    def committed(self, group_id: str, topics: Sequence[str]) -> dict[str, int]:
        rows = (
            self._connection()
            .execute("SELECT topic, next_id FROM bus_offsets WHERE group_id = ?", (group_id,))
            .fetchall()
        )
        known = {topic: next_id - 1 for topic, next_id in rows}
        return {topic: known.get(topic, 0) for topic in topics}

    def commit(self, group_id: str, positions: dict[str, int]) -> None:
        connection = self._connection()
        connection.executemany(
            "INSERT INTO bus_offsets (group_id, topic, next_id) VALUES (?, ?, ?) "
            "ON CONFLICT (group_id, topic) DO UPDATE SET next_id = MAX(next_id, excluded.next_id)",
            [(group_id, topic, last_id + 1) for topic, last_id in positions.items()],
        )

    def count_after(self, topic: str, after: int) -> int:
        """How many records of `topic` come after position `after` (ids are shared by all topics)."""
        row = (
            self._connection()
            .execute("SELECT COUNT(*) FROM bus_records WHERE topic = ? AND id > ?", (topic, after))
            .fetchone()
        )
        return int(row[0])

    def end(self, topic: str) -> int:
        row = (
            self._connection().execute("SELECT MAX(id) FROM bus_records WHERE topic = ?", (topic,)).fetchone()
        )
        return int(row[0] or 0)

    def wait(self, timeout_s: float) -> None:
        with self._appended:
            self._appended.wait(timeout_s)


class LocalPublisher:
    def __init__(self, log: LocalLog) -> None:
        self._log = log
        self._pending: list[tuple[str, str, bytes, Sequence[tuple[str, bytes]]]] = []

    def send(self, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self._pending.append((topic, key, value, tuple(headers)))

    def flush(self, timeout: float = 30.0) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self._log.append(pending)

    def close(self) -> None:
        self.flush()


class LocalSubscriber:
    """One consumer per group (the embedded mode runs one process), reading from its committed offsets."""

    def __init__(self, log: LocalLog, *, group_id: str, topics: Sequence[str]) -> None:
        self._log = log
        self._group_id = group_id
        self._topics = list(topics)
        self._position = log.committed(group_id, self._topics)

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        records = self._log.read(self._topics, self._position, max_records)
        if not records:
            self._log.wait(timeout_ms / 1000)
            records = self._log.read(self._topics, self._position, max_records)
        for record in records:
            self._position[record.topic] = max(self._position.get(record.topic, 0), record.offset)
        return records

    def commit(self, records: Sequence[Record]) -> None:
        positions: dict[str, int] = {}
        for record in records:
            positions[record.topic] = max(positions.get(record.topic, 0), record.offset)
        self._log.commit(self._group_id, positions)

    def rewind(self, records: Sequence[Record]) -> None:
        for record in records:
            self._position[record.topic] = min(self._position.get(record.topic, 0), record.offset - 1)

    def lag(self) -> int | None:
        return sum(max(0, self._log.end(topic) - self._position.get(topic, 0)) for topic in self._topics)

    def close(self) -> None:
        pass
