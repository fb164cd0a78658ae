"""A shop's segmentation settings: one validated document, with defaults from the seeds.

Every check sits on the field it is about, so a validation error's location names that field
(``rules.2.r``, ``thresholds.lapsed_days``) and the API's problem+json can point at it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from segmentation_worker.domain.segments import (
    SCHEMES,
    AbsoluteThresholds,
    SegmentDefinitionError,
    SegmentScheme,
    parse_scores,
    scheme_from_rules,
)

ScoreSpec = int | str | list[int | str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThresholdsConfig(_Strict):
    """Absolute mode's thresholds (the seeds' table by default)."""

    recent_days: float = Field(30, ge=0, description="Last purchase within this many days: recency high")
    lapsed_days: float = Field(
        validate_default=True,
        default=180,
        gt=0,
        description="Last purchase this many days ago or more: recency low",
    )
    frequent_per_year: float = Field(
        12, gt=0, description="Purchase days a year from which frequency is high"
    )
    rare_per_year: float = Field(
        validate_default=True,
        default=2,
        ge=0,
        description="Purchase days a year up to which frequency is low",
    )
    high_spend_ratio: float = Field(1.5, gt=0, description="Net spend vs the shop's average: high from here")
    low_spend_ratio: float = Field(
        validate_default=True,
        default=0.5,
        ge=0,
        description="Net spend vs the shop's average: low below here",
    )

    @field_validator("lapsed_days")
    @classmethod
    def _after_recent(cls, value: float, info: ValidationInfo) -> float:
        return _above(value, info, "recent_days")

    @field_validator("rare_per_year")
    @classmethod
    def _below_frequent(cls, value: float, info: ValidationInfo) -> float:
        return _below(value, info, "frequent_per_year")

    @field_validator("low_spend_ratio")
    @classmethod
    def _below_high_spend(cls, value: float, info: ValidationInfo) -> float:
        return _below(value, info, "high_spend_ratio")

    def domain(self) -> AbsoluteThresholds:
        return AbsoluteThresholds(**self.model_dump())


class SegmentRuleConfig(_Strict):
    """One rule; each of r, f, m is a score 1-5, a range "2-4", levels "H"/"M"/"L" (H = 4-5,
    M = 3, L = 1-2), a list of those, or "*" (omitted: any score)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    label: str | None = Field(None, min_length=1, max_length=64)
    r: ScoreSpec = "*"
    f: ScoreSpec = "*"
    m: ScoreSpec = "*"

    @field_validator("r", "f", "m")
    @classmethod
    def _scores(cls, value: ScoreSpec, info: ValidationInfo) -> ScoreSpec:
        try:
            parse_scores(value, str(info.field_name))
        except SegmentDefinitionError as error:
            raise ValueError(error.message) from None
        return value


class ChurnConfig(_Strict):
    """Churn bands: the worse of the band from the probability alive and the one from recency
    against the customer's own purchase rhythm."""

    p_alive_high_below: float = Field(0.3, gt=0, lt=1, description="Probability alive below this: high risk")
    p_alive_medium_below: float = Field(
        validate_default=True, default=0.6, gt=0, lt=1, description="Below this: at least medium risk"
    )
    overdue_high: float = Field(
        3.0, gt=0, description="Days since the last purchase over the usual gap: high"
    )
    overdue_medium: float = Field(
        validate_default=True, default=1.5, gt=0, description="... at or above this ratio: at least medium"
    )
    default_interval_days: float = Field(
        90, gt=0, description="The usual gap for one-time buyers while the shop has no repeat buyers"
    )

    @field_validator("p_alive_medium_below")
    @classmethod
    def _above_high(cls, value: float, info: ValidationInfo) -> float:
        return _above(value, info, "p_alive_high_below")

    @field_validator("overdue_medium")
    @classmethod
    def _below_high(cls, value: float, info: ValidationInfo) -> float:
        return _below(value, info, "overdue_high")


class LoginDropConfig(_Strict):
    """A drop: the recent login rate falls below ``ratio`` times the rate of the baseline window
    just before it. A customer with fewer than ``min_baseline_logins`` in the baseline is not judged."""

    recent_days: int = Field(14, ge=1, le=90)
    baseline_days: int = Field(56, ge=7, le=365)
    ratio: float = Field(0.5, gt=0, lt=1)
    min_baseline_logins: int = Field(4, ge=1)


class ClvConfig(_Strict):
    horizon_months: int = Field(12, ge=1, le=120)
    annual_discount_rate: float = Field(0.10, ge=0, le=1)


class RecomputeConfig(_Strict):
    hour: int = Field(
        3, ge=0, le=23, description="Local hour (in the shop's timezone) of the daily recompute"
    )


class SegmentationConfig(_Strict):
    mode: Literal["quintile", "absolute"] = "absolute"
    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)
    scheme: Literal["standard", "seeds", "custom"] = "standard"
    rules: list[SegmentRuleConfig] | None = Field(
        None, max_length=50, validate_default=True, description="Ordered rules of a custom scheme"
    )
    fallback: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        validate_default=True,
        description="A custom scheme's segment for customers no rule matches",
    )
    churn: ChurnConfig = Field(default_factory=ChurnConfig)
    login_drop: LoginDropConfig = Field(default_factory=LoginDropConfig)
    clv: ClvConfig = Field(default_factory=ClvConfig)
    recompute: RecomputeConfig = Field(default_factory=RecomputeConfig)

    @field_validator("rules")
    @classmethod
    def _rules_for_custom(
        cls, value: list[SegmentRuleConfig] | None, info: ValidationInfo
    ) -> list[SegmentRuleConfig] | None:
        custom = info.data.get("scheme") == "custom"
        if custom and not value:
            raise ValueError("a custom scheme needs its rules")
        if not custom and value is not None:
            raise ValueError("only a custom scheme takes rules")
        names = [rule.name for rule in value or []]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"segment names must be unique: {', '.join(duplicates)} defined twice")
        return value

    @field_validator("fallback")
    @classmethod
    def _fallback_for_custom(cls, value: str | None, info: ValidationInfo) -> str | None:
        custom = info.data.get("scheme") == "custom"
        if custom and not value:
            raise ValueError("a custom scheme needs a fallback segment")
        if not custom and value is not None:
            raise ValueError("only a custom scheme takes a fallback")
        return value

    def segment_scheme(self) -> SegmentScheme:
        if self.scheme != "custom":
            return SCHEMES[self.scheme]
        assert self.rules is not None and self.fallback is not None
        return scheme_from_rules([rule.model_dump() for rule in self.rules], self.fallback)


def _above(value: float, info: ValidationInfo, other: str) -> float:
    if other in info.data and value <= info.data[other]:
        raise ValueError(f"must be above {other} ({info.data[other]})")
    return value


def _below(value: float, info: ValidationInfo, other: str) -> float:
    if other in info.data and value >= info.data[other]:
        raise ValueError(f"must be below {other} ({info.data[other]})")
    return value


DEFAULT_CONFIG = SegmentationConfig()


def config_from_document(document: dict[str, Any] | None) -> SegmentationConfig:
    """A stored document (or none: the defaults)."""
    return SegmentationConfig.model_validate(document) if document else DEFAULT_CONFIG
