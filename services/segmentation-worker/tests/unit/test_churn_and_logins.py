from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from segmentation_worker.domain.churn import churn_bands, typical_gap_days, usual_gap_days, worsened
from segmentation_worker.domain.config import ChurnConfig, LoginDropConfig
from segmentation_worker.domain.logins import detect_login_drops
from segmentation_worker.service_layer.recompute import next_daily_run

NAN = float("nan")


class TestChurnBands:
    def test_the_worse_of_the_model_and_the_rhythm_decides(self) -> None:
        bands, scores = churn_bands(
            p_alive=[0.9, 0.5, 0.2, 0.9, 0.9, NAN],
            recency_days=[10, 10, 10, 45, 95, 95],
            gap_days=[30, 30, 30, 30, 30, 30],
            typical_gap=60.0,
            config=ChurnConfig(),
        )
        assert bands.tolist() == [0, 1, 2, 1, 2, 2]
        assert scores[5] == pytest.approx(2.5)  # unknown probability sorts in the middle of its band
        assert scores[0] == pytest.approx(0.1)

    def test_one_time_buyers_are_judged_against_the_shops_typical_gap(self) -> None:
        gaps = usual_gap_days(
            first_purchase_days_ago=[100, 50, 20],
            last_purchase_days_ago=[10, 50, 20],
            purchase_days=[4, 1, 1],
        )
        assert gaps[0] == pytest.approx(30.0) and np.isnan(gaps[1])
        typical = typical_gap_days(gaps, default=90)
        assert typical == pytest.approx(30.0)
        bands, _ = churn_bands([NAN, NAN, NAN], [10, 50, 20], gaps, typical, ChurnConfig())
        assert bands.tolist() == [0, 1, 0]  # 50 days is 1.67 typical gaps: medium
        assert typical_gap_days([NAN], default=90) == 90

    @pytest.mark.parametrize(
        ("before", "after", "expected"),
        [
            (None, "low", False),
            (None, "medium", True),
            ("low", "high", True),
            ("high", "medium", False),
            ("medium", "medium", False),
        ],
    )
    def test_only_a_worse_band_is_news(self, before: str | None, after: str, expected: bool) -> None:
        assert worsened(before, after) is expected


class TestLoginDrops:
    def test_a_drop_below_half_the_baseline_rate_starts_an_episode(self) -> None:
        config = LoginDropConfig()  # 14 days against the 56 before, half the rate
        verdict = detect_login_drops(
            recent_logins=[0, 7, 6, 0, 0, 20],
            baseline_logins=[56, 56, 56, 3, 56, 56],
            in_drop=[False, False, False, False, True, True],
            config=config,
        )
        # 7 in 14 days is exactly half of 56 in 56: not below. 3 baseline logins: not judged.
        assert verdict.dropped.tolist() == [True, False, True, False, False, False]
        assert verdict.recovered.tolist() == [False, False, False, False, False, True]
        assert verdict.baseline_per_week[0] == pytest.approx(7.0)


class TestDailySchedule:
    def test_the_hour_is_local_to_the_shop(self) -> None:
        last = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)  # 03:00 on 2 March in Tokyo
        due = next_daily_run(last, hour=3, timezone="Asia/Tokyo", now=last)
        assert due == datetime(2026, 3, 2, 18, 0, tzinfo=UTC)

    def test_a_daylight_saving_change_keeps_the_local_hour(self) -> None:
        last = datetime(2026, 3, 7, 8, 0, tzinfo=UTC)  # 03:00 EST on 7 March in New York
        due = next_daily_run(last, hour=3, timezone="America/New_York", now=last)
        assert due == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT, an hour earlier in UTC

    def test_an_unknown_timezone_falls_back_to_utc(self) -> None:
        now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        assert next_daily_run(None, hour=3, timezone="Mars/Olympus", now=now) == datetime(
            2026, 3, 1, 3, 0, tzinfo=UTC
        )
