"""The read side: segment summaries, segment members, a customer's scores, model fits and KPIs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Integer, and_, case, cast, func, or_, select

from segmentation_worker.adapters.tables import customer_state, segment_history
from segmentation_worker.domain.config import config_from_document
from segmentation_worker.domain.kpis import Kpis, kpis_from_figures
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

SortKey = Literal["clv", "churn_risk"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentSummary:
    name: str
    label: str
    customers: int
    revenue: Decimal
    revenue_share: float
    average_clv: float | None


def segment_summaries(uow: SegmentationUnitOfWork, shop_id: str) -> list[SegmentSummary]:
    """Every segment of the shop's scheme (empty ones too, so dashboards keep their rows), then any
    segment customers still carry from an earlier scheme."""
    scheme = config_from_document(uow.state.config_document(shop_id)).segment_scheme()
    net = customer_state.c.gross_spend - customer_state.c.refunded
    rows = uow.session.execute(
        select(customer_state.c.segment, func.count(), func.sum(net), func.avg(customer_state.c.clv))
        .where(customer_state.c.shop_id == shop_id, customer_state.c.segment.is_not(None))
        .group_by(customer_state.c.segment)
    ).all()
    found = {segment: (int(count), Decimal(total or 0), avg) for segment, count, total, avg in rows}
    total_revenue = sum((revenue for _, revenue, _ in found.values()), Decimal(0))
    names = scheme.segment_names + sorted(set(found) - set(scheme.segment_names))
    summaries = []
    for name in names:
        count, revenue, average = found.get(name, (0, Decimal(0), None))
        summaries.append(
            SegmentSummary(
                name=name,
                label=scheme.label_of(name),
                customers=count,
                revenue=revenue,
                revenue_share=float(revenue / total_revenue) if total_revenue else 0.0,
                average_clv=None if average is None else float(average),
            )
        )
    return summaries


def segment_moves(
    uow: SegmentationUnitOfWork, shop_id: str, *, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """How many times customers moved from one segment to another in `[start, end)`; a first
    segment has no `from_segment`."""
    history = segment_history.c
    rows = uow.session.execute(
        select(history.from_segment, history.to_segment, func.count().label("moves"))
        .where(history.shop_id == shop_id, history.changed_at >= start, history.changed_at < end)
        .group_by(history.from_segment, history.to_segment)
        .order_by(func.count().desc(), history.from_segment, history.to_segment)
    ).mappings()
    return [dict(row) for row in rows]


@dataclass(frozen=True)
class ClvDistribution:
    buckets: list[tuple[float, float | None, int]]  # from, to (None: and above), customers
    customers_without_clv: int


def clv_distribution(uow: SegmentationUnitOfWork, shop_id: str, *, bins: int) -> ClvDistribution:
    """The shop's buyers by CLV, in `bins` equal ranges from 0 to the 99th percentile; the last
    range is open-ended, so a few very large values do not squeeze everyone into the first bar."""
    state = customer_state.c
    of_shop = (state.shop_id == shop_id) & (state.purchase_count > 0)
    scored, unscored = uow.session.execute(
        select(func.count(state.clv), func.count() - func.count(state.clv)).where(of_shop)
    ).one()
    if not scored:
        return ClvDistribution([], int(unscored or 0))
    # The 99th percentile by position: portable (SQLite has no percentile function).
    upper = uow.session.execute(
        select(state.clv)
        .where(of_shop, state.clv.is_not(None))
        .order_by(state.clv)
        .offset(int((scored - 1) * 0.99))
        .limit(1)
    ).scalar_one()
    width = float(upper) / bins if upper and upper > 0 else 1.0
    bucket = case(
        (state.clv >= width * (bins - 1), bins - 1), else_=cast(func.floor(state.clv / width), Integer)
    )
    counts: dict[int, int] = {
        int(index): int(count)
        for index, count in uow.session.execute(
            select(bucket, func.count()).where(of_shop, state.clv.is_not(None)).group_by(bucket)
        )
    }
    buckets = [
        (width * index, None if index == bins - 1 else width * (index + 1), int(counts.get(index, 0)))
        for index in range(bins)
    ]
    return ClvDistribution(buckets, int(unscored))


@dataclass(frozen=True)
class Position:
    value: float
    customer_id: str


def segment_members(
    uow: SegmentationUnitOfWork,
    shop_id: str,
    segment: str,
    *,
    sort: SortKey,
    limit: int,
    after: Position | None,
) -> list[dict[str, Any]]:
    """A page of a segment's customers, highest CLV (or churn risk) first, then by id.

    Customers without a value (no model fit yet) sort last, as 0 for churn risk and -1 for CLV.
    """
    column = customer_state.c.clv if sort == "clv" else customer_state.c.churn_score
    key = func.coalesce(column, -1.0 if sort == "clv" else 0.0)
    conditions = [customer_state.c.shop_id == shop_id, customer_state.c.segment == segment]
    if after is not None:
        conditions.append(
            or_(key < after.value, and_(key == after.value, customer_state.c.customer_id > after.customer_id))
        )
    rows = uow.session.execute(
        select(customer_state, key.label("sort_value"))
        .where(*conditions)
        .order_by(key.desc(), customer_state.c.customer_id)
        .limit(limit)
    ).mappings()
    return [dict(row) for row in rows]


def model_fits(uow: SegmentationUnitOfWork, shop_id: str) -> dict[str, dict[str, Any]]:
    return uow.state.current_fits(shop_id)


@dataclass(frozen=True)
class KpiAnswer:
    kpis: Kpis
    average_clv: float | None
    # When the figures were aggregated: now, or the time of the snapshot they come from.
    computed_at: datetime


def kpis(uow: SegmentationUnitOfWork, shop_id: str, *, start: datetime, end: datetime) -> KpiAnswer:
    """The period's KPIs, and the average CLV of the shop's buyers as last scored.

    A standard period (see `standard_kpi_periods`) is answered from its snapshot while that is
    current; any other period, or one whose snapshot is out of date, is aggregated now."""
    snapshot = uow.state.kpi_snapshot(shop_id, start, end, margin=SNAPSHOT_MARGIN)
    if snapshot is not None:
        return KpiAnswer(
            kpis_from_figures(snapshot["figures"], start=start, end=end),
            snapshot["average_clv"],
            snapshot["computed_at"],
        )
    figures = uow.state.kpi_figures(shop_id, start, end)
    return KpiAnswer(
        kpis_from_figures(figures, start=start, end=end), uow.state.average_clv(shop_id), uow.clock.now()
    )


# The console's period choices; each is also compared with the period just before it.
STANDARD_KPI_DAYS = (7, 30, 90, 365)
SNAPSHOTS_KEPT_FOR = timedelta(days=2)
# Orders written up to this long before a snapshot still make it out of date (transactions that
# were in flight while it was aggregated).
SNAPSHOT_MARGIN = timedelta(minutes=10)


def standard_kpi_periods(now: datetime) -> list[tuple[datetime, datetime]]:
    """The whole UTC days before today, in runs of each standard length, and the run before each."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    periods = []
    for days in STANDARD_KPI_DAYS:
        length = timedelta(days=days)
        periods += [(today - length, today), (today - 2 * length, today - length)]
    return periods


def refresh_kpi_snapshots(uow: SegmentationUnitOfWork, shop_id: str) -> int:
    """Aggregate and store the shop's standard periods; drop the snapshots of earlier days."""
    now = uow.clock.now()
    average_clv = uow.state.average_clv(shop_id)
    periods = standard_kpi_periods(now)
    for start, end in periods:
        uow.state.save_kpi_snapshot(
            shop_id,
            start,
            end,
            figures=uow.state.kpi_figures(shop_id, start, end),
            average_clv=average_clv,
            computed_at=now,
        )
    uow.state.forget_kpi_snapshots(shop_id, computed_before=now - SNAPSHOTS_KEPT_FOR)
    return len(periods)


MAX_KPI_PERIOD = timedelta(days=5 * 366)


def refresh_due_kpi_snapshots(*, uow_factory: Callable[[], SegmentationUnitOfWork]) -> list[str]:
    """The periodic job: store the snapshots of every shop with orders whose standard periods lack
    a current one: after midnight UTC (new periods), and after late orders, refunds or erasures
    made one out of date. Each shop commits on its own."""
    with uow_factory() as uow:
        shops = uow.state.shops_with_orders()
    refreshed = []
    for shop_id in shops:
        try:
            with uow_factory() as uow:
                now = uow.clock.now()
                due = any(
                    uow.state.kpi_snapshot(shop_id, start, end, margin=SNAPSHOT_MARGIN) is None
                    for start, end in standard_kpi_periods(now)
                )
                if due:
                    refresh_kpi_snapshots(uow, shop_id)
                    uow.commit()
                    refreshed.append(shop_id)
        except Exception:
            # One shop's failure must not keep the others' dashboards slow; it is retried next time.
            log.exception("storing the KPI snapshots of %s failed", shop_id)
    return refreshed
