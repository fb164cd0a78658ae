from __future__ import annotations

import itertools

import numpy as np
import pytest

from segmentation_worker.domain.segments import (
    SCHEMES,
    SEEDS_FIVE,
    STANDARD_GRID,
    AbsoluteThresholds,
    SegmentDefinitionError,
    assign_segments,
    quintile_edges,
    scheme_from_rules,
    score_absolute,
    score_by_edges,
    score_quintiles,
    segment_of,
)

ALL_COMBINATIONS = np.array(list(itertools.product(range(1, 6), repeat=3)))


class TestQuintileScores:
    def test_distinct_values_fill_five_equal_bands_with_recency_reversed(self) -> None:
        values = np.arange(10, dtype=float)
        r, f, m = score_quintiles(values, values, values, [f"c{i}" for i in range(10)])
        assert f.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
        assert m.tolist() == f.tolist()
        assert r.tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]  # fewer days since the last purchase is better

    def test_equal_values_share_a_score_and_row_order_never_matters(self) -> None:
        rng = np.random.default_rng(7)
        frequency = rng.integers(1, 4, size=1000).astype(float)  # heavy ties, as in real shops
        recency = rng.integers(0, 30, size=1000).astype(float)
        monetary = rng.choice([500.0, 1000.0, 2500.0], size=1000)
        ids = np.array([f"c{i}" for i in range(1000)])
        scores = np.column_stack(score_quintiles(recency, frequency, monetary, ids))
        for value in np.unique(frequency):
            assert np.unique(scores[frequency == value, 1]).size == 1
        order = rng.permutation(1000)
        shuffled = np.column_stack(
            score_quintiles(recency[order], frequency[order], monetary[order], ids[order])
        )
        assert (shuffled == scores[order]).all()

    def test_a_single_best_customer_gets_five_and_the_worst_gets_one(self) -> None:
        frequency = np.array([1.0] * 9 + [20.0])
        _, f, _ = score_quintiles(np.zeros(10), frequency, np.ones(10), np.arange(10))
        assert f.tolist() == [1] * 9 + [5]

    def test_stored_edges_score_a_newcomer_as_a_full_recompute_would(self) -> None:
        rng = np.random.default_rng(3)
        spend = rng.gamma(2.0, 1000.0, size=500).round()
        edges = quintile_edges(spend)
        _, _, m = score_quintiles(np.zeros(500), np.zeros(500), spend, np.arange(500))
        assert (score_by_edges(spend, edges) == m).all()

    def test_duplicate_customers_and_missing_values_are_refused(self) -> None:
        with pytest.raises(ValueError, match="unique"):
            score_quintiles([1, 2], [1, 2], [1, 2], ["a", "a"])
        with pytest.raises(ValueError, match="monetary"):
            score_quintiles([1, 2], [1, 2], [1, np.nan], ["a", "b"])

    def test_an_empty_shop_scores_nobody(self) -> None:
        r, f, m = score_quintiles([], [], [], [])
        assert r.size == f.size == m.size == 0


class TestAbsoluteScores:
    @pytest.mark.parametrize(
        ("days", "expected"), [(0, 5), (30, 5), (30.9, 5), (31, 3), (179.9, 3), (180, 1), (400, 1)]
    )
    def test_a_month_is_recent_and_six_months_lapsed(self, days: float, expected: int) -> None:
        r, _, _ = score_absolute([days], [1], [1])
        assert r.tolist() == [expected]

    @pytest.mark.parametrize(("per_year", "expected"), [(0, 1), (2, 1), (3, 3), (11, 3), (12, 5), (40, 5)])
    def test_monthly_is_frequent_and_twice_a_year_rare(self, per_year: int, expected: int) -> None:
        _, f, _ = score_absolute([1], [per_year], [1])
        assert f.tolist() == [expected]

    def test_spend_is_judged_against_the_shop_average(self) -> None:
        _, _, m = score_absolute([1, 1, 1, 1], [1, 1, 1, 1], [150, 100, 50, 49.99], shop_average=100)
        assert m.tolist() == [5, 3, 3, 1]
        _, _, default_average = score_absolute([1, 1], [1, 1], [300, 90])  # mean 195
        assert default_average.tolist() == [5, 1]

    def test_a_shop_without_spend_is_mid_for_everyone(self) -> None:
        _, _, m = score_absolute([1, 1], [1, 1], [0, 0])
        assert m.tolist() == [3, 3]

    def test_thresholds_that_contradict_each_other_are_refused(self) -> None:
        with pytest.raises(SegmentDefinitionError) as error:
            AbsoluteThresholds(recent_days=200, lapsed_days=180)
        assert error.value.field == "recent_days"


class TestDefaultSchemes:
    @pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
    def test_every_score_combination_lands_in_exactly_one_known_segment(self, scheme: object) -> None:
        assert isinstance(scheme, type(STANDARD_GRID))
        segments = assign_segments(*ALL_COMBINATIONS.T, scheme)
        assert len(segments) == 125
        assert set(segments) <= set(scheme.segment_names)

    def test_the_standard_grid_uses_all_eleven_segments(self) -> None:
        segments = set(assign_segments(*ALL_COMBINATIONS.T, STANDARD_GRID))
        assert segments == {
            "champions", "loyal", "potential_loyalists", "new", "promising", "need_attention",
            "about_to_sleep", "at_risk", "cant_lose", "hibernating", "lost",
        }  # fmt: skip

    @pytest.mark.parametrize(
        ("r", "f", "expected"),
        [(5, 5, "champions"), (5, 1, "new"), (4, 1, "promising"), (3, 3, "need_attention"),
         (1, 5, "cant_lose"), (2, 3, "at_risk"), (1, 1, "lost"), (2, 2, "hibernating"), (4, 4, "loyal")],
    )  # fmt: skip
    def test_grid_cells(self, r: int, f: int, expected: str) -> None:
        assert segment_of(r, f, 3, STANDARD_GRID) == expected

    @pytest.mark.parametrize(
        ("rfm", "expected"),
        [((5, 5, 5), "champions"), ((5, 5, 3), "loyal"), ((5, 1, 1), "new"), ((1, 5, 5), "dormant"),
         ((1, 1, 5), "at_risk"), ((4, 4, 4), "champions"), ((2, 2, 2), "hibernating")],
    )  # fmt: skip
    def test_the_seeds_five_take_their_table_combinations(
        self, rfm: tuple[int, int, int], expected: str
    ) -> None:
        assert segment_of(*rfm, SEEDS_FIVE) == expected


class TestCustomSchemes:
    def test_first_matching_rule_wins_and_the_fallback_takes_the_rest(self) -> None:
        scheme = scheme_from_rules(
            [
                {"name": "vip", "label": "VIP", "m": [5]},
                {"name": "recent", "r": "H"},
                {"name": "middle", "r": "2-3", "f": ["M", "H"]},
            ],
            fallback="others",
        )
        segments = assign_segments([5, 5, 3, 1, 3], [1, 1, 4, 1, 1], [5, 1, 1, 1, 1], scheme)
        assert segments.tolist() == ["vip", "recent", "middle", "others", "others"]
        assert scheme.label_of("vip") == "VIP"
        assert scheme.segment_names == ["vip", "recent", "middle", "others"]

    @pytest.mark.parametrize(
        ("rules", "fallback", "field"),
        [
            ([], "rest", "rules"),
            ([{"name": "A b"}], "rest", "rules[0].name"),
            ([{"name": "a"}, {"name": "a"}], "rest", "rules[1].name"),
            ([{"name": "a", "r": [6]}], "rest", "rules[0].r"),
            ([{"name": "a", "f": "X"}], "rest", "rules[0].f"),
            ([{"name": "a", "m": "4-2"}], "rest", "rules[0].m"),
            ([{"name": "a", "m": []}], "rest", "rules[0].m"),
            ([{"name": "a"}], "", "fallback"),
            ([{"name": "a", "label": ""}], "rest", "rules[0].label"),
        ],
    )
    def test_invalid_rules_name_the_field_at_fault(
        self, rules: list[dict[str, object]], fallback: str, field: str
    ) -> None:
        with pytest.raises(SegmentDefinitionError) as error:
            scheme_from_rules(rules, fallback)
        assert error.value.field == field

    def test_out_of_range_scores_are_refused(self) -> None:
        with pytest.raises(ValueError, match="between 1 and 5"):
            assign_segments([0], [1], [1], STANDARD_GRID)
