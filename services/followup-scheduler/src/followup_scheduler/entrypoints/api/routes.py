"""HTTP routes of the followup-scheduler."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from followup_scheduler.service_layer import queries
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events.envelope import ID_PATTERN
from retention_shared.problems import Problem, not_found
from retention_shared.tenancy import Principal
from retention_shared.web import Authenticator, require_scope

CustomerId = Annotated[str, Path(pattern=ID_PATTERN)]
StepId = Annotated[str, Path(pattern=r"^stp_[0-9a-f]{16}$")]


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


def _followup(row: dict[str, object]) -> FollowupRead:
    return FollowupRead(
        id=str(row["id"]),
        run_id=str(row["run_id"]),
        playbook=str(row["playbook_key"]),
        step=str(row["step_key"]),
        status=str(row["status"]),
        channel=row["channel"],
        channels=list(row["channels"]),  # type: ignore[call-overload]
        due_at=row["due_at"],
        sent_at=row["sent_at"],
        reason=row["reason"] or None,
    )


class FollowupList(BaseModel):
    customer_id: str
    followups: list[FollowupRead]


def build_router(*, uow_factory: Callable[[], SchedulerUnitOfWork], authenticate: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["followups"])
    can_read = require_scope(authenticate, "customers:read")
    can_write = require_scope(authenticate, "customers:write")

    @router.get("/customers/{customer_id}/followups", response_model=FollowupList)
    def list_followups(customer_id: CustomerId, principal: Principal = Depends(can_read)) -> FollowupList:
        """The customer's follow-up steps: scheduled, sent, skipped (with the reason), failed or cancelled."""
        with uow_factory() as uow:
            rows = uow.repo.customer_steps(principal.shop_id, customer_id)
            if not rows and uow.repo.contact(principal.shop_id, customer_id) is None:
                raise not_found("customer")
        return FollowupList(customer_id=customer_id, followups=[_followup(row) for row in rows])

    @router.post("/followups/{step_id}/cancel", response_model=FollowupRead)
    def cancel(step_id: StepId, principal: Principal = Depends(can_write)) -> FollowupRead:
        """Cancel one scheduled (or paused) follow-up step; 409 when it was already sent or ended."""
        with uow_factory() as uow:
            try:
                step = queries.cancel_followup(uow, shop_id=principal.shop_id, step_id=step_id)
            except queries.NotCancellable as exc:
                raise Problem(409, "Conflict", str(exc)) from exc
            if step is None:
                raise not_found("follow-up")
            uow.commit()
        return _followup(step)

    return router
