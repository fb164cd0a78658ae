"""Response shapes of the segmentation-worker's API (the console draws its dashboards from them)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

ChurnBand = Literal["low", "medium", "high"]


class RfmRead(BaseModel):
    r: int = Field(ge=1, le=5)
    f: int = Field(ge=1, le=5)
    m: int = Field(ge=1, le=5)


class SegmentRead(BaseModel):
    name: str
    label: str = Field(description="Display name from the shop's scheme")
    customers: int
    revenue: Decimal = Field(
        description="Net spend (purchases less refunds) of the segment's customers, lifetime"
    )
    revenue_share: float = Field(
        ge=0, le=1, description="The segment's share of all segmented customers' revenue"
    )
    average_clv: float | None = Field(description="Mean CLV over the horizon; null until a model fit exists")


class SegmentList(BaseModel):
    mode: Literal["quintile", "absolute"]
    scheme: Literal["standard", "seeds", "custom"]
    total_customers: int
    segments: list[SegmentRead]


class SegmentMove(BaseModel):
    from_segment: str | None = Field(description="null for a customer's first segment")
    to_segment: str
    moves: int


class SegmentMoves(BaseModel):
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    moves: list[SegmentMove]


class ClvBucket(BaseModel):
    low: float = Field(serialization_alias="from")
    high: float | None = Field(serialization_alias="to", description="null for the open-ended last range")
    customers: int


class ClvDistributionRead(BaseModel):
    buckets: list[ClvBucket]
    customers_without_clv: int = Field(description="Buyers not scored yet (before the first model fit)")


class SegmentMember(BaseModel):
    customer_id: str
    rfm: RfmRead | None
    net_spend: Decimal
    last_purchase_at: datetime | None
    clv: float | None
    p_alive: float | None
    churn_band: ChurnBand | None
    churn_score: float | None = Field(description="Sort key of churn risk: band rank (0-2) plus P(left)")


class SegmentMemberPage(BaseModel):
    segment: str
    sort: Literal["clv", "churn_risk"]
    items: list[SegmentMember]
    next_cursor: str | None


class LoginRhythm(BaseModel):
    count: int = Field(description="Logins recorded since the customer was first seen")
    first_at: datetime | None
    last_at: datetime | None
    recent_days: int
    recent_logins: int = Field(description="Logins in the last `recent_days` days")
    baseline_days: int
    baseline_logins: int = Field(description="Logins in the `baseline_days` days before those")
    recent_per_week: float
    baseline_per_week: float
    in_drop: bool = Field(description="A login drop was reported and the rate has not recovered yet")


class Predictions(BaseModel):
    p_alive: float | None = Field(description="BG/NBD probability that the customer is still active")
    expected_purchases: float | None = Field(description="Purchase days expected over the CLV horizon")
    expected_spend: float | None = Field(description="Gamma-Gamma expected spend per purchase day")
    clv: float | None = Field(description="Discounted expected spend over the horizon")
    horizon_months: int


class ChurnRisk(BaseModel):
    band: ChurnBand | None
    score: float | None


class SegmentTransition(BaseModel):
    at: datetime
    from_segment: str | None = Field(serialization_alias="from")
    to_segment: str = Field(serialization_alias="to")


class LastNps(BaseModel):
    score: int
    at: datetime


class ScoresRead(BaseModel):
    customer_id: str
    segment: str | None
    segment_since: datetime | None
    rfm: RfmRead | None
    purchase_count: int
    purchase_days: int = Field(description="Distinct purchase days: same-day orders count once")
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    net_spend: Decimal
    mean_spend: Decimal | None = Field(description="Net spend per order")
    open_tickets: int
    last_login_at: datetime | None
    logins: LoginRhythm
    last_nps: LastNps | None
    predictions: Predictions
    churn_risk: ChurnRisk
    history: list[SegmentTransition] = Field(description="Segment transitions, newest first (up to 100)")
    scored_at: datetime | None
    as_of: datetime


class FitRead(BaseModel):
    version: int
    fitted_at: datetime
    time_unit: str
    parameters: dict[str, float]
    diagnostics: dict[str, Any]


class ModelsRead(BaseModel):
    bgnbd: FitRead | None
    gamma_gamma: FitRead | None


class RecomputeRun(BaseModel):
    run_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    trigger: Literal["schedule", "request", "config"]
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    summary: dict[str, Any] | None
    error: str | None


class CohortRead(BaseModel):
    month: str = Field(description="YYYY-MM of the cohort's first purchase (UTC)")
    customers: int
    retention: list[float] = Field(description="Share of the cohort buying in its month 0, 1, 2, ...")


class KpisRead(BaseModel):
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    active_customers: int
    new_customers: int
    revenue: float
    arpu: float | None
    repeat_purchase_rate: float | None
    retention_rate: float | None
    churn_rate: float | None
    previous_period_customers: int
    returning_revenue: float = Field(
        description="Net revenue of the period from customers whose first purchase was before it"
    )
    average_clv: float | None
    cohorts: list[CohortRead]
    computed_at: datetime = Field(
        description="When the figures were aggregated: now, or when the daily recompute stored the "
        "snapshot of this standard period (7, 30, 90 or 365 whole UTC days before today, or the same run "
        "before those) that answered; a snapshot is used only while no order of its period has "
        "changed since."
    )
