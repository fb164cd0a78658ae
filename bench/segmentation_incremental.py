"""Incremental scoring throughput: activity events from Kafka into the segmentation-worker's state."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np
from kafka import KafkaProducer
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from bench.infra import KAFKA_BOOTSTRAP, fresh_databases, fresh_topics, require_infrastructure
from bench.registry import Context, Ratio, Result, Target, benchmark
from retention_shared.clock import SystemClock
from retention_shared.db import create_db_engine
from retention_shared.events.envelope import build_envelope
from retention_shared.events.topics import ACTIVITY
from retention_shared.messaging.consumer import ConsumerRunner
from retention_shared.messaging.kafka import KafkaPublisher, KafkaSubscriber
from retention_shared.migrate import upgrade
from retention_shared.runtime import service_named
from segmentation_worker.adapters import tables
from segmentation_worker.service_layer import handlers
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

SHOP = "shop_bench"
CUSTOMERS = 20_000
BATCH_SIZE = 500  # the platform's default RETENTION_CONSUMER_BATCH_SIZE
# The mix of a shop's activity: mostly sign-ins, then orders, some refunds and tickets.
MIX = {"login_recorded": 0.70, "purchase_made": 0.20, "refund_issued": 0.04, "ticket_opened": 0.06}


@benchmark(
    "segmentation_incremental",
    title="Segmentation: incremental scoring throughput (Kafka to updated state)",
    needs=("kafka_baseline",),
    targets=(Target("apply_rate", 20_000, "at least 20,000 events/s from Kafka to updated state"),),
    ratios=(Ratio("incremental / raw Kafka consume", "apply_rate", "kafka_baseline", "consume_rate"),),
)
def segmentation_incremental(ctx: Context) -> Result:
    """A fresh PostgreSQL database migrated with Alembic and a fresh 12-partition activity topic.
    N activity events (70% logins, 20% purchases, 4% refunds, 6% tickets) of 20,000 customers of
    one shop are produced to Kafka first. Then the platform's own ConsumerRunner, with the
    segmentation-worker's batch handler, inbox and one transaction per poll of 500 records,
    consumes them all into customer state: orders, refunds netted, tickets, login days, and
    re-scoring (RFM, segment, churn band, outbox events) of every customer whose purchases changed.
    The rate counts from the first poll that returned records to the last commit, so the consumer
    group's join is left out, as in the Kafka baseline."""
    require_infrastructure()
    n = 20_000 if ctx.quick else 100_000
    result = Result(
        parameters={
            "events": f"{n:,}",
            "customers": f"{CUSTOMERS:,}",
            "mix": ", ".join(f"{share:.0%} {kind}" for kind, share in MIX.items()),
            "batch size": str(BATCH_SIZE),
        }
    )
    namespace = f"bench{secrets.token_hex(4)}"
    topic = ACTIVITY.qualified(namespace)
    with fresh_databases(1) as (url,), fresh_topics([topic]):
        upgrade(service_named("segmentation-worker"), url)
        engine = create_db_engine(url, pool_size=2)
        try:
            produce_s = _produce(topic, n)
            join_s, apply_s, applied = _consume(topic, namespace, engine, n)
            with engine.connect() as connection:
                customers = connection.execute(
                    select(func.count()).select_from(tables.customer_state)
                ).scalar_one()
                scored = connection.execute(
                    select(func.count()).where(tables.customer_state.c.segment.is_not(None))
                ).scalar_one()
        finally:
            engine.dispose()
    result.add(
        "apply_rate", "Kafka to updated state (consume + apply + commit)", applied / apply_s, "events/s"
    )
    result.add("produce_rate", "producing the events (not in the rate)", n / produce_s, "events/s")
    result.add("group_join_s", "consumer group join (not in the rate)", join_s, "s")
    result.notes.append(f"{customers:,} customers with state after the run, {scored:,} of them scored.")
    return result


def _events(n: int) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(11)
    kinds = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    customers = rng.integers(0, CUSTOMERS, size=n)
    now = datetime.now(UTC)
    records = []
    for index, (kind, customer) in enumerate(zip(kinds.tolist(), customers.tolist(), strict=True)):
        customer_id = f"cust-{customer}"
        at = now - timedelta(days=float(rng.uniform(0, 365)))
        if kind == "login_recorded":
            data: dict[str, object] = {}
        elif kind == "ticket_opened":
            data = {"ticket_id": f"t-{index}"}
        else:
            # A refund names an earlier order of the same customer (or one not seen yet).
            order = index if kind == "purchase_made" else max(index - 5 * CUSTOMERS, 0)
            data = {
                "order_id": f"o-{customer}-{order}",
                "amount": str(int(rng.gamma(3, 1500))),
                "currency": "JPY",
            }
        envelope = build_envelope(
            type=kind, source="bench", shop_id=SHOP, customer_id=customer_id, data=data, time=at
        )
        records.append((f"{SHOP}:{customer_id}".encode(), envelope.model_dump_json().encode()))
    return records


def _produce(topic: str, n: int) -> float:
    records = _events(n)
    producer = KafkaProducer(
        bootstrap_servers=KAFKA_BOOTSTRAP,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=1 << 20,
    )
    try:
        producer.partitions_for(topic)
        started = time.perf_counter()
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=120)
        return time.perf_counter() - started
    finally:
        producer.close(timeout=10)


def _consume(topic: str, namespace: str, engine: object, n: int) -> tuple[float, float, int]:
    """(seconds until the first batch was applied, seconds for the rest, events in the rest)."""
    uow_factory = partial(
        SegmentationUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),  # type: ignore[call-overload]
        tables=tables.messaging,
        clock=SystemClock(),
        source="segmentation-worker",
    )
    dead_letters = KafkaPublisher(KAFKA_BOOTSTRAP, client_id="bench-seg-dlq")
    runner = ConsumerRunner(
        service="segmentation-worker",
        group="segmentation-worker",
        subscriber=KafkaSubscriber(
            KAFKA_BOOTSTRAP, group_id=f"{namespace}.segmentation", topics=[topic], client_id="bench-seg"
        ),
        dead_letters=dead_letters,
        uow_factory=uow_factory,
        handlers={},
        batch_handler=handlers.apply_activity,
        batch_types=handlers.ACTIVITY_TYPES,
        batch_size=BATCH_SIZE,
    )
    subscribed = time.perf_counter()
    first: float | None = None
    first_count = 0
    seen = 0
    deadline = time.monotonic() + 600
    try:
        while seen < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"applied only {seen} of {n} events in 600 s")
            count = runner.run_once()
            if count and first is None:
                first, first_count = time.perf_counter(), count
            seen += count
        finished = time.perf_counter()
    finally:
        runner.stop()
        runner.run()  # closes the subscriber (returns at once: stop is set)
        dead_letters.close()
    assert first is not None
    return first - subscribed, finished - first, seen - first_count
