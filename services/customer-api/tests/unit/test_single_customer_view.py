"""The single customer view and history, fed by the other services' events (no synchronous fan-out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from customer_api.service_layer import read_model
from retention_shared.events.envelope import build_envelope
from retention_shared.testing.harness import Api

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def auth(shop: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {shop['api_key']}"}


def deliver(
    api: Api, shop_id: str, event_type: str, data: dict[str, Any], at: datetime, customer: str = "c1"
) -> None:
    """What the customer-api's consumer does with an event from another service."""
    envelope = build_envelope(
        type=event_type, source="test", shop_id=shop_id, customer_id=customer, data=data, time=at
    )
    with api.uow_factory() as uow:
        read_model.HANDLERS[event_type](envelope, uow)
        uow.commit()


def ingest(api: Api, shop: dict[str, Any], *events: dict[str, Any]) -> None:
    response = api.client.post("/v1/events", json={"events": list(events)}, headers=auth(shop))
    assert {r["status"] for r in response.json()["results"]} == {"accepted"}, response.text


def activity(event_id: str, event_type: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": event_type,
        "customer_id": "c1",
        "occurred_at": at.isoformat(),
        "data": data,
    }


@pytest.fixture
def customer(api: Api, shop: dict[str, Any]) -> dict[str, Any]:
    api.client.put("/v1/customers/c1", json={"name": "Aiko", "email": "a@example.com"}, headers=auth(shop))
    return shop


class TestSingleCustomerView:
    def test_before_any_service_reports_the_view_has_no_insights(
        self, api: Api, customer: dict[str, Any]
    ) -> None:
        view = api.client.get("/v1/customers/c1", headers=auth(customer)).json()
        assert view["insights"] is None and view["next_followups"] == []

    def test_insights_and_upcoming_followups_come_with_their_as_of_times(
        self, api: Api, customer: dict[str, Any]
    ) -> None:
        shop_id = customer["id"]
        deliver(
            api, shop_id, "segment_changed", {"from": None, "to": "new", "rfm": {"r": 5, "f": 1, "m": 3}}, T0
        )
        deliver(
            api, shop_id, "churn_risk_changed", {"from": None, "to": "low", "probability_alive": 0.93}, T0
        )
        deliver(
            api,
            shop_id,
            "survey_answered",
            {"survey_id": "sv1", "response_id": "r1", "kind": "nps", "score": 9, "detractor": False},
            T0 + timedelta(hours=1),
        )
        for step, due in (("thank_you", T0), ("delivery_check", T0 + timedelta(days=1))):
            deliver(
                api,
                shop_id,
                "followup_scheduled",
                {
                    "run_id": "run1",
                    "step_id": f"s-{step}",
                    "playbook_key": "post_purchase",
                    "step_key": step,
                    "due_at": due.isoformat(),
                    "channels": ["email"],
                },
                T0,
            )
        deliver(
            api,
            shop_id,
            "followup_sent",
            {
                "run_id": "run1",
                "step_id": "s-thank_you",
                "playbook_key": "post_purchase",
                "step_key": "thank_you",
                "channel": "email",
                "idempotency_key": "k",
            },
            T0,
        )

        view = api.client.get("/v1/customers/c1", headers=auth(customer)).json()
        insights = view["insights"]
        assert (insights["segment"], insights["rfm"], insights["churn_risk"]) == (
            "new",
            {"r": 5, "f": 1, "m": 3},
            "low",
        )
        assert insights["probability_alive"] == pytest.approx(0.93)
        assert insights["segment_as_of"].startswith("2026-11-01T09:00")
        assert insights["last_survey"]["score"] == 9
        assert [f["step"] for f in view["next_followups"]] == ["delivery_check"]

    def test_a_late_older_event_does_not_turn_the_view_back(self, api: Api, customer: dict[str, Any]) -> None:
        shop_id = customer["id"]
        deliver(api, shop_id, "segment_changed", {"from": "new", "to": "loyal"}, T0 + timedelta(days=30))
        deliver(api, shop_id, "segment_changed", {"from": None, "to": "new"}, T0)
        view = api.client.get("/v1/customers/c1", headers=auth(customer)).json()
        assert view["insights"]["segment"] == "loyal"

    def test_the_list_filters_by_segment_and_churn_risk(self, api: Api, customer: dict[str, Any]) -> None:
        api.client.put("/v1/customers/c2", json={}, headers=auth(customer))
        deliver(api, customer["id"], "segment_changed", {"to": "champions"}, T0)
        deliver(api, customer["id"], "churn_risk_changed", {"to": "high"}, T0, customer="c2")

        def ids(**params: str) -> list[str]:
            page = api.client.get("/v1/customers", params=params, headers=auth(customer)).json()
            return [c["customer_id"] for c in page["customers"]]

        assert ids(segment="champions") == ["c1"]
        assert ids(churn_risk="high") == ["c2"]
        assert ids(segment="champions", churn_risk="high") == []


class TestHistory:
    def test_the_timeline_merges_every_source_newest_first_and_pages_without_gaps(
        self, api: Api, customer: dict[str, Any]
    ) -> None:
        order = {"order_id": "o1", "amount": "1200", "currency": "JPY"}
        ingest(
            api,
            customer,
            activity("p1", "purchase_made", T0, order),
            activity("l1", "login_recorded", T0 + timedelta(hours=2), {}),
            activity("t1", "ticket_opened", T0 + timedelta(hours=3), {"ticket_id": "tk1"}),
            activity("r1", "refund_issued", T0 + timedelta(hours=3), {**order, "amount": "200"}),
        )
        deliver(
            api,
            customer["id"],
            "followup_sent",
            {
                "run_id": "run1",
                "step_id": "s1",
                "playbook_key": "pp",
                "step_key": "thank_you",
                "channel": "email",
                "idempotency_key": "k",
            },
            T0 + timedelta(minutes=1),
        )
        deliver(
            api,
            customer["id"],
            "survey_answered",
            {"survey_id": "sv", "response_id": "resp1", "kind": "csat", "score": 5, "detractor": False},
            T0 + timedelta(hours=4),
        )

        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = api.client.get("/v1/customers/c1/activity", params=params, headers=auth(customer)).json()
            seen += [f"{e['kind']}:{e['id']}" for e in page["entries"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [
            "survey_answered:resp1",
            "refund_issued:r1",
            "ticket_opened:t1",
            "login_recorded:l1",
            "followup_sent:s1",
            "purchase_made:p1",
        ]

    def test_purchases_and_tickets_are_separate_views(self, api: Api, customer: dict[str, Any]) -> None:
        ingest(
            api,
            customer,
            activity("p1", "purchase_made", T0, {"order_id": "o1", "amount": "1", "currency": "JPY"}),
            activity("t1", "ticket_opened", T0, {"ticket_id": "tk1", "priority": "critical"}),
        )
        purchases = api.client.get("/v1/customers/c1/purchases", headers=auth(customer)).json()["entries"]
        tickets = api.client.get("/v1/customers/c1/tickets", headers=auth(customer)).json()["entries"]
        assert [e["id"] for e in purchases] == ["p1"] and purchases[0]["data"]["order_id"] == "o1"
        assert [e["id"] for e in tickets] == ["t1"] and tickets[0]["data"]["priority"] == "critical"

    def test_another_shops_customer_history_is_404(self, api: Api, customer: dict[str, Any]) -> None:
        other = api.create_shop("Other")
        for path in ("activity", "purchases", "tickets"):
            assert api.client.get(f"/v1/customers/c1/{path}", headers=auth(other)).status_code == 404
