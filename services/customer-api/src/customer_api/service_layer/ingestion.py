"""Event ingestion: each event validated on its own, stored once per (shop, event id), published."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from customer_api.adapters import tables
from customer_api.adapters.repository import insert_ignoring_duplicates
from customer_api.domain.money import amount_problem, check_currency
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.clock import ensure_utc
from retention_shared.db import json_dumps
from retention_shared.events.catalogue import INGESTIBLE_TYPES, spec_for
from retention_shared.events.envelope import ID_PATTERN, build_envelope
from retention_shared.logs import correlation_id

MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1_000_000

Status = Literal["accepted", "duplicate", "rejected"]


class IncomingEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    type: str
    customer_id: str = Field(pattern=ID_PATTERN)
    occurred_at: AwareDatetime
    data: dict[str, Any]


@dataclass(frozen=True)
class EventResult:
    id: str | None
    status: Status
    error: str | None = None


def _describe(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(
        f"{'.'.join([prefix, *map(str, e['loc'])] if prefix else list(map(str, e['loc'])))}: {e['msg']}"
        for e in exc.errors()
    )


def validate_event(raw: Any) -> tuple[IncomingEvent | None, str | None]:
    """The event if valid, else the reason naming the failing field."""
    if not isinstance(raw, dict):
        return None, "event must be a JSON object"
    if raw.get("type") not in INGESTIBLE_TYPES:
        expected = ", ".join(INGESTIBLE_TYPES)
        return (
            None,
            f"type: unknown or non-ingestible event type {raw.get('type')!r}; expected one of {expected}",
        )
    try:
        event = IncomingEvent.model_validate(raw)
    except ValidationError as exc:
        return None, _describe(exc)
    try:
        validated = spec_for(event.type).model.model_validate(event.data)
    except ValidationError as exc:
        return None, _describe(exc, "data")
    money_error = _money_problem(validated.model_dump())
    if money_error is not None:
        return None, money_error
    return event.model_copy(
        update={"data": validated.model_dump(mode="json", by_alias=True, exclude_none=True)}
    ), None


def _money_problem(data: dict[str, Any]) -> str | None:
    """The currency must be a real ISO 4217 code, and amounts must fit its precision."""
    currency = data.get("currency")
    if currency is None:
        return None
    try:
        check_currency(currency)
    except ValueError as exc:
        return f"data.currency: {exc}"
    amounts = [("data.amount", data.get("amount"))] + [
        (f"data.items.{index}.unit_price", item.get("unit_price"))
        for index, item in enumerate(data.get("items", []))
    ]
    for field, amount in amounts:
        problem = amount_problem(amount, currency) if amount is not None else None
        if problem is not None:
            return f"{field}: {problem}"
    return None


def ingest_events(*, uow: CustomerApiUnitOfWork, shop_id: str, raw_events: list[Any]) -> list[EventResult]:
    """Store and publish every valid, new event in one transaction; report per event."""
    results: list[EventResult | None] = [None] * len(raw_events)
    candidates: dict[str, tuple[int, IncomingEvent]] = {}
    for index, raw in enumerate(raw_events):
        event, error = validate_event(raw)
        if event is None:
            raw_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
            results[index] = EventResult(raw_id, "rejected", error)
        elif event.id in candidates:
            results[index] = EventResult(event.id, "duplicate")  # repeated within the batch
        else:
            candidates[event.id] = (index, event)

    now = uow.clock.now()
    with uow:
        rows = [
            {
                "shop_id": shop_id,
                "event_id": event.id,
                "type": event.type,
                "customer_id": event.customer_id,
                "occurred_at": ensure_utc(event.occurred_at),
                "received_at": now,
                "payload": json_dumps(event.data),
            }
            for _, event in candidates.values()
        ]
        inserted = insert_ignoring_duplicates(
            uow.session, tables.ingested_events, rows, tables.ingested_events.c.event_id
        )
        for event_id, (index, event) in candidates.items():
            if event_id not in inserted:
                results[index] = EventResult(event_id, "duplicate")
                continue
            uow.outbox.add(
                build_envelope(
                    id=event.id,
                    type=event.type,
                    source="customer-api",
                    shop_id=shop_id,
                    customer_id=event.customer_id,
                    data=event.data,
                    time=event.occurred_at,
                    correlation_id=correlation_id.get(),
                )
            )
            results[index] = EventResult(event_id, "accepted")
        uow.commit()
    return [result for result in results if result is not None]


def batch_too_large(body: bytes) -> bool:
    return len(body) > MAX_BATCH_BYTES


def parse_batch(body: bytes) -> Any:
    return json.loads(body)
