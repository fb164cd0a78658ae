"""RFM scores and segments, vectorised over a whole shop (numpy only, no framework).

Every score is an integer 1..5, whichever mode made it, so one set of segment rules serves both:

- **Quintile mode** ranks each customer against the shop. A customer's score on a measure is
  ``1 + floor(5 * worse / n)``, where ``worse`` counts the shop's customers with a strictly worse
  value (for recency a *longer* time since the last purchase is worse, so recent buyers score 5).
  Equal values therefore always share a score and the order of the rows never matters: the
  tie-break is by value alone, never by position or id. The four cut points the rule implies can
  be stored (``quintile_edges``) and applied to single customers between two recomputes
  (``score_by_edges``), giving the same score a full recompute would.
- **Absolute mode** compares each customer with fixed thresholds (the seeds' table by default)
  and gives levels high, mid and low as the scores 5, 3 and 1.

Levels H/M/L as used by the seeds' segment table map onto scores as H = 4-5, M = 3, L = 1-2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

IntArray = NDArray[np.int8]
SCORES = (1, 2, 3, 4, 5)
HIGH, MID, LOW = 5, 3, 1
LEVEL_SCORES: dict[str, frozenset[int]] = {
    "H": frozenset({4, 5}),
    "M": frozenset({3}),
    "L": frozenset({1, 2}),
}
SEGMENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class SegmentDefinitionError(ValueError):
    """A segment scheme that cannot be used; ``field`` names the offending part, e.g. ``rules[2].r``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- quintile mode ------------------------------------------------------------------------------


def quintile_edges(values: ArrayLike, *, higher_is_better: bool = True) -> NDArray[np.float64]:
    """The four cut points of the quintile rule: a value scores ``1 + (number of edges it exceeds)``.

    Edge ``s`` (for score ``s + 2``) is the largest value that still leaves fewer than
    ``ceil((s + 1) * n / 5)`` customers strictly worse. For recency (lower is better) the
    values are negated, so edges are stored in the "higher is better" orientation.
    """
    oriented = _oriented(values, higher_is_better)
    n = oriented.size
    if n == 0:
        return np.full(4, np.inf)
    # A value v beats edge e_s exactly when at least k_s customers are strictly below it, with
    # k_s = ceil(s * n / 5); that customer's k_s-th smallest value is the edge.
    ks = [-(-s * n // 5) for s in (1, 2, 3, 4)]
    partitioned = np.partition(oriented, [k - 1 for k in ks])
    return np.array([partitioned[k - 1] for k in ks], dtype=np.float64)


def score_by_edges(values: ArrayLike, edges: ArrayLike, *, higher_is_better: bool = True) -> IntArray:
    """Scores 1..5 from cut points made by ``quintile_edges``."""
    oriented = _oriented(values, higher_is_better)
    cut = np.asarray(edges, dtype=np.float64)
    # searchsorted(side="left") counts the edges strictly below each value.
    return (1 + np.searchsorted(cut, oriented, side="left")).astype(np.int8)


def score_quintiles(
    recency_days: ArrayLike, frequency: ArrayLike, monetary: ArrayLike, customer_ids: ArrayLike
) -> tuple[IntArray, IntArray, IntArray]:
    """Quintile scores (r, f, m) for a shop's customers; recency is reversed (more recent = 5).

    ``customer_ids`` only guards the input: a customer listed twice would weigh twice in the
    ranking, so duplicates are refused. Ties are broken by value (see the module docstring), so
    the result does not depend on the order of the rows.
    """
    recency, freq, money = (_finite(name, v) for name, v in _named(recency_days, frequency, monetary))
    ids = np.asarray(customer_ids)
    if not recency.size == freq.size == money.size == ids.size:
        raise ValueError("recency_days, frequency, monetary and customer_ids must have the same length")
    if ids.size and np.unique(ids).size != ids.size:
        raise ValueError("customer_ids must be unique")
    return (
        score_by_edges(recency, quintile_edges(recency, higher_is_better=False), higher_is_better=False),
        score_by_edges(freq, quintile_edges(freq)),
        score_by_edges(money, quintile_edges(money)),
    )


def _oriented(values: ArrayLike, higher_is_better: bool) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    return array if higher_is_better else -array


def _named(*arrays: ArrayLike) -> Iterable[tuple[str, ArrayLike]]:
    return zip(("recency_days", "frequency", "monetary"), arrays, strict=True)


def _finite(name: str, values: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds a missing or infinite value")
    return array


# --- absolute mode ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AbsoluteThresholds:
    """The seeds' table: recency within a month is high and six months or more low; frequency
    monthly or more (12 purchase days a year) is high and twice a year or less low; monetary is
    high from 1.5x the shop's average buyer and low under half of it."""

    recent_days: float = 30
    lapsed_days: float = 180
    frequent_per_year: float = 12
    rare_per_year: float = 2
    high_spend_ratio: float = 1.5
    low_spend_ratio: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.recent_days < self.lapsed_days:
            raise SegmentDefinitionError("recent_days", "must be at least 0 and below lapsed_days")
        if not 0 <= self.rare_per_year < self.frequent_per_year:
            raise SegmentDefinitionError("rare_per_year", "must be at least 0 and below frequent_per_year")
        if not 0 <= self.low_spend_ratio < self.high_spend_ratio:
            raise SegmentDefinitionError("low_spend_ratio", "must be at least 0 and below high_spend_ratio")


def score_absolute(
    recency_days: ArrayLike,
    frequency_per_year: ArrayLike,
    monetary: ArrayLike,
    thresholds: AbsoluteThresholds | None = None,
    *,
    shop_average: float | None = None,
) -> tuple[IntArray, IntArray, IntArray]:
    """Levels as scores (5 high, 3 mid, 1 low) against fixed thresholds.

    Recency counts whole days (30 days and 23 hours is still 30). Monetary is judged against
    ``shop_average``, by default the mean of ``monetary``; with no average (no spend at all)
    every customer is mid.
    """
    t = thresholds or AbsoluteThresholds()
    recency = np.floor(_finite("recency_days", recency_days))
    freq = _finite("frequency_per_year", frequency_per_year)
    money = _finite("monetary", monetary)
    if not recency.size == freq.size == money.size:
        raise ValueError("recency_days, frequency_per_year and monetary must have the same length")
    average = float(money.mean()) if shop_average is None and money.size else (shop_average or 0.0)
    r = np.where(recency <= t.recent_days, HIGH, np.where(recency >= t.lapsed_days, LOW, MID))
    f = np.where(freq >= t.frequent_per_year, HIGH, np.where(freq <= t.rare_per_year, LOW, MID))
    if average > 0:
        ratio = money / average
        m = np.where(ratio >= t.high_spend_ratio, HIGH, np.where(ratio < t.low_spend_ratio, LOW, MID))
    else:
        m = np.full(money.size, MID)
    return r.astype(np.int8), f.astype(np.int8), m.astype(np.int8)


# --- segments -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentRule:
    """A segment and the scores it takes; a dimension left empty matches every score."""

    name: str
    r: frozenset[int] = frozenset(SCORES)
    f: frozenset[int] = frozenset(SCORES)
    m: frozenset[int] = frozenset(SCORES)
    label: str | None = None


@dataclass(frozen=True)
class SegmentScheme:
    """Ordered rules, first match wins; a customer no rule matches lands in ``fallback``."""

    rules: tuple[SegmentRule, ...]
    fallback: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name("fallback", self.fallback)
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            _check_name(f"rules[{index}].name", rule.name)
            if rule.name in seen:
                raise SegmentDefinitionError(f"rules[{index}].name", f"{rule.name!r} is defined twice")
            seen.add(rule.name)
            for dimension in ("r", "f", "m"):
                allowed = getattr(rule, dimension)
                if not allowed or not allowed <= set(SCORES):
                    raise SegmentDefinitionError(
                        f"rules[{index}].{dimension}", "must list scores between 1 and 5"
                    )

    @property
    def segment_names(self) -> list[str]:
        """Every segment a customer can land in, rules first, the fallback last."""
        names = [rule.name for rule in self.rules]
        return names if self.fallback in names else [*names, self.fallback]

    def label_of(self, name: str) -> str:
        for rule in self.rules:
            if rule.name == name and rule.label:
                return rule.label
        return self.labels.get(name, name)


def assign_segments(r: ArrayLike, f: ArrayLike, m: ArrayLike, definitions: SegmentScheme) -> NDArray[np.str_]:
    """Each customer's segment name: every customer lands in exactly one segment."""
    rs, fs, ms = (np.asarray(a, dtype=np.int64) for a in (r, f, m))
    if not rs.size == fs.size == ms.size:
        raise ValueError("r, f and m must have the same length")
    for name, scores in (("r", rs), ("f", fs), ("m", ms)):
        if scores.size and (scores.min() < 1 or scores.max() > 5):
            raise ValueError(f"{name} scores must lie between 1 and 5")
    names = definitions.segment_names
    # All 125 score combinations are resolved once; each customer is then a table lookup.
    table = np.array([names.index(_first_match(definitions, *combo)) for combo in _combinations()])
    codes = (rs - 1) * 25 + (fs - 1) * 5 + (ms - 1)
    return np.asarray(names)[table[codes]]


def segment_of(r: int, f: int, m: int, definitions: SegmentScheme) -> str:
    """One customer's segment (the scalar form of ``assign_segments``)."""
    return _first_match(definitions, r, f, m)


def _combinations() -> Iterable[tuple[int, int, int]]:
    for r in SCORES:
        for f in SCORES:
            for m in SCORES:
                yield r, f, m


def _first_match(scheme: SegmentScheme, r: int, f: int, m: int) -> str:
    for rule in scheme.rules:
        if r in rule.r and f in rule.f and m in rule.m:
            return rule.name
    return scheme.fallback


def _check_name(where: str, name: str) -> None:
    if not SEGMENT_NAME.match(name):
        raise SegmentDefinitionError(
            where, "must be 1-64 lower-case letters, digits or underscores, starting with a letter"
        )


def parse_scores(spec: Any, where: str) -> frozenset[int]:
    """A dimension written as levels ("H", "HM", ["H", "M"]), scores ([4, 5]) or a range ("2-4")."""
    if spec is None or spec == "*":
        return frozenset(SCORES)
    items: Sequence[Any] = list(spec) if isinstance(spec, str) and "-" not in spec else [spec]
    if not isinstance(spec, str):
        items = list(spec) if isinstance(spec, Sequence | set | frozenset) else [spec]
    allowed: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise SegmentDefinitionError(where, f"{item!r} is neither a score 1-5 nor a level H/M/L")
        if isinstance(item, int) and item in SCORES:
            allowed.add(item)
        elif isinstance(item, str) and item.upper() in LEVEL_SCORES:
            allowed |= LEVEL_SCORES[item.upper()]
        elif isinstance(item, str) and re.fullmatch(r"[1-5]-[1-5]", item):
            low, high = int(item[0]), int(item[2])
            if low > high:
                raise SegmentDefinitionError(where, f"range {item!r} runs backwards")
            allowed |= set(range(low, high + 1))
        else:
            raise SegmentDefinitionError(where, f"{item!r} is neither a score 1-5 nor a level H/M/L")
    if not allowed:
        raise SegmentDefinitionError(where, "must allow at least one score")
    return frozenset(allowed)


def scheme_from_rules(rules: Sequence[Mapping[str, Any]], fallback: str) -> SegmentScheme:
    """A shop's own scheme from plain data: ``[{"name": ..., "label": ..., "r": "H", "f": [4, 5]}]``.

    Raises ``SegmentDefinitionError`` naming the field at fault.
    """
    if not rules:
        raise SegmentDefinitionError("rules", "must hold at least one rule")
    built = []
    for index, rule in enumerate(rules):
        name = rule.get("name")
        if not isinstance(name, str):
            raise SegmentDefinitionError(f"rules[{index}].name", "is required")
        label = rule.get("label")
        if label is not None and (not isinstance(label, str) or not 0 < len(label) <= 64):
            raise SegmentDefinitionError(f"rules[{index}].label", "must be 1-64 characters")
        built.append(
            SegmentRule(
                name=name,
                r=parse_scores(rule.get("r"), f"rules[{index}].r"),
                f=parse_scores(rule.get("f"), f"rules[{index}].f"),
                m=parse_scores(rule.get("m"), f"rules[{index}].m"),
                label=label,
            )
        )
    return SegmentScheme(rules=tuple(built), fallback=fallback)


def _grid(name: str, r: Iterable[int], f: Iterable[int], label: str) -> SegmentRule:
    return SegmentRule(name=name, r=frozenset(r), f=frozenset(f), label=label)


def _levels(name: str, r: str, f: str, m: str, label: str) -> SegmentRule:
    return SegmentRule(
        name=name, r=parse_scores(r, name), f=parse_scores(f, name), m=parse_scores(m, name), label=label
    )


# The common recency x frequency grid: all 25 cells are covered, "lost" takes the very bottom
# corner before "hibernating" takes the rest of the low-low square.
STANDARD_GRID = SegmentScheme(
    rules=(
        _grid("champions", [5], [4, 5], "Champions"),
        _grid("loyal", [3, 4], [4, 5], "Loyal"),
        _grid("potential_loyalists", [4, 5], [2, 3], "Potential loyalists"),
        _grid("new", [5], [1], "New"),
        _grid("promising", [4], [1], "Promising"),
        _grid("need_attention", [3], [3], "Need attention"),
        _grid("about_to_sleep", [3], [1, 2], "About to sleep"),
        _grid("cant_lose", [1, 2], [5], "Can't lose"),
        _grid("at_risk", [1, 2], [3, 4], "At risk"),
        _grid("lost", [1], [1], "Lost"),
        _grid("hibernating", [1, 2], [1, 2], "Hibernating"),
    ),
    fallback="hibernating",
)

# The seeds' five (R/F/M levels) come first and keep their table's combinations; each is widened
# to its neighbours the table leaves out (a regular with low spend is still a regular), and three
# more segments give the remaining combinations a home, so every customer lands somewhere.
SEEDS_FIVE = SegmentScheme(
    rules=(
        _levels("champions", "H", "H", "H", "優良顧客 champions"),
        _levels("loyal", "H", "H", "ML", "常連顧客 regulars"),
        _levels("new", "H", "L", "*", "新規顧客 new"),
        _levels("dormant", "L", "HM", "*", "休眠顧客 dormant"),
        _levels("at_risk", "L", "L", "HM", "離反リスク顧客 at risk"),
        _levels("potential_loyalists", "H", "M", "*", "Potential loyalists"),
        _levels("need_attention", "M", "*", "*", "Need attention"),
        _levels("hibernating", "L", "L", "L", "Hibernating"),
    ),
    fallback="hibernating",
)

SCHEMES: dict[str, SegmentScheme] = {"standard": STANDARD_GRID, "seeds": SEEDS_FIVE}
