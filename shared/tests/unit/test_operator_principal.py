"""The operator token acts for exactly one shop, named by a header; shop keys work as before."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from retention_shared.tenancy import Principal, hash_api_key
from retention_shared.web import OPERATOR_SHOP_HEADER, create_app, principal_dependency

OPERATOR_TOKEN = "operator-secret"
SHOP_KEY = "rk_live_shop_key"


class OneKeyDirectory:
    def lookup(self, key_hash: str) -> Principal | None:
        if key_hash == hash_api_key(SHOP_KEY):
            return Principal("shop-a", "key-1", frozenset({"read"}))
        return None

    def remembered(self, key_hash: str) -> tuple[bool, Principal | None]:
        return False, None  # always "looked up", as a cold cache would


def _client() -> TestClient:
    authenticate = principal_dependency(lambda _request: OneKeyDirectory(), operator_token=OPERATOR_TOKEN)
    app: FastAPI = create_app("probe", "probe", [])

    @app.get("/whoami")
    def whoami(principal: Principal = Depends(authenticate)) -> dict[str, object]:
        return {"shop": principal.shop_id, "key": principal.key_id, "admin": principal.allows("admin")}

    return TestClient(app)


def test_operator_token_acts_for_the_shop_named_in_the_header() -> None:
    response = _client().get(
        "/whoami", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", OPERATOR_SHOP_HEADER: "shop-b"}
    )
    assert response.json() == {"shop": "shop-b", "key": "operator", "admin": True}


def test_operator_token_without_a_shop_is_a_clear_400() -> None:
    response = _client().get("/whoami", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert response.status_code == 400
    assert OPERATOR_SHOP_HEADER in response.json()["detail"]


def test_shop_keys_ignore_the_operator_header() -> None:
    response = _client().get(
        "/whoami", headers={"Authorization": f"Bearer {SHOP_KEY}", OPERATOR_SHOP_HEADER: "shop-b"}
    )
    assert response.json()["shop"] == "shop-a"


def test_unknown_tokens_stay_unauthorized() -> None:
    response = _client().get(
        "/whoami", headers={"Authorization": "Bearer nope", OPERATOR_SHOP_HEADER: "shop-b"}
    )
    assert response.status_code == 401
