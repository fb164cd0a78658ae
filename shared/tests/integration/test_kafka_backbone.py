"""The backbone against real PostgreSQL and Kafka: outbox relay, consumer runner, inbox, DLQ."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import Engine, func, insert, select

from retention_shared.clock import SystemClock
from retention_shared.events.envelope import Envelope
from retention_shared.events.topics import ACTIVITY
from retention_shared.messaging.consumer import ConsumerRunner
from retention_shared.messaging.kafka import KafkaPublisher, KafkaSubscriber
from retention_shared.messaging.outbox import OutboxRelay
from retention_shared.testing.infra import eventually
from retention_shared.testing.kit_schema import applied, messaging
from retention_shared.uow import SqlAlchemyUnitOfWork

pytestmark = pytest.mark.integration


def apply_login(event: Envelope, uow: SqlAlchemyUnitOfWork) -> None:
    uow.session.execute(insert(applied).values(event_id=event.id, note=event.customer_id))


def applied_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(applied)).scalar_one())


class RunningConsumer:
    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner
        self.thread = threading.Thread(target=runner.run, daemon=True)

    def __enter__(self) -> ConsumerRunner:
        self.thread.start()
        return self.runner

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()
        self.thread.join(30)


def consumer(
    kafka: str, namespace: str, uow: Callable[[], SqlAlchemyUnitOfWork], group: str = "it"
) -> ConsumerRunner:
    return ConsumerRunner(
        service="it",
        group=group,
        subscriber=KafkaSubscriber(
            kafka, group_id=f"{namespace}-{group}", topics=[ACTIVITY.qualified(namespace)], client_id="it"
        ),
        dead_letters=KafkaPublisher(kafka, client_id="it-dlq"),
        uow_factory=uow,
        handlers={"login_recorded": apply_login},
        retry_delay_s=0,
    )


def publish_logins(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], count: int, *, commit: bool = True
) -> None:
    with uow_factory() as uow:
        for index in range(count):
            uow.publish(
                "login_recorded",
                shop_id="shop_1",
                customer_id=f"c{index % 7}",
                data={},
                event_id=f"login-{index}",
            )
        if commit:
            uow.commit()


def test_events_flow_from_outbox_through_kafka_into_effects_exactly_once(
    kafka: str, topic_namespace: str, pg_engine: Engine, pg_uow: Any
) -> None:
    publish_logins(pg_uow, 200)
    publish_logins(pg_uow, 50, commit=False)  # rolled back: must never appear
    publisher = KafkaPublisher(kafka, client_id="it-relay")
    relay = OutboxRelay(
        service="it",
        engine=pg_engine,
        tables=messaging,
        publisher=publisher,
        clock=SystemClock(),
        namespace=topic_namespace,
    )
    assert relay.relay_once() == 200
    # A relay that died after publishing but before marking would publish the rows again:
    # simulate that by clearing published_at, and prove the inbox absorbs the repeats.
    with pg_engine.begin() as connection:
        connection.execute(messaging.outbox.update().values(published_at=None))
    assert relay.relay_once() == 200
    publisher.close()

    with RunningConsumer(consumer(kafka, topic_namespace, pg_uow)):
        eventually(lambda: applied_count(pg_engine) >= 200, timeout_s=90, what="200 applied events")
        # Give any duplicate a chance to be (wrongly) applied before counting.
        eventually(lambda: relay.backlog() == 0, what="empty outbox")
    assert applied_count(pg_engine) == 200


def test_a_malformed_record_goes_to_the_dead_letter_topic_and_consumption_continues(
    kafka: str, topic_namespace: str, pg_engine: Engine, pg_uow: Any
) -> None:
    topic = ACTIVITY.qualified(topic_namespace)
    producer = KafkaProducer(bootstrap_servers=kafka)
    producer.send(topic, key=b"shop_1:c1", value=b"this is not an envelope")
    good = {
        "id": "ok-1",
        "type": "login_recorded",
        "source": "backend",
        "time": "2026-11-23T00:00:00Z",
        "shop_id": "shop_1",
        "customer_id": "c1",
        "data": {},
    }
    producer.send(topic, key=b"shop_1:c1", value=json.dumps(good).encode())
    producer.flush()
    producer.close()

    with RunningConsumer(consumer(kafka, topic_namespace, pg_uow)):
        eventually(lambda: applied_count(pg_engine) == 1, what="the valid record applied")

    dead = KafkaConsumer(
        f"{topic}.dlq",
        bootstrap_servers=kafka,
        auto_offset_reset="earliest",
        group_id=f"{topic_namespace}-dlq-reader",
        consumer_timeout_ms=10000,
    )
    records = [next(iter(dead))]
    dead.close()
    headers = {key: value.decode() for key, value in records[0].headers}
    assert records[0].value == b"this is not an envelope"
    assert "not JSON" in headers["error"]
    assert headers["original_topic"] == topic
    assert headers["consumer_group"] == "it"


def test_offsets_are_committed_only_after_the_batch_so_a_new_consumer_resumes(
    kafka: str, topic_namespace: str, pg_engine: Engine, pg_uow: Any
) -> None:
    publish_logins(pg_uow, 30)
    publisher = KafkaPublisher(kafka, client_id="it-relay")
    OutboxRelay(
        service="it",
        engine=pg_engine,
        tables=messaging,
        publisher=publisher,
        clock=SystemClock(),
        namespace=topic_namespace,
    ).relay_once()
    publisher.close()
    with RunningConsumer(consumer(kafka, topic_namespace, pg_uow)):
        eventually(lambda: applied_count(pg_engine) == 30, what="30 applied")
    # The group's committed offsets cover every record, so a restarted consumer resumes after them.
    topic = ACTIVITY.qualified(topic_namespace)
    probe = KafkaConsumer(bootstrap_servers=kafka, group_id=f"{topic_namespace}-it", enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in probe.partitions_for_topic(topic)]
    committed = sum(probe.committed(p) or 0 for p in partitions)
    probe.close()
    assert committed == 30
