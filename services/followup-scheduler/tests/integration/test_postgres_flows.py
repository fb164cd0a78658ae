"""Every default playbook on real PostgreSQL (migrated with Alembic): types, lengths and locks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from followup_scheduler.adapters import tables
from followup_scheduler.adapters.channels.base import OutgoingMessage
from followup_scheduler.adapters.rendering import Renderer
from followup_scheduler.adapters.surveys import Invitation
from followup_scheduler.service import definition
from followup_scheduler.service_layer import erasure, handlers
from followup_scheduler.service_layer.birthdays import start_birthday_runs
from followup_scheduler.service_layer.dispatch import Dispatcher
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.clock import ManualClock
from retention_shared.db import create_db_engine
from retention_shared.events.envelope import build_envelope
from retention_shared.migrate import upgrade
from retention_shared.tenancy import tenancy_handlers

pytestmark = pytest.mark.integration

SHOP = "shop_pg"
START = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo


class Recorder:
    name = "email"

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []

    def send(self, message: OutgoingMessage) -> None:
        self.sent.append(message)


class Surveys:
    def invite(self, **request: Any) -> Invitation:
        return Invitation("inv_1", "https://surveys.test/i/1", "t", "2026-02-01")


def test_every_default_playbook_runs_on_postgresql(database_factory: Callable[[], str]) -> None:
    url = database_factory()
    upgrade(definition, url)
    engine = create_db_engine(url, pool_size=2)
    clock = ManualClock(START)
    uow_factory = partial(
        SchedulerUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=clock,
        source="followup-scheduler",
    )
    channel = Recorder()
    dispatcher = Dispatcher(
        uow_factory=uow_factory, channels={"email": channel}, renderer=Renderer(), surveys=Surveys()
    )
    replica = tenancy_handlers(tables.tenancy)

    def handle(handler: Any, event_type: str, data: dict[str, Any], customer: str | None = "c1") -> None:
        event = build_envelope(
            type=event_type, source="test", shop_id=SHOP, customer_id=customer, data=data, time=clock.now()
        )
        with uow_factory() as uow:
            handler(event, uow)
            uow.commit()

    shop = {"name": "Kissa", "timezone": "Asia/Tokyo", "currency": "JPY", "locale": "ja"}
    handle(replica["shop_registered"], "shop_registered", shop, customer=None)
    handle(handlers.shop_registered, "shop_registered", shop, customer=None)
    profile = {"created": True, "email": "c1@example.com", "name": "Hana", "timezone": "Asia/Tokyo"}
    handle(handlers.customer_upserted, "customer_upserted", {**profile, "birthday": "1990-01-05"})
    handle(handlers.consent_changed, "consent_changed", {"channel": "email", "granted": True})

    items = [{"sku": "TEA-01", "name": "Sencha", "category": "tea", "quantity": 1, "unit_price": "1200"}]
    handle(
        handlers.trigger,
        "purchase_made",
        {"order_id": "o-1", "amount": "1200", "currency": "JPY", "items": items},
    )
    handle(handlers.trigger, "ticket_opened", {"ticket_id": "T-1", "priority": "critical"})
    handle(handlers.trigger, "ticket_resolved", {"ticket_id": "T-1"})
    handle(handlers.trigger, "login_dropped", {"recent_rate_per_week": 0.2, "baseline_rate_per_week": 3.0})
    for segment in ("at_risk", "dormant", "champions"):
        handle(handlers.trigger, "segment_changed", {"from": "loyal", "to": segment})
    answer = {"survey_id": "s1", "response_id": "r1", "kind": "nps", "score": 1, "detractor": True}
    handle(handlers.trigger, "survey_answered", answer)
    start_birthday_runs(uow_factory)

    with engine.connect() as connection:
        started = set(connection.execute(sa.select(tables.runs.c.playbook_key)).scalars())
    assert started == {
        "post_purchase",
        "ticket_support",
        "ticket_ces",
        "login_reengagement",
        "at_risk_recovery",
        "reactivation_dormant",
        "champions_thanks",
        "nps_detractor_recovery",
        "birthday",
    }

    # A month later everything due has been handled: sent, or skipped / failed with a reason.
    for day in range(0, 40):
        clock.set(START + timedelta(days=day, hours=1))
        dispatcher.dispatch_due()
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(tables.steps.c.step_key, tables.steps.c.status, tables.steps.c.reason)
        ).all()
    statuses = {status for _, status, _ in rows}
    assert statuses <= {"sent", "skipped", "cancelled", "failed"}, rows
    assert all(reason for _, status, reason in rows if status in ("skipped", "failed", "cancelled")), rows
    assert "sent" in statuses and channel.sent

    handle(erasure.customer_erased, "customer_erased", {"erasure_id": "er_1"})
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(tables.contacts)).scalar_one() == 0
    engine.dispose()
