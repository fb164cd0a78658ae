"""Playbooks: what to send, on which trigger, when, and when to stop (plain Python + pydantic).

The pydantic models here are the published playbook format: `docs/schemas/playbook.schema.json`
is generated from `Playbook` (see `playbook_json_schema`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Channel = Literal["email", "sms", "line", "webhook"]
Priority = Literal["transactional", "service", "survey", "marketing"]
Action = Literal["message", "survey_invitation", "staff_task"]
DEFAULT_PREFERRED_HOUR = 10
KEY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
TEMPLATE_PATTERN = r"^[a-z][a-z0-9_.]{0,127}$"

# Events a playbook may start on or exit on: the ones this service consumes.
TRIGGER_EVENTS = (
    "purchase_made",
    "refund_issued",
    "login_dropped",
    "ticket_opened",
    "ticket_resolved",
    "segment_changed",
    "churn_risk_changed",
    "tier_changed",
    "survey_answered",
    "customer_birthday",
)
TriggerEvent = Literal[
    "purchase_made",
    "refund_issued",
    "login_dropped",
    "ticket_opened",
    "ticket_resolved",
    "segment_changed",
    "churn_risk_changed",
    "tier_changed",
    "survey_answered",
    "customer_birthday",
]


class Window(BaseModel):
    """A delay window: the send time falls at the customer's preferred hour within it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    earliest: timedelta = Field(alias="from", description="ISO 8601 duration, e.g. P1D")
    latest: timedelta = Field(alias="to", description="ISO 8601 duration, e.g. P2D")

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.latest < self.earliest:
            raise ValueError("'to' must not be before 'from'")
        return self


class Conditions(BaseModel):
    """Conditions on the triggering event and on the customer; all given ones must hold."""

    model_config = ConfigDict(extra="forbid")

    segment_in: list[str] | None = Field(
        None, description="The customer's segment (for segment_changed: the new one)"
    )
    tier_in: list[str] | None = Field(None, description="The customer's loyalty tier")
    churn_band_in: list[Literal["low", "medium", "high"]] | None = Field(
        None, description="The customer's churn band (for churn_risk_changed: the new one)"
    )
    min_amount: Decimal | None = Field(None, ge=0, description="The event's amount is at least this")
    first_purchase: bool | None = Field(
        None, description="true: only the customer's first purchase; false: only repeat purchases"
    )
    product_category_in: list[str] | None = Field(
        None, description="At least one purchased item is in one of these categories"
    )
    ticket_priority_in: list[Literal["low", "normal", "high", "critical"]] | None = None
    survey_kind_in: list[Literal["nps", "csat", "ces"]] | None = None
    detractor: bool | None = Field(None, description="survey_answered: the answer is a detractor's")
    data_equals: dict[str, str | int | bool] | None = Field(
        None, description="Other fields of the event's data that must have these values"
    )


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY_PATTERN)
    delay: timedelta | Window = Field(
        description="ISO 8601 duration (PT0S, P3D), a window 'P1D..P2D' or {from, to}"
    )
    channels: list[Channel] = Field(
        min_length=1, description="In order of preference; falls back by consent and availability"
    )
    template: str = Field(pattern=TEMPLATE_PATTERN)
    action: Action = "message"
    survey: str | None = Field(
        None,
        description="survey_invitation: a survey id, or nps / csat / ces for the shop's default survey",
        max_length=128,
    )
    priority: Priority | None = None
    only_if: Conditions | None = Field(None, description="Schedule this step only when these hold")

    @field_validator("delay", mode="before")
    @classmethod
    def _window_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str) and ".." in value:
            earliest, _, latest = value.partition("..")
            return {"from": earliest.strip(), "to": latest.strip()}
        return value

    @model_validator(mode="after")
    def _survey_named(self) -> Step:
        if self.action == "survey_invitation" and not self.survey:
            raise ValueError("a survey_invitation step names its survey (an id, or nps / csat / ces)")
        if self.action != "survey_invitation" and self.survey:
            raise ValueError("only a survey_invitation step names a survey")
        if self.action == "staff_task" and self.channels != ["webhook"]:
            raise ValueError("a staff_task goes to the shop's webhook: channels must be [webhook]")
        return self


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: TriggerEvent
    business_key: str | None = Field(
        None, description="Field of the event's data that names the run, e.g. order_id"
    )
    conditions: Conditions = Field(default_factory=Conditions)
    max_event_age: timedelta = Field(
        timedelta(days=2), description="Older events (history imports) start nothing"
    )


class ExitRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: TriggerEvent
    same_business_key: bool = Field(
        True, description="Only an event about the run's business key (e.g. the same order_id)"
    )
    key_field: str | None = Field(
        None, description="Field of the exit event holding the key, when it is named differently"
    )
    effect: Literal["end", "pause_surveys"] = Field(
        "end", description="end the run, or hold its survey steps until `resume_on`"
    )
    resume_on: TriggerEvent | None = None

    @model_validator(mode="after")
    def _resume_only_for_pause(self) -> ExitRule:
        if self.resume_on is not None and self.effect != "pause_surveys":
            raise ValueError("resume_on applies only to effect pause_surveys")
        return self


class Reentry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: Literal["once_per_key", "once_per_days"] = "once_per_key"
    days: int | None = Field(None, ge=1, le=3650)

    @model_validator(mode="after")
    def _days_given(self) -> Reentry:
        if self.policy == "once_per_days" and self.days is None:
            raise ValueError("once_per_days needs days")
        return self


class ConversionGoal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: Literal["purchase_made"] = "purchase_made"
    within: timedelta = Field(timedelta(days=14), description="ISO 8601 duration after the trigger")


class InlineTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(max_length=500)
    text: str = Field(max_length=20000)
    html: str | None = Field(None, max_length=100000)


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Playbook")

    key: str = Field(pattern=KEY_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    trigger: Trigger
    priority: Priority = "service"
    steps: list[Step] = Field(min_length=1, max_length=50)
    exit: list[ExitRule] = Field(default_factory=list)
    reentry: Reentry = Field(default_factory=Reentry)
    conversion_goal: ConversionGoal = Field(default_factory=ConversionGoal)
    control_group_percent: float = Field(
        0, ge=0, le=50, description="Share of customers held out as this playbook's control group"
    )
    templates: dict[str, dict[str, InlineTemplate]] = Field(
        default_factory=dict,
        description="Templates of this playbook by name and locale; they override the packaged ones",
    )

    @model_validator(mode="after")
    def _unique_step_keys(self) -> Playbook:
        keys = [step.key for step in self.steps]
        if len(keys) != len(set(keys)):
            raise ValueError("step keys must be unique")
        return self

    def business_key_of(self, event_id: str, data: dict[str, Any]) -> str:
        if self.trigger.business_key is None:
            return event_id
        value = data.get(self.trigger.business_key)
        return str(value) if value is not None else event_id

    def exit_key_of(self, rule: ExitRule, event_id: str, data: dict[str, Any]) -> str:
        field = rule.key_field or self.trigger.business_key
        value = data.get(field) if field else None
        return str(value) if value is not None else event_id

    def priority_of(self, step: Step) -> Priority:
        return step.priority or self.priority


def playbook_json_schema() -> dict[str, Any]:
    """The published JSON Schema of a playbook document."""
    schema = Playbook.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://retention.dev/schemas/playbook.schema.json"
    return schema


# --- trigger conditions -------------------------------------------------------------------


def unmet_conditions(
    conditions: Conditions, event_type: str, data: dict[str, Any], customer: dict[str, Any]
) -> list[str]:
    """Why the conditions do not hold for this event and customer (empty when they all hold)."""
    reasons: list[str] = []
    segment = data.get("to") if event_type == "segment_changed" else customer.get("segment")
    if conditions.segment_in is not None and segment not in conditions.segment_in:
        reasons.append(f"segment {segment!r} not in {conditions.segment_in}")
    tier = data.get("to") if event_type == "tier_changed" else customer.get("tier")
    if conditions.tier_in is not None and tier not in conditions.tier_in:
        reasons.append(f"tier {tier!r} not in {conditions.tier_in}")
    band = data.get("to") if event_type == "churn_risk_changed" else customer.get("churn_band")
    if conditions.churn_band_in is not None and band not in conditions.churn_band_in:
        reasons.append(f"churn band {band!r} not in {conditions.churn_band_in}")
    if conditions.min_amount is not None:
        amount = _decimal(data.get("amount"))
        if amount is None or amount < conditions.min_amount:
            reasons.append(f"amount {data.get('amount')!r} below {conditions.min_amount}")
    if conditions.first_purchase is not None:
        first = int(customer.get("purchase_count") or 0) <= 1
        if first != conditions.first_purchase:
            reasons.append("not the first purchase" if conditions.first_purchase else "a first purchase")
    if conditions.product_category_in is not None:
        categories = {item.get("category") for item in data.get("items") or [] if isinstance(item, dict)}
        if not categories & set(conditions.product_category_in):
            reasons.append(f"no item in categories {conditions.product_category_in}")
    ticket_priority = data.get("priority") or "normal"  # the catalogue's default for ticket_opened
    if conditions.ticket_priority_in is not None and ticket_priority not in conditions.ticket_priority_in:
        reasons.append(f"ticket priority {ticket_priority!r} not in {conditions.ticket_priority_in}")
    if conditions.survey_kind_in is not None and data.get("kind") not in conditions.survey_kind_in:
        reasons.append(f"survey kind {data.get('kind')!r} not in {conditions.survey_kind_in}")
    if conditions.detractor is not None and bool(data.get("detractor")) != conditions.detractor:
        reasons.append("not a detractor" if conditions.detractor else "a detractor")
    for field, expected in (conditions.data_equals or {}).items():
        if data.get(field) != expected:
            reasons.append(f"{field} is {data.get(field)!r}, not {expected!r}")
    return reasons


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except (InvalidOperation, ValueError):
        return None


# --- timing -------------------------------------------------------------------------------


def due_time(
    step: Step, trigger_time: datetime, timezone: str | None, preferred_hour: int = DEFAULT_PREFERRED_HOUR
) -> datetime:
    """When a step falls due: a fixed delay after the trigger, or the customer's preferred local
    hour inside the step's window (the window's start when no such hour falls inside it)."""
    if isinstance(step.delay, timedelta):
        return trigger_time + step.delay
    start = trigger_time + step.delay.earliest
    end = trigger_time + step.delay.latest
    zone = zone_of(timezone)
    local_start = start.astimezone(zone)
    candidate = local_start.replace(hour=preferred_hour, minute=0, second=0, microsecond=0)
    if candidate < local_start:
        candidate += timedelta(days=1)
    return candidate.astimezone(start.tzinfo) if candidate <= end.astimezone(zone) else start


def zone_of(timezone: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(timezone or "UTC")
    except Exception:
        return ZoneInfo("UTC")
