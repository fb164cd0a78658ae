"""Churn bands, vectorised: from the probability alive and from recency against the customer's rhythm.

A customer's band is the worse of two opinions:

- the model's: probability alive (BG/NBD) below ``p_alive_high_below`` is high risk, below
  ``p_alive_medium_below`` medium; without a model fit this opinion is absent;
- the rhythm's: days since the last purchase over the customer's usual gap between purchase days
  (their own mean gap once they have bought on two days or more, the shop's typical gap before).
  At ``overdue_high`` times the gap or more it is high risk, at ``overdue_medium`` medium.

The model already weighs recency against frequency, but only for the shop's average buyer; the
rhythm catches the regular customer who is suddenly late, which is when a follow-up helps most.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segmentation_worker.domain.config import ChurnConfig

BANDS = ("low", "medium", "high")
RANK = {band: rank for rank, band in enumerate(BANDS)}


def usual_gap_days(
    first_purchase_days_ago: ArrayLike, last_purchase_days_ago: ArrayLike, purchase_days: ArrayLike
) -> NDArray[np.float64]:
    """Each customer's mean gap between purchase days; NaN for customers with a single one."""
    first = np.asarray(first_purchase_days_ago, dtype=np.float64)
    last = np.asarray(last_purchase_days_ago, dtype=np.float64)
    days = np.asarray(purchase_days, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = (first - last) / (days - 1)
    # Two purchase days a few hours apart across midnight still make a gap of at least a day.
    return np.where(days >= 2, np.maximum(gap, 1.0), np.nan)


def typical_gap_days(gaps: ArrayLike, default: float) -> float:
    """The shop's typical gap: the median over its repeat buyers, or ``default`` without any."""
    known = np.asarray(gaps, dtype=np.float64)
    known = known[np.isfinite(known)]
    return float(np.median(known)) if known.size else default


def churn_bands(
    p_alive: ArrayLike,
    recency_days: ArrayLike,
    gap_days: ArrayLike,
    typical_gap: float,
    config: ChurnConfig,
) -> tuple[NDArray[np.int8], NDArray[np.float64]]:
    """(band rank 0 low / 1 medium / 2 high, churn score) per customer.

    ``p_alive`` may hold NaN where no model applies. The churn score sorts customers riskiest
    first: the band's rank plus the probability of having left (0.5 when unknown).
    """
    alive = np.asarray(p_alive, dtype=np.float64)
    recency = np.asarray(recency_days, dtype=np.float64)
    gap = np.asarray(gap_days, dtype=np.float64)
    gap = np.where(np.isfinite(gap), gap, typical_gap)
    overdue = recency / np.maximum(gap, 1.0)
    rhythm = np.where(overdue >= config.overdue_high, 2, np.where(overdue >= config.overdue_medium, 1, 0))
    model = np.where(
        np.isnan(alive),
        0,
        np.where(alive < config.p_alive_high_below, 2, np.where(alive < config.p_alive_medium_below, 1, 0)),
    )
    band = np.maximum(rhythm, model).astype(np.int8)
    score = band.astype(np.float64) + np.where(np.isnan(alive), 0.5, 1.0 - alive)
    return band, score


def worsened(previous: str | None, current: str) -> bool:
    """True when the band got worse; a first assessment counts as coming from low."""
    return RANK[current] > RANK.get(previous or "low", 0)
