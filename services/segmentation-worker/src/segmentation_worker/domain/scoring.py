"""Scoring a set of customers at once: RFM scores, segment, model predictions and churn band.

The same function serves the incremental path (the few customers a batch of events touched) and
the daily recompute (every customer of a shop), so both give the same answer for the same state.

Time is measured in days, except in the probabilistic models, which see whole weeks (as in the
CDNOW studies): customers with the same history then collapse into one row, and a million
customers cost some thousands of evaluations. A customer's age counts the started week (at least
one), their recency the rounded weeks between first and last purchase day. Monetary value for the
models is the net spend per purchase day (same-day orders count once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from segmentation_worker.domain.churn import churn_bands, usual_gap_days
from segmentation_worker.domain.config import SegmentationConfig
from segmentation_worker.domain.segments import (
    assign_segments,
    quintile_edges,
    score_absolute,
    score_by_edges,
)

if TYPE_CHECKING:
    from segmentation_worker.domain import models

DAYS_PER_YEAR = 365.25
DAYS_PER_MONTH = DAYS_PER_YEAR / 12
DAYS_PER_WEEK = 7.0
MODEL_TIME_UNIT = "weeks"
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Buyers:
    """Columns of the customers with at least one purchase, one element per customer."""

    first_days_ago: FloatArray  # days from the first purchase to now
    last_days_ago: FloatArray  # days from the last purchase to now
    purchase_days: FloatArray  # distinct purchase days (same-day orders count once)
    net_spend: FloatArray  # purchases less refunds, never negative

    @property
    def size(self) -> int:
        return int(self.purchase_days.size)

    def model_inputs(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """(frequency, recency, T, mean spend) for BG/NBD and Gamma-Gamma, time in whole weeks."""
        frequency = np.maximum(self.purchase_days - 1, 0)
        age = np.maximum(np.ceil(self.first_days_ago / DAYS_PER_WEEK), 1.0)
        span = np.round((self.first_days_ago - self.last_days_ago) / DAYS_PER_WEEK)
        recency = np.where(frequency > 0, np.clip(span, 0, age), 0.0)
        mean_spend = self.net_spend / np.maximum(self.purchase_days, 1)
        return frequency, recency, age, mean_spend


@dataclass(frozen=True)
class Fits:
    bgnbd: models.BgNbdParams | None = None
    gamma_gamma: models.GammaGammaParams | None = None


@dataclass(frozen=True)
class ShopContext:
    """What scoring needs to know about the shop besides the customers being scored."""

    config: SegmentationConfig
    shop_average_spend: float  # mean net spend per buyer, for absolute monetary levels
    typical_gap_days: float  # the usual gap between purchase days of the shop's repeat buyers
    edges: dict[str, list[float]] | None = None  # quintile cut points from the last recompute
    fits: Fits = Fits()


@dataclass(frozen=True)
class Scores:
    r: NDArray[np.int8]
    f: NDArray[np.int8]
    m: NDArray[np.int8]
    segment: NDArray[np.str_]
    p_alive: FloatArray  # NaN without a BG/NBD fit
    expected_purchases: FloatArray  # over the CLV horizon; NaN without a fit
    expected_spend: FloatArray  # per purchase; NaN without a Gamma-Gamma fit
    clv: FloatArray  # discounted, over the horizon; NaN without both fits
    churn_rank: NDArray[np.int8]  # 0 low, 1 medium, 2 high
    churn_score: FloatArray


def quintile_edges_of(buyers: Buyers) -> dict[str, list[float]]:
    """The cut points of the quintile scores over these buyers (the whole shop, at a recompute)."""
    return {
        "r": quintile_edges(buyers.last_days_ago, higher_is_better=False).tolist(),
        "f": quintile_edges(buyers.purchase_days).tolist(),
        "m": quintile_edges(buyers.net_spend).tolist(),
    }


def score(buyers: Buyers, shop: ShopContext) -> Scores:
    """Score every buyer; the result's arrays are aligned with the input's."""
    config = shop.config
    if config.mode == "quintile":
        edges = shop.edges or quintile_edges_of(buyers)
        r = score_by_edges(buyers.last_days_ago, edges["r"], higher_is_better=False)
        f = score_by_edges(buyers.purchase_days, edges["f"])
        m = score_by_edges(buyers.net_spend, edges["m"])
    else:
        per_year = buyers.purchase_days * DAYS_PER_YEAR / np.maximum(buyers.first_days_ago, DAYS_PER_YEAR)
        r, f, m = score_absolute(
            buyers.last_days_ago,
            per_year,
            buyers.net_spend,
            config.thresholds.domain(),
            shop_average=shop.shop_average_spend,
        )
    segment = assign_segments(r, f, m, config.segment_scheme())
    p_alive, expected, spend, clv = predict(buyers, shop)
    gaps = usual_gap_days(buyers.first_days_ago, buyers.last_days_ago, buyers.purchase_days)
    rank, churn_score = churn_bands(p_alive, buyers.last_days_ago, gaps, shop.typical_gap_days, config.churn)
    return Scores(r, f, m, segment, p_alive, expected, spend, clv, rank, churn_score)


def predict(buyers: Buyers, shop: ShopContext) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(probability alive, expected purchases over the horizon, expected spend, discounted CLV)."""
    # Imported here: scipy takes a second to import, and every process that merely discovers
    # this service (all of them, at start) would pay it.
    from segmentation_worker.domain import models

    nan = np.full(buyers.size, np.nan)
    if buyers.size == 0:
        return nan, nan, nan, nan
    frequency, recency, age, mean_spend = buyers.model_inputs()
    spend = nan
    if shop.fits.gamma_gamma is not None:
        spend = models.expected_average_spend(shop.fits.gamma_gamma, frequency, mean_spend)
    bgnbd = shop.fits.bgnbd
    if bgnbd is None:
        return nan, nan, spend, nan
    # Customers with the same (frequency, recency, age) in whole weeks get the same predictions.
    # The three whole numbers are packed into one integer key: a row-wise unique would sort
    # structured rows, about forty times slower for a million customers.
    width = int(age.max()) + 1
    keys = (frequency.astype(np.int64) * width + recency.astype(np.int64)) * width + age.astype(np.int64)
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    t_end = (unique_keys % width).astype(np.float64)
    t_x = (unique_keys // width % width).astype(np.float64)
    x = (unique_keys // (width * width)).astype(np.float64)
    p_alive = models.probability_alive(bgnbd, x, t_x, t_end)[inverse]
    clv_config = shop.config.clv
    monthly_discount = (1 + clv_config.annual_discount_rate) ** (1 / 12) - 1
    # Purchases expected within each month, valued at its end and discounted (as in
    # models.customer_lifetime_value), computed once per distinct history.
    discounted = np.zeros_like(x)
    previous = np.zeros_like(x)
    for month in range(1, clv_config.horizon_months + 1):
        horizon_weeks = month * DAYS_PER_MONTH / DAYS_PER_WEEK
        cumulative = models.expected_purchases(bgnbd, horizon_weeks, x, t_x, t_end)
        discounted += (cumulative - previous) / (1 + monthly_discount) ** month
        previous = cumulative
    expected = previous[inverse]
    clv = spend * discounted[inverse]
    return p_alive, expected, spend, clv
