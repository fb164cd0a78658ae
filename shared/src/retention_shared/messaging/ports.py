"""The two small interfaces every broker adapter implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = field(default=())

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace")
        return None


class PublishError(RuntimeError):
    """The broker did not acknowledge a record; nothing may be marked as sent."""


class Publisher(Protocol):
    def send(self, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Queue one record; delivery is only certain after `flush` returns."""
        ...

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued record is acknowledged; raise PublishError otherwise."""
        ...

    def close(self) -> None: ...


class Subscriber(Protocol):
    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        """The next records of the subscribed topics, in order per partition."""
        ...

    def commit(self, records: Sequence[Record]) -> None:
        """Mark these records as consumed by the group."""
        ...

    def rewind(self, records: Sequence[Record]) -> None:
        """Deliver these records again on the next poll (used when a batch's transaction failed)."""
        ...

    def lag(self) -> int | None:
        """Records behind the end of the assigned partitions, if known."""
        ...

    def close(self) -> None: ...
