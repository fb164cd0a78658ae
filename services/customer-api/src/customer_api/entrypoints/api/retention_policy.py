"""HTTP routes of the shop's retention period for raw events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from customer_api.service_layer import retention_policy
from customer_api.service_layer.retention_policy import MAX_RAW_EVENT_DAYS, MIN_RAW_EVENT_DAYS
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.tenancy import Principal
from retention_shared.web import Authenticator, require_scope


class RetentionPolicyWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raw_event_days: int = Field(
        ge=MIN_RAW_EVENT_DAYS,
        le=MAX_RAW_EVENT_DAYS,
        description="Raw events (purchases, refunds, logins, tickets) older than this many days, counted "
        "from when they happened, are deleted (checked hourly)",
    )


class RetentionPolicyRead(BaseModel):
    raw_event_days: int
    default: bool = Field(description="True until the shop sets its own period")
    updated_at: datetime | None


def build_retention_policy_router(
    *, uow_factory: Callable[[], CustomerApiUnitOfWork], authenticate: Authenticator
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["privacy"])
    is_admin = require_scope(authenticate, "admin")

    @router.get("/retention-policy", response_model=RetentionPolicyRead)
    def get_policy(principal: Principal = Depends(is_admin)) -> dict[str, Any]:
        """How long this shop keeps raw events."""
        return retention_policy.read_policy(uow=uow_factory(), shop_id=principal.shop_id)

    @router.put("/retention-policy", response_model=RetentionPolicyRead)
    def put_policy(body: RetentionPolicyWrite, principal: Principal = Depends(is_admin)) -> dict[str, Any]:
        """Set how long this shop keeps raw events; older ones go at the next hourly run."""
        return retention_policy.set_policy(
            uow=uow_factory(), shop_id=principal.shop_id, raw_event_days=body.raw_event_days
        )

    return router
