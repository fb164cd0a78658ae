"""HTTP routes of the followup-scheduler."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events.envelope import ID_PATTERN
from retention_shared.problems import not_found
from retention_shared.tenancy import Principal
from retention_shared.web import require_scope

CustomerId = Annotated[str, Path(pattern=ID_PATTERN)]


class FollowupRead(BaseModel):
    id: str
    run_id: str
    playbook: str
    step: str
    status: str
    channel: str | None
    channels: list[str]
    due_at: datetime
    sent_at: datetime | None
    reason: str | None


class FollowupList(BaseModel):
    customer_id: str
    followups: list[FollowupRead]


def build_router(
    *, uow_factory: Callable[[], SchedulerUnitOfWork], authenticate: Callable[..., Principal]
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["followups"])
    can_read = require_scope(authenticate, "customers:read")

    @router.get("/customers/{customer_id}/followups", response_model=FollowupList)
    def list_followups(customer_id: CustomerId, principal: Principal = Depends(can_read)) -> FollowupList:
        """The customer's follow-up steps: scheduled, sent, skipped (with the reason), failed or cancelled."""
        with uow_factory() as uow:
            rows = uow.repo.customer_steps(principal.shop_id, customer_id)
            if not rows and uow.repo.contact(principal.shop_id, customer_id) is None:
                raise not_found("customer")
        return FollowupList(
            customer_id=customer_id,
            followups=[
                FollowupRead(
                    id=row["id"],
                    run_id=row["run_id"],
                    playbook=row["playbook_key"],
                    step=row["step_key"],
                    status=row["status"],
                    channel=row["channel"],
                    channels=list(row["channels"]),
                    due_at=row["due_at"],
                    sent_at=row["sent_at"],
                    reason=row["reason"] or None,
                )
                for row in rows
            ],
        )

    return router
