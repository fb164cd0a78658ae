"""Playbooks: what to send, on which trigger, when, and when to stop (plain Python + pydantic)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

Channel = Literal["email", "sms", "line", "webhook"]
Priority = Literal["transactional", "service", "survey", "marketing"]
DEFAULT_PREFERRED_HOUR = 10


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


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    delay: timedelta | Window = Field(description="ISO 8601 duration (PT0S, P3D) or a {from, to} window")
    channels: list[Channel] = Field(min_length=1, description="In order of preference; falls back by consent")
    template: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,127}$")
    action: Literal["message"] = "message"
    priority: Priority | None = None


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: str
    business_key: str | None = Field(
        None, description="Field of the event's data that names the run, e.g. order_id"
    )
    max_event_age: timedelta = Field(
        timedelta(days=2), description="Older events (history imports) start nothing"
    )


class ExitRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: str
    same_business_key: bool = True


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    trigger: Trigger
    priority: Priority = "service"
    steps: list[Step] = Field(min_length=1, max_length=50)
    exit: list[ExitRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_step_keys(self) -> Playbook:
        keys = [step.key for step in self.steps]
        if len(keys) != len(set(keys)):
            raise ValueError("step keys must be unique")
        return self

    def business_key_of(self, event_id: str, data: dict[str, object]) -> str:
        if self.trigger.business_key is None:
            return event_id
        value = data.get(self.trigger.business_key)
        return str(value) if value is not None else event_id

    def priority_of(self, step: Step) -> Priority:
        return step.priority or self.priority


def due_time(
    step: Step, trigger_time: datetime, timezone: str | None, preferred_hour: int = DEFAULT_PREFERRED_HOUR
) -> datetime:
    """When a step falls due: a fixed delay after the trigger, or the customer's preferred local
    hour inside the step's window (the window's start when no such hour falls inside it)."""
    if isinstance(step.delay, timedelta):
        return trigger_time + step.delay
    start = trigger_time + step.delay.earliest
    end = trigger_time + step.delay.latest
    zone = _zone(timezone)
    local_start = start.astimezone(zone)
    candidate = local_start.replace(hour=preferred_hour, minute=0, second=0, microsecond=0)
    if candidate < local_start:
        candidate += timedelta(days=1)
    return candidate.astimezone(start.tzinfo) if candidate <= end.astimezone(zone) else start


def _zone(timezone: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(timezone or "UTC")
    except Exception:
        return ZoneInfo("UTC")
