"""The same batch sent concurrently: each event is accepted exactly once, on real PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from customer_api.adapters import tables
from customer_api.service_layer.ingestion import ingest_events
from retention_shared.config import Mode, PlatformSettings
from retention_shared.platform import Assembly, assemble
from retention_shared.runtime import service_named

pytestmark = pytest.mark.integration


@pytest.fixture
def assembly(database_factory: Callable[[], str]) -> Iterator[Assembly]:
    settings = PlatformSettings(mode=Mode.DISTRIBUTED, customer_api_database_url=database_factory())
    built = assemble([service_named("customer-api")], settings, migrate=True)
    yield built
    built.dispose()


def test_concurrent_duplicate_batches_accept_each_event_once(assembly: Assembly) -> None:
    runtime = assembly.runtimes[0]
    now = datetime.now(UTC).isoformat()
    batch: list[Any] = [
        {
            "id": f"e{i}",
            "type": "purchase_made",
            "customer_id": f"c{i % 20}",
            "occurred_at": now,
            "data": {"order_id": f"o{i}", "amount": "100", "currency": "JPY"},
        }
        for i in range(300)
    ]

    def send(_: int) -> list[str]:
        return [
            r.status for r in ingest_events(uow=runtime.uow_factory(), shop_id="shop_1", raw_events=batch)
        ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = Counter(status for statuses in pool.map(send, range(8)) for status in statuses)

    assert outcomes == {"accepted": 300, "duplicate": 300 * 7}
    with runtime.engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(tables.ingested_events)).scalar_one()
        published = connection.execute(
            select(func.count())
            .select_from(tables.messaging.outbox)
            .where(tables.messaging.outbox.c.topic == "retention.activity.v1")
        ).scalar_one()
    assert (stored, published) == (300, 300)
