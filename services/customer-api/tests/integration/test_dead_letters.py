"""The operator's dead-letter API: what waits in each dead-letter topic, and replaying it.

The same story runs on the embedded bus and on real Kafka (a fresh topic namespace).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from retention_shared.config import Mode, PlatformSettings
from retention_shared.events.topics import ACTIVITY
from retention_shared.messaging.ports import Record
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import PlatformContext, service_named
from retention_shared.testing.harness import ADMIN_TOKEN

OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(
    params=["embedded", pytest.param("kafka", marks=pytest.mark.integration)],
)
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, PlatformContext]]:
    if request.param == "kafka":
        settings = PlatformSettings(
            mode=Mode.DISTRIBUTED,
            data_dir=tmp_path,
            admin_token=ADMIN_TOKEN,
            kafka_bootstrap=request.getfixturevalue("kafka"),
            topic_namespace=request.getfixturevalue("topic_namespace"),
            customer_api_database_url=f"sqlite:///{tmp_path / 'customer-api.db'}",
        )
    else:
        settings = PlatformSettings(
            mode=Mode.EMBEDDED, data_dir=tmp_path, admin_token=ADMIN_TOKEN, customer_api_database_url=None
        )
    assembly = assemble([service_named("customer-api")], settings, migrate=True)
    # No consumers run: a replayed record must stay on its topic for the test to read it.
    with TestClient(app_with_workers(assembly, "t", "customer-api", run_workers=False)) as client:
        yield client, assembly.platform
    assembly.dispose()


def waiting(client: TestClient, topic: str) -> int:
    response = client.get("/v1/dlq", headers=OPERATOR)
    assert response.status_code == 200, response.text
    (found,) = [t for t in response.json()["topics"] if t["topic"] == topic]
    assert found["dead_letter_topic"] == f"{topic}.dlq"
    return int(found["waiting"])


def read_all(platform: PlatformContext, topic: str, expected: int, group: str) -> list[Record]:
    subscriber = platform.bus.subscriber(group=group, topics=[topic], client_id="test-reader")
    records: list[Record] = []
    deadline = time.monotonic() + 30
    try:
        while len(records) < expected and time.monotonic() < deadline:
            records += subscriber.poll(500, 100)
    finally:
        subscriber.close()
    return records


def test_dead_letters_are_counted_and_replayed_to_their_topic_once(
    platform: tuple[TestClient, PlatformContext],
) -> None:
    client, context = platform
    activity = context.topic_name(ACTIVITY)
    publisher = context.bus.publisher("test-consumer-dlq")
    for number in range(3):
        publisher.send(
            f"{activity}.dlq",
            f"shop-1:cust-{number}",
            b'{"id": "evt-%d"}' % number,
            [("error", b"ValidationError: data.amount"), ("error_type", b"poison"), ("trace", b"t-1")],
        )
    publisher.flush()
    publisher.close()
    assert waiting(client, activity) == 3

    replayed = client.post(f"/v1/dlq/{activity}/replay", headers=OPERATOR)

    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {"topic": activity, "replayed": 3}
    assert waiting(client, activity) == 0
    records = read_all(context, activity, 3, group="test-replay-check")
    assert sorted(r.value for r in records) == [b'{"id": "evt-%d"}' % n for n in range(3)]
    for record in records:
        # The failure details stay behind; other headers travel, and the origin is named.
        assert record.header("error") is None and record.header("error_type") is None
        assert record.header("trace") == "t-1"
        assert (record.header("replayed_from") or "").startswith(f"{activity}.dlq@")
    # A second replay finds nothing left.
    again = client.post(f"/v1/dlq/{activity}/replay", headers=OPERATOR)
    assert again.json()["replayed"] == 0


def test_only_the_operator_sees_or_replays_dead_letters(platform: tuple[TestClient, PlatformContext]) -> None:
    client, context = platform
    shop = client.post("/v1/shops", json={"name": "Kissa"}, headers=OPERATOR).json()
    shop_key = {"Authorization": f"Bearer {shop['api_key']}"}
    activity = context.topic_name(ACTIVITY)

    for response in (
        client.get("/v1/dlq", headers=shop_key),
        client.post(f"/v1/dlq/{activity}/replay", headers=shop_key),
        client.get("/v1/dlq"),
    ):
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")

    unknown = client.post("/v1/dlq/retention.nothing.v1/replay", headers=OPERATOR)
    assert unknown.status_code == 404
    assert "retention.nothing.v1" in unknown.json()["detail"]
