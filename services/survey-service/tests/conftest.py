"""Fixtures for survey-service tests: the service alone, on SQLite, behind a TestClient, on a manual clock.

Shops, keys and customers reach the service as events, the way the consumer delivers them."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from retention_shared.clock import ManualClock
from retention_shared.config import DEFAULT_SIGNING_SECRET, Mode, PlatformSettings
from retention_shared.events.envelope import build_envelope
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import ServiceRuntime, service_named
from retention_shared.tenancy import hash_api_key
from retention_shared.testing.harness import ADMIN_TOKEN
from survey_service.adapters import tables

PROBLEM_JSON = "application/problem+json"
PUBLIC_URL = "https://surveys.example.test"


class SurveyApi:
    """The survey-service's app in a test, with ways to feed it the events it consumes."""

    def __init__(self, client: TestClient, runtime: ServiceRuntime, clock: ManualClock) -> None:
        self.client = client
        self.runtime = runtime
        self.clock = clock

    def deliver(self, event_type: str, shop_id: str, customer_id: str | None, data: dict[str, Any]) -> None:
        """Apply one event in its own transaction, as the consumer does."""
        event = build_envelope(
            type=event_type,
            source="test",
            shop_id=shop_id,
            customer_id=customer_id,
            data=data,
            time=self.clock.now(),
        )
        with self.runtime.uow_factory() as uow:
            self.runtime.handlers[event_type](event, uow)
            uow.commit()

    def register_shop(
        self, name: str = "Kissa Tokyo", *, locale: str = "ja", timezone: str = "Asia/Tokyo"
    ) -> tuple[str, dict[str, str]]:
        """A shop and one of its API keys (all scopes); returns (shop id, auth headers)."""
        shop_id = f"shop_{secrets.token_hex(6)}"
        self.deliver(
            "shop_registered",
            shop_id,
            None,
            {"name": name, "timezone": timezone, "currency": "JPY", "locale": locale},
        )
        return shop_id, self.issue_key(shop_id)

    def issue_key(self, shop_id: str, scopes: tuple[str, ...] = ("admin",)) -> dict[str, str]:
        key = f"rtn_test_{secrets.token_urlsafe(24)}"
        self.deliver(
            "api_key_issued",
            shop_id,
            None,
            {
                "key_id": f"key_{secrets.token_hex(6)}",
                "name": "test",
                "prefix": "rtn_test",
                "key_hash": hash_api_key(key),
                "scopes": list(scopes),
            },
        )
        return {"Authorization": f"Bearer {key}"}

    def invite(
        self,
        headers: dict[str, str],
        customer_id: str = "cust-1",
        survey: str = "nps",
        context: tuple[str, str] = ("order", "ORD-1"),
        **extra: Any,
    ) -> dict[str, Any]:
        response = self.client.post(
            f"/v1/surveys/{survey}/invitations",
            json={"customer_id": customer_id, "context": {"type": context[0], "id": context[1]}, **extra},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        return response.json()

    def answer(self, token: str, score: int, comment: str | None = None) -> Any:
        body: dict[str, Any] = {"token": token, "score": score}
        if comment is not None:
            body["comment"] = comment
        return self.client.post("/v1/responses", json=body)

    def published(self, event_type: str) -> list[dict[str, Any]]:
        """The envelopes of this type in the outbox, oldest first."""
        outbox = tables.messaging.outbox
        with self.runtime.engine.connect() as connection:
            rows = connection.execute(select(outbox.c.payload).order_by(outbox.c.id)).scalars()
            envelopes = [json.loads(row) for row in rows]
        return [envelope for envelope in envelopes if envelope["type"] == event_type]

    def count(self, table: Any) -> int:
        from sqlalchemy import func

        with self.runtime.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def survey_api(tmp_path: Path, manual_clock: ManualClock) -> Iterator[SurveyApi]:
    settings = PlatformSettings(
        mode=Mode.EMBEDDED,
        data_dir=tmp_path,
        admin_token=ADMIN_TOKEN,
        signing_secret=DEFAULT_SIGNING_SECRET,
        public_base_url=PUBLIC_URL,
        topic_namespace="",
    )
    assembly = assemble([service_named("survey-service")], settings, manual_clock, migrate=True)
    app = app_with_workers(assembly, "t", "survey-service", run_workers=False)
    with TestClient(app, follow_redirects=False) as client:
        yield SurveyApi(client, assembly.runtimes[0], manual_clock)


@pytest.fixture
def shop(survey_api: SurveyApi) -> tuple[str, dict[str, str]]:
    return survey_api.register_shop()


def token_of(invitation: dict[str, Any]) -> str:
    return str(invitation["token"])
