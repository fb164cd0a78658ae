from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from segmentation_worker.domain.rfm import (
    SEGMENT_RULES,
    Level,
    Rfm,
    Thresholds,
    frequency_level,
    monetary_level,
    recency_level,
    score,
    segment_of,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
H, M, L = Level.HIGH, Level.MID, Level.LOW
DEFAULTS = Thresholds()


class TestRecencyLevel:
    @pytest.mark.parametrize(
        ("age", "expected"),
        [
            (timedelta(0), H),
            (timedelta(days=30), H),
            (timedelta(days=30, hours=23), H),  # still 30 whole days
            (timedelta(days=31), M),
            (timedelta(days=179, hours=23), M),
            (timedelta(days=180), L),
            (timedelta(days=400), L),
        ],
    )
    def test_thirty_days_is_recent_and_one_hundred_eighty_is_lapsed(
        self, age: timedelta, expected: Level
    ) -> None:
        assert recency_level(NOW - age, NOW, DEFAULTS) is expected


class TestFrequencyLevel:
    @pytest.mark.parametrize(
        ("purchase_days", "expected"),
        [(0, L), (1, L), (2, L), (3, M), (11, M), (12, H), (40, H)],
    )
    def test_monthly_buyers_are_frequent_and_twice_a_year_is_rare(
        self, purchase_days: int, expected: Level
    ) -> None:
        assert frequency_level(purchase_days, DEFAULTS) is expected


class TestMonetaryLevel:
    @pytest.mark.parametrize(
        ("spend", "expected"),
        [
            ("150", H),  # exactly 1.5x the average
            ("149.99", M),
            ("100", M),
            ("50", M),  # exactly half
            ("49.99", L),
            ("0", L),
        ],
    )
    def test_spend_is_judged_against_the_shop_average(self, spend: str, expected: Level) -> None:
        assert monetary_level(Decimal(spend), Decimal("100"), DEFAULTS) is expected

    def test_a_shop_without_an_average_rates_everyone_mid(self) -> None:
        assert monetary_level(Decimal("500"), Decimal("0"), DEFAULTS) is M


class TestSegmentAssignment:
    @pytest.mark.parametrize(("r", "f", "m"), list(itertools.product((H, M, L), repeat=3)))
    def test_every_combination_matches_exactly_one_rule(self, r: Level, f: Level, m: Level) -> None:
        matching = [
            name
            for name, r_levels, f_levels, m_levels in SEGMENT_RULES
            if r in r_levels and f in f_levels and m in m_levels
        ]
        assert len(matching) == 1, f"{r.name}/{f.name}/{m.name} matches {matching}"
        assert segment_of(Rfm(r, f, m)) == matching[0]

    @pytest.mark.parametrize(
        ("rfm", "segment"),
        [
            (Rfm(H, H, H), "champions"),
            (Rfm(H, H, M), "loyal"),
            (Rfm(H, L, L), "new"),
            (Rfm(L, H, H), "dormant"),
            (Rfm(L, L, H), "at_risk"),
        ],
    )
    def test_the_seeds_five_segments(self, rfm: Rfm, segment: str) -> None:
        assert segment_of(rfm) == segment


class TestScore:
    def test_a_recent_frequent_big_spender_is_a_champion(self) -> None:
        rfm, segment = score(
            last_purchase_at=NOW - timedelta(days=3),
            purchase_days_last_year=15,
            net_spend=Decimal("3000"),
            shop_average=Decimal("1000"),
            now=NOW,
        )
        assert (rfm, segment) == (Rfm(H, H, H), "champions")

    def test_a_lapsed_rare_big_spender_is_at_risk(self) -> None:
        rfm, segment = score(
            last_purchase_at=NOW - timedelta(days=200),
            purchase_days_last_year=1,
            net_spend=Decimal("2000"),
            shop_average=Decimal("1000"),
            now=NOW,
        )
        assert (rfm, segment) == (Rfm(L, L, H), "at_risk")
