"""The thin slice that proves the backbone, hop by hop, in both modes:
shop and customer → POST /v1/events → segmentation state → follow-up e-mail over SMTP → status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from retention_shared.testing.infra import eventually
from retention_shared.testing.processes import Platform, create_shop
from retention_shared.testing.smtp import SmtpServer

pytestmark = pytest.mark.e2e


def purchase(event_id: str, order_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "purchase_made",
        "customer_id": "cust-1",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {
            "order_id": order_id,
            "amount": "4800",
            "currency": "JPY",
            "items": [
                {"sku": "TEA-01", "name": "Sencha", "category": "tea", "quantity": 2, "unit_price": "2400"}
            ],
        },
    }


def get_when_ready(url: str, headers: dict[str, str]) -> httpx.Response:
    """GET that waits while the shop's key is still replicating (401) or the data is not there (404)."""

    def probe() -> httpx.Response | None:
        response = httpx.get(url, headers=headers)
        return response if response.status_code == 200 else None

    return eventually(probe, timeout_s=60, what=f"200 from {url}")


def test_a_purchase_flows_to_segmentation_and_a_single_thank_you_email(
    platform: Platform, smtp_server: SmtpServer
) -> None:
    shop = create_shop(platform)
    customer = httpx.put(
        f"{platform.url('customer-api')}/v1/customers/cust-1",
        json={
            "email": "aiko@example.com",
            "name": "Aiko",
            "locale": "en",
            "timezone": "Asia/Tokyo",
            "consents": {"email": True},
        },
        headers=shop,
    )
    assert customer.status_code == 201, customer.text

    event = purchase("evt-1001", "ORD-1001")
    accepted = httpx.post(f"{platform.url('customer-api')}/v1/events", json={"events": [event]}, headers=shop)
    assert accepted.status_code == 202
    assert accepted.json()["results"] == [{"id": "evt-1001", "status": "accepted", "error": None}]

    # Hop 3: the segmentation-worker recorded the purchase and scored the customer.
    scores = get_when_ready(f"{platform.url('segmentation-worker')}/v1/customers/cust-1/scores", shop).json()
    assert scores["purchase_count"] == 1
    assert scores["net_spend"] == "4800.0000"
    assert scores["segment"] == "new"
    assert scores["rfm"] == {"r": 5, "f": 1, "m": 3}

    # Hop 4: the scheduler sent the immediate thank-you to the real SMTP server.
    [mail] = smtp_server.wait_for(1)
    assert mail.recipients == ["aiko@example.com"]
    assert mail.subject == "Thank you for your order ORD-1001"
    assert "Sencha x 2" in mail.text()
    assert mail.message["X-Retention-Idempotency-Key"].endswith(".post_purchase.ORD-1001.thank_you")

    # Hop 5: the follow-up shows as sent; the rest of the timeline is scheduled.
    def thank_you_sent() -> dict[str, Any] | None:
        followups = get_when_ready(
            f"{platform.url('followup-scheduler')}/v1/customers/cust-1/followups", shop
        )
        steps = {f["step"]: f for f in followups.json()["followups"]}
        return steps if steps.get("thank_you", {}).get("status") == "sent" else None

    steps = eventually(thank_you_sent, what="thank_you sent")
    assert steps["thank_you"]["channel"] == "email"
    later = ("delivery_check", "usage_tips", "satisfaction_survey", "one_month_check_in")
    assert [steps[k]["status"] for k in later] == ["scheduled"] * 4

    # The customer-api's single customer view learns all this from the other services' events.
    def view_is_current() -> dict[str, Any] | None:
        view = httpx.get(f"{platform.url('customer-api')}/v1/customers/cust-1", headers=shop).json()
        insights = view["insights"] or {}
        return view if insights.get("segment") == "new" and len(view["next_followups"]) == 4 else None

    view = eventually(view_is_current, what="segment and follow-ups in the single customer view")
    assert view["next_followups"][0]["step"] == "delivery_check"
    timeline = httpx.get(f"{platform.url('customer-api')}/v1/customers/cust-1/activity", headers=shop).json()
    assert {entry["kind"] for entry in timeline["entries"]} == {"purchase_made", "followup_sent"}

    # The same event again: a duplicate at the door, and still exactly one e-mail.
    again = httpx.post(f"{platform.url('customer-api')}/v1/events", json={"events": [event]}, headers=shop)
    assert again.json()["results"][0]["status"] == "duplicate"
    second_order = purchase("evt-1002", "ORD-1002")
    httpx.post(f"{platform.url('customer-api')}/v1/events", json={"events": [second_order]}, headers=shop)
    mails = smtp_server.wait_for(2)  # the second order proves the pipeline is still flowing
    assert sorted(m.subject for m in mails) == [
        "Thank you for your order ORD-1001",
        "Thank you for your order ORD-1002",
    ]


def test_another_shops_key_cannot_see_the_customer(platform: Platform) -> None:
    shop_a = create_shop(platform)
    shop_b = create_shop(platform)
    httpx.put(
        f"{platform.url('customer-api')}/v1/customers/secret-1",
        json={"email": "s@example.com"},
        headers=shop_a,
    ).raise_for_status()
    assert (
        httpx.get(f"{platform.url('customer-api')}/v1/customers/secret-1", headers=shop_a).status_code == 200
    )
    hidden = httpx.get(f"{platform.url('customer-api')}/v1/customers/secret-1", headers=shop_b)
    assert hidden.status_code == 404
    assert hidden.headers["content-type"].startswith("application/problem+json")
