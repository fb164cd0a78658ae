"""The loyalty programme's rules (plain Python, no framework).

- **Earning.** A purchase earns `floor(amount / unit_amount) × points_per_unit` base points, which the
  customer's tier multiplies (rounded down). With the defaults, 4,800 JPY earns 48 points at bronze
  and 60 at silver (× 1.25).
- **Clawback.** A refund takes back the share of the order's points that matches the share of its
  amount refunded, rounded up, so a full refund takes back every point. The target depends only on
  the order's totals, so several partial refunds, in any order, end where one refund would.
- **Tiers.** The tier is the highest one whose `min_spend` the customer's net spend (purchases less
  their refunds) over the last `tier_window_days` reaches.
- **Lots and expiry.** Every earning is a lot that expires `points_expire_after_days` after the
  purchase. Debits (redemptions, clawbacks, expiry) take points from lots, so a lot never holds
  fewer than zero points and the balance (what the unexpired lots hold) never goes negative.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

ZERO = Decimal(0)
TIER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
MAX_TIERS = 10
MAX_MULTIPLIER = Decimal(10)
MAX_POINTS_PER_UNIT = 1_000_000
MAX_DAYS = 3650
MAX_AMOUNT = Decimal("1e14")


class RuleError(ValueError):
    """A programme setting that cannot work; `field` names it (e.g. `tiers.1.min_spend`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InsufficientPoints(Exception):
    def __init__(self, requested: int, available: int) -> None:
        super().__init__(f"{requested} points requested, {available} available")
        self.requested = requested
        self.available = available


@dataclass(frozen=True)
class Tier:
    name: str
    min_spend: Decimal
    multiplier: Decimal


@dataclass(frozen=True)
class LoyaltyRules:
    """A shop's programme. Tiers are listed from the lowest, which starts at a spend of 0."""

    points_per_unit: int
    unit_amount: Decimal
    points_expire_after_days: int
    tiers: tuple[Tier, ...]
    tier_window_days: int = 365

    def __post_init__(self) -> None:
        if not 0 <= self.points_per_unit <= MAX_POINTS_PER_UNIT:
            raise RuleError("points_per_unit", f"must be between 0 and {MAX_POINTS_PER_UNIT}")
        if not ZERO < self.unit_amount <= MAX_AMOUNT:
            raise RuleError("unit_amount", "must be greater than 0")
        if not 1 <= self.points_expire_after_days <= MAX_DAYS:
            raise RuleError("points_expire_after_days", f"must be between 1 and {MAX_DAYS} days")
        if not 1 <= self.tier_window_days <= MAX_DAYS:
            raise RuleError("tier_window_days", f"must be between 1 and {MAX_DAYS} days")
        _check_tiers(self.tiers)

    @property
    def base_tier(self) -> Tier:
        return self.tiers[0]

    def tier_named(self, name: str | None) -> Tier | None:
        return next((tier for tier in self.tiers if tier.name == name), None)

    def tier_for(self, spend: Decimal) -> Tier:
        """The highest tier whose threshold the spend reaches."""
        reached = self.tiers[0]
        for tier in self.tiers[1:]:
            if spend >= tier.min_spend:
                reached = tier
        return reached

    def next_tier(self, tier: Tier) -> Tier | None:
        """The tier just above `tier`, or None at the top."""
        return next((t for t in self.tiers if t.min_spend > tier.min_spend), None)

    def base_points(self, amount: Decimal) -> int:
        if amount <= ZERO:
            return 0
        units = (amount / self.unit_amount).to_integral_value(rounding=ROUND_FLOOR)
        return int(units) * self.points_per_unit

    def points_for(self, amount: Decimal, multiplier: Decimal) -> int:
        """Points a purchase of `amount` earns at a tier with this multiplier."""
        boosted = Decimal(self.base_points(amount)) * multiplier
        return int(boosted.to_integral_value(rounding=ROUND_FLOOR))

    def expires_at(self, earned_at: datetime) -> datetime:
        return earned_at + timedelta(days=self.points_expire_after_days)

    def window_start(self, now: datetime) -> datetime:
        """Purchases at or after this moment count towards the tier."""
        return now - timedelta(days=self.tier_window_days)


def _check_tiers(tiers: tuple[Tier, ...]) -> None:
    if not 1 <= len(tiers) <= MAX_TIERS:
        raise RuleError("tiers", f"give between 1 and {MAX_TIERS} tiers")
    names: set[str] = set()
    for index, tier in enumerate(tiers):
        if not re.match(TIER_NAME_PATTERN, tier.name):
            raise RuleError(f"tiers.{index}.name", "use 1-32 lower-case letters, digits, '_' or '-'")
        if tier.name in names:
            raise RuleError(f"tiers.{index}.name", f"tier {tier.name!r} is listed twice")
        names.add(tier.name)
        if not ZERO < tier.multiplier <= MAX_MULTIPLIER:
            raise RuleError(
                f"tiers.{index}.multiplier", f"must be greater than 0 and at most {MAX_MULTIPLIER}"
            )
        if index == 0 and tier.min_spend != ZERO:
            raise RuleError("tiers.0.min_spend", "the first tier starts at a spend of 0")
        if index > 0 and tier.min_spend <= tiers[index - 1].min_spend:
            raise RuleError(f"tiers.{index}.min_spend", "thresholds must increase from one tier to the next")
        if tier.min_spend > MAX_AMOUNT:
            raise RuleError(f"tiers.{index}.min_spend", "is too large")


DEFAULT_RULES = LoyaltyRules(
    points_per_unit=1,
    unit_amount=Decimal(100),
    points_expire_after_days=365,
    tier_window_days=365,
    tiers=(
        Tier("bronze", Decimal(0), Decimal("1.0")),
        Tier("silver", Decimal(50_000), Decimal("1.25")),
        Tier("gold", Decimal(150_000), Decimal("1.5")),
        Tier("platinum", Decimal(300_000), Decimal("2.0")),
    ),
)


def net_amount(amount: Decimal, refunded: Decimal) -> Decimal:
    """What the customer kept of an order; a refund never takes more than the order's amount."""
    return amount - min(refunded, amount)


def clawback_target(*, earned: int, amount: Decimal, refunded: Decimal) -> int:
    """How many of an order's earned points its refunds take back in total (rounded up)."""
    if earned <= 0 or amount <= ZERO or refunded <= ZERO:
        return 0
    share = min(refunded, amount) / amount
    return min(earned, int((earned * share).to_integral_value(rounding=ROUND_CEILING)))


# --- lots ---------------------------------------------------------------------------------------


@dataclass
class Lot:
    """The points one earning left, and when they expire."""

    lot_id: str
    expires_at: datetime
    remaining: int


def available(lots: Iterable[Lot], now: datetime) -> int:
    return sum(lot.remaining for lot in lots if lot.expires_at > now and lot.remaining > 0)


def allocate(
    lots: list[Lot], points: int, *, now: datetime, first: str | None = None
) -> list[tuple[Lot, int]]:
    """Take `points` from the unexpired lots: lot `first` if given, then the soonest to expire.

    Returns (lot, points taken) pairs and lowers each lot's `remaining`. Raises InsufficientPoints,
    changing nothing, when the lots hold fewer points than asked.
    """
    if points <= 0:
        return []
    usable = [lot for lot in lots if lot.expires_at > now and lot.remaining > 0]
    total = sum(lot.remaining for lot in usable)
    if total < points:
        raise InsufficientPoints(points, total)
    usable.sort(key=lambda lot: (lot.lot_id != first, lot.expires_at, lot.lot_id))
    taken: list[tuple[Lot, int]] = []
    left = points
    for lot in usable:
        if left == 0:
            break
        take = min(lot.remaining, left)
        lot.remaining -= take
        left -= take
        taken.append((lot, take))
    return taken


# --- settings documents -------------------------------------------------------------------------


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


def rules_to_document(rules: LoyaltyRules) -> dict[str, Any]:
    """The JSON form of the rules (decimals as strings, so nothing is lost to floats)."""
    return {
        "points_per_unit": rules.points_per_unit,
        "unit_amount": _decimal_text(rules.unit_amount),
        "points_expire_after_days": rules.points_expire_after_days,
        "tier_window_days": rules.tier_window_days,
        "tiers": [
            {
                "name": tier.name,
                "min_spend": _decimal_text(tier.min_spend),
                "multiplier": _decimal_text(tier.multiplier),
            }
            for tier in rules.tiers
        ],
    }


def _to_decimal(value: Any, field: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise RuleError(field, f"{value!r} is not a number") from exc
    if not number.is_finite():
        raise RuleError(field, "must be a finite number")
    return number


def rules_from_document(document: Mapping[str, Any]) -> LoyaltyRules:
    """Rules from their JSON form; RuleError names the first setting that does not work."""
    raw_tiers = document.get("tiers")
    if not isinstance(raw_tiers, list):
        raise RuleError("tiers", "must be a list")
    tiers = []
    for index, raw in enumerate(raw_tiers):
        if not isinstance(raw, Mapping):
            raise RuleError(f"tiers.{index}", "must be an object")
        tiers.append(
            Tier(
                name=str(raw.get("name", "")),
                min_spend=_to_decimal(raw.get("min_spend"), f"tiers.{index}.min_spend"),
                multiplier=_to_decimal(raw.get("multiplier"), f"tiers.{index}.multiplier"),
            )
        )
    return LoyaltyRules(
        points_per_unit=int(document.get("points_per_unit", DEFAULT_RULES.points_per_unit)),
        unit_amount=_to_decimal(document.get("unit_amount", DEFAULT_RULES.unit_amount), "unit_amount"),
        points_expire_after_days=int(
            document.get("points_expire_after_days", DEFAULT_RULES.points_expire_after_days)
        ),
        tier_window_days=int(document.get("tier_window_days", DEFAULT_RULES.tier_window_days)),
        tiers=tuple(tiers),
    )
