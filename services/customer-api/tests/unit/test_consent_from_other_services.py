"""A consent recorded by another service (a one-click unsubscribe) reaches the customer's record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from customer_api.service_layer import read_model
from retention_shared.events.envelope import build_envelope
from retention_shared.testing.harness import Api

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def auth(shop: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {shop['api_key']}"}


def unsubscribe(api: Api, shop: dict[str, Any], at: datetime, source: str = "followup-scheduler") -> None:
    event = build_envelope(
        type="consent_changed",
        source=source,
        shop_id=shop["id"],
        customer_id="c1",
        data={"channel": "email", "granted": False, "legal_basis": "consent", "source": "unsubscribe_link"},
        time=at,
    )
    with api.uow_factory() as uow:
        read_model.HANDLERS["consent_changed"](event, uow)
        uow.commit()


def email_consent(api: Api, shop: dict[str, Any]) -> Any:
    return api.client.get("/v1/customers/c1", headers=auth(shop)).json()["consents"]["email"]


def test_an_unsubscribe_in_the_scheduler_withdraws_the_consent_with_its_source(
    api: Api, shop: dict[str, Any]
) -> None:
    api.client.put("/v1/customers/c1", json={"consents": {"email": True}}, headers=auth(shop))

    unsubscribe(api, shop, datetime.now(UTC) + timedelta(minutes=1))

    assert email_consent(api, shop)["granted"] is False
    history = api.client.get("/v1/customers/c1/consents/history", headers=auth(shop)).json()
    assert [entry["source"] for entry in history["history"] if not entry["granted"]] == ["unsubscribe_link"]


def test_an_older_unsubscribe_does_not_undo_a_newer_grant(api: Api, shop: dict[str, Any]) -> None:
    api.client.put("/v1/customers/c1", json={"consents": {"email": True}}, headers=auth(shop))

    unsubscribe(api, shop, T0 - timedelta(days=30))

    assert email_consent(api, shop)["granted"] is True


def test_our_own_consent_events_are_not_applied_twice(api: Api, shop: dict[str, Any]) -> None:
    api.client.put("/v1/customers/c1", json={"consents": {"email": True}}, headers=auth(shop))

    unsubscribe(api, shop, datetime.now(UTC) + timedelta(minutes=1), source="customer-api")

    assert email_consent(api, shop)["granted"] is True
