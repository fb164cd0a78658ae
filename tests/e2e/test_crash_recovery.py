"""Processes die at any point: nothing committed is lost, and nothing is applied twice."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from retention_shared.testing.infra import eventually
from retention_shared.testing.processes import Platform, create_shop

pytestmark = pytest.mark.e2e

EVENTS = 3000
CUSTOMERS = 40


def segmentation_totals(platform: Platform) -> tuple[int, int]:
    engine = sa.create_engine(platform.databases["segmentation-worker"])
    with engine.connect() as connection:
        purchases = connection.execute(
            sa.text("SELECT COALESCE(SUM(purchase_count), 0) FROM customer_state")
        ).scalar_one()
        orders = connection.execute(sa.text("SELECT COUNT(*) FROM orders")).scalar_one()
    engine.dispose()
    return int(purchases), int(orders)


def test_a_consumer_killed_mid_stream_resumes_with_nothing_lost_or_repeated(
    distributed_platform: Platform,
) -> None:
    platform = distributed_platform
    shop = create_shop(platform)
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "id": f"evt-{i}",
            "type": "purchase_made",
            "customer_id": f"c{i % CUSTOMERS}",
            "occurred_at": now,
            "data": {"order_id": f"o-{i}", "amount": "100", "currency": "JPY"},
        }
        for i in range(EVENTS)
    ]
    for start in range(0, EVENTS, 500):
        response = httpx.post(
            f"{platform.url('customer-api')}/v1/events",
            json={"events": events[start : start + 500]},
            headers=shop,
            timeout=30,
        )
        assert {r["status"] for r in response.json()["results"]} == {"accepted"}

    consumer = platform.processes["segmentation-worker-consumer"]
    # Kill it without warning each time it has worked through another part of the backlog.
    kills = 0
    for threshold in (EVENTS // 5, EVENTS // 2):
        eventually(
            lambda t=threshold: segmentation_totals(platform)[0] > t or None,
            timeout_s=60,
            interval_s=0.02,
            what=f"more than {threshold} purchases applied; consumer log:\n{consumer.tail()}",
        )
        if segmentation_totals(platform)[0] >= EVENTS:
            break
        consumer.signal(signal.SIGKILL)
        consumer.popen.wait()  # type: ignore[union-attr]
        kills += 1
        consumer.start()
        consumer.wait_healthy()
    assert kills >= 1, "the consumer finished before it could be killed; the test proved nothing"

    eventually(
        lambda: segmentation_totals(platform) == (EVENTS, EVENTS),
        timeout_s=90,
        what=f"{EVENTS} purchases applied exactly once; consumer log:\n{consumer.tail()}",
    )
    time.sleep(1)  # anything redelivered after the last kill would be applied by now
    assert segmentation_totals(platform) == (EVENTS, EVENTS)


def test_sigterm_finishes_the_batch_in_flight_and_exits_cleanly(distributed_platform: Platform) -> None:
    exit_codes = distributed_platform.stop()  # fails if any process ignores SIGTERM for 30 s
    # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit too.
    assert set(exit_codes.values()) <= {0, -signal.SIGTERM}
    for name, process in distributed_platform.processes.items():
        if name.endswith("-consumer"):
            assert "workers stopped: every loop finished its work in flight" in process.tail(200), name
