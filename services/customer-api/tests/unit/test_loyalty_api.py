from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from customer_api.adapters import tables
from customer_api.service_layer import loyalty
from retention_shared.clock import ManualClock
from retention_shared.config import Mode, PlatformSettings
from retention_shared.platform import Assembly, app_with_workers, assemble
from retention_shared.runtime import service_named
from retention_shared.tenancy import generate_api_key

ADMIN_TOKEN = "unit-test-operator-token"
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Purchase:
    id: str
    customer_id: str
    occurred_at: datetime
    data: dict[str, Any]
    type: str = "purchase_made"


class Api:
    def __init__(self, client: TestClient, assembly: Assembly, clock: ManualClock) -> None:
        self.client = client
        self.runtime = assembly.runtimes[0]
        self.clock = clock

    def create_shop(self, name: str = "Kissa Tokyo") -> dict[str, Any]:
        response = self.client.post(
            "/v1/shops", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert response.status_code == 201, response.text
        return response.json()

    def buy(self, shop: dict[str, Any], customer: str, amount: str, order_id: str) -> None:
        """What ingestion does with an accepted purchase."""
        purchase = Purchase(
            f"evt-{order_id}",
            customer,
            self.clock.now(),
            {"order_id": order_id, "amount": amount, "currency": "JPY"},
        )
        with self.runtime.uow_factory() as uow:
            loyalty.apply_loyalty_for_events(uow=uow, shop_id=shop["id"], events=[purchase])
            uow.commit()

    def key_with(self, shop: dict[str, Any], scopes: list[str]) -> dict[str, str]:
        key, prefix, key_hash = generate_api_key()
        with self.runtime.engine.begin() as connection:
            connection.execute(
                insert(tables.api_keys).values(
                    key_id=f"key_{prefix}",
                    shop_id=shop["id"],
                    name="limited",
                    prefix=prefix,
                    key_hash=key_hash,
                    scopes=scopes,
                    revoked=False,
                    created_at=datetime.now(UTC),
                )
            )
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def api(tmp_path: Path, manual_clock: ManualClock) -> Iterator[Api]:
    settings = PlatformSettings(
        mode=Mode.EMBEDDED,
        data_dir=tmp_path,
        admin_token=ADMIN_TOKEN,
        customer_api_database_url=None,
        topic_namespace="",
    )
    assembly = assemble([service_named("customer-api")], settings, manual_clock, migrate=True)
    app = app_with_workers(assembly, "t", "customer-api", run_workers=False)
    with TestClient(app) as client:
        yield Api(client, assembly, manual_clock)


@pytest.fixture
def shop(api: Api) -> dict[str, Any]:
    return api.create_shop()


def auth(shop: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {shop['api_key']}"}


def redeem(api: Api, shop: dict[str, Any], points: int, key: str | None, customer: str = "c1") -> Any:
    headers = {**auth(shop), **({"Idempotency-Key": key} if key else {})}
    return api.client.post(
        f"/v1/customers/{customer}/loyalty/redemptions", json={"points": points}, headers=headers
    )


def fields(response: Any) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


class TestMemberView:
    def test_balance_tier_next_tier_and_expiring_points(self, api: Api, shop: dict[str, Any]) -> None:
        api.buy(shop, "c1", "62000", "o-1")
        api.clock.advance(timedelta(days=340))

        response = api.client.get("/v1/customers/c1/loyalty", headers=auth(shop))

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["balance"] == 620
        assert body["tier"]["name"] == "silver"
        assert (body["tier"]["multiplier"], body["tier"]["min_spend"]) == ("1.25", "50000")
        assert (body["rolling_spend"], body["currency"], body["tier_window_days"]) == ("62000", "JPY", 365)
        assert body["next_tier"] == {"name": "gold", "min_spend": "150000", "spend_needed": "88000"}
        assert body["expiring_soon"]["points"] == 620
        assert body["expiring_soon"]["within_days"] == 30

    def test_the_ledger_is_paged(self, api: Api, shop: dict[str, Any]) -> None:
        for n in range(3):
            api.buy(shop, "c1", "1000", f"o-{n}")

        first = api.client.get("/v1/customers/c1/loyalty/ledger?limit=2", headers=auth(shop)).json()
        second = api.client.get(
            f"/v1/customers/c1/loyalty/ledger?limit=2&before={first['next_before']}", headers=auth(shop)
        ).json()

        assert [e["order_id"] for e in first["entries"]] == ["o-2", "o-1"]
        assert [e["order_id"] for e in second["entries"]] == ["o-0"]
        assert second["next_before"] is None
        assert first["entries"][0]["kind"] == "earn"
        assert first["entries"][0]["points"] == 10

    @pytest.mark.parametrize("path", ["/loyalty", "/loyalty/ledger"])
    def test_another_shops_customer_is_404_problem_json(
        self, api: Api, shop: dict[str, Any], path: str
    ) -> None:
        other = api.create_shop("Other shop")
        api.buy(other, "c1", "4800", "o-1")

        response = api.client.get(f"/v1/customers/c1{path}", headers=auth(shop))

        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM_JSON
        assert api.client.get(f"/v1/customers/c1{path}", headers=auth(other)).status_code == 200

    def test_a_customer_with_a_profile_and_no_points_is_a_bronze_member(
        self, api: Api, shop: dict[str, Any]
    ) -> None:
        api.client.put("/v1/customers/c1", json={"name": "Hana"}, headers=auth(shop))

        body = api.client.get("/v1/customers/c1/loyalty", headers=auth(shop)).json()

        assert (body["balance"], body["tier"]["name"], body["next_tier"]["spend_needed"]) == (
            0,
            "bronze",
            "50000",
        )

    def test_reading_needs_the_customers_read_scope(self, api: Api, shop: dict[str, Any]) -> None:
        response = api.client.get("/v1/customers/c1/loyalty", headers=api.key_with(shop, ["events:write"]))

        assert response.status_code == 403
        assert response.headers["content-type"] == PROBLEM_JSON


class TestRedemptions:
    def test_a_redemption_is_created_once_per_idempotency_key(self, api: Api, shop: dict[str, Any]) -> None:
        api.buy(shop, "c1", "4800", "o-1")

        first = redeem(api, shop, 30, "key-1")
        again = redeem(api, shop, 30, "key-1")

        assert first.status_code == 201, first.text
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert first.json()["balance_after"] == 18
        assert api.client.get("/v1/customers/c1/loyalty", headers=auth(shop)).json()["balance"] == 18

    def test_too_few_points_is_422_naming_points(self, api: Api, shop: dict[str, Any]) -> None:
        api.buy(shop, "c1", "4800", "o-1")

        response = redeem(api, shop, 49, "key-1")

        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["title"] == "Insufficient points"
        assert fields(response) == ["body.points"]

    def test_a_reused_key_with_another_amount_is_409(self, api: Api, shop: dict[str, Any]) -> None:
        api.buy(shop, "c1", "4800", "o-1")
        redeem(api, shop, 30, "key-1")

        response = redeem(api, shop, 10, "key-1")

        assert response.status_code == 409
        assert response.headers["content-type"] == PROBLEM_JSON

    @pytest.mark.parametrize(
        ("points", "key", "field"), [(0, "key-1", "body.points"), (10, None, "header.Idempotency-Key")]
    )
    def test_invalid_requests_are_422_naming_the_field(
        self, api: Api, shop: dict[str, Any], points: int, key: str | None, field: str
    ) -> None:
        api.buy(shop, "c1", "4800", "o-1")

        response = redeem(api, shop, points, key)

        assert response.status_code == 422
        assert fields(response) == [field]

    def test_another_shops_customer_is_404(self, api: Api, shop: dict[str, Any]) -> None:
        other = api.create_shop("Other shop")
        api.buy(other, "c1", "4800", "o-1")

        response = redeem(api, shop, 1, "key-1")

        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM_JSON

    def test_redeeming_needs_the_customers_write_scope(self, api: Api, shop: dict[str, Any]) -> None:
        api.buy(shop, "c1", "4800", "o-1")
        headers = {**api.key_with(shop, ["customers:read"]), "Idempotency-Key": "key-1"}

        response = api.client.post(
            "/v1/customers/c1/loyalty/redemptions", json={"points": 1}, headers=headers
        )

        assert response.status_code == 403


class TestSettings:
    def test_the_defaults_until_the_shop_saves_its_own(self, api: Api, shop: dict[str, Any]) -> None:
        response = api.client.get("/v1/loyalty/settings", headers=auth(shop))

        assert response.status_code == 200
        assert response.json() == {
            "points_per_unit": 1,
            "unit_amount": "100",
            "points_expire_after_days": 365,
            "tier_window_days": 365,
            "tiers": [
                {"name": "bronze", "min_spend": "0", "multiplier": "1.0"},
                {"name": "silver", "min_spend": "50000", "multiplier": "1.25"},
                {"name": "gold", "min_spend": "150000", "multiplier": "1.5"},
                {"name": "platinum", "min_spend": "300000", "multiplier": "2.0"},
            ],
            "currency": "JPY",
            "updated_at": None,
        }

    def test_put_replaces_the_programme(self, api: Api, shop: dict[str, Any]) -> None:
        document = {
            "points_per_unit": 3,
            "unit_amount": 1000,
            "points_expire_after_days": 180,
            "tiers": [
                {"name": "member", "min_spend": 0, "multiplier": 1},
                {"name": "vip", "min_spend": "100000", "multiplier": "2.5"},
            ],
        }

        response = api.client.put("/v1/loyalty/settings", json=document, headers=auth(shop))

        assert response.status_code == 200, response.text
        assert response.json()["tiers"][1] == {"name": "vip", "min_spend": "100000", "multiplier": "2.5"}
        assert response.json()["updated_at"] is not None
        assert api.client.get("/v1/loyalty/settings", headers=auth(shop)).json() == response.json()
        api.buy(shop, "c1", "4800", "o-1")
        assert api.client.get("/v1/customers/c1/loyalty", headers=auth(shop)).json()["balance"] == 12

    def test_settings_that_cannot_work_are_422_naming_each_field(
        self, api: Api, shop: dict[str, Any]
    ) -> None:
        document = {
            "points_per_unit": 1,
            "unit_amount": "100",
            "points_expire_after_days": 365,
            "tiers": [
                {"name": "bronze", "min_spend": 0, "multiplier": 1},
                {"name": "gold", "min_spend": 0, "multiplier": 2},
            ],
        }

        unordered = api.client.put("/v1/loyalty/settings", json=document, headers=auth(shop))
        malformed = api.client.put(
            "/v1/loyalty/settings",
            json={
                **document,
                "unit_amount": "-1",
                "tiers": [{"name": "Bad Name", "min_spend": 0, "multiplier": 0}],
            },
            headers=auth(shop),
        )

        assert unordered.status_code == 422
        assert unordered.headers["content-type"] == PROBLEM_JSON
        assert fields(unordered) == ["body.tiers.1.min_spend"]
        assert malformed.status_code == 422
        assert sorted(fields(malformed)) == [
            "body.tiers.0.multiplier",
            "body.tiers.0.name",
            "body.unit_amount",
        ]
        assert api.client.get("/v1/loyalty/settings", headers=auth(shop)).json()["updated_at"] is None

    def test_settings_need_the_admin_scope(self, api: Api, shop: dict[str, Any]) -> None:
        headers = api.key_with(shop, ["customers:read", "customers:write"])

        assert api.client.get("/v1/loyalty/settings", headers=headers).status_code == 403
        assert api.client.put("/v1/loyalty/settings", json={}, headers=headers).status_code == 403

    def test_each_shop_has_its_own_programme(self, api: Api, shop: dict[str, Any]) -> None:
        other = api.create_shop("Other shop")
        document = api.client.get("/v1/loyalty/settings", headers=auth(shop)).json()
        document = {k: v for k, v in document.items() if k not in ("currency", "updated_at")}

        api.client.put("/v1/loyalty/settings", json={**document, "points_per_unit": 7}, headers=auth(shop))

        assert api.client.get("/v1/loyalty/settings", headers=auth(other)).json()["points_per_unit"] == 1


def test_the_routes_are_documented(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]

    assert {
        "/v1/customers/{customer_id}/loyalty",
        "/v1/customers/{customer_id}/loyalty/ledger",
        "/v1/customers/{customer_id}/loyalty/redemptions",
        "/v1/loyalty/settings",
    } <= set(paths)


class TestCustomerListByTier:
    def test_the_customer_list_filters_by_loyalty_tier(self, api: Api, shop: dict[str, Any]) -> None:
        for customer in ("c1", "c2"):
            api.client.put(f"/v1/customers/{customer}", json={}, headers=auth(shop))
        api.buy(shop, "c1", "62000", "o-1")
        api.buy(shop, "c2", "1000", "o-2")

        def tier(name: str) -> list[str]:
            page = api.client.get("/v1/customers", params={"tier": name}, headers=auth(shop)).json()
            return [c["customer_id"] for c in page["customers"]]

        assert tier("silver") == ["c1"]
        assert tier("bronze") == ["c2"]
        assert tier("platinum") == []
