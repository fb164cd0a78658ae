"""Request and response bodies of the customer-api."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from customer_api.domain.contact import LOCALE_PATTERN, check_timezone, normalise_email, normalise_phone
from customer_api.domain.money import check_currency

ConsentChannel = Literal["email", "sms", "line", "phone"]
Scope = Literal["events:write", "customers:read", "customers:write", "admin"]


class ShopCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    timezone: str = Field("Asia/Tokyo", description="IANA timezone of the shop")
    currency: str = Field("JPY", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
    locale: str = Field("ja", pattern=LOCALE_PATTERN)

    _tz = field_validator("timezone")(check_timezone)
    _currency = field_validator("currency")(check_currency)


class ShopCreated(BaseModel):
    id: str
    api_key: str = Field(description="Shown once; store it now. Only its prefix is kept visible.")
    api_key_prefix: str
    scopes: list[str]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(
        min_length=1, description="events:write, customers:read, customers:write, admin"
    )


class ApiKeyRead(BaseModel):
    key_id: str
    name: str
    prefix: str = Field(description="The visible start of the key, to tell keys apart")
    scopes: list[str]
    revoked: bool
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    api_key: str = Field(description="Shown once; store it now")


class ApiKeyList(BaseModel):
    keys: list[ApiKeyRead]


class ConsentWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    granted: bool
    legal_basis: Literal["consent", "contract", "legitimate_interest", "legal_obligation"] = "consent"
    source: str = Field(
        "api", min_length=1, max_length=64, description="Where it was given, e.g. checkout, unsubscribe"
    )


class ConsentsWrite(BaseModel):
    """Only the channels given change; each change is kept in the audit trail."""

    model_config = ConfigDict(extra="forbid")

    email: ConsentWrite | None = None
    sms: ConsentWrite | None = None
    line: ConsentWrite | None = None
    phone: ConsentWrite | None = None


class ConsentHistoryEntry(BaseModel):
    channel: str
    granted: bool
    legal_basis: str
    source: str
    changed_at: datetime


class ConsentHistory(BaseModel):
    customer_id: str
    history: list[ConsentHistoryEntry]


class CustomerWrite(BaseModel):
    """The whole profile: fields left out are cleared. Consents given are changed; others are kept."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, description="E.164, e.g. +819012345678")
    line_user_id: str | None = Field(None, max_length=128)
    name: str | None = Field(None, max_length=200)
    locale: str | None = Field(None, pattern=LOCALE_PATTERN)
    timezone: str | None = Field(None, description="IANA timezone, e.g. Asia/Tokyo")
    birthday: date | None = None
    attributes: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=50)
    consents: dict[ConsentChannel, bool] = Field(default_factory=dict, description='e.g. {"email": true}')

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return normalise_email(value) if value is not None else None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return normalise_phone(value) if value is not None else None

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return check_timezone(value) if value is not None else None


class CustomerPatch(CustomerWrite):
    """Only the fields given change; a null clears a field."""


class ConsentRead(BaseModel):
    granted: bool
    legal_basis: str
    source: str
    changed_at: datetime


class CustomerSummary(BaseModel):
    customer_id: str
    email: str | None
    phone: str | None
    line_user_id: str | None
    name: str | None
    locale: str | None
    timezone: str | None
    birthday: date | None
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class InsightsRead(BaseModel):
    """From the other services' events; each part says when it was last true (`*_as_of`)."""

    segment: str | None
    rfm: dict[str, int] | None
    segment_as_of: datetime | None
    churn_risk: str | None
    probability_alive: float | None
    churn_as_of: datetime | None
    last_survey: dict[str, Any] | None
    survey_as_of: datetime | None
    clv: float | None = Field(None, description="Predicted lifetime value over `clv_horizon_months`")
    clv_horizon_months: int | None = None
    expected_purchases: float | None = Field(None, description="Expected purchases over the CLV's horizon")
    scores_as_of: datetime | None = None


class UpcomingFollowup(BaseModel):
    step_id: str
    playbook: str
    step: str
    due_at: datetime | None
    updated_at: datetime = Field(description="When the scheduler last reported on this step")


class CustomerRead(CustomerSummary):
    consents: dict[str, ConsentRead]
    insights: InsightsRead | None = Field(None, description="Null until the other services have reported")
    next_followups: list[UpcomingFollowup] = Field(default_factory=list)


class CustomerPage(BaseModel):
    customers: list[CustomerSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class HistoryEntry(BaseModel):
    kind: str = Field(
        description="purchase_made, refund_issued, login_recorded, ticket_opened, followup_sent, …"
    )
    at: datetime
    id: str
    data: dict[str, Any]


class History(BaseModel):
    customer_id: str
    entries: list[HistoryEntry] = Field(description="Newest first")
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for older entries; null when there are none"
    )


class ErasureReceipt(BaseModel):
    """Proof of an erasure, holding no personal data: counts per service, never the data."""

    erasure_id: str
    status: Literal["in_progress", "completed"]
    subject_digest: str = Field(description="HMAC-SHA256 of the shop's customer id; not reversible")
    requested_at: datetime
    completed_at: datetime | None
    services: dict[str, dict[str, Any] | None] = Field(
        description="Each service's confirmation; null = pending"
    )


class ErasureList(BaseModel):
    erasures: list[ErasureReceipt]


class EventBatch(BaseModel):
    events: list[Any] = Field(
        min_length=1,
        max_length=1000,
        description="Up to 1,000 events (and 1 MB). Each is "
        '{"id", "type", "customer_id", "occurred_at", "data"} and is validated on its own.',
    )


class EventResultRead(BaseModel):
    id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    error: str | None = None


class EventBatchResult(BaseModel):
    results: list[EventResultRead]
