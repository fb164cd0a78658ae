"""One envelope for every message, with CloudEvents-style attributes. JSON on the wire."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$"
SPEC_VERSION = "1.0"


class EnvelopeError(ValueError):
    """A record that is not a valid envelope; it can never succeed, so it goes to the dead-letter topic."""


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    specversion: str = SPEC_VERSION
    id: str = Field(pattern=ID_PATTERN, description="Unique per shop; the idempotency key of the event")
    type: str = Field(min_length=1, max_length=64)
    source: str = Field(min_length=1, max_length=256, description="Who emitted it, e.g. 'customer-api'")
    time: AwareDatetime = Field(description="When it happened (not when it was sent)")
    schemaversion: int = Field(1, ge=1)
    shop_id: str = Field(pattern=ID_PATTERN)
    customer_id: str | None = Field(None, pattern=ID_PATTERN)
    correlation_id: str | None = Field(None, max_length=128)
    data: dict[str, Any] = Field(default_factory=dict)

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @property
    def key(self) -> str:
        return partition_key(self.shop_id, self.customer_id)


def partition_key(shop_id: str, customer_id: str | None) -> str:
    """Records are keyed by shop and customer, so one customer's events stay in order."""
    return f"{shop_id}:{customer_id or ''}"


def new_event_id() -> str:
    return str(uuid.uuid4())


def build_envelope(
    *,
    type: str,
    source: str,
    shop_id: str,
    customer_id: str | None,
    data: dict[str, Any],
    time: datetime,
    id: str | None = None,
    correlation_id: str | None = None,
    schemaversion: int = 1,
) -> Envelope:
    return Envelope(
        id=id or new_event_id(),
        type=type,
        source=source,
        time=time,
        shop_id=shop_id,
        customer_id=customer_id,
        data=data,
        correlation_id=correlation_id,
        schemaversion=schemaversion,
    )


def decode_envelope(raw: bytes | str) -> Envelope:
    """Parse and validate an envelope and its data against the catalogue."""
    from retention_shared.events.catalogue import validate_data

    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise EnvelopeError("envelope must be a JSON object")
    try:
        envelope = Envelope.model_validate(document)
    except ValidationError as exc:
        raise EnvelopeError(_describe(exc)) from exc
    try:
        validate_data(envelope.type, envelope.data, envelope.schemaversion)
    except ValidationError as exc:
        raise EnvelopeError(_describe(exc, prefix="data")) from exc
    except KeyError as exc:
        raise EnvelopeError(f"type: unknown event type {envelope.type!r}") from exc
    return envelope


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for error in exc.errors():
        path = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(error["loc"]))
        parts.append(f"{path}: {error['msg']}")
    return "; ".join(parts)
