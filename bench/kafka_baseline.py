"""Baseline: what kafka-python alone moves on this machine, with the platform's producer settings."""

from __future__ import annotations

import os
import secrets
import time

from kafka import KafkaConsumer, KafkaProducer

from bench.infra import KAFKA_BOOTSTRAP, PARTITIONS, fresh_topics
from bench.registry import Context, Result, benchmark

EVENT_BYTES = 1024
KEYS = 10_000
BATCH_SIZE = 1024 * 1024


@benchmark(
    "kafka_baseline",
    title="Baseline: raw kafka-python produce + consume of 1 KB events",
    headline="end_to_end_rate",
)
def kafka_baseline(ctx: Context) -> Result:
    """A fresh topic with 12 partitions. One KafkaProducer (acks=all, idempotent, linger_ms=5,
    batch_size=1 MiB) sends N 1 KB values keyed over 10,000 keys (like the platform's
    shop:customer keys), then flushes. Then one KafkaConsumer in a new group reads all N from the
    beginning, committing offsets after every poll as the platform's consumer does. Produce and
    consume run one after the other in this process; end-to-end is N over both durations."""
    n = 20_000 if ctx.quick else 100_000
    result = Result(
        parameters={
            "events": f"{n:,}",
            "event size": f"{EVENT_BYTES} B",
            "partitions": str(PARTITIONS),
            "keys": f"{KEYS:,}",
        }
    )
    topic = f"bench{secrets.token_hex(4)}.baseline"
    value = os.urandom(EVENT_BYTES)
    keys = [f"shop-bench:cust-{i}".encode() for i in range(KEYS)]
    with fresh_topics([topic]):
        produce_s = _produce(topic, value, keys, n)
        join_s, consume_s = _consume(topic, n)
    result.add("produce_rate", "produce (send all, then flush)", n / produce_s, "events/s")
    result.add("produce_mb", "produce bandwidth", n * EVENT_BYTES / produce_s / 1e6, "MB/s")
    result.add(
        "consume_rate",
        "consume (first record to last, commit per poll)",
        n / consume_s,
        "events/s",
    )
    result.add("end_to_end_rate", "end-to-end (produce + consume)", n / (produce_s + consume_s), "events/s")
    result.add("group_join_s", "consumer group join (not in the rates)", join_s, "s")
    crc_mb_s = _crc32c_speed()
    result.add("crc32c_mb", "kafka-python CRC32C checksum speed", crc_mb_s, "MB/s")
    if not _crc32c_in_c():
        result.notes.append(
            "kafka-python computes the CRC32C of every record batch it produces and (check_crcs, on by "
            "default) of every batch it fetches. The `crc32c` package is not installed, so this runs "
            f"in pure Python at {crc_mb_s:.1f} MB/s, which alone caps each direction at about "
            f"{crc_mb_s * 1e6 / EVENT_BYTES:,.0f} 1 KB events/s per core."
        )
    return result


def _crc32c_in_c() -> bool:
    from kafka.record import util

    return getattr(util, "crc32c_c", None) is not None


def _crc32c_speed() -> float:
    """MB/s of the checksum kafka-python uses on record batches (C if `crc32c` is installed)."""
    from kafka.record.util import calc_crc32c

    data = os.urandom(1024 * 1024)
    rounds = 0
    started = time.perf_counter()
    while True:
        calc_crc32c(data)
        rounds += 1
        elapsed = time.perf_counter() - started
        if elapsed > 0.5:
            return rounds * len(data) / elapsed / 1e6


def _produce(topic: str, value: bytes, keys: list[bytes], n: int) -> float:
    producer = KafkaProducer(
        bootstrap_servers=KAFKA_BOOTSTRAP,
        client_id="retention-bench-producer",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=BATCH_SIZE,
    )
    try:
        producer.partitions_for(topic)  # metadata fetched before the clock starts
        futures = []
        started = time.perf_counter()
        for i in range(n):
            futures.append(producer.send(topic, value=value, key=keys[i % len(keys)]))
        producer.flush(timeout=120)
        elapsed = time.perf_counter() - started
    finally:
        producer.close(timeout=10)
    failed = [future for future in futures if not future.succeeded()]
    if failed:
        raise RuntimeError(f"{len(failed)} of {n} sends failed, e.g. {failed[0].exception!r}")
    return elapsed


def _consume(topic: str, n: int) -> tuple[float, float]:
    """(seconds until the first records arrived, and n over the rate at which the rest arrived)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=KAFKA_BOOTSTRAP,
        client_id="retention-bench-consumer",
        group_id=f"{topic}.group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1000,
    )
    try:
        subscribed = time.perf_counter()
        first: float | None = None
        first_count = 0
        seen = 0
        deadline = time.monotonic() + 180
        while seen < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumed only {seen} of {n} records in 180 s")
            batches = consumer.poll(timeout_ms=500, max_records=1000)
            count = sum(len(records) for records in batches.values())
            if count == 0:
                continue
            if first is None:
                first, first_count = time.perf_counter(), count
            seen += count
            consumer.commit()
        finished = time.perf_counter()
    finally:
        consumer.close(autocommit=False)
    assert first is not None
    rate = (seen - first_count) / (finished - first) if seen > first_count else float("inf")
    return first - subscribed, n / rate
