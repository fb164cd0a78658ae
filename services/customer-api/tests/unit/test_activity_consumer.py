"""Activity events reach history and loyalty through the consumer, whether they came by REST or
straight to the activity topic; imported history earns no points."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from customer_api.service_layer.history_import import SOURCE as IMPORT_SOURCE
from retention_shared.config import Mode, PlatformSettings
from retention_shared.events import topics
from retention_shared.events.envelope import build_envelope
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import service_named
from retention_shared.testing.harness import ADMIN_TOKEN
from retention_shared.testing.infra import eventually

AT = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    settings = PlatformSettings(
        mode=Mode.EMBEDDED,
        data_dir=tmp_path,
        admin_token=ADMIN_TOKEN,
        customer_api_database_url=None,
        topic_namespace="",
        relay_interval_ms=10,
        consumer_poll_timeout_ms=20,
    )
    assembly = assemble([service_named("customer-api")], settings, migrate=True)
    with TestClient(app_with_workers(assembly, "t", "customer-api")) as client:
        yield client, assembly.platform


@pytest.fixture
def shop(platform: tuple[TestClient, Any]) -> dict[str, Any]:
    client, _ = platform
    response = client.post(
        "/v1/shops", json={"name": "Kissa"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 201, response.text
    shop = response.json()
    shop["headers"] = {"Authorization": f"Bearer {shop['api_key']}"}
    return shop


def purchase(order_id: str, amount: str = "5000") -> dict[str, Any]:
    return {"order_id": order_id, "amount": amount, "currency": "JPY"}


def balance(client: TestClient, shop: dict[str, Any], customer: str) -> int:
    response = client.get(f"/v1/customers/{customer}/loyalty", headers=shop["headers"])
    return int(response.json()["balance"]) if response.status_code == 200 else 0


def produce(platform: Any, shop_id: str, event_id: str, source: str, data: dict[str, Any]) -> None:
    """What a shop's backend producing straight to Kafka does (here: the embedded bus)."""
    envelope = build_envelope(
        id=event_id,
        type="purchase_made",
        source=source,
        shop_id=shop_id,
        customer_id="c2",
        data=data,
        time=AT,
    )
    publisher = platform.bus.publisher("test-backend")
    publisher.send(platform.topic_name(topics.ACTIVITY), envelope.key, envelope.to_json_bytes())
    publisher.flush()


def test_a_purchase_accepted_over_rest_earns_points_once_the_consumer_applies_it(
    platform: tuple[TestClient, Any], shop: dict[str, Any]
) -> None:
    client, _ = platform
    event = {"id": "e1", "type": "purchase_made", "customer_id": "c1", "occurred_at": AT.isoformat()}
    response = client.post(
        "/v1/events", json={"events": [{**event, "data": purchase("o1")}]}, headers=shop["headers"]
    )
    assert response.status_code == 202, response.text

    points = eventually(lambda: balance(client, shop, "c1"), what="points for the REST purchase")

    assert points > 0
    again = client.post(
        "/v1/events", json={"events": [{**event, "data": purchase("o1")}]}, headers=shop["headers"]
    )
    assert again.json()["results"][0]["status"] == "duplicate"
    assert balance(client, shop, "c1") == points


def test_an_event_produced_straight_to_the_topic_reaches_history_and_loyalty(
    platform: tuple[TestClient, Any], shop: dict[str, Any]
) -> None:
    client, context = platform
    produce(context, shop["id"], "kafka-1", "shop-backend", purchase("o9"))

    eventually(lambda: balance(client, shop, "c2"), what="points for the purchase produced to the topic")
    history = client.get("/v1/customers/c2/purchases", headers=shop["headers"]).json()
    assert [entry["data"]["order_id"] for entry in history["entries"]] == ["o9"]


def test_imported_history_is_recorded_but_earns_no_points(
    platform: tuple[TestClient, Any], shop: dict[str, Any]
) -> None:
    client, context = platform
    produce(context, shop["id"], "import:o7", IMPORT_SOURCE, purchase("o7"))
    produce(context, shop["id"], "kafka-2", "shop-backend", purchase("o8"))

    eventually(lambda: balance(client, shop, "c2"), what="points for the live purchase")
    ledger = client.get("/v1/customers/c2/loyalty/ledger", headers=shop["headers"]).json()
    assert {entry.get("order_id") for entry in ledger["entries"]} == {"o8"}
