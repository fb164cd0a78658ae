"""Erasure in the customer-api: immediate purge here, a receipt without personal data, confirmations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from customer_api.adapters import tables
from customer_api.service_layer import erasure, read_model
from retention_shared.events.envelope import build_envelope
from retention_shared.testing.harness import Api


def auth(shop: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {shop['api_key']}"}


def confirm(api: Api, shop_id: str, erasure_id: str, service: str, purged: dict[str, int]) -> None:
    event = build_envelope(
        type="erasure_completed",
        source=service,
        shop_id=shop_id,
        customer_id="c1",
        data={"erasure_id": erasure_id, "service": service, "purged": purged},
        time=datetime.now(UTC),
    )
    with api.uow_factory() as uow:
        erasure.erasure_completed(event, uow)
        uow.commit()


class TestErasure:
    def test_the_profile_goes_at_once_and_the_receipt_holds_no_personal_data(
        self, api: Api, shop: dict[str, Any]
    ) -> None:
        api.client.put(
            "/v1/customers/c1",
            json={"email": "hana@example.com", "name": "Hana", "consents": {"email": True}},
            headers=auth(shop),
        )
        response = api.client.delete("/v1/customers/c1", headers=auth(shop))
        assert response.status_code == 202
        receipt = response.json()
        assert receipt["status"] == "in_progress"
        assert receipt["services"]["customer-api"]["purged"]["profile"] == 1
        assert receipt["services"]["segmentation-worker"] is None
        assert api.client.get("/v1/customers/c1", headers=auth(shop)).status_code == 404
        assert api.count(tables.customers) == 0 and api.count(tables.consents) == 0
        assert api.count(tables.consent_history) == 0
        with api.engine.connect() as connection:
            stored = connection.execute(select(tables.erasure_receipts)).mappings().one()
        # A hex digest may contain "c1" by chance, so look for the id as a value, not as a substring.
        assert "c1" not in stored.values() and "hana" not in str(dict(stored)).lower()
        with api.engine.connect() as connection:
            payloads = [row.payload for row in connection.execute(tables.messaging.outbox.select())]
        assert any('"customer_erased"' in p and receipt["erasure_id"] in p for p in payloads)

    def test_the_receipt_completes_when_every_service_confirms(self, api: Api, shop: dict[str, Any]) -> None:
        api.client.put("/v1/customers/c1", json={}, headers=auth(shop))
        erasure_id = api.client.delete("/v1/customers/c1", headers=auth(shop)).json()["erasure_id"]
        for service in erasure.CONFIRMING_SERVICES:
            current = api.client.get(f"/v1/erasures/{erasure_id}", headers=auth(shop)).json()
            assert current["status"] == "in_progress"
            confirm(api, shop["id"], erasure_id, service, {"things": 2})
        final = api.client.get(f"/v1/erasures/{erasure_id}", headers=auth(shop)).json()
        assert final["status"] == "completed" and final["completed_at"]
        assert final["services"]["followup-scheduler"]["purged"] == {"things": 2}

    def test_receipts_can_be_found_by_the_customer_id_they_do_not_store(
        self, api: Api, shop: dict[str, Any]
    ) -> None:
        api.client.put("/v1/customers/c1", json={}, headers=auth(shop))
        erasure_id = api.client.delete("/v1/customers/c1", headers=auth(shop)).json()["erasure_id"]
        found = api.client.get("/v1/erasures", params={"customer_id": "c1"}, headers=auth(shop)).json()
        assert [r["erasure_id"] for r in found["erasures"]] == [erasure_id]
        other = api.client.get("/v1/erasures", params={"customer_id": "c2"}, headers=auth(shop)).json()
        assert other["erasures"] == []

    def test_another_shop_can_neither_erase_nor_see_the_receipt(self, api: Api, shop: dict[str, Any]) -> None:
        api.client.put("/v1/customers/c1", json={}, headers=auth(shop))
        other = api.create_shop("Other")
        assert api.client.delete("/v1/customers/c1", headers=auth(other)).status_code == 404
        erasure_id = api.client.delete("/v1/customers/c1", headers=auth(shop)).json()["erasure_id"]
        assert api.client.get(f"/v1/erasures/{erasure_id}", headers=auth(other)).status_code == 404
        confirm(api, other["id"], erasure_id, "segmentation-worker", {})  # a forged confirmation is ignored
        receipt = api.client.get(f"/v1/erasures/{erasure_id}", headers=auth(shop)).json()
        assert receipt["services"]["segmentation-worker"] is None

    def test_upserting_again_after_erasure_creates_a_fresh_customer(
        self, api: Api, shop: dict[str, Any]
    ) -> None:
        api.client.put("/v1/customers/c1", json={"name": "Old"}, headers=auth(shop))
        api.client.delete("/v1/customers/c1", headers=auth(shop))
        again = api.client.put("/v1/customers/c1", json={"name": "New"}, headers=auth(shop))
        assert again.status_code == 201 and again.json()["name"] == "New"


class TestExport:
    def test_the_export_holds_profile_consents_history_and_what_other_services_concluded(
        self, api: Api, shop: dict[str, Any]
    ) -> None:
        api.client.put(
            "/v1/customers/c1",
            json={"email": "hana@example.com", "consents": {"email": True}},
            headers=auth(shop),
        )
        api.client.post(
            "/v1/events",
            headers=auth(shop),
            json={
                "events": [
                    {
                        "id": "p1",
                        "type": "purchase_made",
                        "customer_id": "c1",
                        "occurred_at": "2026-11-01T10:00:00+09:00",
                        "data": {"order_id": "o1", "amount": "1200", "currency": "JPY"},
                    }
                ]
            },
        )
        segment = build_envelope(
            type="segment_changed",
            source="t",
            shop_id=shop["id"],
            customer_id="c1",
            data={"to": "new"},
            time=datetime.now(UTC),
        )
        with api.uow_factory() as uow:
            read_model.segment_changed(segment, uow)
            uow.commit()
        response = api.client.get("/v1/customers/c1/export", headers=auth(shop))
        assert response.status_code == 200
        assert "attachment" in response.headers["content-disposition"]
        document = response.json()
        assert document["profile"]["email"] == "hana@example.com"
        assert [c["channel"] for c in document["consents"]] == ["email"]
        assert len(document["consent_history"]) == 1
        assert [e["id"] for e in document["events"]] == ["p1"]
        assert document["insights"]["segment"] == "new"

    def test_exporting_another_shops_customer_is_404(self, api: Api, shop: dict[str, Any]) -> None:
        api.client.put("/v1/customers/c1", json={}, headers=auth(shop))
        other = api.create_shop("Other")
        assert api.client.get("/v1/customers/c1/export", headers=auth(other)).status_code == 404
