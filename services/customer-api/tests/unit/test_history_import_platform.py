"""End to end in embedded mode: an imported history reaches the segmentation-worker's scores, and
only orders younger than the follow-up horizon start follow-ups."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retention_shared.config import Mode, PlatformSettings
from retention_shared.platform import all_in_one_app
from retention_shared.testing.harness import ADMIN_TOKEN
from retention_shared.testing.infra import eventually


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = PlatformSettings(
        mode=Mode.EMBEDDED, data_dir=tmp_path, admin_token=ADMIN_TOKEN, rate_limit="1000/second"
    )
    with TestClient(all_in_one_app(settings)) as test_client:
        yield test_client


def test_imported_history_is_scored_and_only_recent_orders_start_followups(client: TestClient) -> None:
    shop = client.post(
        "/v1/shops",
        json={"name": "Kissa", "timezone": "Asia/Tokyo", "currency": "JPY"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()
    key = {"Authorization": f"Bearer {shop['api_key']}"}
    for customer_id in ("old-1", "new-1"):
        client.put(
            f"/v1/customers/{customer_id}",
            json={"email": f"{customer_id}@example.com", "consents": {"email": True}},
            headers=key,
        ).raise_for_status()
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    export = (
        "customer_id,order_id,occurred_at,amount,sku,kind\n"
        "old-1,H-1,2024-03-01,4800,TEA-01,\n"
        "old-1,H-1,2024-03-01,1200,CUP-01,\n"
        "old-1,H-2,2024-09-15T18:30:00+09:00,3000,TEA-02,\n"
        "old-1,H-2,2024-09-20,1000,,refund\n"
        f"new-1,N-1,{an_hour_ago},2500,TEA-03,\n"
    )

    response = client.post("/v1/imports", content=export, headers={**key, "Content-Type": "text/csv"})

    assert response.status_code == 200, response.text
    assert (response.json()["imported"], response.json()["recent"]) == (4, 1)

    def scores(customer_id: str) -> dict[str, Any] | None:
        answer = client.get(f"/v1/customers/{customer_id}/scores", headers=key)
        body: dict[str, Any] = answer.json()
        return body if answer.status_code == 200 and body["purchase_count"] else None

    old = eventually(lambda: scores("old-1"), what="the imported history's scores", timeout_s=60)
    assert old["purchase_count"] == 2
    assert Decimal(old["net_spend"]) == Decimal(4800 + 1200 + 3000 - 1000)
    assert old["first_purchase_at"].startswith("2024-02-29T15:00:00")
    assert old["segment"] is not None
    assert old["rfm"] is not None

    # The recent order starts the post-purchase follow-up; by then the older events, earlier in
    # the same log, were handled too, and started none. (The old customer's segment may start
    # its own playbook: that is a reaction to today's scores, not to the imported orders.)
    def post_purchase(customer_id: str) -> list[dict[str, Any]]:
        followups = client.get(f"/v1/customers/{customer_id}/followups", headers=key).json()["followups"]
        return [step for step in followups if step["playbook"] == "post_purchase"]

    eventually(lambda: post_purchase("new-1"), what="follow-ups of the recent order", timeout_s=60)
    assert post_purchase("old-1") == []
