"""HTTP routes of the customer-api. Thin: parse, authorise, call the service layer."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from customer_api.entrypoints.api.schemas import (
    CustomerRead,
    CustomerWrite,
    EventBatch,
    EventBatchResult,
    EventResultRead,
    ShopCreate,
    ShopCreated,
)
from customer_api.service_layer import customers, ingestion, shops
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.envelope import ID_PATTERN
from retention_shared.problems import Problem
from retention_shared.tenancy import Principal
from retention_shared.web import bearer_token, require_scope

CustomerId = Annotated[str, Path(pattern=ID_PATTERN, description="The shop's own customer id (≤128 chars)")]


def build_router(
    *,
    uow_factory: Callable[[], CustomerApiUnitOfWork],
    authenticate: Callable[..., Principal],
    admin_token: str,
) -> APIRouter:
    router = APIRouter(prefix="/v1")
    can_write_events = require_scope(authenticate, "events:write")
    can_read_customers = require_scope(authenticate, "customers:read")
    can_write_customers = require_scope(authenticate, "customers:write")

    def operator(request: Request) -> None:
        if not secrets.compare_digest(bearer_token(request).encode(), admin_token.encode()):
            raise Problem(
                401,
                "Unauthorized",
                "This call needs the operator token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @router.post("/shops", status_code=status.HTTP_201_CREATED, response_model=ShopCreated, tags=["shops"])
    def create_shop(body: ShopCreate, _: None = Depends(operator)) -> ShopCreated:
        """Create a shop (operator only). Its first API key, holding every scope, is returned once."""
        shop_id, key = shops.register_shop(
            uow=uow_factory(),
            name=body.name,
            timezone=body.timezone,
            currency=body.currency,
            locale=body.locale,
        )
        return ShopCreated(id=shop_id, api_key=key.key, api_key_prefix=key.prefix, scopes=list(key.scopes))

    @router.put("/customers/{customer_id}", response_model=CustomerRead, tags=["customers"])
    def put_customer(
        customer_id: CustomerId,
        body: CustomerWrite,
        response: Response,
        principal: Principal = Depends(can_write_customers),
    ) -> dict[str, object]:
        """Create or replace a customer by the shop's own id."""
        profile = customers.CustomerProfile(**body.model_dump(exclude={"consents"}))
        changes = [customers.ConsentChange(channel, granted) for channel, granted in body.consents.items()]
        customer, created = customers.upsert_customer(
            uow=uow_factory(),
            shop_id=principal.shop_id,
            customer_id=customer_id,
            profile=profile,
            consents=changes,
        )
        response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return customer

    @router.get("/customers/{customer_id}", response_model=CustomerRead, tags=["customers"])
    def get_customer(
        customer_id: CustomerId, principal: Principal = Depends(can_read_customers)
    ) -> dict[str, object]:
        """The customer's profile and consents."""
        return customers.read_customer(uow=uow_factory(), shop_id=principal.shop_id, customer_id=customer_id)

    @router.post(
        "/events",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=EventBatchResult,
        tags=["events"],
        responses={413: {"description": "Body over 1 MB"}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": EventBatch.model_json_schema()}},
            }
        },
    )
    async def post_events(
        request: Request, principal: Principal = Depends(can_write_events)
    ) -> EventBatchResult:
        """Ingest up to 1,000 events; each is accepted, a duplicate, or rejected with the reason."""
        body = await request.body()
        if ingestion.batch_too_large(body):
            raise Problem(
                413,
                "Content Too Large",
                "A batch may carry at most 1 MB; split it",
                errors=[{"field": "body", "message": f"{len(body)} bytes > {ingestion.MAX_BATCH_BYTES}"}],
            )
        batch = _parse_batch(body)
        results = await run_in_threadpool(
            ingestion.ingest_events, uow=uow_factory(), shop_id=principal.shop_id, raw_events=batch.events
        )
        return EventBatchResult(
            results=[EventResultRead(id=r.id, status=r.status, error=r.error) for r in results]
        )

    return router


def _parse_batch(body: bytes) -> EventBatch:
    try:
        return EventBatch.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from exc
