from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select

from customer_api.adapters import tables
from retention_shared.tenancy import generate_api_key
from retention_shared.testing.harness import ADMIN_TOKEN, Api

PROBLEM_JSON = "application/problem+json"


def auth(shop: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {shop['api_key']}"}


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": event_id,
        "type": "purchase_made",
        "customer_id": "c1",
        "occurred_at": "2026-01-05T09:00:00+09:00",
        "data": {"order_id": f"o-{event_id}", "amount": 4200, "currency": "JPY"},
    }
    document.update(overrides)
    return document


def fields(response: Any) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


class TestShopRegistration:
    def test_the_operator_token_creates_a_shop_with_an_all_scope_key(self, api: Api) -> None:
        created = api.create_shop()

        assert created["id"].startswith("shop_")
        assert created["api_key"].startswith(created["api_key_prefix"] + "_")
        assert set(created["scopes"]) == {"events:write", "customers:read", "customers:write", "admin"}

    @pytest.mark.parametrize(
        "headers", [{}, {"Authorization": "Bearer not-the-token"}, {"Authorization": f"Basic {ADMIN_TOKEN}"}]
    )
    def test_without_the_operator_token_the_answer_is_401_problem_json(
        self, api: Api, headers: dict[str, str]
    ) -> None:
        response = api.client.post("/v1/shops", json={"name": "Sneaky"}, headers=headers)

        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["status"] == 401
        assert api.count(tables.shops) == 0

    def test_a_shop_key_is_not_the_operator_token(self, api: Api, shop: dict[str, Any]) -> None:
        response = api.client.post("/v1/shops", json={"name": "Second"}, headers=auth(shop))

        assert response.status_code == 401
        assert api.count(tables.shops) == 1


class TestEventIngestion:
    def test_a_mixed_batch_reports_each_event_in_order(self, api: Api, shop: dict[str, Any]) -> None:
        batch = [
            event("e-1"),
            event("e-2", type="purchase_teleported"),
            event("e-3", data={"order_id": "o-3", "amount": -5, "currency": "JPY"}),
            event("e-4", type="login_recorded", data={}),
        ]

        response = api.client.post("/v1/events", json={"events": batch}, headers=auth(shop))

        assert response.status_code == 202
        results = response.json()["results"]
        assert [(r["id"], r["status"]) for r in results] == [
            ("e-1", "accepted"),
            ("e-2", "rejected"),
            ("e-3", "rejected"),
            ("e-4", "accepted"),
        ]
        assert results[0]["error"] is None
        assert results[1]["error"].startswith("type: ")
        assert results[2]["error"].startswith("data.amount: ")
        with api.engine.connect() as connection:
            stored = connection.execute(select(tables.ingested_events.c.event_id)).scalars().all()
        assert sorted(stored) == ["e-1", "e-4"]

    def test_a_repeated_id_within_a_batch_is_a_duplicate(self, api: Api, shop: dict[str, Any]) -> None:
        batch = [event("e-1"), event("e-1", data={"order_id": "other", "amount": 1, "currency": "JPY"})]

        response = api.client.post("/v1/events", json={"events": batch}, headers=auth(shop))

        assert [r["status"] for r in response.json()["results"]] == ["accepted", "duplicate"]
        assert api.count(tables.ingested_events) == 1
        assert api.count(tables.messaging.outbox) == 3  # shop_registered, api_key_issued, one purchase

    def test_an_event_sent_again_later_is_a_duplicate(self, api: Api, shop: dict[str, Any]) -> None:
        api.client.post("/v1/events", json={"events": [event("e-1")]}, headers=auth(shop))

        response = api.client.post("/v1/events", json={"events": [event("e-1")]}, headers=auth(shop))

        assert response.json()["results"] == [{"id": "e-1", "status": "duplicate", "error": None}]
        assert api.count(tables.ingested_events) == 1

    def test_the_same_event_id_in_two_shops_is_two_events(self, api: Api, shop: dict[str, Any]) -> None:
        other = api.create_shop("Other shop")

        for owner in (shop, other):
            response = api.client.post("/v1/events", json={"events": [event("e-1")]}, headers=auth(owner))
            assert response.json()["results"][0]["status"] == "accepted"

    def test_a_batch_over_one_thousand_events_is_refused_whole(self, api: Api, shop: dict[str, Any]) -> None:
        batch = [event(f"e-{n}") for n in range(1001)]

        response = api.client.post("/v1/events", json={"events": batch}, headers=auth(shop))

        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM_JSON
        assert fields(response) == ["body.events"]
        assert api.count(tables.ingested_events) == 0
        assert api.count(tables.messaging.outbox) == 2  # only the shop's own shop_registered, api_key_issued

    def test_a_batch_of_exactly_one_thousand_events_is_taken(self, api: Api, shop: dict[str, Any]) -> None:
        batch = [event(f"e-{n}") for n in range(1000)]

        response = api.client.post("/v1/events", json={"events": batch}, headers=auth(shop))

        assert response.status_code == 202
        assert api.count(tables.ingested_events) == 1000

    def test_a_body_over_one_megabyte_is_413(self, api: Api, shop: dict[str, Any]) -> None:
        # 500 events (well within the count limit) whose data carries a 2 KB note each
        data = {"order_id": "o-1", "amount": 1, "currency": "JPY", "note": "x" * 2000}
        body = json.dumps({"events": [event(f"e-{n}", data=data) for n in range(500)]})
        assert len(body.encode()) > 1_000_000

        response = api.client.post(
            "/v1/events", content=body, headers={**auth(shop), "Content-Type": "application/json"}
        )

        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM_JSON
        assert fields(response) == ["body"]
        assert api.count(tables.ingested_events) == 0

    def test_malformed_json_is_422_naming_the_body(self, api: Api, shop: dict[str, Any]) -> None:
        response = api.client.post(
            "/v1/events",
            content=b'{"events": [{"id": "e-1",',
            headers={**auth(shop), "Content-Type": "application/json"},
        )

        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM_JSON
        assert fields(response) == ["body"]
        assert response.json()["errors"][0]["message"].startswith("malformed JSON")
        assert api.count(tables.ingested_events) == 0

    @pytest.mark.parametrize("body", [{"events": []}, {"evnts": [1]}, [event("e-1")]])
    def test_a_body_that_is_not_a_batch_is_422(self, api: Api, shop: dict[str, Any], body: Any) -> None:
        response = api.client.post("/v1/events", json=body, headers=auth(shop))

        assert response.status_code == 422
        assert all(field.startswith("body") for field in fields(response))
        assert api.count(tables.ingested_events) == 0

    def test_events_need_a_key(self, api: Api) -> None:
        response = api.client.post("/v1/events", json={"events": [event("e-1")]})

        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM_JSON


class TestCustomerProfile:
    def test_put_creates_then_replaces(self, api: Api, shop: dict[str, Any]) -> None:
        first = api.client.put(
            "/v1/customers/c1",
            json={"email": "Hana@Example.COM", "phone": "+81 90-1234-5678", "consents": {"email": True}},
            headers=auth(shop),
        )
        assert first.status_code == 201
        assert first.json()["email"] == "Hana@example.com"
        assert first.json()["phone"] == "+819012345678"
        assert first.json()["consents"]["email"]["granted"] is True

        second = api.client.put("/v1/customers/c1", json={"name": "Hana"}, headers=auth(shop))
        assert second.status_code == 200
        body = second.json()
        assert (body["name"], body["email"]) == ("Hana", None)  # the whole profile is replaced
        assert body["consents"]["email"]["granted"] is True  # consents not given are kept

        fetched = api.client.get("/v1/customers/c1", headers=auth(shop))
        assert fetched.status_code == 200
        assert fetched.json()["name"] == "Hana"

    def test_invalid_contact_values_are_422_listing_each_field(self, api: Api, shop: dict[str, Any]) -> None:
        response = api.client.put(
            "/v1/customers/c1",
            json={"email": "not-an-address", "phone": "09012345678", "timezone": "Mars/Olympus_Mons"},
            headers=auth(shop),
        )

        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM_JSON
        assert sorted(fields(response)) == ["body.email", "body.phone", "body.timezone"]
        assert api.count(tables.customers) == 0

    def test_another_shops_customer_is_not_found(self, api: Api, shop: dict[str, Any]) -> None:
        other = api.create_shop("Other shop")
        api.client.put("/v1/customers/c1", json={"name": "Hana"}, headers=auth(shop))

        response = api.client.get("/v1/customers/c1", headers=auth(other))

        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM_JSON
        assert api.client.get("/v1/customers/c1", headers=auth(shop)).status_code == 200

    def test_writing_the_same_id_in_another_shop_creates_a_separate_customer(
        self, api: Api, shop: dict[str, Any]
    ) -> None:
        other = api.create_shop("Other shop")
        api.client.put("/v1/customers/c1", json={"name": "Hana"}, headers=auth(shop))

        response = api.client.put("/v1/customers/c1", json={"name": "Ken"}, headers=auth(other))

        assert response.status_code == 201
        assert api.client.get("/v1/customers/c1", headers=auth(shop)).json()["name"] == "Hana"


class TestScopes:
    def test_a_key_without_the_scope_is_forbidden(self, api: Api, shop: dict[str, Any]) -> None:
        key, prefix, key_hash = generate_api_key()
        with api.engine.begin() as connection:
            connection.execute(
                insert(tables.api_keys).values(
                    key_id="key_events_only",
                    shop_id=shop["id"],
                    name="ingest only",
                    prefix=prefix,
                    key_hash=key_hash,
                    scopes=["events:write"],
                    revoked=False,
                    created_at=datetime.now(UTC),
                )
            )
        restricted = {"Authorization": f"Bearer {key}"}

        read = api.client.get("/v1/customers/c1", headers=restricted)
        write = api.client.put("/v1/customers/c1", json={"name": "Hana"}, headers=restricted)
        ingest = api.client.post("/v1/events", json={"events": [event("e-1")]}, headers=restricted)

        assert read.status_code == 403
        assert read.headers["content-type"] == PROBLEM_JSON
        assert "customers:read" in read.json()["detail"]
        assert write.status_code == 403
        assert api.count(tables.customers) == 0
        assert ingest.status_code == 202

    def test_an_unknown_key_is_401(self, api: Api, shop: dict[str, Any]) -> None:
        response = api.client.get("/v1/customers/c1", headers={"Authorization": "Bearer rtn_nope_nope"})

        assert response.status_code == 401
