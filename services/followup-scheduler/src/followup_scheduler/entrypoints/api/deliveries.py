"""Deliveries: what the shop's follow-ups did, by channel and status, with the reasons of failures."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from followup_scheduler.service_layer import deliveries
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.problems import Problem, field_error
from retention_shared.tenancy import Principal
from retention_shared.web import Authenticator, require_scope

Status = Literal["scheduled", "sent", "skipped", "failed", "cancelled"]
ChannelFilter = Annotated[str | None, Query(max_length=16, description="email, sms, line, webhook or none")]
Cursor = Annotated[str | None, Query(max_length=400, description="next_cursor of the previous page")]


class DeliveryRead(BaseModel):
    id: str
    run_id: str
    customer_id: str
    playbook: str
    step: str
    status: str
    channel: str | None
    reason: str | None = Field(description="Why it was skipped or failed")
    attempts: int
    due_at: datetime
    sent_at: datetime | None
    updated_at: datetime


class DeliveryList(BaseModel):
    deliveries: list[DeliveryRead]
    next_cursor: str | None


class DeliveryCount(BaseModel):
    channel: str = Field(description=f"'{deliveries.NO_CHANNEL}' when no channel was chosen")
    status: str
    count: int


class DeliverySummary(BaseModel):
    since: datetime
    counts: list[DeliveryCount]


def build_deliveries_router(
    *, uow_factory: Callable[[], SchedulerUnitOfWork], authenticate: Authenticator
) -> APIRouter:
    router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])
    can_read = require_scope(authenticate, "customers:read")

    @router.get("", response_model=DeliveryList)
    def list_deliveries(
        status: Status | None = None,
        channel: Annotated[
            str | None, Query(max_length=16, description="email, sms, line, webhook or none")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[
            str | None, Query(max_length=400, description="next_cursor of the previous page")
        ] = None,
        principal: Principal = Depends(can_read),
    ) -> DeliveryList:
        """The shop's follow-up steps, most recently changed first: sent, skipped (with the reason:
        no consent, quiet hours, over budget, holdout, ...), failed (with the channel's error),
        cancelled or still scheduled."""
        try:
            with uow_factory().reading() as uow:
                page = deliveries.list_deliveries(
                    uow, shop_id=principal.shop_id, status=status, channel=channel, limit=limit, cursor=cursor
                )
        except deliveries.BadCursor as error:
            message = "not a cursor this API handed out"
            raise Problem(
                422, "Unprocessable Content", message, errors=[field_error("query.cursor", message)]
            ) from error
        return DeliveryList(
            deliveries=[
                DeliveryRead(
                    id=row["id"],
                    run_id=row["run_id"],
                    customer_id=row["customer_id"],
                    playbook=row["playbook_key"],
                    step=row["step_key"],
                    status=row["status"],
                    channel=row["channel"],
                    reason=row["reason"] or None,
                    attempts=row["attempts"],
                    due_at=row["due_at"],
                    sent_at=row["sent_at"],
                    updated_at=row["updated_at"],
                )
                for row in page.rows
            ],
            next_cursor=page.next_cursor,
        )

    @router.get("/summary", response_model=DeliverySummary)
    def summary(
        days: Annotated[int, Query(ge=1, le=366, description="Steps changed in the last N days")] = 30,
        principal: Principal = Depends(can_read),
    ) -> DeliverySummary:
        """How many steps changed in the period, by channel and status."""
        with uow_factory().reading() as uow:
            since = deliveries.summary_since(uow.clock.now(), days)
            counts = deliveries.delivery_counts(uow, shop_id=principal.shop_id, since=since)
        return DeliverySummary(since=since, counts=[DeliveryCount(**row) for row in counts])

    return router
