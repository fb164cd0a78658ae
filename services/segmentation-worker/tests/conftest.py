"""Fixtures for segmentation-worker tests: the service alone, on SQLite, behind a TestClient."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from retention_shared.clock import ManualClock
from retention_shared.config import Mode, PlatformSettings
from retention_shared.events.envelope import Envelope, build_envelope
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import service_named
from retention_shared.tenancy import generate_api_key, tenancy_handlers
from retention_shared.testing.harness import ADMIN_TOKEN
from segmentation_worker.adapters import tables
from segmentation_worker.service_layer import handlers
from segmentation_worker.service_layer.recompute import run_due_recomputes

PROBLEM_JSON = "application/problem+json"


@dataclass
class Service:
    """The segmentation-worker's API, its database and its handlers, on a manual clock."""

    client: TestClient
    engine: Engine
    uow_factory: Any
    clock: ManualClock
    keys: dict[str, str] = field(default_factory=dict)

    def register_shop(
        self, shop_id: str, *, timezone: str = "Asia/Tokyo", scopes: tuple[str, ...] = ("admin",)
    ) -> dict[str, str]:
        """Replicate a shop and one API key as the tenancy events would; return auth headers."""
        key, prefix, key_hash = generate_api_key()
        on = tenancy_handlers(tables.tenancy)
        with self.uow_factory() as uow:
            on["shop_registered"](
                self._event(
                    "shop_registered",
                    shop_id,
                    None,
                    {"name": shop_id, "timezone": timezone, "currency": "JPY", "locale": "ja"},
                ),
                uow,
            )
            on["api_key_issued"](
                self._event(
                    "api_key_issued",
                    shop_id,
                    None,
                    {
                        "key_id": f"key-{shop_id}-{prefix[-8:]}",
                        "name": "test",
                        "prefix": prefix,
                        "key_hash": key_hash,
                        "scopes": list(scopes),
                    },
                ),
                uow,
            )
            uow.commit()
        return {"Authorization": f"Bearer {key}"}

    def apply(self, *events: Envelope) -> None:
        """Apply activity events in one batch, as the consumer does with a poll."""
        with self.uow_factory() as uow:
            handlers.apply_activity(list(events), uow)
            uow.commit()

    def event(
        self,
        event_type: str,
        shop_id: str,
        customer_id: str,
        data: dict[str, Any],
        at: datetime | None = None,
    ) -> Envelope:
        return self._event(event_type, shop_id, customer_id, data, at)

    def purchase(
        self, shop_id: str, customer_id: str, order_id: str, amount: str, at: datetime | None = None
    ) -> Envelope:
        return self.event(
            "purchase_made",
            shop_id,
            customer_id,
            {"order_id": order_id, "amount": amount, "currency": "JPY"},
            at,
        )

    def history(self, shop: str, customers: int, *, seed: int = 5) -> list[Envelope]:
        """A year of purchases drawn from the BG/NBD story: each customer buys at their own rate
        and, after each purchase, leaves for good with their own probability."""
        rng = np.random.default_rng(seed)
        now = self.clock.now()
        events = []
        for index in range(customers):
            first = float(rng.uniform(30, 365))
            rate, leave = float(rng.gamma(0.8, 1 / 25)), float(rng.beta(1.0, 3.0))
            days_ago = [first]
            while rng.random() >= leave:
                next_day = days_ago[-1] - float(rng.exponential(1 / rate))
                if next_day <= 0:
                    break
                days_ago.append(next_day)
            for number, day in enumerate(days_ago):
                amount = str(int(rng.gamma(4, 800)) + 100)
                events.append(
                    self.purchase(
                        shop, f"c{index:03d}", f"o{index}-{number}", amount, now - timedelta(days=day)
                    )
                )
        return events

    def recompute_due(self) -> list[str]:
        return run_due_recomputes(uow_factory=self.uow_factory, clock=self.clock)

    def outbox(self, event_type: str) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            payloads = connection.execute(
                select(tables.messaging.outbox.c.payload).order_by(tables.messaging.outbox.c.id)
            ).scalars()
            documents = [json.loads(payload) for payload in payloads]
        return [document for document in documents if document["type"] == event_type]

    def _event(
        self,
        event_type: str,
        shop_id: str,
        customer_id: str | None,
        data: dict[str, Any],
        at: datetime | None = None,
    ) -> Envelope:
        return build_envelope(
            type=event_type,
            source="test",
            shop_id=shop_id,
            customer_id=customer_id,
            data=data,
            time=at or self.clock.now(),
        )


@contextmanager
def running_service(data_dir: Path, clock: ManualClock, database_url: str | None = None) -> Iterator[Service]:
    """The service on SQLite under `data_dir`, or on the database at `database_url`."""
    settings = PlatformSettings(
        mode=Mode.EMBEDDED,
        data_dir=data_dir,
        admin_token=ADMIN_TOKEN,
        segmentation_database_url=database_url,
        topic_namespace="",
    )
    assembly = assemble([service_named("segmentation-worker")], settings, clock, migrate=True)
    app = app_with_workers(assembly, "t", "segmentation-worker", run_workers=False)
    runtime = assembly.runtimes[0]
    with TestClient(app) as client:
        yield Service(client=client, engine=runtime.engine, uow_factory=runtime.uow_factory, clock=clock)


@pytest.fixture
def service(tmp_path: Path, manual_clock: ManualClock) -> Iterator[Service]:
    with running_service(tmp_path, manual_clock) as running:
        yield running


@pytest.fixture
def pg_service(
    tmp_path: Path, manual_clock: ManualClock, database_factory: Callable[[], str]
) -> Iterator[Service]:
    """The same, on a fresh PostgreSQL database migrated with Alembic."""
    with running_service(tmp_path, manual_clock, database_factory()) as running:
        yield running
