"""Platform end-to-end: REST batch ingest -> outbox relay -> Kafka -> segmentation state."""

from __future__ import annotations

import json
import os
import secrets
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from bench.infra import (
    KAFKA_BOOTSTRAP,
    PARTITIONS,
    ServiceProcess,
    cli,
    fresh_databases,
    fresh_topics,
    platform_env,
    running,
)
from bench.profiling import profile_table
from bench.registry import Context, Ratio, Result, Table, Target, benchmark
from retention_shared.events.topics import ALL_TOPICS

ADMIN_TOKEN = "bench-admin-token"
BATCH_EVENTS = 1000
CLIENTS = 4
TARGET_EVENTS_PER_S = 5000


@dataclass(frozen=True)
class Sizes:
    events: int
    customers: int
    window_s: float  # the most a run may take from the first POST; keeps `make bench` short


FULL = Sizes(events=50_000, customers=10_000, window_s=180)
QUICK = Sizes(events=5_000, customers=1_000, window_s=60)


@dataclass
class Sample:
    at: float  # seconds since the first POST
    accepted: int
    published: int
    applied: int


@dataclass
class Run:
    """What one platform run observed, from the client side and from the two databases."""

    started_wall: float = 0.0
    ingest_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    drained_s: float | None = None
    applied: int = 0
    published_done_s: float | None = None


@benchmark(
    "platform_e2e",
    title="Platform end-to-end: REST batch ingest → Kafka → segmentation state",
    needs=("kafka_baseline",),
    targets=(
        Target(
            "end_to_end_rate",
            TARGET_EVENTS_PER_S,
            f"≥ {TARGET_EVENTS_PER_S:,} events/s end to end on 2 cores (foundation issue)",
        ),
    ),
    ratios=(
        Ratio("end-to-end / raw Kafka end-to-end", "end_to_end_rate", "kafka_baseline", "end_to_end_rate"),
        Ratio("end-to-end / raw Kafka consume", "end_to_end_rate", "kafka_baseline", "consume_rate"),
        Ratio("REST ingest / raw Kafka produce", "ingest_rate", "kafka_baseline", "produce_rate"),
    ),
)
def platform_e2e(ctx: Context) -> Result:
    """Distributed mode as real processes, each with a fresh PostgreSQL database and a fresh topic
    namespace (12 partitions): the customer-api API, the customer-api consumer (its outbox relay)
    and the segmentation-worker consumer. After one shop is created and its tenancy event has
    reached the segmentation-worker (so the consumer group has joined), client threads POST
    /v1/events in batches of 1,000 purchase_made events spread over the customers. End to end is
    N over the time from the first POST until SUM(purchase_count) in the segmentation database
    reaches N. The phases are timed from the rows' own timestamps (ingested_events.received_at,
    outbox.published_at, the segmentation inbox's processed_at)."""
    sizes = QUICK if ctx.quick else FULL
    logs = ctx.log_dir("platform_e2e")
    namespace = f"bench{secrets.token_hex(4)}"
    topics = [topic.qualified(namespace) for topic in ALL_TOPICS]
    result = Result(
        parameters={
            "events": f"{sizes.events:,} purchase_made",
            "customers": f"{sizes.customers:,}",
            "batch": f"{BATCH_EVENTS:,} events per POST",
            "client threads": str(CLIENTS),
            "partitions": str(PARTITIONS),
            "processes": "customer-api API, customer-api consumer, segmentation-worker consumer",
        }
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores != 2:
        result.notes.append(f"This machine gives the run {cores} cores; the target is stated for 2.")
    if ctx.profile:
        result.notes.append(
            "Run with --profile: the service processes ran under cProfile, so these figures are "
            "lower than an unprofiled run's."
        )
    with (
        fresh_databases(2) as (customer_db, segmentation_db),
        fresh_topics(topics + [f"{name}.dlq" for name in topics]),
    ):
        env = platform_env(
            RETENTION_MODE="distributed",
            RETENTION_KAFKA_BOOTSTRAP=KAFKA_BOOTSTRAP,
            RETENTION_TOPIC_NAMESPACE=namespace,
            RETENTION_TOPIC_PARTITIONS=str(PARTITIONS),
            RETENTION_CUSTOMER_API_DATABASE_URL=customer_db,
            RETENTION_SEGMENTATION_DATABASE_URL=segmentation_db,
            RETENTION_ADMIN_TOKEN=ADMIN_TOKEN,
            RETENTION_DATA_DIR=str(logs / "var"),
        )
        cli(["migrate", "customer-api"], env)
        cli(["migrate", "segmentation-worker"], env)
        profiles = {
            "customer-api-api": logs / "customer-api-api.prof",
            "customer-api-consumer": logs / "customer-api-consumer.prof",
            "segmentation-worker-consumer": logs / "segmentation-worker-consumer.prof",
        }
        processes = [
            ServiceProcess(
                "customer-api-api",
                ["run", "api", "customer-api"],
                env,
                logs / "customer-api-api.log",
                profile_to=profiles["customer-api-api"] if ctx.profile else None,
            ),
            ServiceProcess(
                "customer-api-consumer",
                ["run", "consumer", "customer-api"],
                env,
                logs / "customer-api-consumer.log",
                profile_to=profiles["customer-api-consumer"] if ctx.profile else None,
            ),
            ServiceProcess(
                "segmentation-worker-consumer",
                ["run", "consumer", "segmentation-worker"],
                env,
                logs / "segmentation-worker-consumer.log",
                profile_to=profiles["segmentation-worker-consumer"] if ctx.profile else None,
            ),
        ]
        customer_engine = sa.create_engine(customer_db, pool_size=2)
        segmentation_engine = sa.create_engine(segmentation_db, pool_size=2)
        try:
            with running(processes):
                api = processes[0].url
                shop_id, api_key = _create_shop(api)
                _wait_for_shop(segmentation_engine, shop_id)
                bodies = _batches(shop_id, sizes)
                run = _drive(api, api_key, bodies, sizes, customer_engine, segmentation_engine)
            phases = _phases(run, customer_engine, segmentation_engine, shop_id)
        finally:
            customer_engine.dispose()
            segmentation_engine.dispose()
    _report(result, run, sizes, phases)
    if ctx.profile:
        for name, path in profiles.items():
            if path.exists():
                result.tables.append(profile_table(f"cProfile of the {name} process", path))
    return result


def _create_shop(api: str) -> tuple[str, str]:
    response = httpx.post(
        f"{api}/v1/shops",
        json={"name": "Bench Tea", "timezone": "Asia/Tokyo", "currency": "JPY", "locale": "ja"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    return body["id"], body["api_key"]


def _wait_for_shop(engine: sa.Engine, shop_id: str, timeout_s: float = 60) -> None:
    """The shop's tenancy event applied by the segmentation-worker: its consumer group is running."""
    deadline = time.monotonic() + timeout_s
    query = sa.text("SELECT 1 FROM known_shops WHERE shop_id = :shop")
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(query, {"shop": shop_id}).first():
                return
        time.sleep(0.2)
    raise RuntimeError(f"the segmentation-worker did not see shop {shop_id} within {timeout_s:.0f}s")


def _batches(shop_id: str, sizes: Sizes) -> list[bytes]:
    """Every POST body, serialised before the clock starts."""
    base = datetime.now(UTC) - timedelta(days=1)
    bodies = []
    for start in range(0, sizes.events, BATCH_EVENTS):
        events = []
        for i in range(start, min(start + BATCH_EVENTS, sizes.events)):
            amount = 1000 + (i * 37) % 9000
            events.append(
                {
                    "id": f"evt-{shop_id}-{i}",
                    "type": "purchase_made",
                    "customer_id": f"cust-{i % sizes.customers}",
                    "occurred_at": (base - timedelta(minutes=(i * 7919) % 500_000)).isoformat(),
                    "data": {
                        "order_id": f"ORD-{i}",
                        "amount": str(amount),
                        "currency": "JPY",
                        "items": [
                            {
                                "sku": f"SKU-{i % 50}",
                                "name": "Sencha",
                                "category": "tea",
                                "quantity": 1,
                                "unit_price": str(amount),
                            }
                        ],
                    },
                }
            )
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


def _drive(
    api: str,
    api_key: str,
    bodies: list[bytes],
    sizes: Sizes,
    customer_engine: sa.Engine,
    segmentation_engine: sa.Engine,
) -> Run:
    run = Run()
    next_body = iter(range(len(bodies)))
    take = threading.Lock()
    stop = threading.Event()  # set when a client failed or the run is interrupted
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def client() -> int:
        accepted = 0
        with httpx.Client(base_url=api, headers=headers, timeout=120) as http:
            while True:
                if stop.is_set():
                    return accepted
                with take:
                    index = next(next_body, None)
                if index is None:
                    return accepted
                sent = time.perf_counter()
                response = http.post("/v1/events", content=bodies[index])
                latencies.append(time.perf_counter() - sent)
                if response.status_code != 202:
                    raise RuntimeError(
                        f"POST /v1/events answered {response.status_code}: {response.text[:500]}"
                    )
                statuses = [item["status"] for item in response.json()["results"]]
                if any(status != "accepted" for status in statuses):
                    raise RuntimeError(f"not every event was accepted: {sorted(set(statuses))}")
                accepted += len(statuses)

    counters = _Counters(customer_engine, segmentation_engine)
    run.started_wall = time.time()
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS, thread_name_prefix="bench-client") as pool:
        futures = [pool.submit(client) for _ in range(CLIENTS)]
        try:
            while not all(future.done() for future in futures):
                if any(future.done() and future.exception() for future in futures):
                    break
                run.samples.append(counters.sample(time.perf_counter() - started))
                time.sleep(0.5)
        finally:
            stop.set()  # the other clients finish the POST in flight and return
        accepted = sum(future.result() for future in futures)  # re-raises a client's error
    run.ingest_s = time.perf_counter() - started
    run.latencies_s = latencies
    if accepted != sizes.events:
        raise RuntimeError(f"{accepted} of {sizes.events} events accepted")

    deadline = started + sizes.window_s
    while True:
        sample = counters.sample(time.perf_counter() - started)
        run.samples.append(sample)
        if run.published_done_s is None and sample.published >= sizes.events:
            run.published_done_s = sample.at
        if sample.applied >= sizes.events:
            run.drained_s = sample.at
            break
        if time.perf_counter() > deadline:
            break
        time.sleep(0.25)
    run.applied = run.samples[-1].applied
    return run


class _Counters:
    """Progress through the pipeline, read from the services' databases while it runs."""

    def __init__(self, customer_engine: sa.Engine, segmentation_engine: sa.Engine) -> None:
        self._customer = customer_engine
        self._segmentation = segmentation_engine

    def sample(self, at: float) -> Sample:
        with self._customer.connect() as connection:
            accepted, unpublished = connection.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM ingested_events),"
                    " (SELECT count(*) FROM outbox WHERE published_at IS NULL)"
                )
            ).one()
            published = accepted - unpublished
        with self._segmentation.connect() as connection:
            applied = connection.execute(
                sa.text("SELECT COALESCE(SUM(purchase_count), 0) FROM customer_state")
            ).scalar_one()
        return Sample(at, int(accepted), int(published), int(applied))


@dataclass
class Phase:
    name: str
    first: datetime | None
    last: datetime | None
    count: int
    batches: int | None = None

    @property
    def seconds(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        return (self.last - self.first).total_seconds()


def _phases(
    run: Run, customer_engine: sa.Engine, segmentation_engine: sa.Engine, shop_id: str
) -> list[Phase]:
    """Each stage's window, from the timestamps its rows carry."""
    with customer_engine.connect() as connection:
        first, last, count, batches = connection.execute(
            sa.text(
                "SELECT min(received_at), max(received_at), count(*), count(DISTINCT received_at)"
                " FROM ingested_events WHERE shop_id = :shop"
            ),
            {"shop": shop_id},
        ).one()
        ingest = Phase(
            "REST accept (customer-api API → ingested_events + outbox)", first, last, count, batches
        )
        first, last, count, batches = connection.execute(
            sa.text(
                "SELECT min(published_at), max(published_at), count(*), count(DISTINCT published_at)"
                " FROM outbox WHERE published_at IS NOT NULL AND created_at >= :since"
            ),
            {"since": datetime.fromtimestamp(run.started_wall, UTC)},
        ).one()
        relay = Phase("outbox relay (customer-api consumer → Kafka)", first, last, count, batches)
    with segmentation_engine.connect() as connection:
        first, last, count, batches = connection.execute(
            sa.text(
                "SELECT min(processed_at), max(processed_at), count(*), count(DISTINCT processed_at)"
                " FROM inbox WHERE shop_id = :shop AND processed_at >= :since"
            ),
            {"shop": shop_id, "since": datetime.fromtimestamp(run.started_wall, UTC)},
        ).one()
        # processed_at is the time of the inbox write: one value per batch if the consumer applies
        # a poll at once, one per event if it applies events one by one.
        consume = Phase(
            "segmentation consumer (Kafka → customer_state)",
            first,
            last,
            count,
            batches if batches * 2 <= count else None,
        )
        segment_changes = connection.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one()
    return [ingest, relay, consume, Phase("segment_changed events emitted", None, None, int(segment_changes))]


def _report(result: Result, run: Run, sizes: Sizes, phases: list[Phase]) -> None:
    n = sizes.events
    relay, consume = phases[1], phases[2]
    result.add("ingest_rate", "REST ingest (first POST → all answered 202)", n / run.ingest_s, "events/s")
    if run.drained_s is not None:
        result.add("end_to_end_rate", "end-to-end (first POST → all applied)", n / run.drained_s, "events/s")
        result.add("end_to_end_s", "end-to-end time", run.drained_s, "s")
    else:
        elapsed = run.samples[-1].at
        result.add(
            "end_to_end_rate",
            "end-to-end (first POST → time limit)",
            run.applied / elapsed,
            "events/s",
            note=f"NOT drained: {run.applied:,} of {n:,} applied after {elapsed:.0f} s",
        )
        result.notes.append(
            f"The pipeline had not drained {sizes.window_s:.0f} s after the first POST: "
            f"{run.applied:,} of {n:,} purchases were applied; the end-to-end rate is applied / elapsed."
        )
    if relay.seconds:
        result.add(
            "relay_rate",
            "outbox relay while active",
            relay.count / relay.seconds,
            "events/s",
            note="paced by ingest when it ends with it",
        )
    if consume.seconds:
        result.add(
            "consume_rate", "segmentation consumer while active", consume.count / consume.seconds, "events/s"
        )
    after = [sample for sample in run.samples if sample.at >= run.ingest_s]
    if len(after) >= 2 and after[-1].at - after[0].at >= 1:
        result.add(
            "consume_rate_alone",
            "segmentation consumer after ingest ended",
            (after[-1].applied - after[0].applied) / (after[-1].at - after[0].at),
            "events/s",
            note="the API and relay no longer compete for the cores",
        )
    if consume.seconds and consume.batches:
        result.add(
            "consume_ms_per_batch",
            f"segmentation consumer time per batch (~{consume.count / consume.batches:,.0f} events)",
            consume.seconds / max(consume.batches - 1, 1) * 1e3,
            "ms",
        )
    elif consume.seconds:
        result.add(
            "consume_ms_per_event",
            "segmentation consumer time per event",
            consume.seconds / consume.count * 1e3,
            "ms",
        )
    if run.latencies_s:
        ordered = sorted(run.latencies_s)
        result.add(
            "post_p50_ms",
            f"POST /v1/events latency p50 ({BATCH_EVENTS:,} events, {CLIENTS} clients)",
            statistics.median(ordered) * 1e3,
            "ms",
        )
        result.add(
            "post_p95_ms",
            f"POST /v1/events latency p95 ({BATCH_EVENTS:,} events, {CLIENTS} clients)",
            ordered[int(0.95 * (len(ordered) - 1))] * 1e3,
            "ms",
        )
    stages = {
        "REST ingest": result.value("ingest_rate"),
        "outbox relay": result.figures["relay_rate"].value if "relay_rate" in result.figures else None,
        "segmentation consumer": result.figures["consume_rate"].value
        if "consume_rate" in result.figures
        else None,
    }
    measured = {name: rate for name, rate in stages.items() if rate}
    if measured:
        slowest = min(measured, key=lambda name: measured[name])
        result.notes.append(
            f"Slowest stage in this run: the {slowest}, at {measured[slowest]:,.0f} events/s "
            f"(the target needs every stage above {TARGET_EVENTS_PER_S:,}/s)."
        )
    rows = []
    for phase in phases:
        if phase.first is None or phase.last is None:
            rows.append([phase.name, f"{phase.count:,}", "", "", ""])
            continue
        start = phase.first.timestamp() - run.started_wall
        end = phase.last.timestamp() - run.started_wall
        rate = f"{phase.count / phase.seconds:,.0f}" if phase.seconds > 0 else ""
        if phase.batches:
            size = phase.count / phase.batches
            gaps = max(phase.batches - 1, 1)
            batches = f"{phase.batches:,} × {size:,.0f} events, one per {phase.seconds / gaps * 1e3:,.0f} ms"
        else:
            batches = f"per event: {phase.seconds / max(phase.count, 1) * 1e3:.2f} ms"
        rows.append([phase.name, f"{phase.count:,}", f"{start:.1f} → {end:.1f}", rate, batches])
    result.tables.append(
        Table(
            "Where the time went (seconds after the first POST, from the rows' own timestamps)",
            ["stage", "events", "active (s)", "events/s while active", "batches"],
            rows,
        )
    )
    result.tables.append(_timeline(run))


def _timeline(run: Run, rows: int = 12) -> Table:
    """Progress at about `rows` evenly spaced moments, with the rate of each stage in between."""
    samples = run.samples
    step = max(samples[-1].at / rows, 0.5)
    chosen = [samples[0]]
    for sample in samples[1:]:
        if sample.at - chosen[-1].at >= step or sample is samples[-1]:
            chosen.append(sample)
    table = Table(
        "Progress (sampled from the databases while running; rates are since the previous row)",
        ["t (s)", "accepted", "published", "applied", "applied/s"],
        [],
    )
    previous: Sample | None = None
    for sample in chosen:
        rate = ""
        if previous is not None and sample.at > previous.at:
            rate = f"{(sample.applied - previous.applied) / (sample.at - previous.at):,.0f}"
        table.rows.append(
            [f"{sample.at:.1f}", f"{sample.accepted:,}", f"{sample.published:,}", f"{sample.applied:,}", rate]
        )
        previous = sample
    return table
