"""Validation on the real CDNOW data: our fits reproduce the published parameters.

The data ship inside the `lifetimes` package (a test-only dependency, requirements-dev.txt); its
files are read by path, lifetimes' own code is not used. The published figures:

- BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): the 2,357 customers
  of the 1/10 CDNOW sample who first bought in the first quarter of 1997, calibration period up
  to 1997-09-30, time in weeks: r = 0.243, alpha = 4.414, a = 0.793, b = 2.426.
- Gamma-Gamma (Fader & Hardie 2013, "The Gamma-Gamma model of monetary value"): the same
  calibration period, the 946 customers with repeat purchases and the mean value of those repeat
  purchases: p = 6.25, q = 3.74, gamma (our v) = 15.44.
"""

from __future__ import annotations

import csv
import importlib.util
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from segmentation_worker.domain.analysis import Transactions, purchase_days, summarise
from segmentation_worker.domain.models import fit_bgnbd, fit_gamma_gamma


def _lifetimes_datasets() -> Path | None:
    spec = importlib.util.find_spec("lifetimes")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "datasets"
    return folder if (folder / "CDNOW_sample.txt").exists() else None


DATASETS = _lifetimes_datasets()
pytestmark = pytest.mark.skipif(
    DATASETS is None,
    reason="the CDNOW data ship with the test-only dependency `lifetimes` "
    "(pip install -r requirements-dev.txt)",
)

CALIBRATION_END = date(1997, 9, 30)
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "v": 15.44}


def _cdnow_sample() -> Transactions:
    """CDNOW_sample.txt: master id, sample id, yyyymmdd, number of CDs, dollar value (whitespace)."""
    assert DATASETS is not None
    ids: dict[str, int] = {}
    customer, day, amount = [], [], []
    with (DATASETS / "CDNOW_sample.txt").open() as lines:
        for line in lines:
            _master_id, sample_id, yyyymmdd, _cds, dollars = line.split()
            customer.append(ids.setdefault(sample_id, len(ids)))
            day.append(date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:])).toordinal())
            amount.append(float(dollars))
    return Transactions(
        customer_ids=list(ids),
        customer=np.asarray(customer, dtype=np.int64),
        day=np.asarray(day, dtype=np.int64),
        amount=np.asarray(amount, dtype=np.float64),
    )


def _within_one_percent(fitted: object, published: dict[str, float]) -> None:
    for name, value in published.items():
        assert getattr(fitted, name) == pytest.approx(value, rel=0.01), name


class TestCdnowValidation:
    def test_our_summary_of_the_raw_transactions_is_the_published_one(self) -> None:
        transactions = _cdnow_sample()
        summary = summarise(purchase_days(transactions), CALIBRATION_END.toordinal(), days_per_unit=7)
        assert DATASETS is not None
        with (DATASETS / "cdnow_customers_summary_with_transactions.csv").open() as file:
            published = {row["ID"]: row for row in csv.DictReader(file)}
        assert summary.customer.size == len(published) == 2357
        for position, index in enumerate(summary.customer.tolist()):
            row = published[str(int(transactions.customer_ids[index]))]
            assert summary.frequency[position] == int(row["x"])
            assert summary.recency[position] == pytest.approx(float(row["t_x"]), abs=0.006)
            assert summary.T[position] == pytest.approx(float(row["T"]), abs=0.006)
            assert summary.monetary_mean[position] == pytest.approx(float(row["zbar"]), abs=0.006)

    def test_bgnbd_reproduces_the_published_parameters(self) -> None:
        summary = summarise(purchase_days(_cdnow_sample()), CALIBRATION_END.toordinal(), days_per_unit=7)
        fitted, diagnostics = fit_bgnbd(summary.frequency, summary.recency, summary.T)
        _within_one_percent(fitted, PUBLISHED_BGNBD)
        assert diagnostics.customers == 2357
        # The paper's log-likelihood at its optimum is -9582.4.
        assert diagnostics.log_likelihood == pytest.approx(-9582.4, abs=0.1)

    def test_gamma_gamma_reproduces_the_published_parameters(self) -> None:
        summary = summarise(purchase_days(_cdnow_sample()), CALIBRATION_END.toordinal(), days_per_unit=7)
        fitted, diagnostics = fit_gamma_gamma(summary.frequency, summary.monetary_mean)
        _within_one_percent(fitted, PUBLISHED_GAMMA_GAMMA)
        assert diagnostics.customers == 946

    def test_the_shipped_summary_gives_the_same_fit(self) -> None:
        assert DATASETS is not None
        with (DATASETS / "cdnow_customers_summary_with_transactions.csv").open() as file:
            rows = list(csv.DictReader(file))
        x, t_x, age, zbar = (np.array([float(row[key]) for row in rows]) for key in ("x", "t_x", "T", "zbar"))
        bgnbd, _ = fit_bgnbd(x, t_x, age)
        spend, _ = fit_gamma_gamma(x, zbar)
        _within_one_percent(bgnbd, PUBLISHED_BGNBD)
        _within_one_percent(spend, PUBLISHED_GAMMA_GAMMA)
