"""Signing in and out of the console: cookies, CSRF on the sign-in form, expiry, revoked keys."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from customer_api.adapters import tables
from customer_api.entrypoints.console.sessions import SessionStore
from retention_shared.testing.harness import ADMIN_TOKEN


class TestShopStaffSignIn:
    def test_a_shop_key_opens_a_session_with_a_safe_cookie(self, console: Any) -> None:
        shop = console.create_shop()

        response = console.sign_in(shop["api_key"])

        assert response.status_code == 303
        assert response.headers["location"] == "/console/"
        cookie = next(
            c for c in response.headers.get_list("set-cookie") if c.startswith("retention_console=")
        )
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Path=/console" in cookie
        assert "Max-Age=" in cookie
        page = console.client.get("/console/")
        assert page.status_code == 200
        assert shop["id"] in page.text

    def test_the_session_row_keeps_the_key_id_never_the_key(self, console: Any) -> None:
        shop = console.create_shop()
        console.sign_in(shop["api_key"])

        engine = console.client.app.state.assembly.runtimes[0].engine  # type: ignore[attr-defined]
        with engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(select(tables.console_sessions))]
        assert len(rows) == 1
        assert rows[0]["shop_id"] == shop["id"]
        assert rows[0]["key_id"].startswith("key_") or rows[0]["key_id"]
        assert shop["api_key"] not in repr(rows)
        token = console.client.cookies["retention_console"]
        assert token not in repr(rows)

    def test_an_unknown_key_is_refused_next_to_the_field(self, console: Any) -> None:
        response = console.sign_in("rtn_nothing_real")

        assert response.status_code == 401
        assert 'id="credential-error"' in response.text
        assert 'aria-invalid="true"' in response.text
        assert "retention_console=" not in response.headers.get("set-cookie", "")

    def test_after_ten_failures_an_address_must_wait_even_with_a_good_key(self, console: Any) -> None:
        shop = console.create_shop()
        assert console.sign_in(shop["api_key"]).status_code == 303  # successes are not counted
        console.client.cookies.clear()
        for _ in range(10):
            assert console.sign_in("rtn_guess").status_code == 401

        refused = console.sign_in(shop["api_key"])

        assert refused.status_code == 429
        assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
        assert "Too many failed sign-ins" in refused.text
        assert "retention_console=" not in refused.headers.get("set-cookie", "")

    def test_the_sign_in_form_needs_its_csrf_cookie(self, console: Any) -> None:
        shop = console.create_shop()
        console.client.get("/console/sign-in")
        console.client.cookies.delete("retention_console_csrf", path="/console")

        response = console.client.post(
            "/console/sign-in", data={"credential": shop["api_key"], "csrf_token": "forged"}
        )

        assert response.status_code == 403
        assert console.client.get("/console/", follow_redirects=False).status_code == 303

    def test_pages_send_visitors_without_a_session_to_sign_in(self, console: Any) -> None:
        response = console.client.get("/console/customers?q=aiko", follow_redirects=False)

        assert response.status_code == 303
        assert response.headers["location"] == "/console/sign-in?next=%2Fconsole%2Fcustomers%3Fq%3Daiko"

    def test_next_never_leaves_the_console(self, console: Any) -> None:
        shop = console.create_shop()

        response = console.sign_in(shop["api_key"], next_path="https://evil.example/")

        assert response.headers["location"] == "/console/"

    def test_signing_out_ends_the_session(self, console: Any) -> None:
        shop = console.create_shop()
        console.sign_in(shop["api_key"])
        token = console.csrf("/console/")

        response = console.client.post(
            "/console/sign-out", data={"csrf_token": token}, follow_redirects=False
        )

        assert response.status_code == 303
        assert console.client.get("/console/", follow_redirects=False).status_code == 303


class TestExpiry:
    def test_an_idle_session_expires_and_sends_back_to_sign_in(self, console: Any) -> None:
        shop = console.create_shop()
        console.sign_in(shop["api_key"])

        console.clock.advance(timedelta(hours=2, minutes=1))

        response = console.client.get("/console/customers", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/sign-in?next=")

    def test_use_keeps_a_session_alive_until_its_absolute_limit(self, console: Any) -> None:
        shop = console.create_shop()
        console.sign_in(shop["api_key"])
        for _ in range(10):
            console.clock.advance(timedelta(hours=1))
            assert console.client.get("/console/customers", follow_redirects=False).status_code == 200

        console.clock.advance(timedelta(hours=2))

        assert console.client.get("/console/customers", follow_redirects=False).status_code == 303

    def test_a_form_posted_after_expiry_is_kept_through_sign_in(self, console: Any) -> None:
        shop = console.create_shop()
        console.put_customer(shop, "c1", email="aiko@example.com", name="Aiko")
        console.sign_in(shop["api_key"])
        token = console.csrf("/console/settings")
        console.clock.advance(timedelta(hours=3))

        expired = console.client.post(
            "/console/settings/loyalty",
            data={"csrf_token": token, "points_per_unit": "7", "tiers": "bronze 0 1.0\ngold 1000 2"},
        )

        assert expired.status_code == 401
        assert 'name="resume.points_per_unit" value="7"' in expired.text
        assert 'name="resume_path" value="/console/settings/loyalty"' in expired.text
        fields = dict(re.findall(r'name="(resume\.[^"]+)" value="([^"]*)"', expired.text))
        resumed = console.client.post(
            "/console/sign-in",
            data={
                "credential": shop["api_key"],
                "csrf_token": console.csrf_in(expired.text),
                "resume_path": "/console/settings/loyalty",
                **fields,
            },
        )
        assert resumed.status_code == 200
        assert 'action="/console/settings/loyalty"' in resumed.text
        assert ">7</textarea>" in resumed.text
        assert "gold 1000 2" in resumed.text

    def test_a_button_pressed_after_expiry_just_asks_to_sign_in_again(self, console: Any) -> None:
        shop = console.create_shop()
        console.sign_in(shop["api_key"])
        token = console.csrf("/console/")
        console.clock.advance(timedelta(hours=3))

        response = console.client.post(
            "/console/sign-out", data={"csrf_token": token}, follow_redirects=False
        )

        assert response.status_code == 303
        assert response.headers["location"] == "/console/sign-in"


class TestRevokedKeys:
    def test_revoking_the_key_ends_its_sessions(self, console: Any) -> None:
        shop = console.create_shop()
        admin = {"Authorization": f"Bearer {shop['api_key']}"}
        staff_key = console.client.post(
            "/v1/api-keys", json={"name": "support desk", "scopes": ["customers:read"]}, headers=admin
        ).json()
        console.sign_in(staff_key["api_key"])
        assert console.client.get("/console/customers", follow_redirects=False).status_code == 200

        revoked = console.client.delete(f"/v1/api-keys/{staff_key['key_id']}", headers=admin)

        assert revoked.status_code == 204
        assert console.client.get("/console/customers", follow_redirects=False).status_code == 303

    def test_a_key_without_the_scope_sees_a_refusal_not_the_page(self, console: Any) -> None:
        shop = console.create_shop()
        admin = {"Authorization": f"Bearer {shop['api_key']}"}
        staff_key = console.client.post(
            "/v1/api-keys", json={"name": "support desk", "scopes": ["customers:read"]}, headers=admin
        ).json()
        console.sign_in(staff_key["api_key"])

        response = console.client.get("/console/settings")

        assert response.status_code == 403
        assert "admin" in response.text

    def test_rotating_ones_own_key_in_the_console_signs_out(self, console: Any) -> None:
        shop = console.create_shop()
        console.sign_in(shop["api_key"])
        key_id = console.client.get(
            "/v1/api-keys", headers={"Authorization": f"Bearer {shop['api_key']}"}
        ).json()["keys"][0]["key_id"]
        token = console.csrf("/console/settings")

        response = console.client.post(
            f"/console/settings/api-keys/{key_id}/rotate", data={"csrf_token": token}, follow_redirects=False
        )

        assert response.status_code == 303
        assert response.headers["location"] == "/console/sign-in"
        assert console.client.get("/console/", follow_redirects=False).status_code == 303


class TestOperator:
    def test_the_operator_chooses_a_shop_before_any_page(self, console: Any) -> None:
        shop = console.create_shop()

        response = console.sign_in(ADMIN_TOKEN)

        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/shop")
        assert console.client.get("/console/customers", follow_redirects=False).headers["location"] == (
            "/console/shop"
        )
        token = console.csrf("/console/shop")
        unknown = console.client.post("/console/shop", data={"csrf_token": token, "shop_id": "shop_nope"})
        assert unknown.status_code == 422
        assert 'id="shop_id-error"' in unknown.text
        chosen = console.client.post(
            "/console/shop", data={"csrf_token": token, "shop_id": shop["id"]}, follow_redirects=False
        )
        assert chosen.status_code == 303
        assert shop["id"] in console.client.get("/console/customers").text

    def test_a_new_operator_token_ends_the_operators_sessions(self, console: Any) -> None:
        engine = console.client.app.state.assembly.runtimes[0].engine
        before = SessionStore(engine, console.clock, operator_token="token-of-yesterday")
        token, _ = before.create(
            kind="operator", shop_id=None, key_id=before.operator_key_id, scopes=frozenset({"admin"})
        )
        assert before.find(token) is not None

        after = SessionStore(engine, console.clock, operator_token="token-of-today")

        assert after.find(token) is None
        assert before.find(token) is None  # the row is gone, not just refused

    def test_shop_staff_cannot_switch_shops(self, console: Any) -> None:
        shop, other = console.create_shop("A"), console.create_shop("B")
        console.sign_in(shop["api_key"])
        token = console.csrf("/console/")

        response = console.client.post("/console/shop", data={"csrf_token": token, "shop_id": other["id"]})

        assert response.status_code == 404
        assert other["id"] not in console.client.get("/console/").text
