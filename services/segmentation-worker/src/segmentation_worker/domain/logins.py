"""Login-drop detection, vectorised: the recent login rate against the customer's own baseline.

With the defaults, a customer whose logins per day over the last 14 days fall below half of
their rate over the 8 weeks before has dropped. One ``login_dropped`` per episode: a customer in
a drop is not reported again until the rate recovers (it no longer counts as a drop), which
re-arms the detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segmentation_worker.domain.config import LoginDropConfig


@dataclass(frozen=True)
class LoginDropVerdict:
    dropped: NDArray[np.bool_]  # a new drop episode starts: report it
    recovered: NDArray[np.bool_]  # an episode ends: re-arm
    recent_per_week: NDArray[np.float64]
    baseline_per_week: NDArray[np.float64]


def detect_login_drops(
    recent_logins: ArrayLike, baseline_logins: ArrayLike, in_drop: ArrayLike, config: LoginDropConfig
) -> LoginDropVerdict:
    """Judge each customer from their login counts in the two windows and their episode flag."""
    recent = np.asarray(recent_logins, dtype=np.float64)
    baseline = np.asarray(baseline_logins, dtype=np.float64)
    active = np.asarray(in_drop, dtype=bool)
    recent_rate = recent / config.recent_days
    baseline_rate = baseline / config.baseline_days
    judged = baseline >= config.min_baseline_logins
    low = judged & (recent_rate < config.ratio * baseline_rate)
    return LoginDropVerdict(
        dropped=low & ~active,
        # Without enough baseline logins there is nothing left to drop from: the episode ends too.
        recovered=active & ~low,
        recent_per_week=recent_rate * 7,
        baseline_per_week=baseline_rate * 7,
    )
