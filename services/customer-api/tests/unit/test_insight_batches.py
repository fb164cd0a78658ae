"""Segment and churn changes applied a batch at a time: newest wins, older never overwrites newer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from customer_api.service_layer import read_model
from retention_shared.events.envelope import Envelope, build_envelope
from retention_shared.testing.harness import Api

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def change(shop_id: str, customer: str, event_type: str, to: str, at: datetime) -> Envelope:
    return build_envelope(
        type=event_type,
        source="segmentation-worker",
        shop_id=shop_id,
        customer_id=customer,
        data={"to": to},
        time=at,
    )


def apply(api: Api, *events: Envelope) -> None:
    with api.uow_factory() as uow:
        read_model.apply_insights(list(events), uow)
        uow.commit()


def insights(api: Api, shop: dict[str, Any], customer: str) -> Any:
    view = api.client.get(f"/v1/customers/{customer}", headers={"Authorization": f"Bearer {shop['api_key']}"})
    return view.json()["insights"]


def test_the_newest_event_of_a_batch_wins_whatever_its_position(api: Api, shop: dict[str, Any]) -> None:
    api.client.put(
        "/v1/customers/c1", json={"name": "Aiko"}, headers={"Authorization": f"Bearer {shop['api_key']}"}
    )
    apply(
        api,
        change(shop["id"], "c1", "segment_changed", "loyal", T0 + timedelta(hours=2)),
        change(shop["id"], "c1", "segment_changed", "new", T0),
        change(shop["id"], "c1", "churn_risk_changed", "high", T0),
    )

    view = insights(api, shop, "c1")
    assert (view["segment"], view["churn_risk"]) == ("loyal", "high")


def test_a_late_batch_does_not_turn_the_view_back_in_time(api: Api, shop: dict[str, Any]) -> None:
    api.client.put(
        "/v1/customers/c1", json={"name": "Aiko"}, headers={"Authorization": f"Bearer {shop['api_key']}"}
    )
    apply(api, change(shop["id"], "c1", "segment_changed", "champions", T0 + timedelta(days=1)))
    apply(
        api,
        change(shop["id"], "c1", "segment_changed", "at_risk", T0),
        change(shop["id"], "c1", "churn_risk_changed", "medium", T0),
    )

    view = insights(api, shop, "c1")
    assert (view["segment"], view["churn_risk"]) == ("champions", "medium")


def scored(shop_id: str, customer: str, clv: float, at: datetime) -> Envelope:
    return build_envelope(
        type="customer_scored",
        source="segmentation-worker",
        shop_id=shop_id,
        customer_id=customer,
        data={"clv": clv, "horizon_months": 12, "expected_purchases": 2.5, "probability_alive": 0.8},
        time=at,
    )


def test_the_newest_clv_is_in_the_view_and_an_older_one_never_replaces_it(
    api: Api, shop: dict[str, Any]
) -> None:
    api.client.put(
        "/v1/customers/c1", json={"name": "Aiko"}, headers={"Authorization": f"Bearer {shop['api_key']}"}
    )
    apply(
        api, scored(shop["id"], "c1", 18_000.0, T0 + timedelta(days=1)), scored(shop["id"], "c1", 9_000.0, T0)
    )
    with api.uow_factory() as uow:  # one event at a time, as a redelivery would come
        read_model.customer_scored(scored(shop["id"], "c1", 5_000.0, T0 + timedelta(hours=1)), uow)
        uow.commit()

    view = insights(api, shop, "c1")
    assert (view["clv"], view["clv_horizon_months"], view["expected_purchases"]) == (18_000.0, 12, 2.5)
    assert view["scores_as_of"].startswith("2026-11-02T09:00:00")
