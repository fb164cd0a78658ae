"""HTTP routes of the loyalty programme. Thin: parse, authorise, call the service layer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from customer_api.domain.loyalty import (
    DEFAULT_RULES,
    MAX_DAYS,
    MAX_MULTIPLIER,
    MAX_POINTS_PER_UNIT,
    MAX_TIERS,
    TIER_NAME_PATTERN,
    rules_to_document,
)
from customer_api.service_layer import loyalty
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.envelope import ID_PATTERN
from retention_shared.tenancy import Principal
from retention_shared.web import Authenticator, require_scope

CustomerId = Annotated[str, Path(pattern=ID_PATTERN, description="The shop's own customer id (≤128 chars)")]
MAX_REDEMPTION = 1_000_000_000

_DEFAULTS = rules_to_document(DEFAULT_RULES)
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such customer in this shop (another shop's ids answer 404 too)"},
}


class TierRead(BaseModel):
    name: str
    multiplier: Decimal
    min_spend: Decimal
    since: datetime | None = Field(description="When the member reached this tier; null before any activity")


class NextTierRead(BaseModel):
    name: str
    min_spend: Decimal
    spend_needed: Decimal = Field(description="Net spend still needed within the rolling window")


class ExpiringLot(BaseModel):
    expires_at: datetime
    points: int


class ExpiringSoon(BaseModel):
    within_days: int
    points: int
    lots: list[ExpiringLot]


class LoyaltyRead(BaseModel):
    customer_id: str
    balance: int = Field(description="Points that can be redeemed now (expired points excluded)")
    tier: TierRead
    rolling_spend: Decimal = Field(description="Net spend (purchases less refunds) over the tier window")
    tier_window_days: int
    currency: str
    next_tier: NextTierRead | None = Field(description="Null at the top tier")
    expiring_soon: ExpiringSoon


class LedgerEntryRead(BaseModel):
    id: int
    kind: Literal["earn", "clawback", "redeem", "expire"]
    points: int = Field(description="Positive for earnings, negative for everything that takes points")
    expires_at: datetime = Field(description="Expiry of the lot the entry moves points in or out of")
    order_id: str | None
    event_id: str | None
    redemption_id: str | None
    occurred_at: datetime
    recorded_at: datetime


class LedgerPage(BaseModel):
    entries: list[LedgerEntryRead] = Field(description="Newest first")
    next_before: int | None = Field(description="Pass as `before` for the next page; null on the last page")


class RedemptionWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: int = Field(gt=0, le=MAX_REDEMPTION, description="Points to spend, soonest-expiring first")
    reason: str | None = Field(None, max_length=200, description="e.g. the coupon or order it paid for")


class RedemptionRead(BaseModel):
    redemption_id: str
    customer_id: str
    idempotency_key: str
    points: int
    reason: str | None
    balance_after: int
    created_at: datetime


class TierSetting(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TIER_NAME_PATTERN)
    min_spend: Decimal = Field(ge=0, description="Net spend over the tier window that reaches the tier")
    multiplier: Decimal = Field(gt=0, le=MAX_MULTIPLIER, description="Multiplies the points purchases earn")


class LoyaltySettingsWrite(BaseModel):
    """The whole programme. Tiers go from the lowest, which must start at 0, upwards."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_DEFAULTS]})

    points_per_unit: int = Field(ge=0, le=MAX_POINTS_PER_UNIT, description="Points per `unit_amount` spent")
    unit_amount: Decimal = Field(gt=0, description="The spend, in the shop's currency, that earns the points")
    points_expire_after_days: int = Field(ge=1, le=MAX_DAYS, description="Counted from the purchase")
    tier_window_days: int = Field(365, ge=1, le=MAX_DAYS, description="The rolling window of tier spend")
    tiers: list[TierSetting] = Field(min_length=1, max_length=MAX_TIERS)


class LoyaltySettingsRead(BaseModel):
    points_per_unit: int
    unit_amount: Decimal
    points_expire_after_days: int
    tier_window_days: int
    tiers: list[TierSetting]
    currency: str = Field(description="The shop's currency; only purchases and refunds in it count")
    updated_at: datetime | None = Field(description="Null while the shop runs the defaults")


def build_loyalty_router(
    *, uow_factory: Callable[[], CustomerApiUnitOfWork], authenticate: Authenticator
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["loyalty"])
    can_read = require_scope(authenticate, "customers:read")
    can_write = require_scope(authenticate, "customers:write")
    is_admin = require_scope(authenticate, "admin")

    @router.get("/customers/{customer_id}/loyalty", response_model=LoyaltyRead, responses=_PROBLEMS)
    def get_loyalty(
        customer_id: CustomerId,
        expiring_within_days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = loyalty.EXPIRING_SOON_DAYS,
        principal: Principal = Depends(can_read),
    ) -> dict[str, Any]:
        """The member's balance, tier, the next tier and the spend it needs, and points expiring soon."""
        return loyalty.read_loyalty(
            uow=uow_factory(),
            shop_id=principal.shop_id,
            customer_id=customer_id,
            expiring_within_days=expiring_within_days,
        )

    @router.get("/customers/{customer_id}/loyalty/ledger", response_model=LedgerPage, responses=_PROBLEMS)
    def get_ledger(
        customer_id: CustomerId,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        before: Annotated[int | None, Query(ge=1, description="`next_before` of the previous page")] = None,
        principal: Principal = Depends(can_read),
    ) -> dict[str, Any]:
        """The member's points ledger, newest first (append-only: earn, clawback, redeem, expire)."""
        return loyalty.read_ledger(
            uow=uow_factory(), shop_id=principal.shop_id, customer_id=customer_id, limit=limit, before=before
        )

    @router.post(
        "/customers/{customer_id}/loyalty/redemptions",
        status_code=status.HTTP_201_CREATED,
        response_model=RedemptionRead,
        responses={
            **_PROBLEMS,
            200: {"description": "A repeat of an earlier request with this Idempotency-Key: its result"},
            409: {"description": "The Idempotency-Key was used for a different redemption"},
            422: {"description": "Invalid, or more points than the balance (`body.points`)"},
        },
    )
    def post_redemption(
        customer_id: CustomerId,
        body: RedemptionWrite,
        response: Response,
        idempotency_key: Annotated[
            str,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=128,
                description="Unique per redemption (e.g. a UUID); a repeat answers the first result",
            ),
        ],
        principal: Principal = Depends(can_write),
    ) -> dict[str, Any]:
        """Spend points. Sending the same Idempotency-Key again never redeems twice."""
        redemption, created = loyalty.redeem_points(
            uow=uow_factory(),
            shop_id=principal.shop_id,
            customer_id=customer_id,
            points=body.points,
            idempotency_key=idempotency_key,
            reason=body.reason,
        )
        if not created:
            response.status_code = status.HTTP_200_OK
            response.headers["Idempotent-Replayed"] = "true"
        return redemption

    @router.get("/loyalty/settings", response_model=LoyaltySettingsRead)
    def get_settings(principal: Principal = Depends(is_admin)) -> dict[str, Any]:
        """The shop's programme; until it saves its own, the defaults: 1 point per 100 of the shop's
        currency, points expire 365 days after the purchase, and tiers by net spend over a rolling
        365 days: bronze from 0 (× 1.0), silver from 50,000 (× 1.25), gold from 150,000 (× 1.5),
        platinum from 300,000 (× 2.0). Only purchases and refunds in the shop's currency count."""
        return loyalty.read_settings(uow=uow_factory(), shop_id=principal.shop_id)

    @router.put("/loyalty/settings", response_model=LoyaltySettingsRead)
    def put_settings(body: LoyaltySettingsWrite, principal: Principal = Depends(is_admin)) -> dict[str, Any]:
        """Replace the shop's programme. It applies to purchases from now on; earned points keep their
        expiry, and tiers follow at each member's next purchase or refund, or the daily refresh."""
        return loyalty.update_settings(
            uow=uow_factory(), shop_id=principal.shop_id, document=body.model_dump(mode="json")
        )

    return router
