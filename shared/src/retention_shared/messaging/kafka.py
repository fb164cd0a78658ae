"""Kafka adapters on kafka-python 3.x: an idempotent producer, a manually-committing consumer, topic admin."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata

from retention_shared.messaging.ports import PublishError, Record

log = logging.getLogger(__name__)


def _servers(bootstrap: str) -> list[str]:
    return [server.strip() for server in bootstrap.split(",") if server.strip()]


class KafkaPublisher:
    """Idempotent producer with acks=all: retries cannot duplicate or reorder records within a partition."""

    def __init__(self, bootstrap: str, *, client_id: str, linger_ms: int = 5) -> None:
        self._producer = KafkaProducer(
            bootstrap_servers=_servers(bootstrap),
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            batch_size=256 * 1024,
        )
        self._pending: list[Any] = []

    def send(self, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        future = self._producer.send(topic, value=value, key=key.encode(), headers=list(headers))
        self._pending.append(future)

    def flush(self, timeout: float = 30.0) -> None:
        pending, self._pending = self._pending, []
        try:
            self._producer.flush(timeout=timeout)
            for future in pending:
                future.get(timeout=timeout)
        except KafkaError as exc:
            raise PublishError(str(exc)) from exc

    def close(self) -> None:
        self._producer.close(timeout=10)


# Offset commits refused because the group's membership moved on since the poll.
REBALANCED = (CommitFailedError, RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError)


class KafkaSubscriber:
    """A group consumer that never auto-commits: offsets move only after the batch's DB commit."""

    def __init__(self, bootstrap: str, *, group_id: str, topics: Iterable[str], client_id: str) -> None:
        topics = list(topics)
        self._consumer = KafkaConsumer(
            bootstrap_servers=_servers(bootstrap),
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=1000,
            # A crashed member's partitions wait for its session to expire; 10 s (not the 45 s
            # default) bounds how long a killed consumer stalls its share of the work.
            session_timeout_ms=10000,
            heartbeat_interval_ms=3000,
            # A group that formed before the broker had metadata for new topics assigns nothing;
            # refreshing every 5 s (not 5 min) notices the partitions and rebalances promptly.
            metadata_max_age_ms=5000,
        )
        # Learn the topics' partitions before joining the group: a leader that assigns while its
        # metadata is still empty hands out nothing, and the group may then sit idle for minutes.
        missing = [topic for topic in topics if not self._consumer.partitions_for_topic(topic)]
        if missing:
            log.warning("topics not found (run `retention topics ensure`): %s", ", ".join(missing))
        self._consumer.subscribe(topics)

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        records: list[Record] = []
        for raw_records in batches.values():
            for raw in raw_records:
                records.append(
                    Record(
                        topic=raw.topic,
                        partition=raw.partition,
                        offset=raw.offset,
                        key=raw.key,
                        value=raw.value or b"",
                        headers=tuple((k, v or b"") for k, v in (raw.headers or [])),
                    )
                )
        return records

    def commit(self, records: Sequence[Record]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            next_offset = record.offset + 1
            current = offsets.get(partition)
            if current is None or current.offset < next_offset:
                offsets[partition] = OffsetAndMetadata(next_offset, "", -1)
        try:
            self._consumer.commit(offsets)
        except REBALANCED as exc:
            # The group rebalanced under us (kafka-python 3 may raise the broker's own error
            # rather than CommitFailedError; uncaught, it would end the consumer thread). The
            # effects are already committed in the DB, and the inbox will drop the redelivered
            # records, so this loses nothing.
            log.warning("offset commit failed after rebalance: %s", exc)

    def rewind(self, records: Sequence[Record]) -> None:
        first: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            first[partition] = min(first.get(partition, record.offset), record.offset)
        assigned = self._consumer.assignment()
        for partition, offset in first.items():
            if partition in assigned:
                self._consumer.seek(partition, offset)

    def lag(self) -> int | None:
        assigned = list(self._consumer.assignment())
        if not assigned:
            return 0
        try:
            ends = self._consumer.end_offsets(assigned)
            return sum(max(0, ends[p] - self._consumer.position(p)) for p in assigned)
        except KafkaError:
            return None

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def group_backlog(bootstrap: str, group_id: str, topics: Sequence[str]) -> dict[str, int]:
    """Records of each topic that `group_id` has not committed yet, without joining the group
    (which would take its partitions from a member that is running)."""
    admin = KafkaAdminClient(bootstrap_servers=_servers(bootstrap), client_id="retention-admin")
    consumer = KafkaConsumer(
        bootstrap_servers=_servers(bootstrap), client_id="retention-admin", enable_auto_commit=False
    )
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return dict.fromkeys(topics, 0)
        first, ends = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
        committed = admin.list_group_offsets(group_id).get(group_id, {})
        backlog = dict.fromkeys(topics, 0)
        for partition in partitions:
            done = committed.get(partition)
            # Records removed by retention are gone whether or not the group read them.
            start = max(first[partition], done.offset if done is not None and done.offset >= 0 else 0)
            backlog[partition.topic] += max(0, ends[partition] - start)
        return backlog
    finally:
        consumer.close()
        admin.close()


def ensure_topics(bootstrap: str, names: Iterable[str], *, partitions: int, replication: int) -> list[str]:
    """Create the missing topics; return the names that were created."""
    admin = KafkaAdminClient(bootstrap_servers=_servers(bootstrap), client_id="retention-admin")
    try:
        existing = set(admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            # Another process may create a topic between our list and our create.
            with suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    {
                        name: {"num_partitions": partitions, "replication_factor": replication}
                        for name in missing
                    },
                    wait_for_metadata=True,
                )
        return missing
    finally:
        admin.close()


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    """Delete the topics that exist among `names` (for throwaway test namespaces)."""
    admin = KafkaAdminClient(bootstrap_servers=_servers(bootstrap), client_id="retention-admin")
    try:
        existing = set(admin.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            admin.delete_topics(doomed)
    finally:
        admin.close()


def broker_reachable(bootstrap: str, timeout_ms: int = 3000) -> bool:
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=_servers(bootstrap),
            client_id="retention-probe",
            bootstrap_timeout_ms=timeout_ms,
        )
    except KafkaError:
        return False
    admin.close()
    return True
