"""Dead-letter topics: how many records wait in each, and replaying them once the cause is fixed.

A record whose handler keeps failing goes to `<topic>.dlq` (see `consumer`). Replaying reads the
dead-letter topic as the consumer group `retention-dlq-replay`, so what that group has committed
is what was replayed, and what it has not is what still waits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retention_shared.runtime import Bus

REPLAY_GROUP = "retention-dlq-replay"
DLQ_SUFFIX = ".dlq"
# Failure details the consumer added; the replayed record goes back without them.
_FAILURE_HEADERS = ("error", "error_type", "failed_at")


@dataclass(frozen=True)
class DeadLetterTopic:
    topic: str  # the original topic, where a replay publishes
    dead_letter_topic: str
    waiting: int


def dead_letter_backlog(bus: Bus, topics: list[str]) -> list[DeadLetterTopic]:
    """For each original topic, the dead letters not replayed yet."""
    names = [f"{topic}{DLQ_SUFFIX}" for topic in topics]
    backlog = bus.backlog(REPLAY_GROUP, names)
    return [
        DeadLetterTopic(topic, name, backlog.get(name, 0)) for topic, name in zip(topics, names, strict=True)
    ]


def replay_dead_letters(bus: Bus, topic: str, *, limit: int, idle_timeout_s: float) -> int:
    """Publish dead-lettered records back to `topic`; their ids are unchanged, so consumers that
    did apply them (none should have) drop them through the inbox. Stops after `limit` records,
    or when nothing has arrived for `idle_timeout_s`."""
    subscriber = bus.subscriber(
        group=REPLAY_GROUP, topics=[f"{topic}{DLQ_SUFFIX}"], client_id="retention-dlq-replay"
    )
    publisher = bus.publisher("retention-dlq-replay")
    replayed = 0
    idle_since = time.monotonic()
    try:
        while replayed < limit and time.monotonic() - idle_since < idle_timeout_s:
            records = subscriber.poll(500, min(500, limit - replayed))
            if not records:
                continue
            idle_since = time.monotonic()
            for record in records:
                headers = [(k, v) for k, v in record.headers if k not in _FAILURE_HEADERS]
                headers.append(("replayed_from", f"{record.topic}@{record.offset}".encode()))
                publisher.send(topic, (record.key or b"").decode(), record.value, headers)
            # Published before the replay group moves on: a crash in between replays them again,
            # and the consumers' inbox drops the repeats.
            publisher.flush()
            subscriber.commit(records)
            replayed += len(records)
    finally:
        subscriber.close()
        publisher.close()
    return replayed
