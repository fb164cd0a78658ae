"""Fixtures for the console: the customer-api alone on SQLite, its clock in the test's hands."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retention_shared.clock import ManualClock
from retention_shared.config import Mode, PlatformSettings
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import service_named
from retention_shared.testing.harness import ADMIN_TOKEN


@dataclass
class Console:
    client: TestClient
    clock: ManualClock

    def create_shop(self, name: str = "Kissa Tokyo") -> dict[str, Any]:
        response = self.client.post(
            "/v1/shops", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert response.status_code == 201, response.text
        return response.json()

    def put_customer(self, shop: dict[str, Any], customer_id: str, **profile: Any) -> None:
        response = self.client.put(
            f"/v1/customers/{customer_id}",
            json=profile,
            headers={"Authorization": f"Bearer {shop['api_key']}"},
        )
        assert response.status_code in (200, 201), response.text

    def sign_in(self, credential: str, *, next_path: str = "/console/") -> Any:
        form = self.client.get("/console/sign-in")
        assert form.status_code == 200
        return self.client.post(
            "/console/sign-in",
            data={"credential": credential, "csrf_token": csrf_of(form.text), "next": next_path},
            follow_redirects=False,
        )

    def csrf(self, path: str) -> str:
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        return csrf_of(page.text)

    @staticmethod
    def csrf_in(html: str) -> str:
        return csrf_of(html)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    clock = ManualClock()
    settings = PlatformSettings(mode=Mode.EMBEDDED, data_dir=tmp_path, admin_token=ADMIN_TOKEN)
    assembly = assemble([service_named("customer-api")], settings, clock, migrate=True)
    app = app_with_workers(assembly, "t", "customer-api", run_workers=False)
    with TestClient(app, base_url="http://testserver") as client:
        yield Console(client, clock)
