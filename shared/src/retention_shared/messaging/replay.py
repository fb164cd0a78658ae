"""Replaying a dead-letter topic once the cause of the failures is fixed."""

from __future__ import annotations

import time

from retention_shared.config import PlatformSettings
from retention_shared.messaging.kafka import KafkaPublisher, KafkaSubscriber

REPLAY_GROUP = "retention-dlq-replay"


def replay_dead_letters(settings: PlatformSettings, topic: str, *, limit: int, idle_timeout_s: float) -> int:
    """Publish dead-lettered records back to `topic`; their ids are unchanged, so consumers that
    did apply them (none should have) drop them through the inbox."""
    subscriber = KafkaSubscriber(
        settings.kafka_bootstrap,
        group_id=REPLAY_GROUP,
        topics=[f"{topic}.dlq"],
        client_id="retention-dlq-replay",
    )
    publisher = KafkaPublisher(settings.kafka_bootstrap, client_id="retention-dlq-replay")
    replayed = 0
    idle_since = time.monotonic()
    try:
        while replayed < limit and time.monotonic() - idle_since < idle_timeout_s:
            records = subscriber.poll(500, min(500, limit - replayed))
            if not records:
                continue
            idle_since = time.monotonic()
            for record in records:
                headers = [(k, v) for k, v in record.headers if k not in ("error", "error_type", "failed_at")]
                headers.append(("replayed_from", f"{record.topic}@{record.offset}".encode()))
                publisher.send(topic, (record.key or b"").decode(), record.value, headers)
            publisher.flush()
            subscriber.commit(records)
            replayed += len(records)
    finally:
        subscriber.close()
        publisher.close()
    return replayed
