from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from followup_scheduler.adapters import tables
from followup_scheduler.adapters.channels.base import (
    OutgoingMessage,
    PermanentChannelError,
    RetryPolicy,
    TransientChannelError,
)
from followup_scheduler.adapters.channels.directory import ChannelDirectory
from followup_scheduler.adapters.channels.http import verify
from followup_scheduler.adapters.channels.smtp import SmtpChannel
from followup_scheduler.adapters.rendering import Renderer
from followup_scheduler.adapters.surveys import Invitation, SurveyFatigue
from followup_scheduler.domain.hygiene import FollowupSettings, FrequencyCap
from followup_scheduler.service_layer import deliveries, erasure, handlers
from followup_scheduler.service_layer.birthdays import start_birthday_runs
from followup_scheduler.service_layer.dispatch import Dispatcher
from followup_scheduler.service_layer.playbooks import create_playbook, validate_document
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.clock import ManualClock
from retention_shared.db import create_db_engine
from retention_shared.events.envelope import Envelope, build_envelope
from retention_shared.tenancy import tenancy_handlers
from retention_shared.testing.smtp import SmtpServer, free_port

SHOP = "shop_1"
CUSTOMER = "c1"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # 18:00 in Tokyo
STEP_KEYS = ["thank_you", "delivery_check", "usage_tips", "satisfaction_survey", "one_month_check_in"]


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


class FakeSurveys:
    """The survey-service port: hands out invitations, or refuses with survey fatigue."""

    def __init__(self) -> None:
        self.invited: list[dict[str, Any]] = []
        self.fatigued = False

    def invite(self, **request: Any) -> Invitation:
        if self.fatigued:
            raise SurveyFatigue("https://retention.dev/problems/survey-fatigue")
        self.invited.append(request)
        number = len(self.invited)
        return Invitation(f"inv_{number}", f"https://surveys.test/i/{number}", f"tok{number}", "2026-02-01")


class Scheduler:
    """The followup-scheduler's handlers and dispatcher on a SQLite file, driven by a manual clock."""

    def __init__(self, engine: Engine, clock: ManualClock, channel: Any, max_attempts: int = 6) -> None:
        self.surveys = FakeSurveys()
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
            surveys=self.surveys,
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

    def save_settings(self, **changes: Any) -> None:
        settings = FollowupSettings().model_copy(update=changes)
        with self.uow_factory() as uow:
            uow.repo.save_settings(SHOP, settings.model_dump(mode="json"), self.clock.now())
            uow.commit()

    def add_playbook(self, document: dict[str, Any]) -> None:
        with self.uow_factory() as uow:
            create_playbook(uow, SHOP, validate_document(document, Renderer()))
            uow.commit()

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
    def test_a_purchase_schedules_five_steps_at_the_customers_local_morning(
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
            "satisfaction_survey": datetime(2026, 1, 13, 1, 0, tzinfo=UTC),
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
        assert len(scheduler.steps()) == 5

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
        assert (step["status"], step["reason"]) == (
            "skipped",
            "email: no consent; line: no consent; sms: channel not configured",
        )

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


class TestUnexpectedErrors:
    def test_a_step_that_raises_is_failed_and_the_others_still_go_out(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.purchase("o-1")
        scheduler.purchase("o-2")
        survey_due = scheduler.steps()["satisfaction_survey"]["due_at"]

        def broken_invite(**request: Any) -> Invitation:
            raise KeyError("invitation_id")  # e.g. an answer without the promised field

        scheduler.surveys.invite = broken_invite  # type: ignore[method-assign]
        scheduler.run_until(survey_due)

        surveys = [s for s in _all_steps(scheduler) if s["step_key"] == "satisfaction_survey"]
        assert {(s["status"], s["reason"]) for s in surveys} == {
            ("failed", "internal error: KeyError: 'invitation_id'")
        }
        assert len(scheduler.outbox("followup_failed")) == 2
        # Everything else due by then went out: nothing is stuck behind the broken steps.
        sent = [s for s in _all_steps(scheduler) if s["status"] == "sent"]
        assert len(sent) == 6  # thank-you, delivery check and tips of both orders


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


def marketing_playbook(key: str = "promo") -> dict[str, Any]:
    return {
        "key": key,
        "name": "Promotion",
        "trigger": {"event": "login_dropped"},
        "priority": "marketing",
        "steps": [{"key": "offer", "delay": "PT0S", "channels": ["email"], "template": "login.reengagement"}],
        "reentry": {"policy": "once_per_key"},
    }


def login_dropped(scheduler: Scheduler) -> None:
    data = {"recent_rate_per_week": 0.5, "baseline_rate_per_week": 4.0}
    scheduler.handle(handlers.trigger, scheduler.event("login_dropped", data))


class TestFrequencyBudget:
    def test_a_second_marketing_message_is_deferred_to_the_next_open_slot(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.clock.set(datetime(2026, 1, 5, 2, 0, tzinfo=UTC))  # 11:00 in Tokyo
        first_sent = scheduler.clock.now()
        scheduler.add_playbook(marketing_playbook("promo_a"))
        scheduler.add_playbook(marketing_playbook("promo_b"))
        # Both playbooks start, and the default re-engagement too (due at 10:00 tomorrow, local).
        login_dropped(scheduler)

        scheduler.dispatcher.dispatch_due()

        assert len([m for m in channel.sent if "miss you" in m.subject]) == 1
        deferred = [s for s in _all_steps(scheduler) if (s["reason"] or "").startswith("deferred")]
        assert len(deferred) == 1
        assert deferred[0]["reason"] == "deferred: frequency budget (at most 1 marketing per P3D)"
        assert deferred[0]["due_at"] == first_sent + timedelta(days=3)

        # Three days later one more goes out; the last one waits again (1 per 3 days).
        scheduler.run_until(first_sent + timedelta(days=3))

        assert len([m for m in channel.sent if "miss you" in m.subject]) == 2
        (still,) = [s for s in _all_steps(scheduler) if s["status"] == "scheduled"]
        assert still["due_at"] == first_sent + timedelta(days=6)
        assert still["reason"] == "deferred: frequency budget (at most 1 marketing per P3D)"

    def test_over_budget_with_a_drop_rule_is_skipped(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.clock.set(datetime(2026, 1, 5, 2, 0, tzinfo=UTC))
        scheduler.save_settings(over_budget={"service": "defer", "survey": "drop", "marketing": "drop"})
        scheduler.add_playbook(marketing_playbook("promo_a"))
        scheduler.add_playbook(marketing_playbook("promo_b"))
        login_dropped(scheduler)

        scheduler.dispatcher.dispatch_due()

        skipped = [s for s in _all_steps(scheduler) if s["status"] == "skipped"]
        assert [s["reason"] for s in skipped] == ["over budget: at most 1 marketing per P3D"]
        assert len(channel.sent) == 1

    def test_transactional_messages_are_exempt(self, scheduler: Scheduler, channel: FakeChannel) -> None:
        scheduler.add_customer()
        scheduler.save_settings(
            frequency_caps=[FrequencyCap(classes=["marketing", "service"], max=0, per=timedelta(days=1))]
        )
        scheduler.purchase()

        scheduler.run_until(START)

        assert [m.subject for m in channel.sent] == ["Thank you for your order o-1"]


class TestQuietHours:
    def test_a_step_due_at_night_waits_for_the_local_morning(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer(timezone="America/New_York")
        scheduler.clock.set(datetime(2026, 1, 6, 3, 0, tzinfo=UTC))  # 22:00 in New York
        scheduler.add_playbook(marketing_playbook("promo_a"))
        login_dropped(scheduler)

        scheduler.dispatcher.dispatch_due()

        assert channel.sent == []
        waiting = [s for s in _all_steps(scheduler) if s["playbook_key"] == "promo_a"][0]
        assert waiting["status"] == "scheduled"
        assert waiting["due_at"] == datetime(2026, 1, 6, 14, 0, tzinfo=UTC)  # 09:00 New York
        assert waiting["reason"] == "deferred: quiet hours for email (21:00-09:00 America/New_York)"

        scheduler.run_until(datetime(2026, 1, 6, 14, 0, tzinfo=UTC))

        assert [m.subject for m in channel.sent] == ["We miss you at Kissa Tokyo"]

    def test_the_same_moment_is_daytime_for_another_customer(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer(timezone="Asia/Tokyo")
        scheduler.clock.set(datetime(2026, 1, 6, 3, 0, tzinfo=UTC))  # 12:00 in Tokyo
        scheduler.add_playbook(marketing_playbook("promo_a"))
        login_dropped(scheduler)

        scheduler.dispatcher.dispatch_due()

        assert len(channel.sent) == 1

    def test_the_transactional_thank_you_is_not_held_at_night(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer(timezone="Asia/Tokyo")
        night = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)  # midnight in Tokyo
        scheduler.clock.set(night)
        scheduler.purchase(at=night)

        scheduler.run_until(night)

        assert [m.subject for m in channel.sent] == ["Thank you for your order o-1"]


class TestHoldoutAtDispatch:
    def test_a_control_group_customer_gets_no_marketing_but_the_run_is_recorded(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.clock.set(datetime(2026, 1, 5, 2, 0, tzinfo=UTC))
        document = marketing_playbook("everyone_control")
        document["control_group_percent"] = 50
        # CUSTOMER c1 lands in the control half of this playbook (deterministic hash).
        scheduler.add_playbook(document)
        scheduler.save_settings(global_holdout_percent=0)
        login_dropped(scheduler)

        scheduler.dispatcher.dispatch_due()

        (run,) = [r for r in scheduler.runs() if r["playbook_key"] == "everyone_control"]
        step = [s for s in _all_steps(scheduler) if s["playbook_key"] == "everyone_control"][0]
        if run["holdout_group"] == "control":
            assert (step["status"], step["reason"]) == ("skipped", "holdout: control group of this playbook")
        else:
            assert run["holdout_group"] == "treated"
            assert step["status"] in ("sent", "scheduled")


class TestSurveySteps:
    def test_the_survey_link_is_sent_through_the_channel(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.purchase("o-5")
        survey_due = scheduler.steps()["satisfaction_survey"]["due_at"]

        scheduler.run_until(survey_due)

        (request,) = scheduler.surveys.invited
        assert request["survey"] == "csat"
        assert request["context"] == {"type": "order", "id": "o-5"}
        assert request["idempotency_key"] == f"{SHOP}.post_purchase.o-5.satisfaction_survey"
        survey_mail = channel.sent[-1]
        assert survey_mail.subject == "How satisfied are you with your order?"
        assert "https://surveys.test/i/1" in survey_mail.text

    def test_survey_fatigue_skips_the_step_with_its_reason(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        scheduler.purchase()
        scheduler.surveys.fatigued = True

        scheduler.run_until(scheduler.steps()["satisfaction_survey"]["due_at"])

        step = scheduler.steps()["satisfaction_survey"]
        assert (step["status"], step["reason"]) == ("skipped", "survey_fatigue")

    def test_an_open_ticket_pauses_the_survey_until_it_is_resolved(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.purchase()
        scheduler.handle(handlers.trigger, scheduler.event("ticket_opened", {"ticket_id": "T-1"}))

        survey_due = scheduler.steps()["satisfaction_survey"]["due_at"]
        assert scheduler.steps()["satisfaction_survey"]["status"] == "paused"
        scheduler.run_until(survey_due + timedelta(days=1))
        assert scheduler.surveys.invited == []
        assert scheduler.steps()["usage_tips"]["status"] == "sent"  # only surveys wait

        scheduler.handle(handlers.trigger, scheduler.event("ticket_resolved", {"ticket_id": "T-1"}))
        step = scheduler.steps()["satisfaction_survey"]
        assert (step["status"], step["reason"]) == ("scheduled", "resumed: ticket_resolved")
        scheduler.dispatcher.dispatch_due()

        assert len(scheduler.surveys.invited) == 1


class TestExits:
    def test_a_purchase_ends_a_reactivation_run(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        scheduler.handle(
            handlers.trigger, scheduler.event("segment_changed", {"from": "loyal", "to": "dormant"})
        )
        run = [r for r in scheduler.runs() if r["playbook_key"] == "reactivation_dormant"][0]
        assert run["status"] == "active"

        scheduler.purchase("o-back")

        run = [r for r in scheduler.runs() if r["playbook_key"] == "reactivation_dormant"][0]
        assert (run["status"], run["exit_reason"]) == ("exited", "exit: purchase_made")
        reactivation = [s for s in _all_steps(scheduler) if s["playbook_key"] == "reactivation_dormant"]
        assert {s["status"] for s in reactivation} == {"cancelled"}

    def test_a_resolved_ticket_ends_its_escalation(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        scheduler.handle(
            handlers.trigger, scheduler.event("ticket_opened", {"ticket_id": "T-9", "priority": "critical"})
        )
        steps = {s["step_key"]: s for s in _all_steps(scheduler) if s["playbook_key"] == "ticket_support"}
        assert set(steps) == {"acknowledgement", "escalate_critical"}  # the 24 h escalation is for others
        assert steps["escalate_critical"]["due_at"] == START + timedelta(hours=4)

        scheduler.handle(handlers.trigger, scheduler.event("ticket_resolved", {"ticket_id": "T-9"}))

        steps = {s["step_key"]: s for s in _all_steps(scheduler) if s["playbook_key"] == "ticket_support"}
        assert steps["escalate_critical"]["status"] == "cancelled"
        # The resolution starts the CES survey playbook.
        assert any(s["playbook_key"] == "ticket_ces" for s in _all_steps(scheduler))

    def test_a_detractor_gets_service_recovery_and_staff_a_task(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        answer = {"survey_id": "s1", "response_id": "r1", "kind": "nps", "score": 2, "detractor": True}
        promoter = {**answer, "response_id": "r2", "score": 10, "detractor": False}

        scheduler.handle(handlers.trigger, scheduler.event("survey_answered", answer))
        scheduler.handle(handlers.trigger, scheduler.event("survey_answered", promoter))

        steps = [s for s in _all_steps(scheduler) if s["playbook_key"] == "nps_detractor_recovery"]
        assert sorted((s["step_key"], s["action"]) for s in steps) == [
            ("service_recovery", "message"),
            ("staff_task", "staff_task"),
        ]

    def test_a_staff_task_without_a_webhook_is_skipped_with_the_reason(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        answer = {"survey_id": "s1", "response_id": "r1", "kind": "nps", "score": 2, "detractor": True}
        scheduler.handle(handlers.trigger, scheduler.event("survey_answered", answer))

        scheduler.dispatcher.dispatch_due()

        task = [s for s in _all_steps(scheduler) if s["step_key"] == "staff_task"][0]
        assert task["status"] == "skipped"
        assert task["reason"] == "webhook: channel not configured (staff tasks go to the shop's webhook)"


class TestBirthdays:
    def test_a_birthday_starts_one_greeting_a_year(self, scheduler: Scheduler) -> None:
        scheduler.handle(
            handlers.customer_upserted,
            scheduler.event(
                "customer_upserted",
                {
                    "created": True,
                    "email": "a@example.com",
                    "timezone": "Asia/Tokyo",
                    "birthday": "1990-01-06",
                },
            ),
        )
        scheduler.clock.set(datetime(2026, 1, 5, 16, 0, tzinfo=UTC))  # 01:00 on 6 January in Tokyo

        start_birthday_runs(scheduler.uow_factory)
        start_birthday_runs(scheduler.uow_factory)

        runs = [r for r in scheduler.runs() if r["playbook_key"] == "birthday"]
        assert len(runs) == 1
        (greeting,) = [s for s in _all_steps(scheduler) if s["playbook_key"] == "birthday"]
        assert greeting["due_at"] == datetime(2026, 1, 6, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo

    def test_no_greeting_on_another_day(self, scheduler: Scheduler) -> None:
        scheduler.handle(
            handlers.customer_upserted,
            scheduler.event("customer_upserted", {"created": True, "birthday": "1990-03-01"}),
        )

        start_birthday_runs(scheduler.uow_factory)

        assert scheduler.runs() == []


def _all_steps(scheduler: Scheduler) -> list[dict[str, Any]]:
    with scheduler.engine.connect() as connection:
        rows = connection.execute(select(tables.steps).order_by(tables.steps.c.due_at)).mappings()
        return [dict(row) for row in rows]


class TestErasure:
    def test_erasure_cancels_pending_and_paused_steps_and_forgets_the_customer(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.purchase("o-1")
        scheduler.run_until(START)  # the thank-you goes out and is recorded
        scheduler.handle(handlers.trigger, scheduler.event("ticket_opened", {"ticket_id": "T-1"}))
        assert scheduler.steps()["satisfaction_survey"]["status"] == "paused"

        scheduler.handle(erasure.customer_erased, scheduler.event("customer_erased", {"erasure_id": "er_1"}))

        steps = scheduler.steps()
        assert steps["thank_you"]["status"] == "sent"
        assert {steps[k]["status"] for k in STEP_KEYS[1:]} == {"cancelled"}
        (completed,) = scheduler.outbox("erasure_completed")
        assert completed["data"]["purged"] == {
            "contact_points": 1,
            "rendered_messages": 1,
            "pending_followups_cancelled": 6,  # four post-purchase steps and the ticket's two
            "purchase_history": 1,
        }
        with scheduler.engine.connect() as connection:
            for table in (tables.contacts, tables.messages, tables.purchases, tables.customer_products):
                assert connection.execute(select(table)).first() is None, table.name
            contexts = connection.execute(select(tables.runs.c.context)).scalars().all()
        assert contexts and all(context == {"erased": True} for context in contexts)


class TestShopChannels:
    """The dispatcher with the shop's own channel configuration, against a real local HTTP server."""

    def configure(
        self, scheduler: Scheduler, channel: str, settings: dict[str, Any], secrets: dict[str, Any]
    ) -> None:
        with scheduler.uow_factory() as uow:
            uow.repo.save_channel_config(
                {
                    "shop_id": SHOP,
                    "channel": channel,
                    "enabled": True,
                    "settings": settings,
                    "secrets": secrets,
                    "updated_at": scheduler.clock.now(),
                }
            )
            uow.commit()

    def with_directory(self, scheduler: Scheduler, fallback: FakeChannel) -> None:
        scheduler.dispatcher.directory = ChannelDirectory(
            {"email": fallback}, httpx.Client(timeout=5), RetryPolicy(attempts=2, initial_s=0.01, max_s=0.02)
        )

    def test_a_detractors_staff_task_reaches_the_shops_webhook(
        self, scheduler: Scheduler, channel: FakeChannel, http_server: Any
    ) -> None:
        self.with_directory(scheduler, channel)
        self.configure(scheduler, "webhook", {"url": f"{http_server.url}/hook"}, {"secret": "s" * 20})
        scheduler.add_customer()
        answer = {"survey_id": "s1", "response_id": "r1", "kind": "nps", "score": 2, "detractor": True}
        scheduler.handle(handlers.trigger, scheduler.event("survey_answered", answer))

        scheduler.dispatcher.dispatch_due()

        (request,) = http_server.requests
        payload = request.json()
        assert (payload["type"], payload["step"], payload["customer_id"]) == (
            "followup.staff_task",
            "staff_task",
            CUSTOMER,
        )
        assert "answered 2 to the NPS survey" in payload["message"]["text"]
        assert verify("s" * 20, request.headers["retention-signature"], request.body, now=time.time())
        task = [s for s in _all_steps(scheduler) if s["step_key"] == "staff_task"][0]
        assert (task["status"], task["channel"]) == ("sent", "webhook")

    def test_a_misconfigured_sms_provider_fails_the_step_and_dispatch_goes_on(
        self, scheduler: Scheduler, channel: FakeChannel, http_server: Any
    ) -> None:
        self.with_directory(scheduler, channel)
        self.configure(
            scheduler,
            "sms",
            {"base_url": http_server.url, "account_sid": "AC1", "from_number": "+1555"},
            {"auth_token": "wrong"},
        )
        http_server.answer(401, {"message": "Authenticate"})
        scheduler.add_customer(consents=("sms",))
        scheduler.handle(
            handlers.customer_upserted,
            scheduler.event(
                "customer_upserted", {"created": False, "phone": "+819012345678", "timezone": "Asia/Tokyo"}
            ),
        )
        scheduler.purchase("o-1")
        scheduler.purchase("o-2")

        assert scheduler.dispatcher.dispatch_due() == 2

        failed = [s for s in _all_steps(scheduler) if s["status"] == "failed"]
        assert len(failed) == 1 and failed[0]["reason"].startswith("SMS provider: HTTP 401")
        assert [s["status"] for s in _all_steps(scheduler) if s["step_key"] == "thank_you"].count("sent") == 1
        (event,) = scheduler.outbox("followup_failed")
        assert event["data"]["permanent"] is True and event["data"]["channel"] == "sms"


class _PeerRecorder:
    """An aiosmtpd handler noting which client connection (peer address) carried each message."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook name)
        self.peers.append(session.peer)
        return "250 Message accepted"


@pytest.fixture
def smtp_with_idle_timeout() -> Iterator[tuple[_PeerRecorder, int]]:
    """A real aiosmtpd server that drops a connection idle for half a second."""
    recorder = _PeerRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, timeout=0.5)
    controller.start()
    yield recorder, port
    controller.stop()


def email(key: str) -> OutgoingMessage:
    return OutgoingMessage(
        channel="email",
        recipient="hana@example.com",
        subject="ご注文ありがとうございます",
        text="Hello Hana,\n\nThank you.",
        html=None,
        idempotency_key=key,
        sender_name="喫茶 東京",
        locale="ja",
        headers={"List-Unsubscribe": "<https://retention.test/u/token>"},
    )


class TestSmtpConnections:
    def test_messages_back_to_back_share_one_connection(
        self, smtp_with_idle_timeout: tuple[_PeerRecorder, int]
    ) -> None:
        recorder, port = smtp_with_idle_timeout
        channel = SmtpChannel("127.0.0.1", port, "no-reply@retention.test")

        for n in range(3):
            channel.send(email(f"k-{n}"))

        assert len(recorder.peers) == 3
        assert len(set(recorder.peers)) == 1
        channel.close()

    def test_a_connection_the_server_dropped_is_replaced_within_the_same_send(
        self, smtp_with_idle_timeout: tuple[_PeerRecorder, int]
    ) -> None:
        recorder, port = smtp_with_idle_timeout
        channel = SmtpChannel("127.0.0.1", port, "no-reply@retention.test")  # no retry policy
        channel.send(email("k-1"))
        time.sleep(1.2)  # the server closes the idle connection

        channel.send(email("k-2"))  # no TransientChannelError: a fresh connection took it

        assert len(recorder.peers) == 2
        assert recorder.peers[0] != recorder.peers[1]
        channel.close()

    def test_the_message_survives_the_trip_intact(self, smtp_server: SmtpServer) -> None:
        channel = SmtpChannel("127.0.0.1", smtp_server.port, "no-reply@retention.test")

        channel.send(email("shop_1.promo.k-9.offer"))

        (mail,) = smtp_server.wait_for(1)
        assert mail.subject == "ご注文ありがとうございます"
        assert mail.message_id == "<shop_1.promo.k-9.offer@retention>"
        assert mail.message["List-Unsubscribe"] == "<https://retention.test/u/token>"
        assert "Hello Hana," in mail.text() and "Thank you." in mail.text()
        assert mail.message.get_content_type() == "multipart/alternative"
        channel.close()


class TestBatchedDispatch:
    @pytest.mark.parametrize("batch_size", [1, 2, 50])
    def test_the_budget_counts_what_was_sent_earlier_in_the_same_batch(
        self, scheduler: Scheduler, channel: FakeChannel, batch_size: int
    ) -> None:
        scheduler.dispatcher.batch_size = batch_size
        scheduler.add_customer()
        scheduler.clock.set(datetime(2026, 1, 5, 2, 0, tzinfo=UTC))  # 11:00 in Tokyo
        for key in ("promo_a", "promo_b", "promo_c"):
            scheduler.add_playbook(marketing_playbook(key))
        login_dropped(scheduler)

        scheduler.dispatcher.dispatch_due()

        # 1 marketing message per 3 days, whether the three steps share a batch or not.
        assert len([m for m in channel.sent if "miss you" in m.subject]) == 1
        deferred = [s for s in _all_steps(scheduler) if (s["reason"] or "").startswith("deferred")]
        assert len(deferred) == 2

    def test_many_customers_in_one_batch_each_get_their_message_once(
        self, engine: Engine, clock: ManualClock, smtp_server: SmtpServer
    ) -> None:
        channel = SmtpChannel("127.0.0.1", smtp_server.port, "no-reply@retention.test")
        scheduler = Scheduler(engine, clock, channel)
        scheduler.dispatcher.batch_size = 10
        scheduler.dispatcher.send_concurrency = 4
        scheduler.register_shop()
        for n in range(12):
            profile = {"email": f"c{n}@example.com", "name": f"C{n}", "timezone": "Asia/Tokyo"}
            scheduler.handle(
                handlers.customer_upserted,
                scheduler.event("customer_upserted", {"created": True, **profile}, customer=f"c{n}"),
            )
            scheduler.handle(
                handlers.consent_changed,
                scheduler.event("consent_changed", {"channel": "email", "granted": True}, customer=f"c{n}"),
            )
            data = {"order_id": f"o-{n}", "amount": "4200", "currency": "JPY", "items": []}
            scheduler.handle(handlers.trigger, scheduler.event("purchase_made", data, customer=f"c{n}"))

        assert scheduler.run_until(START) == 12  # two batches: 10, then 2

        mails = smtp_server.wait_for(12)
        assert sorted(mail.message_id for mail in mails) == sorted(
            f"<{SHOP}.post_purchase.o-{n}.thank_you@retention>" for n in range(12)
        )
        thank_yous = [s for s in _all_steps(scheduler) if s["step_key"] == "thank_you"]
        assert {s["status"] for s in thank_yous} == {"sent"}
        assert len(scheduler.outbox("followup_sent")) == 12
        scheduler.dispatcher.close()
        channel.close()

    def test_a_crash_mid_batch_leaves_the_whole_batch_due_and_resends_under_the_same_keys(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.dispatcher.batch_size = 3
        scheduler.add_customer()
        for order in ("o-1", "o-2", "o-3"):
            scheduler.purchase(order)
        crash_after = 2
        send = channel.send

        def crashing_send(message: OutgoingMessage) -> None:
            if len(channel.sent) == crash_after:
                raise SystemExit("killed")  # not an Exception: nothing catches it, as in a crash
            send(message)

        channel.send = crashing_send  # type: ignore[method-assign]
        with pytest.raises(SystemExit):
            scheduler.run_until(START)
        first_keys = [m.idempotency_key for m in channel.sent]
        assert len(first_keys) == 2
        thank_yous = [s for s in _all_steps(scheduler) if s["step_key"] == "thank_you"]
        assert {s["status"] for s in thank_yous} == {"scheduled"}  # nothing of the batch committed

        channel.send = send  # type: ignore[method-assign]
        scheduler.run_until(START)

        # At most the batch is sent again, each copy under its first idempotency key.
        resent = [m.idempotency_key for m in channel.sent[2:]]
        assert sorted(resent) == sorted({s["idempotency_key"] for s in thank_yous})
        assert set(first_keys) <= set(resent)
        assert {s["status"] for s in _all_steps(scheduler) if s["step_key"] == "thank_you"} == {"sent"}


class TestDeliveries:
    """The read side behind /v1/deliveries: every step with its status, channel and reason."""

    def test_sent_failed_skipped_and_cancelled_steps_are_listed_and_counted(
        self, scheduler: Scheduler, channel: FakeChannel
    ) -> None:
        scheduler.add_customer()
        scheduler.purchase("o-sent")
        scheduler.run_until(START)
        scheduler.purchase("o-failed")
        channel.failures.append(PermanentChannelError("550 mailbox unavailable"))
        scheduler.run_until(START)
        scheduler.purchase("o-refunded")
        scheduler.refund("o-refunded")
        scheduler.handle(
            handlers.consent_changed,
            scheduler.event("consent_changed", {"channel": "email", "granted": False}),
        )
        scheduler.purchase("o-no-consent")
        scheduler.run_until(START)

        with scheduler.uow_factory() as uow:
            (failed,) = deliveries.list_deliveries(
                uow, shop_id=SHOP, status="failed", channel=None, limit=50, cursor=None
            ).rows
            counts = deliveries.delivery_counts(uow, shop_id=SHOP, since=START - timedelta(days=1))
            other_shop = deliveries.delivery_counts(
                uow, shop_id="shop_other", since=START - timedelta(days=1)
            )
        assert (failed["channel"], failed["step_key"]) == ("email", "thank_you")
        assert "550 mailbox unavailable" in failed["reason"]
        by_key = {(row["channel"], row["status"]): row["count"] for row in counts}
        assert by_key[("email", "sent")] == 1
        assert by_key[("email", "failed")] == 1
        assert by_key[(deliveries.NO_CHANNEL, "skipped")] == 1
        assert by_key[(deliveries.NO_CHANNEL, "cancelled")] == 5  # the refunded order's whole run
        assert sum(by_key.values()) == len(_all_steps(scheduler))
        assert other_shop == []

    def test_pages_walk_every_step_once_newest_first(self, scheduler: Scheduler) -> None:
        scheduler.add_customer()
        for number in range(3):
            scheduler.purchase(f"o-{number}")
            scheduler.clock.advance(timedelta(seconds=1))
        seen: list[dict[str, Any]] = []
        cursor = None
        with scheduler.uow_factory() as uow:
            while True:
                page = deliveries.list_deliveries(
                    uow, shop_id=SHOP, status=None, channel=None, limit=4, cursor=cursor
                )
                seen += page.rows
                cursor = page.next_cursor
                if cursor is None:
                    break
        assert len(seen) == len({row["id"] for row in seen}) == len(_all_steps(scheduler)) == 15
        assert [row["updated_at"] for row in seen] == sorted(
            (row["updated_at"] for row in seen), reverse=True
        )
        with pytest.raises(deliveries.BadCursor), scheduler.uow_factory() as uow:
            deliveries.list_deliveries(uow, shop_id=SHOP, status=None, channel=None, limit=4, cursor="nope")
