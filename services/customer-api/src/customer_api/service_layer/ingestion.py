"""Event ingestion: each event validated on its own, stored once per (shop, event id), published."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from customer_api.adapters.bulk import encode_json, serialize_event, store_new_events
from customer_api.domain.money import amount_problem, check_currency
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.catalogue import INGESTIBLE_TYPES, EventData, spec_for
from retention_shared.events.envelope import ID_PATTERN, partition_key
from retention_shared.logs import correlation_id

MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1_000_000

SOURCE = "customer-api"

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


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """An event that passed validation, its data normalised to JSON types."""

    id: str
    type: str
    customer_id: str
    occurred_at: datetime
    data: dict[str, Any]


def validate_event(raw: Any) -> tuple[AcceptedEvent | None, str | None]:
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
    money_error = _money_problem(validated)
    if money_error is not None:
        return None, money_error
    data = validated.model_dump(mode="json", by_alias=True, exclude_none=True)
    return AcceptedEvent(event.id, event.type, event.customer_id, event.occurred_at, data), None


def _money_problem(data: EventData) -> str | None:
    """The currency must be a real ISO 4217 code, and amounts must fit its precision."""
    # Asked of the model's fields, not with getattr's default: a pydantic model answers a missing
    # attribute by building an AttributeError, which costs more than the rest of this check.
    fields = type(data).model_fields
    currency = data.currency if "currency" in fields else None  # type: ignore[attr-defined]
    if currency is None:
        return None
    try:
        check_currency(currency)
    except ValueError as exc:
        return f"data.currency: {exc}"
    amounts = [("data.amount", data.amount if "amount" in fields else None)]  # type: ignore[attr-defined]
    if "items" in fields:
        amounts += [
            (f"data.items.{index}.unit_price", item.unit_price)
            for index, item in enumerate(data.items)  # type: ignore[attr-defined]
        ]
    for field, amount in amounts:
        problem = amount_problem(amount, currency) if amount is not None else None
        if problem is not None:
            return f"{field}: {problem}"
    return None


def ingest_events(*, uow: CustomerApiUnitOfWork, shop_id: str, raw_events: list[Any]) -> list[EventResult]:
    """Store and publish every valid, new event in one transaction; report per event.

    The events and their outbox rows go in with COPY on PostgreSQL (see `adapters.bulk`), the same
    way as the history import's; a concurrent request with some of the same ids waits for this one
    and then skips them, so each event is accepted exactly once.
    """
    results: list[EventResult | None] = [None] * len(raw_events)
    candidates: dict[str, tuple[int, AcceptedEvent]] = {}
    for index, raw in enumerate(raw_events):
        event, error = validate_event(raw)
        if event is None:
            raw_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
            results[index] = EventResult(raw_id, "rejected", error)
        elif event.id in candidates:
            results[index] = EventResult(event.id, "duplicate")  # repeated within the batch
        else:
            candidates[event.id] = (index, event)

    shop_json = encode_json(shop_id)
    correlation_json = encode_json(correlation_id.get())
    serialized = [
        serialize_event(
            event_id=event.id,
            event_type=event.type,
            customer_id=event.customer_id,
            occurred_at=event.occurred_at,
            data=event.data,
            source=SOURCE,
            shop_json=shop_json,
            correlation_json=correlation_json,
        )
        for _, event in candidates.values()
    ]
    with uow:
        outbox = uow.outbox
        inserted = store_new_events(uow.session, shop_id, serialized, uow.clock.now(), careful=True)
        for row in serialized:
            index, event = candidates[row.event_id]
            if row.event_id not in inserted:
                results[index] = EventResult(row.event_id, "duplicate")
                continue
            outbox.add_serialized(
                event_id=row.event_id,
                topic=spec_for(event.type).topic.name,
                key=partition_key(shop_id, event.customer_id),
                envelope=row.envelope,
            )
            results[index] = EventResult(row.event_id, "accepted")
        uow.commit()
    return [result for result in results if result is not None]


def batch_too_large(body: bytes) -> bool:
    return len(body) > MAX_BATCH_BYTES


def parse_batch(body: bytes) -> Any:
    return json.loads(body)
