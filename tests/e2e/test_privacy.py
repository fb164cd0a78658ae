"""Erasure across all four services, over the real bus: purge, receipt, and no resurrection."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from retention_shared.testing.infra import eventually
from retention_shared.testing.processes import Platform, create_shop
from retention_shared.testing.smtp import SmtpServer

from .test_slice import get_when_ready, purchase

pytestmark = pytest.mark.e2e


def test_erasure_cascades_to_every_service_and_nothing_comes_back(
    platform: Platform, smtp_server: SmtpServer
) -> None:
    shop = create_shop(platform)
    customers_url = f"{platform.url('customer-api')}/v1/customers"
    httpx.put(
        f"{customers_url}/cust-1",
        json={"email": "aiko@example.com", "name": "Aiko", "consents": {"email": True}},
        headers=shop,
    ).raise_for_status()
    httpx.post(
        f"{platform.url('customer-api')}/v1/events", json={"events": [purchase("e1", "ORD-1")]}, headers=shop
    )
    smtp_server.wait_for(1)
    get_when_ready(f"{platform.url('segmentation-worker')}/v1/customers/cust-1/scores", shop)

    erased = httpx.delete(f"{customers_url}/cust-1", headers=shop)
    assert erased.status_code == 202, erased.text
    receipt = erased.json()
    assert receipt["status"] == "in_progress"
    assert "cust-1" not in str(receipt) and "aiko" not in str(receipt).lower()

    def completed() -> dict[str, Any] | None:
        current = httpx.get(
            f"{platform.url('customer-api')}/v1/erasures/{receipt['erasure_id']}", headers=shop
        ).json()
        return current if current["status"] == "completed" else None

    # Four consumer groups must each see the event; on a loaded 2-core machine a first rebalance can
    # take most of a minute, so the bound is generous (the cascade itself takes seconds).
    final = eventually(completed, timeout_s=150, what="every service confirming the erasure")
    services = final["services"]
    assert services["customer-api"]["purged"]["profile"] == 1
    assert services["segmentation-worker"]["purged"] == {"behavioural_state": 1, "orders": 1}
    assert services["followup-scheduler"]["purged"] == {
        "contact_points": 1,
        "rendered_messages": 1,
        "pending_followups_cancelled": 4,
        "purchase_history": 1,
    }
    survey_purged = services["survey-service"]["purged"]
    assert {kind: survey_purged[kind] for kind in ("responses", "comments", "invitations")} == {
        "responses": 0,
        "comments": 0,
        "invitations": 0,
    }
    # 1 once the customer's segment (segment_changed) had reached the survey-service, else 0.
    assert survey_purged["customer_records"] in (0, 1)

    assert httpx.get(f"{customers_url}/cust-1", headers=shop).status_code == 404
    assert (
        httpx.get(
            f"{platform.url('segmentation-worker')}/v1/customers/cust-1/scores", headers=shop
        ).status_code
        == 404
    )
    steps = httpx.get(
        f"{platform.url('followup-scheduler')}/v1/customers/cust-1/followups", headers=shop
    ).json()
    assert {(s["step"], s["status"]) for s in steps["followups"]} == {
        ("thank_you", "sent"),
        ("delivery_check", "cancelled"),
        ("usage_tips", "cancelled"),
        ("satisfaction_survey", "cancelled"),
        ("one_month_check_in", "cancelled"),
    }
    found = httpx.get(
        f"{platform.url('customer-api')}/v1/erasures", params={"customer_id": "cust-1"}, headers=shop
    )
    assert [r["erasure_id"] for r in found.json()["erasures"]] == [receipt["erasure_id"]]

    # A later event for the erased id is behaviour, not a profile: nobody is messaged, nothing returns.
    late = httpx.post(
        f"{platform.url('customer-api')}/v1/events", json={"events": [purchase("e2", "ORD-2")]}, headers=shop
    )
    assert late.json()["results"][0]["status"] == "accepted"
    get_when_ready(f"{platform.url('segmentation-worker')}/v1/customers/cust-1/scores", shop)
    time.sleep(3)
    assert len(smtp_server.received) == 1
    assert httpx.get(f"{customers_url}/cust-1", headers=shop).status_code == 404
