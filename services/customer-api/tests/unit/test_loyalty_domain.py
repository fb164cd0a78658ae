from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from customer_api.domain.loyalty import (
    DEFAULT_RULES,
    InsufficientPoints,
    Lot,
    RuleError,
    allocate,
    available,
    clawback_target,
    net_amount,
    rules_from_document,
    rules_to_document,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
D = Decimal


class TestEarning:
    @pytest.mark.parametrize(
        ("amount", "multiplier", "points"),
        [
            ("4800", "1.0", 48),
            ("4800", "1.25", 60),
            ("4850", "1.25", 60),  # base points first (48), then the tier bonus, rounded down
            ("99", "2.0", 0),
            ("100", "1.5", 1),
            ("300000", "2.0", 6000),
            ("0", "1.0", 0),
        ],
    )
    def test_one_point_per_hundred_times_the_tier_multiplier(
        self, amount: str, multiplier: str, points: int
    ) -> None:
        assert DEFAULT_RULES.points_for(D(amount), D(multiplier)) == points

    def test_a_shop_can_earn_per_unit_of_a_currency_with_cents(self) -> None:
        rules = replace(DEFAULT_RULES, points_per_unit=10, unit_amount=D("1"))

        assert rules.points_for(D("12.99"), D("1.0")) == 120

    def test_earned_points_expire_after_the_shops_period(self) -> None:
        assert DEFAULT_RULES.expires_at(NOW) == NOW + timedelta(days=365)


class TestTiers:
    @pytest.mark.parametrize(
        ("spend", "tier"),
        [
            ("0", "bronze"),
            ("49999.99", "bronze"),
            ("50000", "silver"),
            ("149999", "silver"),
            ("150000", "gold"),
            ("300000", "platinum"),
            ("9000000", "platinum"),
        ],
    )
    def test_the_default_thresholds(self, spend: str, tier: str) -> None:
        assert DEFAULT_RULES.tier_for(D(spend)).name == tier

    def test_the_defaults_are_the_documented_ones(self) -> None:
        assert [(t.name, t.min_spend, t.multiplier) for t in DEFAULT_RULES.tiers] == [
            ("bronze", D(0), D("1.0")),
            ("silver", D(50_000), D("1.25")),
            ("gold", D(150_000), D("1.5")),
            ("platinum", D(300_000), D("2.0")),
        ]
        assert (DEFAULT_RULES.points_per_unit, DEFAULT_RULES.unit_amount) == (1, D(100))
        assert DEFAULT_RULES.points_expire_after_days == 365
        assert DEFAULT_RULES.tier_window_days == 365

    def test_next_tier_is_the_one_above_and_none_at_the_top(self) -> None:
        silver = DEFAULT_RULES.tier_named("silver")
        platinum = DEFAULT_RULES.tier_named("platinum")
        assert silver is not None and platinum is not None

        upcoming = DEFAULT_RULES.next_tier(silver)
        assert upcoming is not None and upcoming.name == "gold"
        assert DEFAULT_RULES.next_tier(platinum) is None

    def test_the_window_is_rolling(self) -> None:
        assert DEFAULT_RULES.window_start(NOW) == NOW - timedelta(days=365)


class TestClawback:
    def test_a_full_refund_takes_back_every_point(self) -> None:
        assert clawback_target(earned=60, amount=D(4800), refunded=D(4800)) == 60

    def test_a_refund_above_the_amount_takes_back_no_more(self) -> None:
        assert clawback_target(earned=60, amount=D(4800), refunded=D(9999)) == 60

    def test_a_partial_refund_takes_back_its_share_rounded_up(self) -> None:
        assert clawback_target(earned=48, amount=D(4800), refunded=D(2400)) == 24
        assert clawback_target(earned=48, amount=D(4800), refunded=D(4750)) == 48  # 47.5 rounds up
        assert clawback_target(earned=48, amount=D(4800), refunded=D(100)) == 1

    def test_the_target_grows_with_the_refunded_total_up_to_every_point(self) -> None:
        # The service claws back target(total refunded) less what earlier refunds took, so
        # several partial refunds end exactly where one refund of their total would.
        totals = [D(r) for r in range(0, 7777, 250)] + [D(7777)]
        targets = [clawback_target(earned=77, amount=D(7777), refunded=total) for total in totals]

        assert targets == sorted(targets)
        assert targets[0] == 0 and targets[-1] == 77

    @pytest.mark.parametrize(
        ("earned", "amount", "refunded"), [(0, "100", "100"), (10, "0", "5"), (10, "100", "0")]
    )
    def test_nothing_to_take_back(self, earned: int, amount: str, refunded: str) -> None:
        assert clawback_target(earned=earned, amount=D(amount), refunded=D(refunded)) == 0

    def test_net_amount_never_goes_below_zero(self) -> None:
        assert net_amount(D(100), D(30)) == D(70)
        assert net_amount(D(100), D(300)) == D(0)


def lots() -> list[Lot]:
    return [
        Lot("late", NOW + timedelta(days=300), 50),
        Lot("soon", NOW + timedelta(days=10), 30),
        Lot("gone", NOW - timedelta(days=1), 100),
        Lot("empty", NOW + timedelta(days=5), 0),
    ]


class TestLots:
    def test_expired_lots_do_not_count(self) -> None:
        assert available(lots(), NOW) == 80

    def test_allocation_takes_the_soonest_to_expire_first(self) -> None:
        wallet = lots()

        taken = allocate(wallet, 40, now=NOW)

        assert [(lot.lot_id, points) for lot, points in taken] == [("soon", 30), ("late", 10)]
        assert available(wallet, NOW) == 40

    def test_a_preferred_lot_goes_first(self) -> None:
        taken = allocate(lots(), 40, now=NOW, first="late")

        assert [(lot.lot_id, points) for lot, points in taken] == [("late", 40)]

    def test_too_few_points_changes_nothing(self) -> None:
        wallet = lots()

        with pytest.raises(InsufficientPoints) as raised:
            allocate(wallet, 81, now=NOW)

        assert (raised.value.requested, raised.value.available) == (81, 80)
        assert available(wallet, NOW) == 80

    def test_a_lot_expiring_exactly_now_is_expired(self) -> None:
        assert available([Lot("edge", NOW, 10)], NOW) == 0


class TestSettingsDocuments:
    def test_round_trip(self) -> None:
        assert rules_from_document(rules_to_document(DEFAULT_RULES)) == DEFAULT_RULES

    def test_decimals_travel_as_strings(self) -> None:
        document = rules_to_document(DEFAULT_RULES)

        assert document["unit_amount"] == "100"
        assert document["tiers"][1] == {"name": "silver", "min_spend": "50000", "multiplier": "1.25"}

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"tiers": []}, "tiers"),
            ({"unit_amount": "0"}, "unit_amount"),
            ({"points_per_unit": -1}, "points_per_unit"),
            ({"points_expire_after_days": 0}, "points_expire_after_days"),
            ({"tier_window_days": 99999}, "tier_window_days"),
            ({"tiers": [{"name": "base", "min_spend": "10", "multiplier": "1"}]}, "tiers.0.min_spend"),
            (
                {
                    "tiers": [
                        {"name": "a", "min_spend": "0", "multiplier": "1"},
                        {"name": "b", "min_spend": "0", "multiplier": "1"},
                    ]
                },
                "tiers.1.min_spend",
            ),
            (
                {
                    "tiers": [
                        {"name": "a", "min_spend": "0", "multiplier": "1"},
                        {"name": "a", "min_spend": "5", "multiplier": "1"},
                    ]
                },
                "tiers.1.name",
            ),
            ({"tiers": [{"name": "Gold!", "min_spend": "0", "multiplier": "1"}]}, "tiers.0.name"),
            ({"tiers": [{"name": "a", "min_spend": "0", "multiplier": "0"}]}, "tiers.0.multiplier"),
            ({"tiers": [{"name": "a", "min_spend": "x", "multiplier": "1"}]}, "tiers.0.min_spend"),
        ],
    )
    def test_settings_that_cannot_work_name_their_field(self, change: dict[str, object], field: str) -> None:
        document = {**rules_to_document(DEFAULT_RULES), **change}

        with pytest.raises(RuleError) as raised:
            rules_from_document(document)

        assert raised.value.field == field
