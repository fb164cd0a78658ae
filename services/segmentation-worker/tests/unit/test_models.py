"""BG/NBD, Gamma-Gamma and CLV: recovery of known parameters, closed forms against numerical
integration of the models' definitions, and refusal of data that cannot support a fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special

from segmentation_worker.domain import models
from segmentation_worker.domain.models import (
    BgNbdParams,
    GammaGammaParams,
    ModelFitError,
    customer_lifetime_value,
    expected_average_spend,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    probability_alive,
)


def simulate_bgnbd(params: BgNbdParams, customers: int, seed: int) -> tuple[np.ndarray, ...]:
    """Customers drawn from the BG/NBD story: Poisson purchases at rate lambda while alive, and
    after each repeat purchase a drop-out with probability p; observed for T after the first."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(params.r, 1.0 / params.alpha, customers)
    dropout = rng.beta(params.a, params.b, customers)
    age = rng.uniform(20.0, 80.0, customers)
    frequency = np.zeros(customers)
    recency = np.zeros(customers)
    clock = np.zeros(customers)
    active = np.ones(customers, dtype=bool)
    while active.any():
        clock[active] += rng.exponential(1.0 / rate[active])
        bought = active & (clock <= age)
        frequency[bought] += 1
        recency[bought] = clock[bought]
        died = bought & (rng.uniform(size=customers) < dropout)
        active = bought & ~died
    return frequency, recency, age


def simulate_spend(params: GammaGammaParams, customers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Repeat buyers whose purchase values are Gamma(p, nu) with nu ~ Gamma(q, rate v)."""
    rng = np.random.default_rng(seed)
    frequency = 1 + rng.poisson(2.0, customers)
    nu = rng.gamma(params.q, 1.0 / params.v, customers)
    # The sum of x Gamma(p, nu) values is Gamma(p x, nu).
    mean_spend = rng.gamma(params.p * frequency, 1.0 / nu) / frequency
    return frequency.astype(float), mean_spend


def within_standard_errors(estimate: float, truth: float, error: float, how_many: float = 4.0) -> bool:
    return abs(estimate - truth) <= how_many * error


class TestFitBgNbd:
    TRUTH = BgNbdParams(r=0.5, alpha=5.0, a=0.8, b=2.5)

    def test_recovers_the_parameters_of_simulated_customers(self) -> None:
        frequency, recency, age = simulate_bgnbd(self.TRUTH, 30_000, seed=7)
        fitted, diagnostics = fit_bgnbd(frequency, recency, age)
        assert diagnostics.converged
        assert diagnostics.customers == 30_000
        for name in ("r", "alpha", "a", "b"):
            estimate, truth = getattr(fitted, name), getattr(self.TRUTH, name)
            error = diagnostics.standard_errors[name]
            assert 0 < error < 0.25 * truth, name
            assert within_standard_errors(estimate, truth, error), (name, estimate, truth, error)

    def test_the_optimum_has_the_highest_likelihood_around_it(self) -> None:
        frequency, recency, age = simulate_bgnbd(self.TRUTH, 3_000, seed=11)
        fitted, diagnostics = fit_bgnbd(frequency, recency, age)
        best = models.bgnbd_log_likelihood(fitted, frequency, recency, age)
        assert best == pytest.approx(diagnostics.log_likelihood, rel=1e-9)
        for name in ("r", "alpha", "a", "b"):
            for factor in (0.98, 1.02):
                moved = BgNbdParams(**{**vars(fitted), name: getattr(fitted, name) * factor})
                assert models.bgnbd_log_likelihood(moved, frequency, recency, age) < best

    def test_collapsing_identical_customers_changes_nothing(self) -> None:
        frequency, recency, age = simulate_bgnbd(self.TRUTH, 2_000, seed=3)
        age = np.round(age)  # many ties
        recency = np.minimum(np.round(recency), age)
        once, _ = fit_bgnbd(frequency, recency, age)
        twice, diagnostics = fit_bgnbd(np.tile(frequency, 2), np.tile(recency, 2), np.tile(age, 2))
        assert diagnostics.distinct_rows < 2_000
        for name in ("r", "alpha", "a", "b"):
            assert getattr(twice, name) == pytest.approx(getattr(once, name), rel=1e-4)

    def test_the_analytic_gradient_matches_finite_differences(self) -> None:
        frequency, recency, age = simulate_bgnbd(self.TRUTH, 500, seed=5)
        objective = models._bgnbd_objective(frequency, recency, age, np.ones_like(frequency))
        for point in (np.log([0.5, 5.0, 0.8, 2.5]), np.log([2.0, 1.0, 3.0, 0.7])):
            analytic = objective(point)[1]
            numeric = optimize.approx_fprime(point, lambda p: objective(p)[0], 1e-7)
            np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-3)

    def test_no_repeat_buyers_is_refused_with_a_reason(self) -> None:
        with pytest.raises(ModelFitError, match="repeat purchase"):
            fit_bgnbd(np.zeros(50), np.zeros(50), np.full(50, 30.0))

    def test_a_handful_of_customers_is_refused(self) -> None:
        with pytest.raises(ModelFitError, match="at least 10 customers"):
            fit_bgnbd([1, 2, 0, 3], [2.0, 5.0, 0.0, 9.0], [10.0, 10.0, 10.0, 10.0])

    def test_data_without_any_sign_of_drop_out_is_refused_not_returned_as_nonsense(self) -> None:
        # Everyone bought right up to the end: nothing identifies the drop-out process.
        frequency = np.tile([2.0, 4.0, 6.0], 20)
        age = np.full(60, 30.0)
        with pytest.raises(ModelFitError):
            fit_bgnbd(frequency, age, age)

    @pytest.mark.parametrize(
        ("frequency", "recency", "age", "problem"),
        [
            ([1.0], [5.0], [4.0], "recency must not exceed T"),
            ([1.5], [1.0], [4.0], "whole numbers"),
            ([0.0], [1.0], [4.0], "recency must be 0"),
            ([float("nan")], [1.0], [4.0], "NaN"),
            ([1.0, 2.0], [1.0], [4.0], "differ in length"),
        ],
    )
    def test_inconsistent_inputs_are_named(
        self, frequency: list[float], recency: list[float], age: list[float], problem: str
    ) -> None:
        with pytest.raises(ValueError, match=problem):
            fit_bgnbd(frequency, recency, age)


def _individual_integrals(
    params: BgNbdParams, x: float, t_x: float, age: float, horizon: float
) -> tuple[float, float, float]:
    """(alive mass, total mass, alive mass times purchases expected over the horizon), integrating the
    BG/NBD's individual-level likelihood over its Gamma and Beta mixing distributions."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_prior_constant = r * math.log(alpha) - special.gammaln(r) - special.betaln(a, b)

    def prior(rate: float, p: float) -> float:
        return (
            math.exp(log_prior_constant + (r - 1) * math.log(rate) - alpha * rate)
            * p ** (a - 1)
            * (1 - p) ** (b - 1)
        )

    def alive(p: float, rate: float) -> float:
        return (1 - p) ** x * rate**x * math.exp(-rate * age) * prior(rate, p)

    def dropped(p: float, rate: float) -> float:
        if x == 0:
            return 0.0
        return p * (1 - p) ** (x - 1) * rate**x * math.exp(-rate * t_x) * prior(rate, p)

    def alive_purchases(p: float, rate: float) -> float:
        # A living customer's expected purchases over the horizon: (1 - e^{-lambda p t}) / p.
        return alive(p, rate) * -math.expm1(-rate * p * horizon) / p

    options = {"epsabs": 0.0, "epsrel": 1e-10}
    alive_mass = integrate.dblquad(alive, 0.0, np.inf, 0.0, 1.0, **options)[0]
    dropped_mass = integrate.dblquad(dropped, 0.0, np.inf, 0.0, 1.0, **options)[0]
    purchases = integrate.dblquad(alive_purchases, 0.0, np.inf, 0.0, 1.0, **options)[0]
    return alive_mass, alive_mass + dropped_mass, purchases


class TestBgNbdPredictions:
    CASES = [
        (BgNbdParams(r=1.3, alpha=3.0, a=2.2, b=4.0), 2.0, 6.0, 10.0, 5.0),
        (BgNbdParams(r=1.1, alpha=5.0, a=0.8, b=2.4), 4.0, 20.0, 39.0, 39.0),
        (BgNbdParams(r=2.0, alpha=8.0, a=1.5, b=1.2), 1.0, 1.0, 30.0, 12.0),
        (BgNbdParams(r=1.5, alpha=4.0, a=0.7, b=3.0), 0.0, 0.0, 12.0, 26.0),
    ]

    @pytest.mark.parametrize(("params", "x", "t_x", "age", "horizon"), CASES)
    def test_closed_forms_agree_with_integrating_the_model(
        self, params: BgNbdParams, x: float, t_x: float, age: float, horizon: float
    ) -> None:
        alive_mass, total_mass, purchases_mass = _individual_integrals(params, x, t_x, age, horizon)
        assert probability_alive(params, [x], [t_x], [age])[0] == pytest.approx(
            alive_mass / total_mass, rel=1e-6
        )
        expected = expected_purchases(params, horizon, [x], [t_x], [age])[0]
        assert expected == pytest.approx(purchases_mass / total_mass, rel=1e-6)

    def test_the_first_purchase_alone_means_alive(self) -> None:
        params = BgNbdParams(r=0.24, alpha=4.4, a=0.79, b=2.4)
        assert probability_alive(params, [0.0, 0.0], [0.0, 0.0], [1.0, 500.0]).tolist() == [1.0, 1.0]

    def test_a_long_silence_after_many_purchases_means_almost_surely_gone(self) -> None:
        params = BgNbdParams(r=0.24, alpha=4.4, a=0.79, b=2.4)
        p = probability_alive(params, [40.0, 40.0], [20.0, 20.0], [21.0, 200.0])
        assert p[0] > 0.5
        assert 0 < p[1] < 1e-10

    def test_heavy_buyers_stay_finite_and_grow_with_the_horizon(self) -> None:
        params = BgNbdParams(r=0.24, alpha=4.4, a=0.79, b=2.4)
        horizons = [0.0, 1.0, 10.0, 52.0, 520.0]
        values = [expected_purchases(params, h, [500.0], [99.0], [100.0])[0] for h in horizons]
        assert values[0] == 0.0
        assert all(np.isfinite(values))
        assert values == sorted(values)
        # Five a week until a week ago: if still alive, the posterior rate (r + x) / (alpha + T)
        # per week, less a little drop-out along the way.
        alive = probability_alive(params, [500.0], [99.0], [100.0])[0]
        posterior_rate = (params.r + 500.0) / (params.alpha + 100.0)
        assert 0.5 < alive < 0.95
        assert values[1] == pytest.approx(alive * posterior_rate, rel=0.01)

    def test_a_equal_to_one_is_the_limit_of_its_neighbours(self) -> None:
        near = [BgNbdParams(0.5, 4.0, 1.0 + d, 2.0) for d in (-1e-3, 0.0, 1e-3)]
        values = [expected_purchases(p, 20.0, [3.0], [8.0], [15.0])[0] for p in near]
        assert values[1] == pytest.approx((values[0] + values[2]) / 2, rel=1e-4)


class TestGammaGamma:
    TRUTH = GammaGammaParams(p=6.0, q=4.0, v=15.0)

    def test_recovers_the_parameters_of_simulated_spend(self) -> None:
        frequency, mean_spend = simulate_spend(self.TRUTH, 8_000, seed=21)
        fitted, diagnostics = fit_gamma_gamma(frequency, mean_spend)
        assert diagnostics.converged
        for name in ("p", "q", "v"):
            estimate, truth = getattr(fitted, name), getattr(self.TRUTH, name)
            assert within_standard_errors(estimate, truth, diagnostics.standard_errors[name]), name

    def test_only_repeat_buyers_with_spend_take_part(self) -> None:
        frequency, mean_spend = simulate_spend(self.TRUTH, 500, seed=2)
        with_one_timers = np.r_[frequency, np.zeros(300)]
        with_zero_spend = np.r_[mean_spend, np.zeros(300)]
        fitted, diagnostics = fit_gamma_gamma(with_one_timers, with_zero_spend)
        alone, _ = fit_gamma_gamma(frequency, mean_spend)
        assert diagnostics.customers == 500
        assert fitted == alone

    def test_expected_spend_is_the_posterior_mean(self) -> None:
        params = GammaGammaParams(p=6.25, q=3.74, v=15.44)
        x, m = 3.0, 40.0

        # nu | data ~ Gamma(q + p x, rate v + x m); the spend per purchase is p / nu.
        shape, rate = params.q + params.p * x, params.v + x * m
        mode = (shape - 1) / rate

        def density(nu: float) -> float:  # unnormalised, scaled to 1 at the mode
            return math.exp((shape - 1) * math.log(nu / mode) - rate * (nu - mode))

        bounds = (0.0, 20 * mode)
        mass = integrate.quad(density, *bounds, points=[mode], epsrel=1e-12)[0]
        mean = integrate.quad(lambda nu: params.p / nu * density(nu), *bounds, points=[mode], epsrel=1e-12)[0]
        mean /= mass
        assert expected_average_spend(params, [x], [m])[0] == pytest.approx(mean, rel=1e-7)

    def test_one_time_buyers_get_the_population_mean(self) -> None:
        params = GammaGammaParams(p=6.25, q=3.74, v=15.44)
        spend = expected_average_spend(params, [0.0, 0.0], [0.0, 99.0])
        assert spend.tolist() == pytest.approx([params.population_mean_spend] * 2)

    def test_identical_spend_is_refused(self) -> None:
        with pytest.raises(ModelFitError, match="spread"):
            fit_gamma_gamma(np.full(30, 2.0), np.full(30, 25.0))

    def test_too_few_repeat_buyers_are_refused(self) -> None:
        with pytest.raises(ModelFitError, match="at least 10 repeat buyers"):
            fit_gamma_gamma([1.0, 2.0, 0.0], [10.0, 20.0, 0.0])

    def test_spend_without_a_finite_mean_is_refused(self) -> None:
        rng = np.random.default_rng(4)
        # Pareto spend with tail index 0.8: no finite mean, so neither has the fitted model.
        frequency = np.ones(3_000)
        mean_spend = 10.0 * (1.0 + rng.pareto(0.8, 3_000))
        with pytest.raises(ModelFitError, match="q = |ran off"):
            fit_gamma_gamma(frequency, mean_spend)


class TestCustomerLifetimeValue:
    BGNBD = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    SPEND = GammaGammaParams(p=6.25, q=3.74, v=15.44)
    HISTORY = ([0.0, 2.0, 7.0], [0.0, 30.43, 35.0], [38.86, 38.86, 38.86], [0.0, 22.35, 41.0])

    def test_without_discount_it_is_spend_times_purchases_over_the_whole_horizon(self) -> None:
        x, t_x, age, m = self.HISTORY
        clv = customer_lifetime_value(
            self.BGNBD,
            self.SPEND,
            x,
            t_x,
            age,
            m,
            horizon_periods=12,
            period_length=52 / 12,
            discount_rate_per_period=0.0,
        )
        expected = expected_average_spend(self.SPEND, x, m) * expected_purchases(
            self.BGNBD, 52.0, x, t_x, age
        )
        np.testing.assert_allclose(clv, expected, rtol=1e-10)

    def test_each_period_is_discounted_at_its_end(self) -> None:
        x, t_x, age, m = self.HISTORY
        spend = expected_average_spend(self.SPEND, x, m)
        first = expected_purchases(self.BGNBD, 4.0, x, t_x, age)
        both = expected_purchases(self.BGNBD, 8.0, x, t_x, age)
        by_hand = spend * (first / 1.1 + (both - first) / 1.1**2)
        clv = customer_lifetime_value(
            self.BGNBD,
            self.SPEND,
            x,
            t_x,
            age,
            m,
            horizon_periods=2,
            period_length=4.0,
            discount_rate_per_period=0.1,
        )
        np.testing.assert_allclose(clv, by_hand, rtol=1e-12)

    def test_more_discount_means_less_value_and_no_horizon_none(self) -> None:
        x, t_x, age, m = self.HISTORY
        values = [
            customer_lifetime_value(
                self.BGNBD,
                self.SPEND,
                x,
                t_x,
                age,
                m,
                horizon_periods=periods,
                period_length=4.33,
                discount_rate_per_period=rate,
            )
            for periods, rate in ((12, 0.0), (12, 0.01), (12, 0.05), (0, 0.01))
        ]
        assert np.all(values[0] > values[1]) and np.all(values[1] > values[2])
        assert values[3].tolist() == [0.0, 0.0, 0.0]
