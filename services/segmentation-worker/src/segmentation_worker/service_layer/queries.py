"""The read side: segment summaries, segment members, a customer's scores, model fits and KPIs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import and_, func, or_, select

from segmentation_worker.adapters.tables import customer_state
from segmentation_worker.domain.config import config_from_document
from segmentation_worker.domain.kpis import Kpis, kpis_from_figures
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

SortKey = Literal["clv", "churn_risk"]


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


def kpis(
    uow: SegmentationUnitOfWork, shop_id: str, *, start: datetime, end: datetime
) -> tuple[Kpis, float | None]:
    """The period's KPIs, and the average CLV of the shop's buyers as last scored."""
    result = kpis_from_figures(uow.state.kpi_figures(shop_id, start, end), start=start, end=end)
    average_clv = uow.session.execute(
        select(func.avg(customer_state.c.clv)).where(
            customer_state.c.shop_id == shop_id, customer_state.c.clv.is_not(None)
        )
    ).scalar_one_or_none()
    return result, None if average_clv is None else float(average_clv)


MAX_KPI_PERIOD = timedelta(days=5 * 366)
