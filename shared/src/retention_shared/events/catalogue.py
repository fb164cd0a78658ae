"""The event catalogue: one pydantic model per event type, with its topic.

The JSON Schemas and the AsyncAPI document in docs/ are generated from these models
(`retention catalogue`), so this module is the single source of truth.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema

from retention_shared.events import topics
from retention_shared.events.envelope import ID_PATTERN
from retention_shared.events.topics import Topic


def _id() -> Any:
    return Field(pattern=ID_PATTERN, description="At most 128 characters: letters, digits and ._:@-")


def _currency() -> Any:
    return Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")


Channel = Literal["email", "sms", "line", "phone", "webhook"]

# Money travels as a decimal string ("4800", "12.50") so no float rounding creeps in; plain JSON
# numbers are accepted too. Negative amounts are refused.
Amount = Annotated[
    Decimal,
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
                {"type": "number", "minimum": 0},
            ],
            "description": 'Non-negative decimal; a string such as "4800" or "12.50" is preferred',
        }
    ),
]


class EventData(BaseModel):
    """Unknown fields are ignored, so additive changes keep the schema version."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# --- tenancy ---------------------------------------------------------------------------------


class ShopRegistered(EventData):
    name: str = Field(min_length=1, max_length=200)
    timezone: str
    currency: str = _currency()
    locale: str


class ApiKeyIssued(EventData):
    key_id: str = _id()
    name: str
    prefix: str
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the key; never the key itself")
    scopes: list[str]


class ApiKeyRevoked(EventData):
    key_id: str = _id()


# --- customer --------------------------------------------------------------------------------


class CustomerUpserted(EventData):
    created: bool
    email: str | None = None
    phone: str | None = None
    line_user_id: str | None = None
    name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    birthday: date | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class ConsentChanged(EventData):
    channel: Literal["email", "sms", "line", "phone"]
    granted: bool
    legal_basis: str = "consent"
    source: str = "api"


class CustomerErased(EventData):
    erasure_id: str = _id()


class ErasureCompleted(EventData):
    """A service reports that it purged the customer's personal data (counts only, never the data)."""

    erasure_id: str = _id()
    service: str
    purged: dict[str, int] = Field(default_factory=dict, description="What was removed, by kind, as counts")


class TierChanged(EventData):
    from_tier: str | None = Field(None, alias="from")
    to_tier: str = Field(alias="to")


# --- activity --------------------------------------------------------------------------------


class PurchaseItem(EventData):
    sku: str = Field(min_length=1, max_length=128)
    name: str | None = Field(None, max_length=500)
    category: str | None = Field(None, max_length=128)
    quantity: int = Field(1, ge=1)
    unit_price: Amount


class PurchaseMade(EventData):
    order_id: str = _id()
    amount: Amount
    currency: str = _currency()
    items: list[PurchaseItem] = Field(default_factory=list, max_length=1000)


class RefundIssued(EventData):
    order_id: str = _id()
    amount: Amount
    currency: str = _currency()
    reason: str | None = Field(None, max_length=500)


class LoginRecorded(EventData):
    device: str | None = Field(None, max_length=64)


class LoginDropped(EventData):
    recent_rate_per_week: float = Field(ge=0)
    baseline_rate_per_week: float = Field(ge=0)
    recent_days: int = Field(14, ge=1)
    baseline_days: int = Field(56, ge=1)


class TicketOpened(EventData):
    ticket_id: str = _id()
    priority: Literal["low", "normal", "high", "critical"] = "normal"
    subject: str | None = Field(None, max_length=500)
    category: str | None = Field(None, max_length=128)


class TicketResolved(EventData):
    ticket_id: str = _id()
    first_response_at: AwareDatetime | None = None


# --- insight ---------------------------------------------------------------------------------


class RfmScores(EventData):
    r: int = Field(ge=1, le=5)
    f: int = Field(ge=1, le=5)
    m: int = Field(ge=1, le=5)


class SegmentChanged(EventData):
    from_segment: str | None = Field(None, alias="from")
    to_segment: str = Field(alias="to")
    rfm: RfmScores | None = None


class ChurnRiskChanged(EventData):
    from_band: Literal["low", "medium", "high"] | None = Field(None, alias="from")
    to_band: Literal["low", "medium", "high"] = Field(alias="to")
    probability_alive: float | None = Field(None, ge=0, le=1)


class CustomerScored(EventData):
    """The customer's predictions moved materially (the first ones, or CLV by 10% or more)."""

    clv: float | None = Field(None, ge=0, description="Discounted expected spend over the horizon")
    horizon_months: int = Field(12, ge=1, description="The CLV's horizon")
    expected_purchases: float | None = Field(None, ge=0, description="Expected purchases over the horizon")
    probability_alive: float | None = Field(None, ge=0, le=1)


# --- follow-up -------------------------------------------------------------------------------


class FollowupScheduled(EventData):
    run_id: str
    step_id: str
    playbook_key: str
    step_key: str
    due_at: AwareDatetime
    channels: list[Channel]


class FollowupSent(EventData):
    run_id: str
    step_id: str
    playbook_key: str
    step_key: str
    channel: Channel
    idempotency_key: str


class FollowupFailed(EventData):
    run_id: str
    step_id: str
    playbook_key: str
    step_key: str
    channel: Channel | None = None
    reason: str
    permanent: bool


class FollowupSkipped(EventData):
    run_id: str
    step_id: str
    playbook_key: str
    step_key: str
    reason: str


class FollowupCancelled(EventData):
    run_id: str
    step_id: str
    playbook_key: str
    step_key: str
    reason: str


# --- survey ----------------------------------------------------------------------------------


class SurveyAnswered(EventData):
    survey_id: str
    response_id: str
    kind: Literal["nps", "csat", "ces"]
    score: int
    detractor: bool
    touchpoint: str | None = None
    context: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class EventSpec:
    type: str
    model: builtins.type[EventData]
    topic: Topic
    summary: str
    ingestible: bool = False  # accepted from shops through POST /v1/events and the activity topic
    version: int = 1


def _spec(
    type_: str, model: type[EventData], topic: Topic, summary: str, ingestible: bool = False
) -> EventSpec:
    return EventSpec(type_, model, topic, summary, ingestible)


CATALOGUE: dict[str, EventSpec] = {
    spec.type: spec
    for spec in (
        _spec("shop_registered", ShopRegistered, topics.TENANCY, "The operator created a shop"),
        _spec("api_key_issued", ApiKeyIssued, topics.TENANCY, "A shop got a new API key (hash only)"),
        _spec("api_key_revoked", ApiKeyRevoked, topics.TENANCY, "An API key was revoked"),
        _spec("customer_upserted", CustomerUpserted, topics.CUSTOMER, "A customer was created or changed"),
        _spec("consent_changed", ConsentChanged, topics.CUSTOMER, "Consent for one channel changed"),
        _spec("customer_erased", CustomerErased, topics.CUSTOMER, "The customer asked to be forgotten"),
        _spec(
            "erasure_completed",
            ErasureCompleted,
            topics.CUSTOMER,
            "A service purged an erased customer's data",
        ),
        _spec("tier_changed", TierChanged, topics.CUSTOMER, "The customer's loyalty tier changed"),
        _spec("purchase_made", PurchaseMade, topics.ACTIVITY, "An order was placed", True),
        _spec("refund_issued", RefundIssued, topics.ACTIVITY, "Money was returned for an order", True),
        _spec("login_recorded", LoginRecorded, topics.ACTIVITY, "The customer signed in", True),
        _spec(
            "login_dropped", LoginDropped, topics.ACTIVITY, "The customer signs in far less than before", True
        ),
        _spec("ticket_opened", TicketOpened, topics.ACTIVITY, "The customer opened a support ticket", True),
        _spec("ticket_resolved", TicketResolved, topics.ACTIVITY, "A support ticket was resolved", True),
        _spec("segment_changed", SegmentChanged, topics.INSIGHT, "The customer moved to another segment"),
        _spec("churn_risk_changed", ChurnRiskChanged, topics.INSIGHT, "The customer's churn band changed"),
        _spec("customer_scored", CustomerScored, topics.INSIGHT, "The customer's CLV or predictions moved"),
        _spec("followup_scheduled", FollowupScheduled, topics.FOLLOWUP, "A follow-up step was scheduled"),
        _spec("followup_sent", FollowupSent, topics.FOLLOWUP, "A follow-up was handed to its channel"),
        _spec("followup_failed", FollowupFailed, topics.FOLLOWUP, "A follow-up could not be delivered"),
        _spec(
            "followup_skipped",
            FollowupSkipped,
            topics.FOLLOWUP,
            "A follow-up was not sent, and why (no consent…)",
        ),
        _spec(
            "followup_cancelled",
            FollowupCancelled,
            topics.FOLLOWUP,
            "A pending follow-up was cancelled (an exit…)",
        ),
        _spec("survey_answered", SurveyAnswered, topics.SURVEY, "A customer answered a survey"),
    )
}

INGESTIBLE_TYPES: tuple[str, ...] = tuple(t for t, s in CATALOGUE.items() if s.ingestible)


def spec_for(event_type: str) -> EventSpec:
    """The catalogue entry for a type; KeyError for an unknown type."""
    return CATALOGUE[event_type]


def validate_data(event_type: str, data: dict[str, Any], schemaversion: int = 1) -> EventData:
    spec = spec_for(event_type)
    if schemaversion != spec.version:
        raise KeyError(f"{event_type} v{schemaversion}")
    return spec.model.model_validate(data)
