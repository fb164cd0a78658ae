"""Probabilistic customer-base models: BG/NBD, Gamma-Gamma and the discounted CLV they give together.

Plain numpy/scipy, no framework. Every function takes float64 arrays with one element per customer:

- `frequency`: repeat purchase periods (distinct purchase days minus one),
- `recency`: the customer's age at the last purchase (first purchase to last purchase),
- `T`: the customer's age at the end of observation (first purchase to the end),

in any time unit, as long as the caller uses the same one everywhere (the fitted `alpha` and
`gamma` scale with it). `docs/models.md` writes out the likelihoods and how the fit was validated
against the published CDNOW parameters.

Fits are maximum likelihood with analytic gradients: the parameters are optimised on the log
scale so they stay positive, customers with identical inputs are collapsed into one weighted row
(on real data a large share of customers are one-time buyers with the same age), and the result
is checked before it is returned: a fit that does not converge or runs off to a boundary raises
`ModelFitError` rather than handing back unusable parameters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

# Fewer customers than this cannot pin down four (or three) parameters; the fit would only
# report noise. A shop this small gets RFM segments but no probabilistic predictions.
MIN_CUSTOMERS_BGNBD = 10
MIN_REPEAT_CUSTOMERS = 3
# Past e^±15 (about 3e6 or 3e-7; for alpha and v relative to the data's own scale, the mean
# age and the mean spend) a parameter has run off towards a boundary of the parameter space:
# the data do not identify it (for example nobody ever dropped out) and predictions would be
# meaningless. Fitted values on real data sit many orders of magnitude inside.
_LOG_PARAMETER_BOUND = 15.0


class ModelFitError(ValueError):
    """The data cannot support a fit (too few customers, no repeat buyers, no convergence)."""


@dataclass(frozen=True)
class BgNbdParams:
    """BG/NBD: purchase rate ~ Gamma(shape r, rate alpha); dropout probability ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma: spend per purchase ~ Gamma(p, nu) with nu ~ Gamma(shape q, rate v)."""

    p: float
    q: float
    v: float

    @property
    def population_mean_spend(self) -> float:
        """The expected spend per purchase of a customer we know nothing about: p * v / (q - 1)."""
        return self.p * self.v / (self.q - 1.0)


@dataclass(frozen=True)
class FitDiagnostics:
    """How a fit went: its log-likelihood, the optimiser's report and the parameters' standard errors."""

    log_likelihood: float
    iterations: int
    converged: bool
    customers: int
    seconds: float
    message: str = ""
    distinct_rows: int = 0  # customers after collapsing identical inputs into weighted rows
    # Standard error of each parameter from the observed information (the inverse Hessian of
    # the negative log-likelihood), by the delta method from the log scale it was fitted on.
    standard_errors: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------


def _as_float_array(values: ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per customer), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _rfm_arrays(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    x = _as_float_array(frequency, "frequency")
    t_x = _as_float_array(recency, "recency")
    t_end = _as_float_array(T, "T")
    if not (x.shape == t_x.shape == t_end.shape):
        raise ValueError(f"frequency, recency and T differ in length: {x.size}, {t_x.size}, {t_end.size}")
    if np.any(x < 0) or np.any(x != np.round(x)):
        raise ValueError("frequency must hold whole numbers >= 0 (repeat purchase periods)")
    if np.any(t_x < 0):
        raise ValueError("recency must be >= 0")
    if np.any(t_x > t_end * (1 + 1e-9) + 1e-12):
        raise ValueError("recency must not exceed T (the last purchase is inside the observation)")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError("recency must be 0 for customers without repeat purchases")
    return x, t_x, t_end


@overload
def _collapse(*columns: FloatArray) -> tuple[list[FloatArray], FloatArray]: ...
@overload
def _collapse(
    *columns: FloatArray, inverse: Literal[True]
) -> tuple[list[FloatArray], FloatArray, IntArray]: ...
def _collapse(*columns: FloatArray, inverse: bool = False) -> Any:
    """Identical customers become one row with a weight (exact: the likelihood is a sum over
    customers); with `inverse`, also each customer's row in the result."""
    order = np.lexsort(columns[::-1])
    ordered = [column[order] for column in columns]
    changes = np.zeros(order.size, dtype=bool)
    changes[0] = True
    for column in ordered:
        changes[1:] |= column[1:] != column[:-1]
    starts = np.flatnonzero(changes)
    counts = np.diff(np.r_[starts, order.size]).astype(np.float64)
    distinct = [np.ascontiguousarray(column[starts]) for column in ordered]
    if not inverse:
        return distinct, counts
    row_of = np.empty(order.size, dtype=np.int64)
    row_of[order] = np.cumsum(changes) - 1
    return distinct, counts, row_of


def _weighted_sum(weights: FloatArray, values: FloatArray) -> float:
    """sum(weights * values). Not np.dot: multithreaded BLAS is many times slower for this on a
    busy machine (its threads wait for cores), and these sums run dozens of times per fit."""
    return float(np.einsum("i,i->", weights, values))


# ---------------------------------------------------------------------------------------------
# Maximum likelihood on the log scale
# ---------------------------------------------------------------------------------------------


ObjectiveFunction = Callable[[FloatArray], tuple[float, FloatArray]]


@dataclass(frozen=True)
class _Optimum:
    log_params: FloatArray
    log_likelihood: float
    iterations: int
    converged: bool
    message: str
    standard_errors: FloatArray


def _maximise(objective: ObjectiveFunction, starts: list[FloatArray], weight_total: float) -> _Optimum:
    """Minimise the mean negative log-likelihood with BFGS from each start; keep the best optimum.

    The objective is divided by the number of customers so the gradient tolerance means the same
    for ten customers as for a million.
    """

    def scaled(log_params: FloatArray) -> tuple[float, FloatArray]:
        value, gradient = objective(log_params)
        return value / weight_total, gradient / weight_total

    best: optimize.OptimizeResult | None = None
    for start in starts:
        with np.errstate(all="ignore"):
            result = optimize.minimize(
                scaled, start, jac=True, method="BFGS", options={"gtol": 1e-9, "maxiter": 1000}
            )
        if not np.isfinite(result.fun):
            continue
        if best is None or result.fun < best.fun - 1e-12:
            best = result
        if _converged(result):
            break
    if best is None:
        raise ModelFitError("the log-likelihood could not be evaluated at any starting point")
    converged = _converged(best)
    hessian = _numerical_hessian(lambda p: objective(p)[1], best.x)
    standard_errors = np.full(best.x.size, np.nan)
    try:
        covariance = np.linalg.inv(hessian)
        variances = np.diag(covariance)
        if np.all(variances > 0):
            standard_errors = np.sqrt(variances)
    except np.linalg.LinAlgError:
        pass
    return _Optimum(
        log_params=best.x,
        log_likelihood=-float(best.fun) * weight_total,
        iterations=int(best.nit),
        converged=converged,
        message=str(best.message),
        standard_errors=standard_errors,
    )


def _converged(result: optimize.OptimizeResult) -> bool:
    # BFGS reports "precision loss" when it sits on the optimum but cannot shrink the gradient
    # below gtol in floating point; a tiny gradient (of the mean log-likelihood) is as converged
    # as it gets.
    return bool(result.success) or bool(np.max(np.abs(result.jac)) < 1e-6)


def _numerical_hessian(gradient: Callable[[FloatArray], FloatArray], at: FloatArray) -> FloatArray:
    """Central differences of the analytic gradient (a handful of extra evaluations)."""
    size = at.size
    hessian = np.empty((size, size))
    for i in range(size):
        step = 1e-5 * max(1.0, abs(at[i]))
        forward, backward = at.copy(), at.copy()
        forward[i] += step
        backward[i] -= step
        hessian[:, i] = (gradient(forward) - gradient(backward)) / (2 * step)
    return (hessian + hessian.T) / 2


def _check_bounds(log_params: FloatArray, log_scales: FloatArray, names: tuple[str, ...], model: str) -> None:
    relative = log_params - log_scales
    runaway = [name for name, value in zip(names, relative, strict=True) if abs(value) > _LOG_PARAMETER_BOUND]
    if runaway or not np.all(np.isfinite(log_params)):
        raise ModelFitError(
            f"{model} fit did not settle: parameter(s) {', '.join(runaway) or 'NaN'} ran off to a boundary "
            "(the data do not identify the model, e.g. too little repeat buying)"
        )


def _delta_method(
    log_params: FloatArray, log_standard_errors: FloatArray, names: tuple[str, ...]
) -> dict[str, float]:
    return {
        name: float(np.exp(value) * error)
        for name, value, error in zip(names, log_params, log_standard_errors, strict=True)
    }


# ---------------------------------------------------------------------------------------------
# BG/NBD (Fader, Hardie & Lee 2005)
# ---------------------------------------------------------------------------------------------

_BGNBD_NAMES = ("r", "alpha", "a", "b")


def _bgnbd_objective(
    x: FloatArray, t_x: FloatArray, t_end: FloatArray, weight: FloatArray
) -> ObjectiveFunction:
    """The negative log-likelihood and its gradient on the log scale.

    Written as FHL (2005) eq. 6, L = A * (B_alive + B_dropped) with the dropped branch only for
    x > 0, and rearranged so that every special function (gammaln, betaln, digamma) depends on
    the purchase count alone: it is evaluated once per distinct count (a few dozen) rather than
    once per customer. What remains per customer is logs, one softplus and one logistic of
    log-odds(dropped) = log(a / (b + x - 1)) + (r + x) log((alpha + T) / (alpha + t_x)).
    """
    counts, row_of = np.unique(x, return_inverse=True)
    count_weight = np.bincount(row_of, weights=weight, minlength=counts.size).astype(np.float64)
    total_weight = float(weight.sum())
    repeat_count = counts > 0
    counts_safe = np.where(repeat_count, counts, 1.0)

    def negative_log_likelihood(log_params: FloatArray) -> tuple[float, FloatArray]:
        r, alpha, a, b = np.exp(log_params)
        log_alpha = np.log(alpha)
        # Per distinct purchase count.
        psi_abx = special.digamma(a + b + counts)
        per_count = (
            special.gammaln(r + counts)
            - special.gammaln(r)
            + special.betaln(a, b + counts)
            - special.betaln(a, b)
        )
        log_odds_count = np.where(repeat_count, np.log(a) - np.log(b + counts_safe - 1), -np.inf)
        inverse_b_x_1 = np.where(repeat_count, 1.0 / (b + counts_safe - 1), 0.0)
        # Per customer (row).
        rx = r + x
        log_alpha_end = np.log(alpha + t_end)
        log_alpha_last = np.log(alpha + t_x)
        log_odds = log_odds_count[row_of] + rx * (log_alpha_end - log_alpha_last)
        share_dropped = special.expit(log_odds)  # posterior P(dropped out after the last purchase)
        log_likelihood = (
            _weighted_sum(count_weight, per_count)
            + total_weight * r * log_alpha
            + _weighted_sum(weight, np.logaddexp(0.0, log_odds) - rx * log_alpha_end)
        )
        weighted_dropped = weight * share_dropped
        d_r = (
            _weighted_sum(count_weight, special.digamma(r + counts) - special.digamma(r))
            + total_weight * log_alpha
            - _weighted_sum(weight, log_alpha_end)
            + _weighted_sum(weighted_dropped, log_alpha_end - log_alpha_last)
        )
        d_alpha = total_weight * r / alpha - _weighted_sum(
            weight * rx, (1.0 - share_dropped) / (alpha + t_end) + share_dropped / (alpha + t_x)
        )
        psi_ab = special.digamma(a + b)
        d_a = _weighted_sum(count_weight, psi_ab - psi_abx) + weighted_dropped.sum() / a
        d_b = _weighted_sum(
            count_weight, special.digamma(b + counts) - psi_abx - special.digamma(b) + psi_ab
        ) - _weighted_sum(weighted_dropped, inverse_b_x_1[row_of])
        gradient = np.array([r * d_r, alpha * d_alpha, a * d_a, b * d_b])
        return -float(log_likelihood), -gradient

    return negative_log_likelihood


def bgnbd_log_likelihood(
    params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> float:
    """The BG/NBD log-likelihood of the data at `params` (summed over customers)."""
    x, t_x, t_end = _rfm_arrays(frequency, recency, T)
    objective = _bgnbd_objective(x, t_x, t_end, np.ones_like(x))
    value, _ = objective(np.log([params.r, params.alpha, params.a, params.b]))
    return -value


def fit_bgnbd(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> tuple[BgNbdParams, FitDiagnostics]:
    """Fit BG/NBD by maximum likelihood; raises ModelFitError when the data cannot support a fit."""
    started = time.perf_counter()
    x, t_x, t_end = _rfm_arrays(frequency, recency, T)
    customers = x.size
    if customers < MIN_CUSTOMERS_BGNBD:
        raise ModelFitError(f"BG/NBD needs at least {MIN_CUSTOMERS_BGNBD} customers, got {customers}")
    repeaters = int(np.count_nonzero(x))
    if repeaters < MIN_REPEAT_CUSTOMERS:
        raise ModelFitError(
            f"BG/NBD needs at least {MIN_REPEAT_CUSTOMERS} customers with a repeat purchase, got {repeaters} "
            f"of {customers}: with (almost) nobody coming back there is no purchase rhythm to learn"
        )
    if not np.any(t_end > 0):
        raise ModelFitError(
            "BG/NBD needs customers observed for some time after their first purchase (T > 0)"
        )
    (xu, t_xu, t_endu), weight = _collapse(x, t_x, t_end)
    objective = _bgnbd_objective(xu, t_xu, t_endu, weight)
    # The first start puts alpha on the scale of the data (the mean age), which keeps the
    # optimiser out of flat regions; the others are fallbacks for unusual data.
    scale = float(np.mean(t_end))
    starts = [
        np.log([1.0, max(scale, 1e-3), 1.0, 1.0]),
        np.zeros(4),
        np.log([0.5, max(scale / 10, 1e-3), 0.5, 2.0]),
    ]
    optimum = _maximise(objective, starts, float(weight.sum()))
    _check_bounds(optimum.log_params, np.log([1.0, scale, 1.0, 1.0]), _BGNBD_NAMES, "BG/NBD")
    if not optimum.converged:
        raise ModelFitError(
            f"BG/NBD fit did not converge ({optimum.message}); the data may not follow the model"
        )
    r, alpha, a, b = (float(value) for value in np.exp(optimum.log_params))
    diagnostics = FitDiagnostics(
        log_likelihood=optimum.log_likelihood,
        iterations=optimum.iterations,
        converged=optimum.converged,
        customers=customers,
        seconds=time.perf_counter() - started,
        message=optimum.message,
        distinct_rows=int(xu.size),
        standard_errors=_delta_method(optimum.log_params, optimum.standard_errors, _BGNBD_NAMES),
    )
    return BgNbdParams(r=r, alpha=alpha, a=a, b=b), diagnostics


def _log_odds_dropped(params: BgNbdParams, x: FloatArray, t_x: FloatArray, t_end: FloatArray) -> FloatArray:
    """log[P(dropped out after the last purchase) / P(still alive)] given the history; -inf for x = 0."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    repeat = x > 0
    x_safe = np.where(repeat, x, 1.0)
    log_odds = (
        np.log(a) - np.log(b + x_safe - 1) + (r + x_safe) * (np.log(alpha + t_end) - np.log(alpha + t_x))
    )
    return np.where(repeat, log_odds, -np.inf)


def probability_alive(
    params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> FloatArray:
    """P(the customer has not dropped out by T | frequency, recency, T) under BG/NBD."""
    x, t_x, t_end = _rfm_arrays(frequency, recency, T)
    # 1 / (1 + odds), as a logistic of the log-odds so a long silence gives a tiny number, not 0/0.
    return np.asarray(special.expit(-_log_odds_dropped(params, x, t_x, t_end)), dtype=np.float64)


def expected_purchases(
    params: BgNbdParams, horizon: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> FloatArray:
    """E[purchases in (T, T + horizon] | frequency, recency, T]: BG/NBD's conditional expectation.

    Fader, Hardie & Lee (2005), eq. 10. The hypergeometric factor is evaluated after Euler's
    transformation, 2F1(r+x, b+x; a+b+x-1; z) (1-z)^(r+x) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z),
    whose parameters stay small however many purchases a customer made, so it neither overflows
    nor loses precision for heavy buyers.
    """
    x, t_x, t_end = _rfm_arrays(frequency, recency, T)
    if horizon < 0:
        raise ValueError("horizon must be >= 0")
    alive = special.expit(-_log_odds_dropped(params, x, t_x, t_end))
    return _expected_purchases_if_alive(params, horizon, x, t_end) * alive


def _expected_purchases_if_alive(
    params: BgNbdParams, horizon: float, x: FloatArray, t_end: FloatArray
) -> FloatArray:
    """E[purchases in (T, T + horizon] | alive at T, x, T]; depends on frequency and T only."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if horizon == 0:
        return np.zeros_like(x)
    z = horizon / (alpha + t_end + horizon)

    def if_alive(a: float) -> FloatArray:
        c = a + b + x - 1
        remaining = np.power(1.0 - z, a - 1.0) * special.hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
        return np.asarray(c / (a - 1.0) * (1.0 - remaining), dtype=np.float64)

    if abs(a - 1.0) < 1e-7:
        # At a = 1 the closed form is 0/0 but smooth around it: average the two sides.
        return (if_alive(1.0 - 1e-6) + if_alive(1.0 + 1e-6)) / 2
    return if_alive(a)


# ---------------------------------------------------------------------------------------------
# Gamma-Gamma spend model (Fader & Hardie, "The Gamma-Gamma Model of Monetary Value", 2013)
# ---------------------------------------------------------------------------------------------

_GAMMA_GAMMA_NAMES = ("p", "q", "v")


def _spend_arrays(frequency: ArrayLike, monetary_mean: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = _as_float_array(frequency, "frequency")
    m = _as_float_array(monetary_mean, "monetary_mean")
    if x.shape != m.shape:
        raise ValueError(f"frequency and monetary_mean differ in length: {x.size}, {m.size}")
    if np.any(x < 0):
        raise ValueError("frequency must be >= 0")
    return x, m


def _gamma_gamma_objective(x: FloatArray, m: FloatArray, weight: FloatArray) -> ObjectiveFunction:
    """The negative log-likelihood and its gradient on the log scale; the special functions
    depend on the purchase count only and are evaluated once per distinct count."""
    counts, row_of = np.unique(x, return_inverse=True)
    count_weight = np.bincount(row_of, weights=weight, minlength=counts.size).astype(np.float64)
    total_weight = float(weight.sum())
    log_counts = np.log(counts)
    log_m = np.log(m)
    weighted_log_m = weight * log_m
    weighted_x = weight * x

    def negative_log_likelihood(log_params: FloatArray) -> tuple[float, FloatArray]:
        p, q, v = np.exp(log_params)
        pc = p * counts
        per_count = special.gammaln(pc + q) - special.gammaln(pc) + pc * log_counts
        psi_pcq = special.digamma(pc + q)
        log_v_xm = np.log(v + x * m)
        log_likelihood = (
            _weighted_sum(count_weight, per_count)
            + total_weight * (q * np.log(v) - special.gammaln(q))
            + _weighted_sum(p * x - 1.0, weighted_log_m)
            - _weighted_sum(weight * (p * x + q), log_v_xm)
        )
        d_p = _weighted_sum(
            count_weight, counts * (psi_pcq - special.digamma(pc) + log_counts)
        ) + _weighted_sum(weighted_x, log_m - log_v_xm)
        d_q = (
            _weighted_sum(count_weight, psi_pcq)
            + total_weight * (np.log(v) - special.digamma(q))
            - _weighted_sum(weight, log_v_xm)
        )
        d_v = total_weight * q / v - _weighted_sum(weight * (p * x + q), 1.0 / (v + x * m))
        gradient = np.array([p * d_p, q * d_q, v * d_v])
        return -float(log_likelihood), -gradient

    return negative_log_likelihood


def fit_gamma_gamma(
    frequency: ArrayLike, monetary_mean: ArrayLike
) -> tuple[GammaGammaParams, FitDiagnostics]:
    """Fit Gamma-Gamma by maximum likelihood on the repeat buyers.

    Only customers with frequency > 0 and a positive mean spend take part: `monetary_mean` is
    the mean value of the repeat purchases (the first purchase left out, as in Fader & Hardie's
    note), which does not exist for one-time buyers. `diagnostics.customers` counts those used.
    Raises ModelFitError for too few such customers, no spread in spend, or q <= 1 (then the
    model's mean spend is infinite and it cannot predict).
    """
    started = time.perf_counter()
    x, m = _spend_arrays(frequency, monetary_mean)
    used = (x > 0) & (m > 0)
    customers = int(np.count_nonzero(used))
    if customers < MIN_CUSTOMERS_BGNBD:
        raise ModelFitError(
            f"Gamma-Gamma needs at least {MIN_CUSTOMERS_BGNBD} repeat buyers with positive spend, "
            f"got {customers}"
        )
    x, m = x[used], m[used]
    if np.ptp(m) <= 1e-12 * np.max(m):
        raise ModelFitError("Gamma-Gamma needs some spread in spend: every repeat buyer spends the same")
    (xu, mu), weight = _collapse(x, m)
    objective = _gamma_gamma_objective(xu, mu, weight)
    mean_spend = float(np.mean(m))
    starts = [np.log([1.0, 2.0, mean_spend]), np.zeros(3), np.log([5.0, 3.0, mean_spend])]
    optimum = _maximise(objective, starts, float(weight.sum()))
    _check_bounds(optimum.log_params, np.log([1.0, 1.0, mean_spend]), _GAMMA_GAMMA_NAMES, "Gamma-Gamma")
    if not optimum.converged:
        raise ModelFitError(
            f"Gamma-Gamma fit did not converge ({optimum.message}); the spend may not follow the model"
        )
    p, q, v = (float(value) for value in np.exp(optimum.log_params))
    if q <= 1.0:
        raise ModelFitError(
            f"Gamma-Gamma fit gives q = {q:.3g} <= 1: spend is so heavy-tailed that the model's mean is "
            "infinite (look for outliers such as wholesale orders, or for wrong amounts)"
        )
    notes: tuple[str, ...] = ()
    if customers > 2:
        correlation = float(np.corrcoef(x, m)[0, 1])
        # The model assumes spend per purchase does not depend on how often one buys.
        notes = (f"correlation between frequency and mean spend: {correlation:.3f} (the model assumes ~0)",)
    diagnostics = FitDiagnostics(
        log_likelihood=optimum.log_likelihood,
        iterations=optimum.iterations,
        converged=optimum.converged,
        customers=customers,
        seconds=time.perf_counter() - started,
        message=optimum.message,
        distinct_rows=int(xu.size),
        standard_errors=_delta_method(optimum.log_params, optimum.standard_errors, _GAMMA_GAMMA_NAMES),
        notes=notes,
    )
    return GammaGammaParams(p=p, q=q, v=v), diagnostics


def expected_average_spend(
    params: GammaGammaParams, frequency: ArrayLike, monetary_mean: ArrayLike
) -> FloatArray:
    """E[spend per purchase | frequency, mean spend]: a weighted mean of the customer's own mean and
    the population mean, p (v + x m) / (p x + q - 1); customers without repeat purchases get the
    population mean p v / (q - 1)."""
    x, m = _spend_arrays(frequency, monetary_mean)
    if params.q <= 1.0:
        raise ValueError("Gamma-Gamma parameters with q <= 1 have no finite expected spend")
    known = (x > 0) & (m > 0)
    x_used = np.where(known, x, 0.0)
    m_used = np.where(known, m, 0.0)
    return params.p * (params.v + x_used * m_used) / (params.p * x_used + params.q - 1.0)


# ---------------------------------------------------------------------------------------------
# Customer lifetime value
# ---------------------------------------------------------------------------------------------


def customer_lifetime_value(
    bgnbd: BgNbdParams,
    gamma_gamma: GammaGammaParams,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_mean: ArrayLike,
    *,
    horizon_periods: int,
    period_length: float,
    discount_rate_per_period: float,
) -> FloatArray:
    """Discounted expected spend over `horizon_periods` periods of `period_length` time units.

    CLV = sum over k = 1..K of  spend * (E[Y(k L)] - E[Y((k-1) L)]) / (1 + d)^k,  where E[Y(t)] is
    BG/NBD's expected purchases over the next t given the history, spend is Gamma-Gamma's expected
    spend per purchase, L the period length and d the discount rate per period: the purchases
    expected within each period are valued at its end. E.g. 12 monthly periods with weeks as the
    time unit: horizon_periods=12, period_length=52/12, discount_rate_per_period=0.01.
    """
    if horizon_periods < 0:
        raise ValueError("horizon_periods must be >= 0")
    if period_length <= 0:
        raise ValueError("period_length must be > 0")
    if discount_rate_per_period <= -1:
        raise ValueError("discount_rate_per_period must be > -1")
    x, t_x, t_end = _rfm_arrays(frequency, recency, T)
    spend = expected_average_spend(gamma_gamma, x, monetary_mean)
    alive = special.expit(-_log_odds_dropped(bgnbd, x, t_x, t_end))
    # The hypergeometric function is the costly part and depends on (frequency, T) only, which
    # far fewer distinct pairs than customers share: evaluate it once per pair and period.
    (x_distinct, t_end_distinct), _, row_of = _collapse(x, t_end, inverse=True)
    value = np.zeros_like(x_distinct)
    previous = np.zeros_like(x_distinct)
    for period in range(1, horizon_periods + 1):
        cumulative = _expected_purchases_if_alive(bgnbd, period * period_length, x_distinct, t_end_distinct)
        value += (cumulative - previous) / (1.0 + discount_rate_per_period) ** period
        previous = cumulative
    return spend * alive * value[row_of]
