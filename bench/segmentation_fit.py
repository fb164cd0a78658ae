"""Model fitting: our BG/NBD and Gamma-Gamma against the `lifetimes` package, same data, same run."""

from __future__ import annotations

import importlib.util
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np

from bench.registry import Context, Result, Table, Target, benchmark
from segmentation_worker.domain import models
from segmentation_worker.domain.analysis import Transactions, purchase_days, summarise

TARGET_SPEEDUP = 2.0
TARGET_DIGITS = 4.0
CALIBRATION_END = date(1997, 9, 30)


@dataclass(frozen=True)
class Dataset:
    name: str
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    monetary_mean: np.ndarray

    @property
    def customers(self) -> int:
        return int(self.frequency.size)


def _datasets_folder() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or spec.origin is None:
        raise RuntimeError("the baseline needs `lifetimes`: .venv/bin/pip install -r requirements-dev.txt")
    return Path(spec.origin).parent / "datasets"


def _load(
    path: Path, *, customer_field: int, day_field: int, amount_field: int, skip_header: bool
) -> Dataset:
    """A CDNOW file (whitespace-separated) summarised as in the paper: calibration to 1997-09-30, weeks."""
    ids: dict[str, int] = {}
    customer, day, amount = [], [], []
    with path.open() as lines:
        if skip_header:
            next(lines)
        for line in lines:
            fields = line.split()
            yyyymmdd = fields[day_field]
            customer.append(ids.setdefault(fields[customer_field], len(ids)))
            day.append(date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:])).toordinal())
            amount.append(float(fields[amount_field]))
    transactions = Transactions(
        list(ids), np.asarray(customer, np.int64), np.asarray(day, np.int64), np.asarray(amount, np.float64)
    )
    summary = summarise(purchase_days(transactions), CALIBRATION_END.toordinal(), days_per_unit=7)
    return Dataset(path.stem, summary.frequency, summary.recency, summary.T, summary.monetary_mean)


Fitted = tuple[dict[str, float], dict[str, float]]


def _timed(fit: Callable[[], Fitted], repeats: int) -> tuple[float, Fitted]:
    """The best time of `repeats` fits (after one warm-up), and the last fit's result.

    The best, not the median: on a machine shared with other work, the slower runs measure the
    other work; the fastest is the closest to what the fit itself costs, for both contenders."""
    result = fit()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fit()
        seconds.append(time.perf_counter() - started)
    return min(seconds), result


def _ours(data: Dataset) -> Fitted:
    bgnbd, _ = models.fit_bgnbd(data.frequency, data.recency, data.T)
    spend, _ = models.fit_gamma_gamma(data.frequency, data.monetary_mean)
    return vars(bgnbd), vars(spend)


def _lifetimes(data: Dataset, *, weighted: bool) -> Fitted:
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    repeaters = (data.frequency > 0) & (data.monetary_mean > 0)
    if weighted:
        # lifetimes can take identical customers as one weighted row, as ours always does.
        rows, counts = np.unique(
            np.column_stack([data.frequency, data.recency, data.T]), axis=0, return_counts=True
        )
        bgnbd = BetaGeoFitter().fit(rows[:, 0], rows[:, 1], rows[:, 2], weights=counts)
    else:
        bgnbd = BetaGeoFitter().fit(data.frequency, data.recency, data.T)
    spend = GammaGammaFitter().fit(data.frequency[repeaters], data.monetary_mean[repeaters])
    return (
        {name: float(bgnbd.params_[name]) for name in ("r", "alpha", "a", "b")},
        {name: float(spend.params_[name]) for name in ("p", "q", "v")},
    )


def _agreeing_digits(ours: float, theirs: float) -> float:
    difference = abs(ours - theirs) / abs(theirs)
    return 16.0 if difference == 0 else -math.log10(difference)


@benchmark(
    "segmentation_fit",
    title="Model fit (BG/NBD + Gamma-Gamma) against the lifetimes package",
    targets=(
        Target(
            "speedup",
            TARGET_SPEEDUP,
            f"≥ {TARGET_SPEEDUP:g}× faster than lifetimes on the same data (issue 4)",
        ),
        Target(
            "agreeing_digits",
            TARGET_DIGITS,
            f"the same parameters as lifetimes to ≥ {TARGET_DIGITS:g} significant digits (issue 4)",
        ),
    ),
)
def segmentation_fit(ctx: Context) -> Result:
    """The CDNOW data shipped with lifetimes, summarised as in Fader, Hardie & Lee (2005): calibration
    period up to 1997-09-30, weeks, the 1/10 sample (2,357 customers) and, unless --quick, the full
    master file (23,570 customers). On each, one fit is BG/NBD on every customer plus Gamma-Gamma on
    the repeat buyers. Ours (numpy/scipy, analytic gradients, identical customers collapsed into
    weighted rows) and the lifetimes 0.11.3 fitters (autograd gradients, called with their defaults)
    fit the same arrays in this process, one after the other; each time is the best of several fits
    after a warm-up. Speedup is lifetimes' time over ours on the largest data set. Agreeing digits is
    the smallest, over all seven parameters and data sets, of -log10 of the relative difference.
    lifetimes fed weighted rows (its `weights` argument) is timed too, for information."""
    folder = _datasets_folder()
    datasets = [
        _load(folder / "CDNOW_sample.txt", customer_field=1, day_field=2, amount_field=4, skip_header=False)
    ]
    if not ctx.quick:
        datasets.append(
            _load(
                folder / "CDNOW_master.txt", customer_field=0, day_field=1, amount_field=3, skip_header=True
            )
        )
    repeats = 2 if ctx.quick else 5
    result = Result(
        parameters={
            "data": ", ".join(f"{d.name} ({d.customers:,} customers)" for d in datasets),
            "repeats": f"best of {repeats} fits after a warm-up, for each contender",
        }
    )
    parameter_rows: list[list[str]] = []
    digits: list[float] = []
    speedup = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifetimes and pandas talk about deprecations
        for data in datasets:
            ours_s, ours = _timed(partial(_ours, data), repeats)
            theirs_s, theirs = _timed(partial(_lifetimes, data, weighted=False), repeats)
            weighted_s, _ = _timed(partial(_lifetimes, data, weighted=True), repeats)
            result.add(f"{data.name}_ours_s", f"{data.name}: ours", ours_s, "s")
            result.add(f"{data.name}_lifetimes_s", f"{data.name}: lifetimes (baseline)", theirs_s, "s")
            result.add(
                f"{data.name}_lifetimes_weighted_s", f"{data.name}: lifetimes with weights", weighted_s, "s"
            )
            speedup = theirs_s / ours_s
            result.add(f"{data.name}_speedup", f"{data.name}: lifetimes time / ours", speedup, "×")
            for our_params, their_params in zip(ours, theirs, strict=True):
                for name, value in our_params.items():
                    agreement = _agreeing_digits(value, their_params[name])
                    digits.append(agreement)
                    parameter_rows.append(
                        [data.name, name, f"{value:.6g}", f"{their_params[name]:.6g}", f"{agreement:.1f}"]
                    )
    result.add("speedup", f"speedup on {datasets[-1].name} (lifetimes time / ours)", speedup, "×")
    result.add("agreeing_digits", "significant digits the parameters agree to (worst)", min(digits), "digits")
    result.tables.append(
        Table("Fitted parameters", ["data", "parameter", "ours", "lifetimes", "digits"], parameter_rows)
    )
    return result
