"""RFM levels and segments with the seeds' absolute thresholds (plain Python).

Recency: last purchase within 30 days is high, 180 days or more is low.
Frequency: purchase days in the last 12 months; monthly (12+) is high, twice a year or less is low.
Monetary: net spend against the shop's average buyer; 1.5x or more is high, under half is low.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import IntEnum


class Level(IntEnum):
    LOW = 1
    MID = 3
    HIGH = 5


@dataclass(frozen=True)
class Thresholds:
    recent_days: int = 30
    lapsed_days: int = 180
    frequent_per_year: int = 12
    rare_per_year: int = 2
    high_spend_ratio: Decimal = Decimal("1.5")
    low_spend_ratio: Decimal = Decimal("0.5")


@dataclass(frozen=True)
class Rfm:
    r: Level
    f: Level
    m: Level


def recency_level(last_purchase_at: datetime, now: datetime, t: Thresholds) -> Level:
    days = (now - last_purchase_at).days
    if days <= t.recent_days:
        return Level.HIGH
    if days >= t.lapsed_days:
        return Level.LOW
    return Level.MID


def frequency_level(purchase_days_last_year: int, t: Thresholds) -> Level:
    if purchase_days_last_year >= t.frequent_per_year:
        return Level.HIGH
    if purchase_days_last_year <= t.rare_per_year:
        return Level.LOW
    return Level.MID


def monetary_level(net_spend: Decimal, shop_average: Decimal, t: Thresholds) -> Level:
    if shop_average <= 0:
        return Level.MID
    ratio = net_spend / shop_average
    if ratio >= t.high_spend_ratio:
        return Level.HIGH
    if ratio < t.low_spend_ratio:
        return Level.LOW
    return Level.MID


H, M, L = Level.HIGH, Level.MID, Level.LOW

# First match wins, so every customer lands in exactly one segment. The first five are the
# seeds' table; the rest give the combinations the seeds leave out a home.
SEGMENT_RULES: tuple[tuple[str, set[Level], set[Level], set[Level]], ...] = (
    ("champions", {H}, {H}, {H}),
    ("loyal", {H}, {H}, {M, L}),
    ("new", {H}, {L}, {H, M, L}),
    ("dormant", {L}, {H, M}, {H, M, L}),
    ("at_risk", {L}, {L}, {H, M}),
    ("potential_loyalists", {H}, {M}, {H, M, L}),
    ("need_attention", {M}, {H, M, L}, {H, M, L}),
    ("hibernating", {L}, {L}, {L}),
)


def segment_of(rfm: Rfm) -> str:
    for name, r_levels, f_levels, m_levels in SEGMENT_RULES:
        if rfm.r in r_levels and rfm.f in f_levels and rfm.m in m_levels:
            return name
    raise AssertionError(f"no segment rule matches {rfm}")  # the rules cover all 27 combinations


def score(
    *,
    last_purchase_at: datetime,
    purchase_days_last_year: int,
    net_spend: Decimal,
    shop_average: Decimal,
    now: datetime,
    thresholds: Thresholds = Thresholds(),
) -> tuple[Rfm, str]:
    rfm = Rfm(
        r=recency_level(last_purchase_at, now, thresholds),
        f=frequency_level(purchase_days_last_year, thresholds),
        m=monetary_level(net_spend, shop_average, thresholds),
    )
    return rfm, segment_of(rfm)
