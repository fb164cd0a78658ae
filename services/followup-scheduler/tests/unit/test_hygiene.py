"""Quiet hours, frequency budget, holdouts and uplift statistics (domain, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from followup_scheduler.domain.hygiene import (
    FrequencyCap,
    QuietHours,
    budget_opens_at,
    held_out,
    holdout_group,
    in_bucket,
    quiet_until,
)
from followup_scheduler.domain.results import GroupOutcome, uplift

NIGHT = QuietHours(start=time(21, 0), end=time(9, 0))
CAPS = [
    FrequencyCap(classes=["marketing"], max=1, per=timedelta(days=3)),
    FrequencyCap(classes=["marketing"], max=3, per=timedelta(days=7)),
]


class TestQuietHoursAcrossTimezones:
    @pytest.mark.parametrize(
        ("moment", "timezone", "until"),
        [
            # 23:30 in Tokyo: wait until 09:00 Tokyo the next morning (00:00 UTC).
            (datetime(2026, 1, 5, 14, 30, tzinfo=UTC), "Asia/Tokyo", datetime(2026, 1, 6, 0, 0, tzinfo=UTC)),
            # 03:00 in Tokyo: the same morning.
            (datetime(2026, 1, 5, 18, 0, tzinfo=UTC), "Asia/Tokyo", datetime(2026, 1, 6, 0, 0, tzinfo=UTC)),
            # The same instant is 13:00 in New York: not quiet there.
            (datetime(2026, 1, 5, 18, 0, tzinfo=UTC), "America/New_York", None),
            # 22:00 in New York in winter (UTC-5): until 09:00 New York = 14:00 UTC.
            (
                datetime(2026, 1, 6, 3, 0, tzinfo=UTC),
                "America/New_York",
                datetime(2026, 1, 6, 14, 0, tzinfo=UTC),
            ),
            # The night clocks spring forward (8 March 2026): 09:00 EDT is 13:00 UTC.
            (
                datetime(2026, 3, 8, 4, 0, tzinfo=UTC),
                "America/New_York",
                datetime(2026, 3, 8, 13, 0, tzinfo=UTC),
            ),
            # Exactly 09:00 local is no longer quiet; exactly 21:00 is.
            (datetime(2026, 1, 5, 0, 0, tzinfo=UTC), "Asia/Tokyo", None),
            (datetime(2026, 1, 5, 12, 0, tzinfo=UTC), "Asia/Tokyo", datetime(2026, 1, 6, 0, 0, tzinfo=UTC)),
            # An unknown zone is UTC.
            (datetime(2026, 1, 5, 22, 0, tzinfo=UTC), "Mars/Olympus", datetime(2026, 1, 6, 9, 0, tzinfo=UTC)),
        ],
    )
    def test_deferral_to_the_local_end_of_the_night(
        self, moment: datetime, timezone: str, until: datetime | None
    ) -> None:
        assert quiet_until(moment, NIGHT, timezone) == until

    def test_a_window_within_one_day(self) -> None:
        lunch = QuietHours(start=time(12, 0), end=time(13, 0))

        assert quiet_until(datetime(2026, 1, 5, 3, 30, tzinfo=UTC), lunch, "Asia/Tokyo") == datetime(
            2026, 1, 5, 4, 0, tzinfo=UTC
        )
        assert quiet_until(datetime(2026, 1, 5, 5, 0, tzinfo=UTC), lunch, "Asia/Tokyo") is None

    def test_no_quiet_hours(self) -> None:
        assert quiet_until(datetime(2026, 1, 5, 14, 30, tzinfo=UTC), None, "Asia/Tokyo") is None


class TestFrequencyBudget:
    now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)

    def test_room_left(self) -> None:
        sent = [(self.now - timedelta(days=4), "marketing")]

        assert budget_opens_at(self.now, "marketing", CAPS, sent) == (None, None)

    def test_one_per_three_days(self) -> None:
        last = self.now - timedelta(days=1)

        opens, full = budget_opens_at(self.now, "marketing", CAPS, [(last, "marketing")])

        assert opens == last + timedelta(days=3)
        assert full == "at most 1 marketing per P3D"

    def test_three_per_week_opens_when_the_oldest_drops_out(self) -> None:
        sent = [(self.now - timedelta(days=d), "marketing") for d in (6, 5, 4)]

        opens, full = budget_opens_at(self.now, "marketing", CAPS, sent)

        assert opens == self.now - timedelta(days=6) + timedelta(days=7)
        assert full == "at most 3 marketing per P7D"

    def test_other_classes_do_not_count_and_transactional_is_exempt(self) -> None:
        sent = [(self.now - timedelta(hours=1), "service"), (self.now - timedelta(hours=2), "transactional")]

        assert budget_opens_at(self.now, "marketing", CAPS, sent) == (None, None)
        marketing = [(self.now - timedelta(hours=1), "marketing")]
        assert budget_opens_at(self.now, "transactional", CAPS, marketing) == (None, None)
        assert budget_opens_at(self.now, "service", CAPS, marketing) == (None, None)


class TestHoldouts:
    def test_assignment_is_deterministic_and_close_to_the_share(self) -> None:
        groups = [holdout_group("shop_1", f"c{i}", "post_purchase", 5, 10) for i in range(20_000)]

        assert groups == [holdout_group("shop_1", f"c{i}", "post_purchase", 5, 10) for i in range(20_000)]
        share = {group: groups.count(group) / len(groups) for group in set(groups)}
        assert share["global_holdout"] == pytest.approx(0.05, abs=0.006)
        assert share["control"] == pytest.approx(0.95 * 0.10, abs=0.008)

    def test_the_global_holdout_is_the_same_across_playbooks(self) -> None:
        held = [c for c in (f"c{i}" for i in range(2000)) if in_bucket(5, "shop_1", "global", c)]

        assert held
        assert all(
            holdout_group("shop_1", c, key, 5, 0) == "global_holdout" for c in held for key in ("a", "b")
        )

    def test_what_each_group_misses(self) -> None:
        assert held_out("global_holdout", "marketing") == "holdout: global holdout (no marketing)"
        assert held_out("global_holdout", "service") is None
        assert held_out("control", "service") == "holdout: control group of this playbook"
        assert held_out("control", "transactional") is None
        assert held_out("treated", "marketing") is None


class TestUplift:
    def test_difference_and_confidence_interval(self) -> None:
        effect = uplift(GroupOutcome(1000, 150), GroupOutcome(1000, 100))

        assert effect.absolute == pytest.approx(0.05)
        # sqrt(.15*.85/1000 + .1*.9/1000) = 0.014748; * 1.96 = 0.028906
        assert effect.ci_low == pytest.approx(0.05 - 0.028906, abs=1e-5)
        assert effect.ci_high == pytest.approx(0.05 + 0.028906, abs=1e-5)
        assert effect.relative == pytest.approx(0.5)

    def test_an_empty_group_gives_no_estimate(self) -> None:
        effect = uplift(GroupOutcome(10, 2), GroupOutcome(0, 0))

        assert (effect.absolute, effect.ci_low, effect.ci_high) == (None, None, None)
