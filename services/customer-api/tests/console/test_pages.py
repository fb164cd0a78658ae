"""The console's pages against the customer-api alone: tenancy, CSRF, escaping, headers, and the
"not available" panels that stand in for services this process does not run."""

from __future__ import annotations

import re
from typing import Any

import pytest

from retention_shared.testing.harness import ADMIN_TOKEN

SCRIPT = "<script>alert('x')</script>"


@pytest.fixture
def two_shops(console: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    shop_a, shop_b = console.create_shop("A"), console.create_shop("B")
    console.put_customer(shop_a, "c1", email="aiko@example.com", name="Aiko of A", consents={"email": True})
    return shop_a, shop_b


class TestTenantIsolation:
    @pytest.mark.parametrize(
        "path", ["/console/customers/c1", "/console/customers/c1/export", "/console/customers/c1/erase"]
    )
    def test_another_shops_customer_pages_answer_404(self, console: Any, two_shops: Any, path: str) -> None:
        _, shop_b = two_shops
        console.sign_in(shop_b["api_key"])

        response = console.client.get(path)

        assert response.status_code == 404
        assert "Aiko" not in response.text

    def test_another_shops_customers_are_not_found_by_search(self, console: Any, two_shops: Any) -> None:
        _, shop_b = two_shops
        console.sign_in(shop_b["api_key"])

        for query in ("c1", "aiko", "example.com"):
            assert "Aiko" not in console.client.get("/console/customers", params={"q": query}).text

    def test_erasing_another_shops_customer_is_refused(self, console: Any, two_shops: Any) -> None:
        shop_a, shop_b = two_shops
        console.sign_in(shop_b["api_key"])
        token = console.csrf("/console/customers")

        response = console.client.post(
            "/console/customers/c1/erase", data={"csrf_token": token, "confirm": "c1"}
        )

        assert response.status_code == 404
        customer = console.client.get(
            "/v1/customers/c1", headers={"Authorization": f"Bearer {shop_a['api_key']}"}
        )
        assert customer.status_code == 200

    def test_the_operator_sees_only_the_shop_chosen(self, console: Any, two_shops: Any) -> None:
        shop_a, shop_b = two_shops
        console.sign_in(ADMIN_TOKEN)
        token = console.csrf("/console/shop")
        console.client.post("/console/shop", data={"csrf_token": token, "shop_id": shop_b["id"]})

        assert console.client.get("/console/customers/c1").status_code == 404

        console.client.post("/console/shop", data={"csrf_token": token, "shop_id": shop_a["id"]})
        assert "Aiko of A" in console.client.get("/console/customers/c1").text


class TestCsrf:
    @pytest.mark.parametrize("token", [None, "", "not-the-token"])
    def test_a_form_without_the_sessions_token_changes_nothing(
        self, console: Any, two_shops: Any, token: str | None
    ) -> None:
        shop_a, _ = two_shops
        console.sign_in(shop_a["api_key"])
        data = {"confirm": "c1"} | ({"csrf_token": token} if token is not None else {})

        response = console.client.post("/console/customers/c1/erase", data=data)

        assert response.status_code == 403
        customer = console.client.get(
            "/v1/customers/c1", headers={"Authorization": f"Bearer {shop_a['api_key']}"}
        )
        assert customer.status_code == 200

    def test_every_form_on_a_page_carries_the_token(self, console: Any, two_shops: Any) -> None:
        shop_a, _ = two_shops
        console.sign_in(shop_a["api_key"])

        for path in ("/console/settings", "/console/customers/c1/erase", "/console/customers/c1"):
            html = console.client.get(path).text
            posts = re.findall(r'<form method="post".*?</form>', html, flags=re.S)
            assert posts, path
            assert all('name="csrf_token"' in form for form in posts), path


class TestCustomerPages:
    def test_user_text_is_escaped_everywhere_it_shows(self, console: Any) -> None:
        shop = console.create_shop()
        console.put_customer(
            shop,
            "c-x",
            email="x@example.com",
            name=SCRIPT,
            attributes={"note": '"><img src=x onerror=alert(1)>'},
        )
        console.sign_in(shop["api_key"])

        for path in ("/console/customers", "/console/customers?q=x%40example", "/console/customers/c-x"):
            html = console.client.get(path).text
            assert SCRIPT not in html, path
            assert "&lt;script&gt;" in html, path
        assert "<img src=x" not in console.client.get("/console/customers/c-x").text

    def test_erasing_needs_the_id_typed_and_then_erases(self, console: Any, two_shops: Any) -> None:
        shop_a, _ = two_shops
        console.sign_in(shop_a["api_key"])
        token = console.csrf("/console/customers/c1/erase")

        wrong = console.client.post(
            "/console/customers/c1/erase", data={"csrf_token": token, "confirm": "c2"}
        )
        assert wrong.status_code == 422
        assert 'id="confirm-error"' in wrong.text

        erased = console.client.post(
            "/console/customers/c1/erase", data={"csrf_token": token, "confirm": "c1"}
        )
        assert erased.status_code == 200
        assert 'data-testid="erasure-receipt"' in erased.text
        assert console.client.get("/console/customers/c1").status_code == 404

    def test_export_downloads_the_customers_document(self, console: Any, two_shops: Any) -> None:
        shop_a, _ = two_shops
        console.sign_in(shop_a["api_key"])

        response = console.client.get("/console/customers/c1/export")

        assert response.status_code == 200
        assert response.headers["content-disposition"] == 'attachment; filename="customer-c1.json"'
        assert "aiko@example.com" in response.text

    def test_parts_from_services_not_running_show_as_not_available(
        self, console: Any, two_shops: Any
    ) -> None:
        shop_a, _ = two_shops
        console.sign_in(shop_a["api_key"])

        page = console.client.get("/console/customers/c1")

        assert page.status_code == 200
        assert "Aiko of A" in page.text
        assert 'data-testid="unavailable"' in page.text  # the scheduler's follow-ups
        for path in ("/console/", "/console/playbooks", "/console/segments", "/console/surveys"):
            response = console.client.get(path)
            assert response.status_code == 200, path
            assert 'data-testid="unavailable"' in response.text, path


class TestSettings:
    def test_a_new_key_is_shown_once(self, console: Any) -> None:
        shop = console.create_shop()
        console.sign_in(shop["api_key"])
        token = console.csrf("/console/settings")

        created = console.client.post(
            "/console/settings/api-keys",
            data={"csrf_token": token, "name": "POS", "scopes": ["events:write"]},
        )

        assert created.status_code == 200
        key = re.search(r'<code class="secret">(rtn_[^<]+)</code>', created.text)
        assert key
        assert key.group(1) not in console.client.get("/console/settings").text
        listed = console.client.get("/v1/api-keys", headers={"Authorization": f"Bearer {key.group(1)}"})
        assert listed.status_code == 403  # the key works, and has only the scope chosen

    def test_invalid_key_form_shows_errors_next_to_the_fields(self, console: Any) -> None:
        shop = console.create_shop()
        console.sign_in(shop["api_key"])
        token = console.csrf("/console/settings")

        response = console.client.post("/console/settings/api-keys", data={"csrf_token": token, "name": ""})

        assert response.status_code == 422
        assert 'id="key-name-error"' in response.text
        assert 'id="key-scopes-error"' in response.text

    def test_loyalty_rules_are_saved_or_refused_per_field(self, console: Any) -> None:
        shop = console.create_shop()
        console.sign_in(shop["api_key"])
        token = console.csrf("/console/settings")
        form = {
            "csrf_token": token,
            "points_per_unit": "2",
            "unit_amount": "100",
            "points_expire_after_days": "365",
            "tier_window_days": "365",
            "tiers": "bronze 0 1.0\nsilver 30000 1.5",
        }

        saved = console.client.post("/console/settings/loyalty", data=form, follow_redirects=False)
        assert saved.status_code == 303
        rules = console.client.get(
            "/v1/loyalty/settings", headers={"Authorization": f"Bearer {shop['api_key']}"}
        )
        assert rules.json()["points_per_unit"] == 2

        refused = console.client.post("/console/settings/loyalty", data=form | {"points_per_unit": "many"})
        assert refused.status_code == 422
        assert 'id="points_per_unit-error"' in refused.text

        refused = console.client.post("/console/settings/loyalty", data=form | {"tiers": "bronze 0 -1"})
        assert refused.status_code == 422
        assert 'id="tiers-error"' in refused.text


class TestPlumbing:
    def test_pages_carry_security_headers(self, console: Any) -> None:
        response = console.client.get("/console/sign-in")

        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"

    def test_the_session_cookie_is_secure_behind_https(self, console: Any) -> None:
        shop = console.create_shop()
        form = console.client.get("/console/sign-in")

        response = console.client.post(
            "/console/sign-in",
            data={"credential": shop["api_key"], "csrf_token": console.csrf_in(form.text)},
            headers={"X-Forwarded-Proto": "https"},
            follow_redirects=False,
        )

        cookie = next(
            c for c in response.headers.get_list("set-cookie") if c.startswith("retention_console=")
        )
        assert "Secure" in cookie

    @pytest.mark.parametrize(
        ("accept_language", "word"),
        [("ja,en;q=0.5", "サインイン"), ("en-GB,ja;q=0.2", "Sign in"), ("fr", "Sign in")],
    )
    def test_the_language_follows_accept_language(
        self, console: Any, accept_language: str, word: str
    ) -> None:
        response = console.client.get("/console/sign-in", headers={"Accept-Language": accept_language})

        assert word in response.text

    def test_the_language_switch_wins_over_the_header(self, console: Any) -> None:
        console.client.get("/console/language/ja?next=/console/sign-in")

        response = console.client.get("/console/sign-in", headers={"Accept-Language": "en"})

        assert 'lang="ja"' in response.text
        assert "サインイン" in response.text

    def test_console_routes_stay_out_of_the_openapi_document(self, console: Any) -> None:
        paths = console.client.get("/openapi.json").json()["paths"]

        assert not [path for path in paths if path.startswith("/console")]

    def test_only_the_vendored_assets_are_served(self, console: Any) -> None:
        assert console.client.get("/console/static/console.css").status_code == 200
        assert console.client.get("/console/static/console.js").status_code == 200
        assert console.client.get("/console/static/..%2Fsessions.py").status_code == 404
