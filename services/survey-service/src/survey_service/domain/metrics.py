"""The survey metrics, computed from a histogram of scores (score -> number of answers).

NPS's 95% confidence interval uses the normal approximation for a difference of two proportions
taken from the same multinomial sample: with promoter share p, detractor share d and n answers,
NPS = p - d and Var(NPS) = (p + d - (p - d)^2) / n, so the interval is NPS +- 1.96 * sqrt(Var),
in points and clipped to [-100, 100]. It is too narrow for very small samples (under ~30 answers);
the answer says how many answers it rests on, so readers can judge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from survey_service.domain.surveys import Kind, is_detractor

Z_95 = 1.959963984540054


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _mean(histogram: Mapping[int, int], total: int) -> float | None:
    if not total:
        return None
    return round(sum(score * count for score, count in histogram.items()) / total, 2)


def nps(histogram: Mapping[int, int]) -> dict[str, Any]:
    total = sum(histogram.values())
    promoters = sum(count for score, count in histogram.items() if score >= 9)
    detractors = sum(count for score, count in histogram.items() if is_detractor(Kind.NPS, score))
    passives = total - promoters - detractors
    result: dict[str, Any] = {
        "nps": None,
        "promoters": promoters,
        "passives": passives,
        "detractors": detractors,
        "promoters_pct": _pct(promoters, total),
        "detractors_pct": _pct(detractors, total),
        "confidence_interval": None,
    }
    if total:
        p, d = promoters / total, detractors / total
        score = p - d
        margin = Z_95 * math.sqrt(max(p + d - score * score, 0.0) / total)
        result["nps"] = round(100 * score, 1)
        result["confidence_interval"] = {
            "level": 0.95,
            "low": round(max(-100.0, 100 * (score - margin)), 1),
            "high": round(min(100.0, 100 * (score + margin)), 1),
        }
    return result


def csat(histogram: Mapping[int, int]) -> dict[str, Any]:
    total = sum(histogram.values())
    satisfied = sum(count for score, count in histogram.items() if score >= 4)
    return {"csat": _pct(satisfied, total), "satisfied": satisfied, "mean": _mean(histogram, total)}


def ces(histogram: Mapping[int, int]) -> dict[str, Any]:
    total = sum(histogram.values())
    easy = sum(count for score, count in histogram.items() if score <= 2)
    return {"mean": _mean(histogram, total), "easy": easy, "easy_pct": _pct(easy, total)}


def metrics_for(kind: Kind, histogram: Mapping[int, int]) -> dict[str, Any]:
    """The kind's headline figures plus the detractor count every kind shares."""
    figures = {Kind.NPS: nps, Kind.CSAT: csat, Kind.CES: ces}[kind](histogram)
    figures.setdefault("detractors", sum(c for s, c in histogram.items() if is_detractor(kind, s)))
    return figures
