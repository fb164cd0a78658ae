"""A TestClient harness for one service's API, built from its real bootstrap and migrations."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

ADMIN_TOKEN = "unit-test-operator-token"


class Api:
    """The client of an app in a test, the database behind it, and the shop-creating call."""

    admin_token = ADMIN_TOKEN

    def __init__(self, client: TestClient, engine: Engine) -> None:
        self.client = client
        self.engine = engine
        self.uow_factory: Any = None  # the service's unit-of-work factory, when the test needs it

    def create_shop(self, name: str = "Kissa Tokyo") -> dict[str, Any]:
        response = self.client.post(
            "/v1/shops", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert response.status_code == 201, response.text
        return response.json()

    def count(self, table: Any) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())
