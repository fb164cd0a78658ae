"""HTTP routes of the segmentation-worker."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from retention_shared.events.envelope import ID_PATTERN
from retention_shared.problems import not_found
from retention_shared.tenancy import Principal
from retention_shared.web import require_scope
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

CustomerId = Annotated[str, Path(pattern=ID_PATTERN)]


class RfmRead(BaseModel):
    r: int
    f: int
    m: int


class ScoresRead(BaseModel):
    customer_id: str
    segment: str | None
    rfm: RfmRead | None
    purchase_count: int
    purchase_days: int
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    net_spend: Decimal
    open_tickets: int
    last_login_at: datetime | None
    as_of: datetime


def build_router(
    *, uow_factory: Callable[[], SegmentationUnitOfWork], authenticate: Callable[..., Principal]
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["segments"])
    can_read = require_scope(authenticate, "customers:read")

    @router.get("/customers/{customer_id}/scores", response_model=ScoresRead)
    def get_scores(customer_id: CustomerId, principal: Principal = Depends(can_read)) -> ScoresRead:
        """The customer's behavioural state, RFM scores and segment."""
        with uow_factory() as uow:
            state = uow.state.get(principal.shop_id, customer_id)
        if state is None:
            raise not_found("customer")
        rfm = (
            RfmRead(r=state["r_score"], f=state["f_score"], m=state["m_score"])
            if state["r_score"] is not None
            else None
        )
        return ScoresRead(
            customer_id=customer_id,
            segment=state["segment"],
            rfm=rfm,
            purchase_count=state["purchase_count"],
            purchase_days=state["purchase_days"],
            first_purchase_at=state["first_purchase_at"],
            last_purchase_at=state["last_purchase_at"],
            net_spend=Decimal(state["gross_spend"]) - Decimal(state["refunded"]),
            open_tickets=state["open_tickets"],
            last_login_at=state["last_login_at"],
            as_of=state["updated_at"],
        )

    return router
