from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from followup_scheduler.domain.planning import plan_run
from followup_scheduler.domain.playbook import Playbook, Step, Window, due_time
from followup_scheduler.service_layer.defaults import default_playbooks


def window_step(earliest: str, latest: str) -> Step:
    return Step.model_validate(
        {"key": "check", "delay": {"from": earliest, "to": latest}, "channels": ["email"], "template": "t.x"}
    )


def playbook_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "key": "post_purchase",
        "name": "Post-purchase",
        "trigger": {"event": "purchase_made", "business_key": "order_id"},
        "steps": [
            {
                "key": "thank_you",
                "delay": "PT0S",
                "channels": ["email"],
                "template": "post_purchase.thank_you",
            },
            {
                "key": "delivery_check",
                "delay": {"from": "P1D", "to": "P2D"},
                "channels": ["email"],
                "template": "post_purchase.delivery_check",
            },
        ],
    }
    document.update(overrides)
    return document


class TestFixedDelay:
    def test_a_fixed_delay_is_added_to_the_trigger_time(self) -> None:
        step = Step.model_validate(
            {"key": "later", "delay": "P3DT2H", "channels": ["email"], "template": "t.x"}
        )
        trigger = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)

        assert due_time(step, trigger, "Asia/Tokyo") == datetime(2026, 1, 8, 11, 30, tzinfo=UTC)

    def test_zero_delay_is_due_at_once(self) -> None:
        step = Step.model_validate({"key": "now", "delay": "PT0S", "channels": ["email"], "template": "t.x"})
        trigger = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)

        assert due_time(step, trigger, None) == trigger


class TestWindowAtPreferredHour:
    def test_tokyo_customer_gets_ten_in_the_morning_local_time(self) -> None:
        # Trigger 09:00 UTC = 18:00 JST; window opens 6 Jan 18:00 JST, so 10:00 JST on 7 Jan,
        # which is 01:00 UTC on 7 Jan: the local day is ahead of the UTC day.
        due = due_time(window_step("P1D", "P2D"), datetime(2026, 1, 5, 9, 0, tzinfo=UTC), "Asia/Tokyo")

        assert due == datetime(2026, 1, 7, 1, 0, tzinfo=UTC)

    def test_new_york_customer_gets_ten_in_the_morning_local_time(self) -> None:
        # Trigger 02:00 UTC on 5 Jan = 21:00 EST on 4 Jan; window opens 5 Jan 21:00 EST,
        # so 10:00 EST on 6 Jan = 15:00 UTC.
        due = due_time(window_step("P1D", "P2D"), datetime(2026, 1, 5, 2, 0, tzinfo=UTC), "America/New_York")

        assert due == datetime(2026, 1, 6, 15, 0, tzinfo=UTC)

    def test_the_preferred_hour_on_the_first_day_when_the_window_opens_before_it(self) -> None:
        # Trigger 09:00 UTC = 04:00 EST; the window opens 6 Jan 04:00 EST, so 10:00 EST that same day.
        due = due_time(window_step("P1D", "P2D"), datetime(2026, 1, 5, 9, 0, tzinfo=UTC), "America/New_York")

        assert due == datetime(2026, 1, 6, 15, 0, tzinfo=UTC)

    def test_the_local_hour_survives_a_daylight_saving_change(self) -> None:
        # New York moves to EDT (UTC-4) at 02:00 on 8 March 2026; 10:00 EDT is 14:00 UTC.
        due = due_time(window_step("P1D", "P2D"), datetime(2026, 3, 7, 12, 0, tzinfo=UTC), "America/New_York")

        assert due == datetime(2026, 3, 8, 14, 0, tzinfo=UTC)

    def test_the_next_local_morning_is_found_across_a_daylight_saving_change(self) -> None:
        # The window opens 12:00 EST on 7 March, after that day's 10:00; the next 10:00 local is
        # on 8 March, already EDT, so 14:00 UTC (not 24 hours after 10:00 EST, which is 15:00 UTC).
        due = due_time(window_step("P1D", "P2D"), datetime(2026, 3, 6, 17, 0, tzinfo=UTC), "America/New_York")

        assert due == datetime(2026, 3, 8, 14, 0, tzinfo=UTC)

    def test_no_fitting_hour_falls_back_to_the_window_start(self) -> None:
        # Window 6 Jan 12:00–13:00 UTC: the next 10:00 UTC is outside it.
        trigger = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

        due = due_time(window_step("P1D", "P1DT1H"), trigger, "UTC")

        assert due == trigger + timedelta(days=1)

    def test_unknown_timezone_is_treated_as_utc(self) -> None:
        due = due_time(window_step("P1D", "P2D"), datetime(2026, 1, 5, 12, 0, tzinfo=UTC), "Nowhere/Land")

        assert due == datetime(2026, 1, 7, 10, 0, tzinfo=UTC)


class TestPlaybookValidation:
    def test_a_valid_document_is_accepted(self) -> None:
        playbook = Playbook.model_validate(playbook_document())

        assert [step.key for step in playbook.steps] == ["thank_you", "delivery_check"]

    def test_duplicate_step_keys_are_rejected(self) -> None:
        document = playbook_document()
        document["steps"][1]["key"] = "thank_you"

        with pytest.raises(ValidationError, match="step keys must be unique"):
            Playbook.model_validate(document)

    def test_a_window_ending_before_it_starts_is_rejected(self) -> None:
        document = playbook_document()
        document["steps"][1]["delay"] = {"from": "P2D", "to": "P1D"}

        with pytest.raises(ValidationError, match="'to' must not be before 'from'"):
            Playbook.model_validate(document)

    @pytest.mark.parametrize("key", ["Post_Purchase", "1st", "post-purchase", "", "a" * 65])
    def test_a_badly_formed_playbook_key_is_rejected(self, key: str) -> None:
        with pytest.raises(ValidationError) as caught:
            Playbook.model_validate(playbook_document(key=key))
        assert caught.value.errors()[0]["loc"] == ("key",)

    def test_a_badly_formed_step_key_is_rejected(self) -> None:
        document = playbook_document()
        document["steps"][0]["key"] = "Thank You"

        with pytest.raises(ValidationError) as caught:
            Playbook.model_validate(document)
        assert caught.value.errors()[0]["loc"] == ("steps", 0, "key")

    def test_unknown_fields_are_rejected(self) -> None:
        with pytest.raises(ValidationError):
            Playbook.model_validate(playbook_document(owner="someone"))


def packaged(key: str) -> Playbook:
    return {playbook.key: playbook for playbook in default_playbooks()}[key]


class TestDefaultPlaybook:
    def test_the_packaged_post_purchase_timeline(self) -> None:
        playbook = packaged("post_purchase")

        assert playbook.key == "post_purchase"
        assert playbook.trigger.event == "purchase_made"
        assert playbook.trigger.business_key == "order_id"
        assert [(rule.event, rule.same_business_key, rule.effect) for rule in playbook.exit] == [
            ("refund_issued", True, "end"),
            ("ticket_opened", False, "pause_surveys"),
        ]
        delays = {step.key: step.delay for step in playbook.steps}
        assert list(delays) == [
            "thank_you",
            "delivery_check",
            "usage_tips",
            "satisfaction_survey",
            "one_month_check_in",
        ]
        assert delays["thank_you"] == timedelta(0)
        assert delays["delivery_check"] == Window(earliest=timedelta(days=1), latest=timedelta(days=2))
        assert delays["usage_tips"] == Window(earliest=timedelta(days=3), latest=timedelta(days=5))
        assert delays["satisfaction_survey"] == Window(earliest=timedelta(days=7), latest=timedelta(days=8))
        assert isinstance(delays["one_month_check_in"], Window)
        assert delays["one_month_check_in"].earliest >= timedelta(days=28)

    def test_the_thank_you_is_transactional_and_the_check_in_is_marketing(self) -> None:
        playbook = packaged("post_purchase")
        priorities = {step.key: playbook.priority_of(step) for step in playbook.steps}

        assert priorities == {
            "thank_you": "transactional",
            "delivery_check": "service",
            "usage_tips": "service",
            "satisfaction_survey": "survey",
            "one_month_check_in": "marketing",
        }

    def test_the_packaged_playbooks_round_trip_through_their_stored_form(self) -> None:
        for playbook in default_playbooks():
            stored = playbook.model_dump(mode="json", by_alias=True)

            assert Playbook.model_validate(stored) == playbook


class TestTriggerConditions:
    def plan(self, conditions: dict[str, Any], data: dict[str, Any], **customer: Any) -> list[str]:
        document = {
            "key": "conditional",
            "name": "Conditional",
            "trigger": {"event": "purchase_made", "business_key": "order_id", "conditions": conditions},
            "steps": [{"key": "hello", "delay": "PT0S", "channels": ["email"], "template": "t.x"}],
        }
        now = datetime(2026, 1, 5, tzinfo=UTC)
        return plan_run(
            Playbook.model_validate(document),
            shop_id="s",
            customer_id="c",
            event_type="purchase_made",
            event_id="e1",
            event_time=now,
            data=data,
            customer=customer,
            now=now,
            key_taken=False,
            previous_run_at=None,
            global_holdout_percent=0,
        ).reasons

    def test_amount_at_or_above(self) -> None:
        assert self.plan({"min_amount": "5000"}, {"amount": "5000"}) == []
        assert self.plan({"min_amount": "5000"}, {"amount": "4999.99"}) == ["amount '4999.99' below 5000"]

    def test_first_purchase(self) -> None:
        assert self.plan({"first_purchase": True}, {}, purchase_count=1) == []
        assert self.plan({"first_purchase": True}, {}, purchase_count=2) == ["not the first purchase"]
        assert self.plan({"first_purchase": False}, {}, purchase_count=1) == ["a first purchase"]

    def test_product_category(self) -> None:
        items = [{"sku": "a", "category": "tea"}, {"sku": "b"}]

        assert self.plan({"product_category_in": ["tea"]}, {"items": items}) == []
        assert self.plan({"product_category_in": ["cups"]}, {"items": items}) == [
            "no item in categories ['cups']"
        ]

    def test_customer_facts_and_event_fields(self) -> None:
        conditions = {"tier_in": ["gold"], "churn_band_in": ["high"], "data_equals": {"channel": "web"}}

        assert self.plan(conditions, {"channel": "web"}, tier="gold", churn_band="high") == []
        assert self.plan(conditions, {"channel": "app"}, tier="silver", churn_band="low") == [
            "tier 'silver' not in ['gold']",
            "churn band 'low' not in ['high']",
            "channel is 'app', not 'web'",
        ]


class TestReentry:
    def test_once_per_days(self) -> None:
        document = {
            "key": "nudge",
            "name": "Nudge",
            "trigger": {"event": "login_dropped"},
            "steps": [{"key": "hello", "delay": "PT0S", "channels": ["email"], "template": "t.x"}],
            "reentry": {"policy": "once_per_days", "days": 30},
        }
        playbook = Playbook.model_validate(document)
        now = datetime(2026, 3, 1, tzinfo=UTC)

        def reasons(previous: datetime | None) -> list[str]:
            return plan_run(
                playbook,
                shop_id="s",
                customer_id="c",
                event_type="login_dropped",
                event_id="e9",
                event_time=now,
                data={},
                customer={},
                now=now,
                key_taken=False,
                previous_run_at=previous,
                global_holdout_percent=0,
            ).reasons

        assert reasons(None) == []
        assert reasons(now - timedelta(days=31)) == []
        assert reasons(now - timedelta(days=29)) == ["re-entry: the last run started less than 30 days ago"]

    def test_once_per_days_needs_days(self) -> None:
        with pytest.raises(ValidationError, match="once_per_days needs days"):
            Playbook.model_validate(
                {
                    "key": "x",
                    "name": "X",
                    "trigger": {"event": "login_dropped"},
                    "steps": [{"key": "a", "delay": "PT0S", "channels": ["email"], "template": "t.x"}],
                    "reentry": {"policy": "once_per_days"},
                }
            )

    def test_a_window_may_be_written_as_a_range(self) -> None:
        step = Step.model_validate(
            {"key": "a", "delay": "P1D..P2D", "channels": ["email"], "template": "t.x"}
        )

        assert step.delay == Window(earliest=timedelta(days=1), latest=timedelta(days=2))
