"""In-memory fakes of the kit's own ports (Subscriber, Publisher), for unit tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from retention_shared.events.envelope import build_envelope
from retention_shared.messaging.ports import PublishError, Record


class FakeSubscriber:
    def __init__(self, records: list[Record]) -> None:
        self._records = records
        self._position = 0
        self.committed: list[int] = []
        self.closed = False

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        batch = self._records[self._position : self._position + max_records]
        self._position += len(batch)
        return batch

    def commit(self, records: Sequence[Record]) -> None:
        self.committed.extend(record.offset for record in records)

    def rewind(self, records: Sequence[Record]) -> None:
        self._position = min(self._position, min(r.offset for r in records))

    def lag(self) -> int | None:
        return len(self._records) - self._position

    def close(self) -> None:
        self.closed = True


class FakePublisher:
    def __init__(self, fail_flushes: int = 0) -> None:
        self.sent: list[tuple[str, str, bytes, dict[str, bytes]]] = []
        self._pending: list[tuple[str, str, bytes, dict[str, bytes]]] = []
        self.fail_flushes = fail_flushes

    def send(self, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self._pending.append((topic, key, value, dict(headers)))

    def flush(self, timeout: float = 30.0) -> None:
        if self.fail_flushes:
            self.fail_flushes -= 1
            self._pending.clear()
            raise PublishError("broker unavailable")
        self.sent.extend(self._pending)
        self._pending.clear()

    def close(self) -> None:
        pass


def login_record(
    offset: int, event_id: str, *, topic: str = "retention.activity.v1", customer: str = "c1"
) -> Record:
    envelope = build_envelope(
        id=event_id,
        type="login_recorded",
        source="test",
        shop_id="shop_1",
        customer_id=customer,
        data={},
        time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return Record(
        topic=topic, partition=0, offset=offset, key=envelope.key.encode(), value=envelope.to_json_bytes()
    )


def raw_record(offset: int, value: Any, topic: str = "retention.activity.v1") -> Record:
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    return Record(topic=topic, partition=0, offset=offset, key=b"shop_1:c1", value=body)
