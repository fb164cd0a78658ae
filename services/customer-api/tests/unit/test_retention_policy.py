"""Each shop sets how long its raw events are kept; the job deletes older ones and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from customer_api.service_layer.retention_policy import DEFAULT_RAW_EVENT_DAYS, purge_expired_events
from retention_shared.clock import ManualClock
from retention_shared.config import Mode, PlatformSettings
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import service_named
from retention_shared.testing.harness import ADMIN_TOKEN

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    settings = PlatformSettings(
        mode=Mode.EMBEDDED, data_dir=tmp_path, admin_token=ADMIN_TOKEN, topic_namespace=""
    )
    assembly = assemble([service_named("customer-api")], settings, ManualClock(NOW), migrate=True)
    with TestClient(app_with_workers(assembly, "t", "customer-api", run_workers=False)) as client:
        yield client, assembly.runtimes[0].uow_factory


def new_shop(client: TestClient, name: str) -> dict[str, str]:
    response = client.post(
        "/v1/shops", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


def login(event_id: str, days_ago: int) -> dict[str, Any]:
    at = NOW - timedelta(days=days_ago)
    return {
        "id": event_id,
        "type": "login_recorded",
        "customer_id": "c1",
        "occurred_at": at.isoformat(),
        "data": {},
    }


def history(client: TestClient, shop: dict[str, str]) -> list[str]:
    return [entry["id"] for entry in client.get("/v1/customers/c1/activity", headers=shop).json()["entries"]]


def test_a_shop_starts_with_the_default_period(platform: tuple[TestClient, Any]) -> None:
    client, _ = platform
    policy = client.get("/v1/retention-policy", headers=new_shop(client, "A")).json()
    assert (policy["raw_event_days"], policy["default"]) == (DEFAULT_RAW_EVENT_DAYS, True)


def test_events_older_than_each_shops_period_are_deleted(platform: tuple[TestClient, Any]) -> None:
    client, uow_factory = platform
    strict, lenient = new_shop(client, "Strict"), new_shop(client, "Lenient")
    assert client.put("/v1/retention-policy", json={"raw_event_days": 90}, headers=strict).status_code == 200
    for shop in (strict, lenient):
        events = [login("old", 400), login("middle", 100), login("recent", 10)]
        assert client.post("/v1/events", json={"events": events}, headers=shop).status_code == 202

    deleted = purge_expired_events(uow_factory=uow_factory)

    assert deleted == 2
    assert history(client, strict) == ["recent"]
    assert history(client, lenient) == ["recent", "middle", "old"]


def test_a_period_out_of_bounds_is_a_422_naming_the_field(platform: tuple[TestClient, Any]) -> None:
    client, _ = platform
    response = client.put("/v1/retention-policy", json={"raw_event_days": 5}, headers=new_shop(client, "A"))
    assert response.status_code == 422
    assert "raw_event_days" in response.text
