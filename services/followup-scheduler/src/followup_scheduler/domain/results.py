"""Treated versus control: conversion rates, uplift and its 95% confidence interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class GroupOutcome:
    customers: int
    converted: int

    @property
    def rate(self) -> float | None:
        return self.converted / self.customers if self.customers else None


@dataclass(frozen=True)
class Uplift:
    absolute: float | None
    ci_low: float | None
    ci_high: float | None
    relative: float | None


def uplift(treated: GroupOutcome, control: GroupOutcome) -> Uplift:
    """Difference of two proportions with the normal (Wald) interval for unpooled variances.

    None where it cannot be computed (an empty group)."""
    if treated.rate is None or control.rate is None:
        return Uplift(None, None, None, None)
    p_t, p_c = treated.rate, control.rate
    difference = p_t - p_c
    standard_error = math.sqrt(p_t * (1 - p_t) / treated.customers + p_c * (1 - p_c) / control.customers)
    relative = difference / p_c if p_c > 0 else None
    return Uplift(
        absolute=difference,
        ci_low=difference - Z_95 * standard_error,
        ci_high=difference + Z_95 * standard_error,
        relative=relative,
    )
