"""HTTP routes of the customer-api. Thin: parse, authorise, call the service layer."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, ValidationError
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from customer_api.entrypoints.api.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyRead,
    ConsentHistory,
    ConsentHistoryEntry,
    ConsentsWrite,
    ConsentWrite,
    CustomerPage,
    CustomerPatch,
    CustomerRead,
    CustomerSummary,
    CustomerWrite,
    ErasureList,
    ErasureReceipt,
    EventBatch,
    EventBatchResult,
    History,
    HistoryEntry,
    ShopCreate,
    ShopCreated,
)
from customer_api.service_layer import customers, erasure, export, history, ingestion, keys, shops
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.envelope import ID_PATTERN
from retention_shared.problems import Problem
from retention_shared.tenancy import Principal
from retention_shared.web import Authenticator, bearer_token, require_scope

KeyId = Annotated[str, Path(pattern=ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=600, description="next_cursor of the previous page")]
CustomerId = Annotated[str, Path(pattern=ID_PATTERN, description="The shop's own customer id (≤128 chars)")]


def operator_only(admin_token: str) -> Callable[[Request], None]:
    """A dependency that lets only the platform operator's token through."""

    def operator(request: Request) -> None:
        if not secrets.compare_digest(bearer_token(request).encode(), admin_token.encode()):
            raise Problem(
                401,
                "Unauthorized",
                "This call needs the operator token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return operator


def build_router(
    *,
    uow_factory: Callable[[], CustomerApiUnitOfWork],
    authenticate: Authenticator,
    admin_token: str,
    signing_secret: str,
) -> APIRouter:
    router = APIRouter(prefix="/v1")
    can_write_events = require_scope(authenticate, "events:write")
    can_read_customers = require_scope(authenticate, "customers:read")
    can_write_customers = require_scope(authenticate, "customers:write")
    is_admin = require_scope(authenticate, "admin")

    operator = operator_only(admin_token)

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

    @router.put(
        "/customers/{customer_id}",
        response_model=CustomerRead,
        tags=["customers"],
        responses={201: {"model": CustomerRead, "description": "Created"}},
    )
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

    @router.patch("/customers/{customer_id}", response_model=CustomerRead, tags=["customers"])
    def patch_customer(
        customer_id: CustomerId, body: CustomerPatch, principal: Principal = Depends(can_write_customers)
    ) -> dict[str, object]:
        """Change some fields of an existing customer; fields left out stay as they are."""
        given = body.model_dump(exclude_unset=True)
        consents = [
            customers.ConsentChange(channel, granted)
            for channel, granted in given.pop("consents", {}).items()
        ]
        return customers.patch_customer(
            uow=uow_factory(),
            shop_id=principal.shop_id,
            customer_id=customer_id,
            changes=given,
            consents=consents,
        )

    @router.get("/customers", response_model=CustomerPage, tags=["customers"])
    def list_customers(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[
            str | None, Query(max_length=400, description="next_cursor of the previous page")
        ] = None,
        updated_since: Annotated[AwareDatetime | None, Query(description="RFC 3339 with a timezone")] = None,
        segment: Annotated[str | None, Query(max_length=64, description="e.g. champions, at_risk")] = None,
        churn_risk: Annotated[Literal["low", "medium", "high"] | None, Query()] = None,
        tier: Annotated[str | None, Query(max_length=32, description="loyalty tier, e.g. gold")] = None,
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=200,
                description="Search: the exact customer id, or the start of the email or the name (any case)",
            ),
        ] = None,
        principal: Principal = Depends(can_read_customers),
    ) -> CustomerPage:
        """Customers ordered by id, a page at a time.

        Filter custom attributes by equality with `attr.<name>=<value>` (compared as text)."""
        attributes = {
            name.removeprefix("attr."): value
            for name, value in request.query_params.items()
            if name.startswith("attr.")
        }
        page, last = customers.list_customers(
            uow=uow_factory(),
            shop_id=principal.shop_id,
            limit=limit,
            after=_decode_cursor(cursor) if cursor else None,
            updated_since=updated_since,
            attributes=attributes,
            segment=segment,
            churn_risk=churn_risk,
            tier=tier,
            text=q,
        )
        return CustomerPage(
            customers=[CustomerSummary.model_validate(row) for row in page],
            next_cursor=_encode_cursor(last) if last else None,
        )

    @router.put("/customers/{customer_id}/consents", response_model=CustomerRead, tags=["consent"])
    def put_consents(
        customer_id: CustomerId, body: ConsentsWrite, principal: Principal = Depends(can_write_customers)
    ) -> dict[str, object]:
        """Change consent per channel, with its legal basis and source; each change is kept in the history."""
        changes = [
            customers.ConsentChange(channel, change.granted, change.legal_basis, change.source)
            for channel, change in body.model_dump(exclude_none=True).items()
            for change in [ConsentWrite.model_validate(change)]
        ]
        return customers.set_consents(
            uow=uow_factory(), shop_id=principal.shop_id, customer_id=customer_id, consents=changes
        )

    @router.get("/customers/{customer_id}/consents/history", response_model=ConsentHistory, tags=["consent"])
    def get_consent_history(
        customer_id: CustomerId, principal: Principal = Depends(can_read_customers)
    ) -> ConsentHistory:
        """Every consent change of the customer, oldest first: the audit trail."""
        history = customers.consent_history(
            uow=uow_factory(), shop_id=principal.shop_id, customer_id=customer_id
        )
        return ConsentHistory(
            customer_id=customer_id, history=[ConsentHistoryEntry(**entry) for entry in history]
        )

    @router.post(
        "/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated, tags=["api keys"]
    )
    def create_api_key(body: ApiKeyCreate, principal: Principal = Depends(is_admin)) -> ApiKeyCreated:
        """Issue a named key with the given scopes. The key is in this answer only."""
        row, key = keys.create_key(
            uow=uow_factory(),
            shop_id=principal.shop_id,
            name=body.name,
            scopes=tuple(dict.fromkeys(body.scopes)),
        )
        return ApiKeyCreated(**row, api_key=key)

    @router.get("/api-keys", response_model=ApiKeyList, tags=["api keys"])
    def list_api_keys(principal: Principal = Depends(is_admin)) -> ApiKeyList:
        """The shop's keys: names, prefixes and scopes, never the keys themselves."""
        return ApiKeyList(
            keys=[ApiKeyRead(**row) for row in keys.list_keys(uow=uow_factory(), shop_id=principal.shop_id)]
        )

    @router.post("/api-keys/{key_id}/rotate", response_model=ApiKeyCreated, tags=["api keys"])
    def rotate_api_key(key_id: KeyId, principal: Principal = Depends(is_admin)) -> ApiKeyCreated:
        """Replace a key with a new one (same name and scopes); the old key stops working at once."""
        row, key = keys.rotate_key(uow=uow_factory(), shop_id=principal.shop_id, key_id=key_id)
        return ApiKeyCreated(**row, api_key=key)

    @router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["api keys"])
    def revoke_api_key(key_id: KeyId, principal: Principal = Depends(is_admin)) -> Response:
        """Revoke a key; every service refuses it within seconds."""
        keys.revoke_key(uow=uow_factory(), shop_id=principal.shop_id, key_id=key_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/shops/{shop_id}/api-keys",
        status_code=status.HTTP_201_CREATED,
        response_model=ApiKeyCreated,
        tags=["shops"],
    )
    def operator_issues_key(shop_id: KeyId, body: ApiKeyCreate, _: None = Depends(operator)) -> ApiKeyCreated:
        """Issue a key for a shop (operator only), e.g. when a shop has lost its admin key."""
        row, key = keys.create_key(
            uow=uow_factory(), shop_id=shop_id, name=body.name, scopes=tuple(body.scopes)
        )
        return ApiKeyCreated(**row, api_key=key)

    def history_page(customer_id: str, entries: list[dict[str, Any]], limit: int) -> History:
        last = entries[-1] if len(entries) == limit else None
        return History(
            customer_id=customer_id,
            entries=[HistoryEntry.model_validate(entry) for entry in entries],
            next_cursor=_encode_cursor(f"{last['at'].isoformat()}|{last['id']}") if last else None,
        )

    def events_route(path: str, types: tuple[str, ...], summary: str) -> None:
        def get_events(
            customer_id: CustomerId,
            limit: Limit = 50,
            cursor: Cursor = None,
            principal: Principal = Depends(can_read_customers),
        ) -> History:
            entries = history.events_of(
                uow=uow_factory(),
                shop_id=principal.shop_id,
                customer_id=customer_id,
                types=types,
                limit=limit,
                after=_position(cursor),
            )
            return history_page(customer_id, entries, limit)

        router.add_api_route(
            f"/customers/{{customer_id}}/{path}",
            get_events,
            methods=["GET"],
            response_model=History,
            tags=["history"],
            summary=summary,
            name=f"get_{path}",
        )

    events_route("purchases", history.PURCHASE_TYPES, "The customer's purchases and refunds, newest first")
    events_route(
        "tickets", history.TICKET_TYPES, "The customer's support tickets opened and resolved, newest first"
    )

    @router.get("/customers/{customer_id}/activity", response_model=History, tags=["history"])
    def get_activity(
        customer_id: CustomerId,
        limit: Limit = 50,
        cursor: Cursor = None,
        principal: Principal = Depends(can_read_customers),
    ) -> History:
        """One timeline: purchases, tickets, logins, follow-ups sent and survey answers, newest first."""
        entries = history.timeline(
            uow=uow_factory(),
            shop_id=principal.shop_id,
            customer_id=customer_id,
            limit=limit,
            after=_position(cursor),
        )
        return history_page(customer_id, entries, limit)

    @router.delete(
        "/customers/{customer_id}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ErasureReceipt,
        tags=["privacy"],
    )
    def erase_customer(
        customer_id: CustomerId, principal: Principal = Depends(can_write_customers)
    ) -> ErasureReceipt:
        """Erase the customer here at once, and in every service within seconds; returns the receipt."""
        receipt = erasure.erase_customer(
            uow=uow_factory(), shop_id=principal.shop_id, customer_id=customer_id, secret=signing_secret
        )
        return ErasureReceipt.model_validate(receipt)

    @router.get("/customers/{customer_id}/export", tags=["privacy"])
    def export_customer(
        customer_id: CustomerId, principal: Principal = Depends(can_read_customers)
    ) -> JSONResponse:
        """Everything held about the customer, as one JSON document (right of access)."""
        document = export.export_customer(
            uow=uow_factory(), shop_id=principal.shop_id, customer_id=customer_id
        )
        return JSONResponse(
            jsonable_encoder(document),
            headers={"Content-Disposition": f'attachment; filename="customer-{customer_id}.json"'},
        )

    @router.get("/erasures/{erasure_id}", response_model=ErasureReceipt, tags=["privacy"])
    def get_erasure(erasure_id: KeyId, principal: Principal = Depends(can_read_customers)) -> ErasureReceipt:
        """An erasure receipt: which services have confirmed, and what they removed (counts only)."""
        return ErasureReceipt.model_validate(
            erasure.read_receipt(uow=uow_factory(), shop_id=principal.shop_id, erasure_id=erasure_id)
        )

    @router.get("/erasures", response_model=ErasureList, tags=["privacy"])
    def find_erasures(
        customer_id: Annotated[str, Query(pattern=ID_PATTERN)],
        principal: Principal = Depends(can_read_customers),
    ) -> ErasureList:
        """The receipts for a customer id, found by its digest (the id itself is not stored)."""
        found = erasure.receipts_for(
            uow=uow_factory(), shop_id=principal.shop_id, customer_id=customer_id, secret=signing_secret
        )
        return ErasureList(erasures=[ErasureReceipt.model_validate(r) for r in found])

    @router.get("/customers/{customer_id}", response_model=CustomerRead, tags=["customers"])
    async def get_customer(
        customer_id: CustomerId, principal: Principal = Depends(can_read_customers)
    ) -> dict[str, object]:
        """The customer's profile and consents."""
        # async with one explicit hop for the database: a sync endpoint would hop to the thread
        # pool twice, once to run and once more to validate and serialize its answer.
        return await run_in_threadpool(
            customers.read_customer, uow=uow_factory(), shop_id=principal.shop_id, customer_id=customer_id
        )

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
    async def post_events(request: Request, principal: Principal = Depends(can_write_events)) -> Response:
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
        # The documented EventBatchResult, written directly: validating a model per event of a
        # 1,000-event batch only to serialize it again costs a tenth of the request.
        answer = {"results": [{"id": r.id, "status": r.status, "error": r.error} for r in results]}
        return Response(to_json(answer), status_code=status.HTTP_202_ACCEPTED, media_type="application/json")

    return router


def _encode_cursor(customer_id: str) -> str:
    return base64.urlsafe_b64encode(customer_id.encode()).decode().rstrip("=")


def _position(cursor: str | None) -> history.Position | None:
    if cursor is None:
        return None
    at, separator, entry_id = _decode_cursor(cursor).partition("|")
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        moment = None
    if not separator or moment is None or moment.tzinfo is None:
        raise Problem(
            400,
            "Bad Request",
            "The cursor is not one this API gave out",
            errors=[{"field": "cursor", "message": "invalid"}],
        )
    return history.Position(at=moment, id=entry_id)


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(
            400,
            "Bad Request",
            "The cursor is not one this API gave out",
            errors=[{"field": "cursor", "message": "invalid"}],
        ) from exc


def _parse_batch(body: bytes) -> EventBatch:
    try:
        return EventBatch.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from exc
