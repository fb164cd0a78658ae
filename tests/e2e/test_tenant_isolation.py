"""A sweep over every endpoint of every service: shop B's key never reaches shop A's data.

The endpoints come from the all-in-one app's OpenAPI document, so a new route is swept as soon
as it exists; a route the sweep does not know how to fill fails the test instead of being skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retention_shared.config import Mode, PlatformSettings
from retention_shared.platform import all_in_one_app
from retention_shared.testing.harness import ADMIN_TOKEN
from retention_shared.testing.infra import eventually

pytestmark = pytest.mark.e2e

# Routes that are not about one shop's data: operator routes and plumbing.
NOT_SHOP_DATA = {
    "/v1/shops",
    "/v1/shops/{shop_id}/api-keys",
    "/v1/dlq",
    "/v1/dlq/{topic}/replay",
    "/healthz",
    "/readyz",
    "/metrics",
}
# Signed links (survey answers, unsubscribes): the token itself is the credential, not a shop key.
CAPABILITY_PARAMS = {"token"}
# Writes by id that act on the caller's own shop: B writing "c1" makes B's own customer c1.
OWN_SHOP_UPSERTS = {("PUT", "/v1/customers/{customer_id}")}
# Path parameters that name something every shop has (a segment, a channel, a step of a playbook
# template): B reaches its own, so the answer may be 200, but must carry nothing of A's.
SHARED_NAMES = {"name": "champions", "channel": "email", "step_key": "thank_you"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = PlatformSettings(
        mode=Mode.EMBEDDED, data_dir=tmp_path, admin_token=ADMIN_TOKEN, rate_limit="1000/second"
    )
    with TestClient(all_in_one_app(settings)) as test_client:
        yield test_client


def new_shop(client: TestClient, name: str) -> dict[str, Any]:
    response = client.post(
        "/v1/shops", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 201
    return response.json()


def test_no_endpoint_of_any_service_lets_one_shop_reach_another(client: TestClient) -> None:
    shop_a, shop_b = new_shop(client, "A"), new_shop(client, "B")
    a = {"Authorization": f"Bearer {shop_a['api_key']}"}
    b = {"Authorization": f"Bearer {shop_b['api_key']}"}
    client.put(
        "/v1/customers/c1",
        json={"email": "a@example.com", "name": "Only A", "consents": {"email": True}},
        headers=a,
    ).raise_for_status()
    client.post(
        "/v1/events",
        headers=a,
        json={
            "events": [
                {
                    "id": "e1",
                    "type": "purchase_made",
                    "customer_id": "c1",
                    "occurred_at": datetime.now(UTC).isoformat(),
                    "data": {"order_id": "o1", "amount": "100", "currency": "JPY"},
                }
            ]
        },
    ).raise_for_status()
    # Wait until every service knows shop A's key and customer, so a 404 below means isolation.
    eventually(
        lambda: client.get("/v1/customers/c1/scores", headers=a).status_code == 200, what="scores for A"
    )
    eventually(
        lambda: client.get("/v1/customers/c1/followups", headers=a).json()["followups"], what="followups"
    )
    eventually(
        lambda: client.get("/v1/customers/c1/scores", headers=b).status_code == 404, what="B's key known"
    )
    key_a = client.get("/v1/api-keys", headers=a).json()["keys"][0]["key_id"]
    erasure_a = client.post("/v1/api-keys", json={"name": "spare", "scopes": ["admin"]}, headers=a).json()[
        "key_id"
    ]
    ids = {"customer_id": "c1", "key_id": erasure_a, "erasure_id": "era_unknown", **SHARED_NAMES}
    ids["key_id"] = key_a
    # A's own resources in the other services, so B asks for ids that exist.
    recompute = client.post("/v1/segmentation/recompute", headers=a)
    assert recompute.status_code == 202, recompute.text
    ids["run_id"] = recompute.json()["run_id"]
    ids["step_id"] = client.get("/v1/customers/c1/followups", headers=a).json()["followups"][0]["id"]
    playbook = client.get("/v1/playbooks", headers=a).json()["playbooks"][0]
    ids["playbook_id"] = playbook["id"]
    ids["survey_id"] = client.get("/v1/surveys", headers=a).json()["surveys"][0]["survey_id"]
    a_ids = {ids[name] for name in ("run_id", "step_id", "playbook_id", "survey_id")}

    swept = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        if path in NOT_SHOP_DATA:
            continue
        params = re.findall(r"{(\w+)}", path)
        if CAPABILITY_PARAMS & set(params):
            continue
        missing = [p for p in params if p not in ids]
        assert not missing, f"the sweep does not know how to fill {missing} in {path}: add it"
        url = path.format(**ids)
        for method in operations:
            method = method.upper()
            if (method, path) in OWN_SHOP_UPSERTS:
                continue  # done last, below: it would give B a customer "c1" of its own
            response = client.request(
                method, url, headers=b, json={} if method in ("PUT", "PATCH", "POST") else None
            )
            swept.append((method, path, response.status_code))
            if set(params) - set(SHARED_NAMES):
                assert response.status_code in (404, 422), (
                    f"{method} {path} answered {response.status_code} to B after {swept}"
                )
            else:
                leaked = [item for item in ("Only A", "a@example.com", *a_ids) if item in response.text]
                assert not leaked, f"{method} {path} showed B {leaked}"

    # B writing the same id makes B's own customer; A's stays A's.
    assert client.put("/v1/customers/c1", json={"name": "B's own"}, headers=b).status_code == 201
    # A is untouched by everything B did.
    mine = client.get("/v1/customers/c1", headers=a).json()
    assert (mine["name"], mine["email"]) == ("Only A", "a@example.com")
    assert client.get("/v1/customers/c1/scores", headers=a).status_code == 200
    assert len(swept) >= 15, swept
