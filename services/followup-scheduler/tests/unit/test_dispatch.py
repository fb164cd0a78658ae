from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from followup_scheduler.adapters import tables
from followup_scheduler.adapters.channels.base import (
    OutgoingMessage,
    PermanentChannelError,
    TransientChannelError,
)
from followup_scheduler.adapters.channels.smtp import SmtpChannel
from followup_scheduler.adapters.rendering import Renderer
from followup_scheduler.service_layer import handlers
from followup_scheduler.service_layer.dispatch import Dispatcher
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.clock import ManualClock
from retention_shared.db import create_db_engine
from retention_shared.events.envelope import Envelope, build_envelope
from retention_shared.tenancy import tenancy_handlers
from retention_shared.testing.smtp import SmtpServer, free_port

SHOP = "shop_1"
CUSTOMER = "c1"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # 18:00 in Tokyo
STEP_KEYS = ["thank_you", "delivery_check", "usage_tips", "one_month_check_in"]


class FakeChannel:
    """Records what it is asked to send; can be told to fail the next sends."""

    name = "email"

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []
        self.failures: list[Exception] = []

    def send(self, message: OutgoingMessage) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)


class Scheduler:
    """The followup-scheduler's handlers and dispatcher on a SQLite file, driven by a manual clock."""

    def __init__(self, engine: Engine, clock: ManualClock, channel: Any, max_attempts: int = 6) -> None:
        self.engine = engine
        self.clock = clock
        self.uow_factory = partial(
            SchedulerUnitOfWork,
            sessionmaker(engine, expire_on_commit=False),
            tables=tables.messaging,
            clock=clock,
            source="followup-scheduler",
        )
        self.dispatcher = Dispatcher(
            uow_factory=self.uow_factory,
            channels={"email": channel},
            renderer=Renderer(),
            max_attempts=max_attempts,
        )
        self._replica = tenancy_handlers(tables.tenancy)

    def handle(self, handler: Callable[[Envelope, SchedulerUnitOfWork], None], event: Envelope) -> None:
        with self.uow_factory() as uow:
            handler(event, uow)
            uow.commit()

    def event(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        customer: str | None = CUSTOMER,
        at: datetime | None = None,
    ) -> Envelope:
        return build_envelope(
            type=event_type,
            source="test",
            shop_id=SHOP,
            customer_id=customer,
            data=data,
            time=at or self.clock.now(),
        )

    def register_shop(self) -> None:
        event = self.event(
            "shop_registered",
            {"name": "Kissa Tokyo", "timezone": "Asia/Tokyo", "currency": "JPY", "locale": "en"},
            customer=None,
        )
        self.handle(self._replica["shop_registered"], event)
        self.handle(handlers.shop_registered, event)

    def add_customer(
        self,
        *,
        timezone: str = "Asia/Tokyo",
        locale: str | None = None,
        consents: tuple[str, ...] = ("email",),
    ) -> None:
        profile = {"email": "hana@example.com", "name": "Hana", "timezone": timezone, "locale": locale}
        self.handle(handlers.customer_upserted, self.event("customer_upserted", {"created": True, **profile}))
        for channel in consents:
            self.handle(
                handlers.consent_changed, self.event("consent_changed", {"channel": channel, "granted": True})
            )

    def purchase(self, order_id: str = "o-1", *, at: datetime | None = None) -> None:
        data = {"order_id": order_id, "amount": "4200", "currency": "JPY", "items": []}
        self.handle(handlers.trigger, self.event("purchase_made", data, at=at))

    def refund(self, order_id: str = "o-1") -> None:
        data = {"order_id": order_id, "amount": "4200", "currency": "JPY"}
        self.handle(handlers.trigger, self.event("refund_issued", data))

    def steps(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(tables.steps).order_by(tables.steps.c.position)).mappings()
            return {row["step_key"]: dict(row) for row in rows}

    def runs(self) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(select(tables.runs)).mappings()]

    def outbox(self, event_type: str) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            payloads = connection.execute(
                select(tables.messaging.outbox.c.payload).order_by(tables.messaging.outbox.c.id)
            ).scalars()
            documents = [json.loads(payload) for payload in payloads]
        return [document for document in documents if document["type"] == event_type]

    def run_until(self, moment: datetime) -> int:
        self.clock.set(moment)
        return self.dispatcher.dispatch_due()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'followup.db'}")
    tables.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def scheduler(engine: Engine, clock: ManualClock, channel: FakeChannel) -> Scheduler:
    scheduler = Scheduler(engine, clock, channel)
    scheduler.register_shop()
    return scheduler


class TestPostPurchaseTimeline:
    def test_a_purchase_schedules_four_steps_at_the_customers_local_morning(
        self, scheduler: Scheduler
    ) -> None:
        scheduler.add_customer(timezone="Asia/Tokyo")
        scheduler.purchase()

        steps = scheduler.steps()
        assert list(steps) == STEP_KEYS
        assert {step["status"] for step in steps.values()} == {"scheduled"}
        assert {key: step["due_at"] for key, step in steps.items()} == {
            "thank_you": START,
            "delivery_check": datetime(2026, 1, 7, 1, 0, tzinfo=UTC),  # 10:00 JST
            "usage_tips": datetime(2026, 1, 9, 1, 0, tzinfo=UTC),
            "one_month_check_in": datetime(2026, 2, 5, 1, 0, tzinfo=UTC),
        }
        assert steps["thank_you"]["idempotency_key"] == f"{SHOP}.post_purchase.o-1.thank_you"
        (run,) = scheduler.runs()
        assert (run["status"], run["business_key"], run["customer_id"]) == ("active", "o-1", CUSTOMER)
        scheduled = scheduler.outbox("followup_scheduled")
        assert [event["data"]["step_key"] for event in scheduled] == STEP_KEYS

    def test_the_same_order_again_starts_no_second_run(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        scheduler.purchase("o-1")
        scheduler.purchase("o-1")  # reported again under another event id

        assert len(scheduler.runs()) == 1
        assert len(scheduler.steps()) == 4

    def test_another_order_starts_its_own_run(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        scheduler.purchase("o-1")
        scheduler.purchase("o-2")

        assert sorted(run["business_key"] for run in scheduler.runs()) == ["o-1", "o-2"]

    def test_a_purchase_older_than_two_days_starts_nothing(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        scheduler.purchase("o-old", at=START - timedelta(days=2, minutes=1))

        assert scheduler.runs() == []
        assert scheduler.outbox("followup_scheduled") == []

    def test_a_day_old_purchase_still_starts_with_overdue_steps_due_now(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        scheduler.purchase("o-1", at=START - timedelta(days=1))

        steps = scheduler.steps()
        assert steps["thank_you"]["due_at"] == START  # never scheduled in the past

    def test_steps_are_dispatched_in_order_as_the_clock_advances(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.purchase()
        steps = scheduler.steps()

        assert scheduler.run_until(START) == 1
        assert [message.subject for message in channel.sent] == ["Thank you for your order o-1"]
        assert scheduler.run_until(steps["delivery_check"]["due_at"] - timedelta(seconds=1)) == 0

        for key in STEP_KEYS[1:]:
            assert scheduler.run_until(steps[key]["due_at"]) == 1

        assert [message.idempotency_key for message in channel.sent] == [
            f"{SHOP}.post_purchase.o-1.{key}" for key in STEP_KEYS
        ]
        assert {message.recipient for message in channel.sent} == {"hana@example.com"}
        assert {message.sender_name for message in channel.sent} == {"Kissa Tokyo"}
        final = scheduler.steps()
        assert {step["status"] for step in final.values()} == {"sent"}
        assert {step["channel"] for step in final.values()} == {"email"}
        assert [event["data"]["step_key"] for event in scheduler.outbox("followup_sent")] == STEP_KEYS
        assert scheduler.runs()[0]["status"] == "completed"

    def test_the_message_is_rendered_in_the_customers_language(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer(locale="ja")
        scheduler.purchase("o-9")

        scheduler.run_until(START)

        (message,) = channel.sent
        assert (message.locale, message.subject) == ("ja", "ご注文ありがとうございます（o-9）")
        assert message.text.startswith("Hana様")

    def test_steps_are_not_sent_before_they_are_due(self, scheduler: Scheduler, channel: FakeChannel) -> None:
        scheduler.add_customer()
        scheduler.purchase()

        scheduler.run_until(START + timedelta(days=1))

        assert len(channel.sent) == 1
        assert scheduler.steps()["delivery_check"]["status"] == "scheduled"


class TestRefundExit:
    def test_a_refund_of_the_same_order_cancels_the_pending_steps(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.purchase("o-1")
        scheduler.run_until(START)  # the thank-you goes out first

        scheduler.refund("o-1")

        steps = scheduler.steps()
        assert steps["thank_you"]["status"] == "sent"
        for key in STEP_KEYS[1:]:
            assert (steps[key]["status"], steps[key]["reason"]) == ("cancelled", "exit: refund_issued")
        (run,) = scheduler.runs()
        assert (run["status"], run["exit_reason"]) == ("exited", "exit: refund_issued")

        scheduler.run_until(START + timedelta(days=40))
        assert len(channel.sent) == 1

    def test_a_refund_of_another_order_cancels_nothing(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        scheduler.purchase("o-1")

        scheduler.refund("o-2")

        assert {step["status"] for step in scheduler.steps().values()} == {"scheduled"}
        assert scheduler.runs()[0]["status"] == "active"


class TestDeliveryOutcomes:
    def test_without_consent_the_step_is_skipped_with_the_reason(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer(consents=())
        scheduler.purchase()

        scheduler.run_until(START)

        step = scheduler.steps()["thank_you"]
        assert step["status"] == "skipped"
        assert step["reason"] == "email: no consent; line: no consent; sms: no consent"
        assert channel.sent == []

    def test_a_consented_channel_that_is_not_configured_is_skipped(self, scheduler: Scheduler) -> None:
        scheduler.add_customer(consents=("sms",))
        scheduler.handle(
            handlers.customer_upserted,
            scheduler.event("customer_upserted", {"created": False, "phone": "+819012345678"}),
        )
        scheduler.purchase()

        scheduler.run_until(START)

        step = scheduler.steps()["thank_you"]
        assert (step["status"], step["reason"]) == ("skipped", "sms: channel not configured")

    def test_a_transient_failure_is_retried_later_then_sent(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.purchase()
        channel.failures.append(TransientChannelError("421 try again later"))

        scheduler.run_until(START)

        step = scheduler.steps()["thank_you"]
        assert step["status"] == "scheduled"
        assert step["attempts"] == 1
        assert step["reason"] == "retrying: 421 try again later"
        assert START + timedelta(seconds=15) <= step["due_at"] <= START + timedelta(seconds=30)
        assert channel.sent == []
        assert scheduler.run_until(START + timedelta(seconds=1)) == 0

        scheduler.run_until(START + timedelta(seconds=30))

        step = scheduler.steps()["thank_you"]
        assert (step["status"], step["attempts"], step["reason"]) == ("sent", 2, None)
        assert len(channel.sent) == 1

    def test_transient_failures_give_up_after_the_last_attempt(
        self, engine: Engine, clock: ManualClock, channel: FakeChannel
    ) -> None:
        scheduler = Scheduler(engine, clock, channel, max_attempts=2)
        scheduler.register_shop()
        scheduler.add_customer()
        scheduler.purchase()
        channel.failures.extend([TransientChannelError("busy"), TransientChannelError("busy")])

        scheduler.run_until(START)
        scheduler.run_until(START + timedelta(minutes=1))

        step = scheduler.steps()["thank_you"]
        assert (step["status"], step["attempts"]) == ("failed", 2)
        (failed,) = scheduler.outbox("followup_failed")
        assert failed["data"]["permanent"] is False
        assert "gave up after 2 attempts" in failed["data"]["reason"]

    def test_a_permanent_failure_fails_the_step_and_is_published(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.purchase()
        channel.failures.append(PermanentChannelError("550 mailbox unavailable"))

        scheduler.run_until(START)

        step = scheduler.steps()["thank_you"]
        assert (step["status"], step["attempts"], step["channel"]) == ("failed", 1, "email")
        assert step["reason"] == "550 mailbox unavailable"
        (failed,) = scheduler.outbox("followup_failed")
        assert failed["customer_id"] == CUSTOMER
        assert failed["data"]["step_id"] == step["id"]
        assert failed["data"]["step_key"] == "thank_you"
        assert failed["data"]["permanent"] is True
        assert scheduler.outbox("followup_sent") == []
        # The failure ends only this step; the rest of the timeline goes on.
        assert scheduler.steps()["delivery_check"]["status"] == "scheduled"
        assert scheduler.run_until(START + timedelta(minutes=5)) == 0

    def test_a_missing_contact_is_waited_for_then_skipped(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.purchase()  # the customer's profile has not arrived yet

        scheduler.run_until(START)

        step = scheduler.steps()["thank_you"]
        assert step["status"] == "scheduled"
        assert step["due_at"] == START + timedelta(seconds=2)
        assert step["reason"] == "waiting for the customer's profile"

        scheduler.run_until(START + timedelta(minutes=10, seconds=1))

        step = scheduler.steps()["thank_you"]
        assert (step["status"], step["reason"]) == ("skipped", "no contact data for this customer")
        assert channel.sent == []

    def test_a_contact_arriving_within_the_grace_period_is_used(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.purchase()
        scheduler.run_until(START)

        scheduler.clock.set(START + timedelta(minutes=1))
        scheduler.add_customer()
        scheduler.dispatcher.dispatch_due()

        assert scheduler.steps()["thank_you"]["status"] == "sent"
        assert [message.recipient for message in channel.sent] == ["hana@example.com"]


class TestEmailDelivery:
    def test_the_thank_you_reaches_a_real_smtp_server(
        self, engine: Engine, clock: ManualClock, smtp_server: SmtpServer
    ) -> None:
        channel = SmtpChannel("127.0.0.1", smtp_server.port, "no-reply@retention.test")
        scheduler = Scheduler(engine, clock, channel)
        scheduler.register_shop()
        scheduler.add_customer()
        scheduler.purchase("o-77")

        scheduler.run_until(START)

        (mail,) = smtp_server.wait_for(1)
        assert mail.recipients == ["hana@example.com"]
        assert mail.sender == "no-reply@retention.test"
        assert mail.subject == "Thank you for your order o-77"
        assert mail.message_id == f"<{SHOP}.post_purchase.o-77.thank_you@retention>"
        assert mail.message["X-Retention-Idempotency-Key"] == f"{SHOP}.post_purchase.o-77.thank_you"
        assert mail.message.get_content_type() == "multipart/alternative"
        parts = {part.get_content_type(): part for part in mail.message.walk()}
        assert {"text/plain", "text/html"} <= set(parts)
        assert "Thank you for your order o-77 at Kissa Tokyo." in mail.text()
        html = parts["text/html"].get_payload(decode=True).decode()
        assert html.startswith('<!doctype html><html lang="en">')
        assert "<p>Hello Hana,</p>" in html
        assert scheduler.steps()["thank_you"]["status"] == "sent"

    def test_an_smtp_server_that_is_not_listening_is_a_transient_failure(self) -> None:
        channel = SmtpChannel("127.0.0.1", free_port(), "no-reply@retention.test", timeout_s=2)
        message = OutgoingMessage(
            channel="email",
            recipient="hana@example.com",
            subject="Hello",
            text="Hi",
            html=None,
            idempotency_key="k-1",
            sender_name="Shop",
            locale="en",
        )

        with pytest.raises(TransientChannelError, match="unavailable"):
            channel.send(message)
