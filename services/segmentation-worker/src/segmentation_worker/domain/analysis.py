"""Offline analysis of a transaction file: the pipeline behind `retention analyze`.

CSV rows -> per-customer summary of a calibration period -> BG/NBD and Gamma-Gamma fits ->
per-customer RFM scores, segment and predictions -> comparison with what happened after the
calibration period (the holdout). Plain Python, numpy and the csv module; no framework, so the
command works with no servers and the same code can be tested on small files.

Definitions (the ones the models expect and the CDNOW validation uses):

- Purchases on the same calendar day count as one purchase (their amounts are added up).
- `frequency` is the number of purchase days after the first one within the calibration period,
  `recency` the time from the first to the last purchase day, `T` the time from the first
  purchase day to the calibration end, all in the chosen time unit (days or weeks).
- `monetary_mean` is the mean amount of the repeat purchase days (the first purchase left out,
  as the Gamma-Gamma model expects); `total_spend` all calibration spend, used for the RFM
  monetary score.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal, TextIO

import numpy as np
from numpy.typing import NDArray

from segmentation_worker.domain import models
from segmentation_worker.domain.segments import SCHEMES, SegmentScheme, assign_segments, score_quintiles

TimeUnit = Literal["days", "weeks"]
DAYS_PER_UNIT: dict[str, int] = {"days": 1, "weeks": 7}
DAYS_PER_MONTH = 365.25 / 12
DEFAULT_HORIZON: dict[str, float] = {"days": 365.0, "weeks": 52.0}  # a year
FREQUENCY_GROUPS = 8  # the holdout table groups calibration frequencies 0..6 and "7 or more"

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class TransactionFileError(ValueError):
    """The file cannot be analysed; `line` is the 1-based line of the file at fault, if any."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


@dataclass(frozen=True)
class Columns:
    """Which CSV columns hold the customer, the date and the amount of each transaction."""

    customer: str
    date: str
    amount: str


@dataclass(frozen=True)
class Transactions:
    """Every row of the file: customer index (into `customer_ids`), day (proleptic ordinal), amount."""

    customer_ids: list[str]
    customer: IntArray
    day: IntArray
    amount: FloatArray

    @property
    def rows(self) -> int:
        return int(self.day.size)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _date_parser(date_format: str | None) -> Callable[[str], date]:
    if date_format:
        return lambda text: datetime.strptime(text, date_format).date()

    def iso(text: str) -> date:
        # 2024-05-01, 20240501, or a timestamp such as 2024-05-01T09:30:00+09:00 (its own calendar
        # day is taken, in the time zone it was written in).
        if len(text) <= 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()

    return iso


def read_transactions(
    stream: TextIO,
    columns: Columns,
    *,
    delimiter: str = ",",
    date_format: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 50_000,
) -> Transactions:
    """Read and check every row; raises TransactionFileError naming the line of the first bad row.

    `on_progress(rows)` is called every `progress_every` rows (for a progress bar).
    """
    reader = csv.reader(stream, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise TransactionFileError("the file is empty (no header line)", 1) from None
    except csv.Error as exc:
        raise TransactionFileError(f"not readable as CSV: {exc}", reader.line_num) from None
    header = [name.strip() for name in header]
    wanted = {"customer": columns.customer, "date": columns.date, "amount": columns.amount}
    missing = [f"{role} column {name!r}" for role, name in wanted.items() if name not in header]
    if missing:
        raise TransactionFileError(
            f"missing {', '.join(missing)}; the header has: {', '.join(repr(name) for name in header)}", 1
        )
    customer_at, date_at, amount_at = (header.index(name) for name in wanted.values())
    needed = max(customer_at, date_at, amount_at) + 1
    parse_date = _date_parser(date_format)

    customer_index: dict[str, int] = {}
    day_of: dict[str, int] = {}  # dates repeat a lot: parse each distinct string once
    customers: list[int] = []
    days: list[int] = []
    amounts: list[float] = []
    try:
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) < needed:
                raise TransactionFileError(f"expected at least {needed} fields, found {len(row)}", line)
            customer_id = row[customer_at].strip()
            if not customer_id:
                raise TransactionFileError(f"empty customer id in column {columns.customer!r}", line)
            date_text = row[date_at].strip()
            day = day_of.get(date_text)
            if day is None:
                try:
                    day = parse_date(date_text).toordinal()
                except ValueError:
                    expected = f"format {date_format!r}" if date_format else "an ISO date such as 2024-05-31"
                    raise TransactionFileError(
                        f"cannot read date {date_text!r} in column {columns.date!r} (expected {expected})",
                        line,
                    ) from None
                day_of[date_text] = day
            amount_text = row[amount_at].strip()
            try:
                amount = float(amount_text)
            except ValueError:
                raise TransactionFileError(
                    f"cannot read amount {amount_text!r} in column {columns.amount!r} as a number", line
                ) from None
            if not math.isfinite(amount):
                raise TransactionFileError(f"amount {amount_text!r} is not a finite number", line)
            if amount < 0:
                raise TransactionFileError(
                    f"negative amount {amount_text} in column {columns.amount!r}: net refunds against their "
                    "purchases before the analysis",
                    line,
                )
            index = customer_index.setdefault(customer_id, len(customer_index))
            customers.append(index)
            days.append(day)
            amounts.append(amount)
            if on_progress is not None and len(days) % progress_every == 0:
                on_progress(len(days))
    except csv.Error as exc:
        raise TransactionFileError(f"not readable as CSV: {exc}", reader.line_num) from None
    if not days:
        raise TransactionFileError("the file has a header but no transactions")
    if on_progress is not None:
        on_progress(len(days))
    return Transactions(
        customer_ids=list(customer_index),
        customer=np.asarray(customers, dtype=np.int64),
        day=np.asarray(days, dtype=np.int64),
        amount=np.asarray(amounts, dtype=np.float64),
    )


# ---------------------------------------------------------------------------------------------
# Per-customer summary
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurchaseDays:
    """Transactions merged into one row per customer and purchase day, sorted by customer, day."""

    customer: IntArray
    day: IntArray
    amount: FloatArray


def purchase_days(transactions: Transactions) -> PurchaseDays:
    """Same-day purchases of a customer count once; their amounts are added up."""
    order = np.lexsort((transactions.day, transactions.customer))
    customer = transactions.customer[order]
    day = transactions.day[order]
    amount = transactions.amount[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(customer) != 0) | (np.diff(day) != 0)])
    return PurchaseDays(customer=customer[starts], day=day[starts], amount=np.add.reduceat(amount, starts))


@dataclass(frozen=True)
class CustomerSummary:
    """The calibration-period history of each customer who bought in it (the models' inputs)."""

    customer: IntArray  # index into Transactions.customer_ids
    frequency: FloatArray
    recency: FloatArray
    T: FloatArray
    monetary_mean: FloatArray
    total_spend: FloatArray
    purchase_days: IntArray
    days_since_last: IntArray  # at the calibration end, for the RFM recency score
    first_day: IntArray


def summarise(days: PurchaseDays, calibration_end: int, days_per_unit: int) -> CustomerSummary:
    """The summary of the purchase days up to and including `calibration_end` (an ordinal day)."""
    inside = days.day <= calibration_end
    customer, day, amount = days.customer[inside], days.day[inside], days.amount[inside]
    if customer.size == 0:
        raise TransactionFileError("no transactions on or before the calibration end")
    starts = np.flatnonzero(np.r_[True, np.diff(customer) != 0])
    ends = np.r_[starts[1:], customer.size] - 1
    count = ends - starts + 1
    first_day, last_day = day[starts], day[ends]
    total = np.add.reduceat(amount, starts)
    repeat_amount = amount.copy()
    repeat_amount[starts] = 0.0  # summed separately, not subtracted, so no rounding residue
    repeats = count - 1
    monetary_mean = np.add.reduceat(repeat_amount, starts) / np.maximum(repeats, 1)
    return CustomerSummary(
        customer=customer[starts],
        frequency=repeats.astype(np.float64),
        recency=(last_day - first_day) / days_per_unit,
        T=(calibration_end - first_day) / days_per_unit,
        monetary_mean=monetary_mean.astype(np.float64),
        total_spend=total,
        purchase_days=count.astype(np.int64),
        days_since_last=(calibration_end - last_day).astype(np.int64),
        first_day=first_day,
    )


# ---------------------------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisOptions:
    calibration_end: date | None = None  # default: the last day in the file (no holdout)
    time_unit: TimeUnit = "weeks"
    horizon: float | None = None  # in time units; default a year (365 days or 52 weeks)
    clv_months: int = 12
    monthly_discount_rate: float = 0.01
    segment_scheme: str = "standard"

    @property
    def days_per_unit(self) -> int:
        return DAYS_PER_UNIT[self.time_unit]

    @property
    def horizon_units(self) -> float:
        return self.horizon if self.horizon is not None else DEFAULT_HORIZON[self.time_unit]


@dataclass(frozen=True)
class Models:
    bgnbd: models.BgNbdParams | None = None
    bgnbd_diagnostics: models.FitDiagnostics | None = None
    gamma_gamma: models.GammaGammaParams | None = None
    gamma_gamma_diagnostics: models.FitDiagnostics | None = None
    problems: tuple[str, ...] = ()  # why a model could not be fitted


@dataclass(frozen=True)
class HoldoutComparison:
    """Predicted against actual repeat purchases after the calibration end."""

    start: date  # the day after the calibration end
    end: date  # the last day in the file
    length: float  # in time units
    actual: FloatArray  # per customer of the summary
    predicted: FloatArray | None  # None without a BG/NBD fit
    new_customers: int  # first bought in the holdout: not in the calibration summary
    by_frequency: list[dict[str, float]] = field(default_factory=list)

    @property
    def actual_total(self) -> float:
        return float(self.actual.sum())

    @property
    def predicted_total(self) -> float | None:
        return None if self.predicted is None else float(self.predicted.sum())

    @property
    def mean_absolute_error(self) -> float | None:
        return None if self.predicted is None else float(np.mean(np.abs(self.predicted - self.actual)))

    @property
    def correlation(self) -> float | None:
        if self.predicted is None or self.actual.size < 2 or np.ptp(self.actual) == 0:
            return None
        return float(np.corrcoef(self.predicted, self.actual)[0, 1])


@dataclass(frozen=True)
class CohortRetention:
    """Share of each monthly cohort (by first purchase month) buying again k months later."""

    cohorts: list[str]  # "2024-01"
    sizes: list[int]
    shares: FloatArray  # [cohort, months since first purchase], NaN where not observed yet


@dataclass(frozen=True)
class Analysis:
    options: AnalysisOptions
    first_day: date
    calibration_end: date
    last_day: date
    transactions: int
    customer_ids: list[str]  # of the summary's customers, in the summary's order
    summary: CustomerSummary
    r_score: NDArray[np.int8]
    f_score: NDArray[np.int8]
    m_score: NDArray[np.int8]
    segment: NDArray[np.str_]
    scheme: SegmentScheme
    models: Models
    probability_alive: FloatArray | None
    expected_purchases: FloatArray | None
    expected_average_spend: FloatArray | None
    clv: FloatArray | None
    holdout: HoldoutComparison | None
    cohorts: CohortRetention

    @property
    def customers(self) -> int:
        return int(self.summary.customer.size)

    def segment_sizes(self) -> list[tuple[str, str, int]]:
        """(name, label, customers) for every segment of the scheme, in the scheme's order."""
        names, counts = np.unique(self.segment, return_counts=True)
        found = dict(zip(names.tolist(), counts.tolist(), strict=True))
        return [
            (name, self.scheme.label_of(name), int(found.get(name, 0))) for name in self.scheme.segment_names
        ]

    def columns(self, decimals: int | None = None) -> dict[str, list[object]]:
        """Every output column, one value per customer: None where a model is missing (or a value
        is not finite); floats rounded to `decimals` if given (vectorised, for large outputs)."""
        s = self.summary

        def floats(array: FloatArray | None) -> list[object]:
            if array is None:
                return [None] * self.customers
            values = np.round(array, decimals) if decimals is not None else array
            if np.all(np.isfinite(values)):
                return values.tolist()
            return [value if math.isfinite(value) else None for value in values.tolist()]

        columns: dict[str, list[object]] = {
            "customer_id": list(self.customer_ids),
            "frequency": s.frequency.astype(np.int64).tolist(),
            "recency": floats(s.recency),
            "T": floats(s.T),
            "monetary_mean": floats(s.monetary_mean),
            "total_spend": floats(s.total_spend),
            "r_score": self.r_score.tolist(),
            "f_score": self.f_score.tolist(),
            "m_score": self.m_score.tolist(),
            "segment": self.segment.tolist(),
            "probability_alive": floats(self.probability_alive),
            "expected_purchases": floats(self.expected_purchases),
            "expected_average_spend": floats(self.expected_average_spend),
            "clv": floats(self.clv),
        }
        if self.holdout is not None:
            columns["holdout_actual"] = self.holdout.actual.astype(np.int64).tolist()
            columns["holdout_predicted"] = floats(self.holdout.predicted)
        return columns

    def rows(self, decimals: int | None = None) -> Iterator[dict[str, object]]:
        """One dict per customer with every output column (see `columns`)."""
        columns = self.columns(decimals)
        names = list(columns)
        for values in zip(*columns.values(), strict=True):
            yield dict(zip(names, values, strict=True))


def analyse(
    transactions: Transactions, options: AnalysisOptions, *, on_step: Callable[[str], None] | None = None
) -> Analysis:
    """Summarise, fit, score and compare; model fit problems are reported in `models.problems`."""

    def step(name: str) -> None:
        if on_step is not None:
            on_step(name)

    if options.segment_scheme not in SCHEMES:
        raise ValueError(f"unknown segment scheme {options.segment_scheme!r}; known: {', '.join(SCHEMES)}")
    step("summarising")
    days = purchase_days(transactions)
    first_day, last_day = int(days.day.min()), int(days.day.max())
    calibration_end = options.calibration_end.toordinal() if options.calibration_end else last_day
    if calibration_end < first_day:
        raise TransactionFileError(
            f"the calibration end {date.fromordinal(calibration_end)} is before the first transaction "
            f"({date.fromordinal(first_day)})"
        )
    summary = summarise(days, calibration_end, options.days_per_unit)
    customer_ids = [transactions.customer_ids[index] for index in summary.customer.tolist()]

    step("scoring RFM")
    scheme = SCHEMES[options.segment_scheme]
    r_score, f_score, m_score = score_quintiles(
        summary.days_since_last, summary.purchase_days, summary.total_spend, summary.customer
    )
    segment = assign_segments(r_score, f_score, m_score, scheme)

    step("fitting models")
    fitted = _fit(summary)
    alive = purchases = spend = clv = None
    if fitted.bgnbd is not None:
        step("predicting")
        alive = models.probability_alive(fitted.bgnbd, summary.frequency, summary.recency, summary.T)
        purchases = models.expected_purchases(
            fitted.bgnbd, options.horizon_units, summary.frequency, summary.recency, summary.T
        )
        if fitted.gamma_gamma is not None:
            spend = models.expected_average_spend(
                fitted.gamma_gamma, summary.frequency, summary.monetary_mean
            )
            clv = models.customer_lifetime_value(
                fitted.bgnbd,
                fitted.gamma_gamma,
                summary.frequency,
                summary.recency,
                summary.T,
                summary.monetary_mean,
                horizon_periods=options.clv_months,
                period_length=DAYS_PER_MONTH / options.days_per_unit,
                discount_rate_per_period=options.monthly_discount_rate,
            )
    elif fitted.gamma_gamma is not None:
        spend = models.expected_average_spend(fitted.gamma_gamma, summary.frequency, summary.monetary_mean)

    holdout = None
    if last_day > calibration_end:
        step("comparing with the holdout")
        holdout = _holdout(days, summary, fitted.bgnbd, calibration_end, last_day, options.days_per_unit)
    step("cohorts")
    cohorts = cohort_retention(days)
    return Analysis(
        options=options,
        first_day=date.fromordinal(first_day),
        calibration_end=date.fromordinal(calibration_end),
        last_day=date.fromordinal(last_day),
        transactions=transactions.rows,
        customer_ids=customer_ids,
        summary=summary,
        r_score=r_score,
        f_score=f_score,
        m_score=m_score,
        segment=segment,
        scheme=scheme,
        models=fitted,
        probability_alive=alive,
        expected_purchases=purchases,
        expected_average_spend=spend,
        clv=clv,
        holdout=holdout,
        cohorts=cohorts,
    )


def _fit(summary: CustomerSummary) -> Models:
    problems: list[str] = []
    bgnbd = bgnbd_diagnostics = gamma_gamma = gamma_gamma_diagnostics = None
    try:
        bgnbd, bgnbd_diagnostics = models.fit_bgnbd(summary.frequency, summary.recency, summary.T)
    except models.ModelFitError as exc:
        problems.append(f"BG/NBD (probability alive, expected purchases): {exc}")
    try:
        gamma_gamma, gamma_gamma_diagnostics = models.fit_gamma_gamma(
            summary.frequency, summary.monetary_mean
        )
    except models.ModelFitError as exc:
        problems.append(f"Gamma-Gamma (expected spend, CLV): {exc}")
    return Models(bgnbd, bgnbd_diagnostics, gamma_gamma, gamma_gamma_diagnostics, tuple(problems))


def _holdout(
    days: PurchaseDays,
    summary: CustomerSummary,
    bgnbd: models.BgNbdParams | None,
    calibration_end: int,
    last_day: int,
    days_per_unit: int,
) -> HoldoutComparison:
    after = days.day > calibration_end
    # Position of each holdout purchase day's customer in the (sorted) summary, if there.
    position = np.searchsorted(summary.customer, days.customer[after])
    position = np.minimum(position, summary.customer.size - 1)
    known = summary.customer[position] == days.customer[after]
    actual = np.bincount(position[known], minlength=summary.customer.size).astype(np.float64)
    new_customers = int(np.unique(days.customer[after][~known]).size)
    length = (last_day - calibration_end) / days_per_unit
    predicted = (
        None
        if bgnbd is None
        else models.expected_purchases(bgnbd, length, summary.frequency, summary.recency, summary.T)
    )
    group = np.minimum(summary.frequency.astype(np.int64), FREQUENCY_GROUPS - 1)
    by_frequency = []
    for value in range(FREQUENCY_GROUPS):
        members = group == value
        count = int(members.sum())
        if count == 0:
            continue
        by_frequency.append(
            {
                "frequency": value,
                "or_more": value == FREQUENCY_GROUPS - 1,
                "customers": count,
                "actual_mean": float(actual[members].mean()),
                "predicted_mean": float(predicted[members].mean()) if predicted is not None else math.nan,
            }
        )
    return HoldoutComparison(
        start=date.fromordinal(calibration_end) + timedelta(days=1),
        end=date.fromordinal(last_day),
        length=length,
        actual=actual,
        predicted=predicted,
        new_customers=new_customers,
        by_frequency=by_frequency,
    )


def cohort_retention(days: PurchaseDays, max_cohorts: int = 24) -> CohortRetention:
    """Monthly cohorts by first purchase month: the share buying in each later month (the most
    recent `max_cohorts` cohorts)."""
    ordinals = np.unique(days.day)
    months_of_ordinal = np.array(
        [(d.year * 12 + d.month - 1) for d in map(date.fromordinal, ordinals.tolist())], dtype=np.int64
    )
    month = months_of_ordinal[np.searchsorted(ordinals, days.day)]
    # Rows are sorted by customer then day, so months never go down within a customer: its first
    # row is its cohort, and a change of customer or month starts a distinct (customer, month).
    new_customer = np.r_[True, np.diff(days.customer) != 0]
    distinct = new_customer | np.r_[True, np.diff(month) != 0]
    cohort_of_row = month[new_customer][np.cumsum(new_customer) - 1]
    first_month, last_month = int(month.min()), int(month.max())
    cohort_index = cohort_of_row[distinct] - first_month
    offsets = month[distinct] - cohort_of_row[distinct]
    span = last_month - first_month + 1
    cells = np.bincount(cohort_index * span + offsets, minlength=span * span)
    counts = cells.reshape(span, span).astype(np.float64)
    sizes = counts[:, 0].copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / sizes[:, None]
    # Months after the file's end are unknown, not zero.
    observable = np.arange(span)[None, :] <= (span - 1 - np.arange(span))[:, None]
    shares = np.where(observable & (sizes[:, None] > 0), shares, np.nan)
    keep = np.flatnonzero(sizes > 0)[-max_cohorts:]
    labels = [f"{(first_month + i) // 12:04d}-{(first_month + i) % 12 + 1:02d}" for i in keep.tolist()]
    return CohortRetention(cohorts=labels, sizes=[int(sizes[i]) for i in keep.tolist()], shares=shares[keep])
