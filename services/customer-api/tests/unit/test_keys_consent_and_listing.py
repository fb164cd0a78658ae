from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from customer_api.adapters import tables
from retention_shared.config import Mode, PlatformSettings
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import service_named
from retention_shared.testing.harness import ADMIN_TOKEN, Api

PROBLEM_JSON = "application/problem+json"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def key(shop: dict[str, Any]) -> str:
    return str(shop["api_key"])


class TestApiKeyLifecycle:
    def test_a_new_key_is_shown_once_and_listed_by_prefix_only(self, api: Api, key: str) -> None:
        created = api.client.post(
            "/v1/api-keys", json={"name": "warehouse", "scopes": ["events:write"]}, headers=auth(key)
        )
        assert created.status_code == 201
        body = created.json()
        assert body["api_key"].startswith(body["prefix"] + "_")
        listed = api.client.get("/v1/api-keys", headers=auth(key)).json()["keys"]
        assert [k["name"] for k in listed] == ["default", "warehouse"]
        assert all("api_key" not in k and "key_hash" not in k for k in listed)
        with api.engine.connect() as connection:
            stored = [row.key_hash for row in connection.execute(tables.api_keys.select())]
        assert body["api_key"] not in stored  # only hashes are kept

    def test_a_scoped_key_can_do_only_what_its_scopes_allow(self, api: Api, key: str) -> None:
        narrow = api.client.post(
            "/v1/api-keys", json={"name": "feed", "scopes": ["events:write"]}, headers=auth(key)
        ).json()["api_key"]
        assert api.client.get("/v1/customers", headers=auth(narrow)).status_code == 403
        assert (
            api.client.post(
                "/v1/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=auth(narrow)
            ).status_code
            == 403
        )

    def test_rotation_replaces_the_key_and_the_old_one_stops_working(self, api: Api, key: str) -> None:
        first = api.client.post(
            "/v1/api-keys", json={"name": "crm", "scopes": ["customers:read"]}, headers=auth(key)
        ).json()
        rotated = api.client.post(f"/v1/api-keys/{first['key_id']}/rotate", headers=auth(key))
        assert rotated.status_code == 200
        new = rotated.json()
        assert (
            new["name"] == "crm" and new["scopes"] == ["customers:read"] and new["key_id"] != first["key_id"]
        )
        assert api.client.get("/v1/customers", headers=auth(new["api_key"])).status_code == 200
        # The directory caches answers for a few seconds; a fresh app sees the revocation at once.
        listed = {k["key_id"]: k for k in api.client.get("/v1/api-keys", headers=auth(key)).json()["keys"]}
        assert listed[first["key_id"]]["revoked"] is True

    def test_revocation_is_published_for_the_other_services(self, api: Api, key: str) -> None:
        created = api.client.post(
            "/v1/api-keys", json={"name": "tmp", "scopes": ["admin"]}, headers=auth(key)
        ).json()
        assert api.client.delete(f"/v1/api-keys/{created['key_id']}", headers=auth(key)).status_code == 204
        with api.engine.connect() as connection:
            payloads = [row.payload for row in connection.execute(tables.messaging.outbox.select())]
        assert any('"api_key_revoked"' in p and created["key_id"] in p for p in payloads)

    def test_the_last_admin_key_cannot_be_revoked(self, api: Api, key: str) -> None:
        default = api.client.get("/v1/api-keys", headers=auth(key)).json()["keys"][0]
        response = api.client.delete(f"/v1/api-keys/{default['key_id']}", headers=auth(key))
        assert response.status_code == 409
        assert response.headers["content-type"].startswith(PROBLEM_JSON)

    def test_another_shops_key_id_is_not_found(self, api: Api, key: str) -> None:
        other = api.create_shop("Other")
        other_keys = api.client.get("/v1/api-keys", headers=auth(other["api_key"])).json()["keys"]
        response = api.client.delete(f"/v1/api-keys/{other_keys[0]['key_id']}", headers=auth(key))
        assert response.status_code == 404

    def test_the_operator_can_issue_a_key_for_a_shop(self, api: Api, shop: dict[str, Any]) -> None:
        response = api.client.post(
            f"/v1/shops/{shop['id']}/api-keys",
            json={"name": "rescue", "scopes": ["admin"]},
            headers=auth(ADMIN_TOKEN),
        )
        assert response.status_code == 201
        assert api.client.get("/v1/api-keys", headers=auth(response.json()["api_key"])).status_code == 200
        unknown = api.client.post(
            "/v1/shops/shop_nope/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=auth(ADMIN_TOKEN)
        )
        assert unknown.status_code == 404


class TestConsent:
    def test_consent_changes_carry_basis_and_source_and_keep_a_history(self, api: Api, key: str) -> None:
        api.client.put(
            "/v1/customers/c1",
            json={"email": "c1@example.com", "consents": {"email": True}},
            headers=auth(key),
        )
        response = api.client.put(
            "/v1/customers/c1/consents",
            json={
                "email": {"granted": False, "source": "unsubscribe_link"},
                "sms": {"granted": True, "legal_basis": "consent", "source": "checkout"},
            },
            headers=auth(key),
        )
        assert response.status_code == 200
        consents = response.json()["consents"]
        assert consents["email"]["granted"] is False and consents["email"]["source"] == "unsubscribe_link"
        assert consents["sms"]["granted"] is True
        history = api.client.get("/v1/customers/c1/consents/history", headers=auth(key)).json()["history"]
        assert [(h["channel"], h["granted"]) for h in history] == [
            ("email", True),
            ("email", False),
            ("sms", True),
        ]

    def test_setting_the_same_consent_again_adds_no_history(self, api: Api, key: str) -> None:
        api.client.put("/v1/customers/c1", json={"consents": {"email": True}}, headers=auth(key))
        api.client.put("/v1/customers/c1/consents", json={"email": {"granted": True}}, headers=auth(key))
        assert api.count(tables.consent_history) == 1

    def test_unknown_channels_and_bases_are_422_naming_the_field(self, api: Api, key: str) -> None:
        api.client.put("/v1/customers/c1", json={}, headers=auth(key))
        response = api.client.put(
            "/v1/customers/c1/consents",
            json={"fax": {"granted": True}, "email": {"granted": True, "legal_basis": "whim"}},
            headers=auth(key),
        )
        assert response.status_code == 422
        fields = {e["field"] for e in response.json()["errors"]}
        assert fields == {"body.fax", "body.email.legal_basis"}

    def test_consent_of_an_unknown_customer_is_404(self, api: Api, key: str) -> None:
        response = api.client.put(
            "/v1/customers/ghost/consents", json={"email": {"granted": True}}, headers=auth(key)
        )
        assert response.status_code == 404


class TestPatchAndList:
    def test_patch_changes_only_the_fields_given(self, api: Api, key: str) -> None:
        api.client.put(
            "/v1/customers/c1",
            json={"name": "Aiko", "email": "a@example.com", "locale": "ja"},
            headers=auth(key),
        )
        patched = api.client.patch(
            "/v1/customers/c1", json={"name": "Aiko Sato", "locale": None}, headers=auth(key)
        )
        assert patched.status_code == 200
        body = patched.json()
        assert (body["name"], body["email"], body["locale"]) == ("Aiko Sato", "a@example.com", None)

    def test_patch_of_an_unknown_customer_is_404_and_creates_nothing(self, api: Api, key: str) -> None:
        assert (
            api.client.patch("/v1/customers/ghost", json={"name": "x"}, headers=auth(key)).status_code == 404
        )
        assert api.count(tables.customers) == 0

    def test_listing_pages_with_a_cursor_and_filters_attributes(self, api: Api, key: str) -> None:
        for n in range(7):
            api.client.put(
                f"/v1/customers/c{n}",
                json={"attributes": {"plan": "pro" if n % 2 else "free"}},
                headers=auth(key),
            )
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = api.client.get("/v1/customers", params=params, headers=auth(key)).json()
            seen += [c["customer_id"] for c in page["customers"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"c{n}" for n in range(7)]
        pro = api.client.get("/v1/customers", params={"attr.plan": "pro"}, headers=auth(key)).json()[
            "customers"
        ]
        assert [c["customer_id"] for c in pro] == ["c1", "c3", "c5"]

    def test_listing_never_shows_another_shops_customers(self, api: Api, key: str) -> None:
        other = api.create_shop("Other")
        api.client.put("/v1/customers/theirs", json={}, headers=auth(other["api_key"]))
        assert api.client.get("/v1/customers", headers=auth(key)).json()["customers"] == []

    def test_search_finds_the_id_or_the_start_of_an_email_or_a_name_in_any_case(
        self, api: Api, key: str
    ) -> None:
        people = {
            "c1": ("Aiko.Tanaka@example.com", "Aiko Tanaka"),
            "c2": ("kenji@example.com", "Kenji Sato"),
            "c3": ("sato@example.com", "Hana Sato"),
            "c4": ("promo@example.com", "50%_off club"),
            "c5": ("x@example.com", "500 club"),
        }
        for customer_id, (email, name) in people.items():
            api.client.put(
                f"/v1/customers/{customer_id}", json={"email": email, "name": name}, headers=auth(key)
            )

        def found(q: str) -> list[str]:
            response = api.client.get("/v1/customers", params={"q": q}, headers=auth(key))
            assert response.status_code == 200, response.text
            return [c["customer_id"] for c in response.json()["customers"]]

        assert found("aiko") == ["c1"]  # the email's start, in any case
        assert found("SATO") == ["c3"]  # "Kenji Sato" does not start with it
        assert found("c2") == ["c2"]  # the exact id
        assert found("c") == []  # ids match whole, not by their start
        assert found("50%") == ["c4"]  # % and _ are letters here, not wildcards
        assert found("50") == ["c4", "c5"]
        assert api.client.get("/v1/customers", params={"q": ""}, headers=auth(key)).status_code == 422

    def test_a_forged_cursor_is_400_naming_the_cursor(self, api: Api, key: str) -> None:
        response = api.client.get("/v1/customers", params={"cursor": "%%%"}, headers=auth(key))
        assert response.status_code == 400
        assert response.json()["errors"][0]["field"] == "cursor"


class TestRateLimit:
    def test_over_the_limit_the_answer_is_429_with_retry_after(self, tmp_path: Path) -> None:
        settings = PlatformSettings(
            mode=Mode.EMBEDDED, data_dir=tmp_path, admin_token=ADMIN_TOKEN, rate_limit="3/minute"
        )
        assembly = assemble([service_named("customer-api")], settings, migrate=True)
        with TestClient(app_with_workers(assembly, "t", "customer-api", run_workers=False)) as client:
            harness = Api(client, assembly.runtimes[0].engine)
            key = harness.create_shop()["api_key"]
            statuses = [client.get("/v1/customers", headers=auth(key)).status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            limited = client.get("/v1/customers", headers=auth(key))
            assert 0 < int(limited.headers["Retry-After"]) <= 60
            assert limited.headers["content-type"].startswith(PROBLEM_JSON)
            # Another key has its own allowance.
            other = harness.create_shop("Other")["api_key"]
            assert client.get("/v1/customers", headers=auth(other)).status_code == 200

    def test_an_invalid_rate_limit_setting_is_refused_at_start(self) -> None:
        with pytest.raises(ValueError, match="not a rate limit"):
            PlatformSettings(rate_limit="lots")
