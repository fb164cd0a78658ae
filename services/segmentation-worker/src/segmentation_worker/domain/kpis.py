"""Retention KPIs over a period, from a shop's orders (plain numpy). Definitions: docs/kpis.md.

All periods are half-open, ``[start, end)``, and calendar months are UTC months.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Cohort:
    month: str  # YYYY-MM of the customers' first purchase
    customers: int
    retention: list[float]  # share of the cohort buying in its month 0, 1, 2, ... (up to the end)


@dataclass(frozen=True)
class Kpis:
    active_customers: int
    new_customers: int
    revenue: float
    arpu: float | None
    repeat_purchase_rate: float | None
    retention_rate: float | None
    churn_rate: float | None
    previous_period_customers: int
    cohorts: list[Cohort] = field(default_factory=list)
    # Net revenue of the period from customers whose first purchase was before it.
    returning_revenue: float = 0.0


def compute_kpis(
    customer_ids: ArrayLike, purchased_at: ArrayLike, net_amounts: ArrayLike, *, start: float, end: float
) -> Kpis:
    """KPIs of ``[start, end)`` (epoch seconds) from every order placed before ``end``.

    Orders before ``start`` matter: they tell first purchases (new customers, cohorts), the
    previous period's customers (retention) and lifetime purchase days (repeat rate).
    """
    ids = np.asarray(customer_ids, dtype=object)
    times = np.asarray(purchased_at, dtype=np.float64)
    amounts = np.asarray(net_amounts, dtype=np.float64)
    if ids.size == 0:
        return Kpis(0, 0, 0.0, None, None, None, None, 0, _cohorts(ids, times, start, end))
    customer_index = np.unique(ids, return_inverse=True)[1].reshape(-1)
    customers = int(customer_index.max()) + 1
    in_period = (times >= start) & (times < end)
    length = end - start
    in_previous = (times >= start - length) & (times < start)

    active = np.zeros(customers, dtype=bool)
    active[customer_index[in_period]] = True
    previous = np.zeros(customers, dtype=bool)
    previous[customer_index[in_previous]] = True
    first_purchase = np.full(customers, np.inf)
    np.minimum.at(first_purchase, customer_index, times)
    new = active & (first_purchase >= start)

    # Distinct purchase days per customer over their whole history up to the end.
    days = np.floor(times / SECONDS_PER_DAY).astype(np.int64)
    pairs = np.unique(customer_index.astype(np.int64) * (days.max() + 1) + days)
    purchase_days = np.bincount(pairs // (days.max() + 1), minlength=customers)

    active_count = int(active.sum())
    revenue = float(amounts[in_period].sum())
    returning = first_purchase < start
    returning_revenue = float(amounts[in_period & returning[customer_index]].sum())
    previous_count = int(previous.sum())
    retention = float((previous & active).sum() / previous_count) if previous_count else None
    return Kpis(
        active_customers=active_count,
        new_customers=int(new.sum()),
        revenue=revenue,
        arpu=revenue / active_count if active_count else None,
        repeat_purchase_rate=float((purchase_days[active] >= 2).sum() / active_count)
        if active_count
        else None,
        retention_rate=retention,
        churn_rate=None if retention is None else 1.0 - retention,
        previous_period_customers=previous_count,
        cohorts=_cohorts(ids, times, start, end, customer_index, first_purchase),
        returning_revenue=returning_revenue,
    )


def kpis_from_figures(figures: dict[str, Any], *, start: datetime, end: datetime) -> Kpis:
    """The KPIs from the counts the database aggregated (see `StateRepository.kpi_figures`).

    Same definitions as `compute_kpis`, which works on the raw orders instead; a test holds the two
    equal on random data."""
    active = int(figures["active_customers"])
    revenue = float(figures["revenue"])
    previous = int(figures["previous_period_customers"])
    retention = figures["retained_customers"] / previous if previous else None
    start_month = _month_of(start)
    last_month = _month_of(end - timedelta(microseconds=1))
    cells: dict[tuple[int, int], int] = {
        (_month_of_label(cohort), _month_of_label(month)): count
        for cohort, month, count in figures["cohort_cells"]
    }
    cohorts = []
    for label, size in sorted(figures["cohort_sizes"].items()):
        month = _month_of_label(label)
        if not start_month <= month <= last_month or size == 0:
            continue
        cohorts.append(
            Cohort(
                month=label,
                customers=size,
                retention=[
                    round(cells.get((month, month + offset), 0) / size, 4)
                    for offset in range(last_month - month + 1)
                ],
            )
        )
    return Kpis(
        active_customers=active,
        new_customers=int(figures["new_customers"]),
        revenue=revenue,
        arpu=revenue / active if active else None,
        repeat_purchase_rate=figures["repeat_customers"] / active if active else None,
        retention_rate=retention,
        churn_rate=None if retention is None else 1.0 - retention,
        previous_period_customers=previous,
        cohorts=cohorts,
        returning_revenue=float(figures["returning_revenue"]),
    )


def _month_of(moment: datetime) -> int:
    """Months since January 1970 of an aware datetime, in UTC."""
    utc = moment.astimezone(UTC)
    return (utc.year - 1970) * 12 + utc.month - 1


def _month_of_label(label: str) -> int:
    year, month = label.split("-")
    return (int(year) - 1970) * 12 + int(month) - 1


def _cohorts(
    ids: NDArray[np.object_],
    times: NDArray[np.float64],
    start: float,
    end: float,
    customer_index: NDArray[np.intp] | None = None,
    first_purchase: NDArray[np.float64] | None = None,
) -> list[Cohort]:
    """Monthly cohorts of customers whose first purchase falls in the period, and the share of
    each that bought again in each following month up to the end of the period."""
    if ids.size == 0 or customer_index is None or first_purchase is None:
        return []
    months = _month_number(times)
    first_month = _month_number(first_purchase)
    start_month, last_month = _month_number(np.array([start]))[0], _month_number(np.array([end - 1]))[0]
    cohorts = []
    for month in range(int(start_month), int(last_month) + 1):
        members = np.flatnonzero((first_month == month) & (first_purchase >= start))
        if members.size == 0:
            continue
        member = np.zeros(first_month.size, dtype=bool)
        member[members] = True
        orders = member[customer_index] & (times < end)
        offsets = months[orders] - month
        buyers = customer_index[orders]
        span = int(last_month - month) + 1
        active_pairs = np.unique(buyers.astype(np.int64) * span + offsets)
        counts = np.bincount(active_pairs % span, minlength=span)
        cohorts.append(
            Cohort(
                month=_month_label(month),
                customers=int(members.size),
                retention=[round(float(c) / members.size, 4) for c in counts],
            )
        )
    return cohorts


def _month_number(epoch_seconds: NDArray[np.float64]) -> NDArray[np.int64]:
    """Months since January 1970 (UTC)."""
    return (
        np.asarray(epoch_seconds, dtype=np.float64)
        .astype("datetime64[s]")
        .astype("datetime64[M]")
        .astype(np.int64)
    )


def _month_label(month_number: int) -> str:
    return str(np.datetime64(int(month_number), "M"))
