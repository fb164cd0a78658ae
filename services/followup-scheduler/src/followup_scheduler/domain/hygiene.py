"""Contact hygiene: a shop's frequency budget, quiet hours and holdouts (plain Python + pydantic)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from followup_scheduler.domain.playbook import Priority, zone_of

HOLDOUT_BUCKETS = 10_000


class FrequencyCap(BaseModel):
    """At most `max` messages of these priority classes within any `per` period."""

    model_config = ConfigDict(extra="forbid")

    classes: list[Literal["service", "survey", "marketing"]] = Field(min_length=1)
    max: int = Field(ge=0, le=1000)
    per: timedelta = Field(description="ISO 8601 duration, e.g. P3D")

    @model_validator(mode="after")
    def _positive_period(self) -> FrequencyCap:
        if self.per <= timedelta(0):
            raise ValueError("per must be a positive duration")
        return self


class QuietHours(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: time = Field(description="Local time quiet hours begin, e.g. 21:00")
    end: time = Field(description="Local time they end, e.g. 09:00 (may be on the next day)")


DEFAULT_QUIET = QuietHours(start=time(21, 0), end=time(9, 0))
DEFAULT_QUIET_HOURS: dict[Literal["email", "sms", "line", "webhook"], QuietHours | None] = {
    "email": DEFAULT_QUIET,
    "sms": DEFAULT_QUIET,
    "line": DEFAULT_QUIET,
}
DEFAULT_OVER_BUDGET: dict[Literal["service", "survey", "marketing"], Literal["defer", "drop"]] = {
    "service": "defer",
    "survey": "drop",
    "marketing": "defer",
}
DEFAULT_EXEMPT: list[Priority] = ["transactional"]


class FollowupSettings(BaseModel):
    """A shop's contact hygiene settings (`GET`/`PUT /v1/followup/settings`)."""

    model_config = ConfigDict(extra="forbid")

    frequency_caps: list[FrequencyCap] = Field(
        default_factory=lambda: [
            FrequencyCap(classes=["marketing"], max=1, per=timedelta(days=3)),
            FrequencyCap(classes=["marketing"], max=3, per=timedelta(days=7)),
        ]
    )
    over_budget: dict[Literal["service", "survey", "marketing"], Literal["defer", "drop"]] = Field(
        default_factory=lambda: dict(DEFAULT_OVER_BUDGET),
        description="What happens to a message over budget, by priority class",
    )
    max_deferral: timedelta = Field(
        timedelta(days=14), description="A deferred message older than this is dropped instead"
    )
    quiet_hours: dict[Literal["email", "sms", "line", "webhook"], QuietHours | None] = Field(
        default_factory=lambda: dict(DEFAULT_QUIET_HOURS),
        description="Per channel, in the customer's timezone; null or absent means none",
    )
    quiet_hours_exempt: list[Priority] = Field(default_factory=lambda: list(DEFAULT_EXEMPT))
    global_holdout_percent: float = Field(
        5, ge=0, le=50, description="Customers who get no marketing at all, to measure its effect"
    )
    survey_base_url: str | None = Field(
        None, description="The survey-service; default: the platform's public_base_url"
    )


# --- quiet hours --------------------------------------------------------------------------


def quiet_until(moment: datetime, quiet: QuietHours | None, timezone: str | None) -> datetime | None:
    """The end of the quiet period `moment` falls in (in UTC), or None when it is not quiet."""
    if quiet is None or quiet.start == quiet.end:
        return None
    zone = zone_of(timezone)
    local = moment.astimezone(zone)
    now_t = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:  # e.g. 12:00-14:00 on the same day
        if not quiet.start <= now_t < quiet.end:
            return None
        end_day = local.date()
    else:  # wraps midnight, e.g. 21:00-09:00
        if quiet.end <= now_t < quiet.start:
            return None
        end_day = local.date() if now_t < quiet.end else local.date() + timedelta(days=1)
    # Build the wall-clock end in the zone (a DST jump still lands on a real instant).
    end_local = datetime.combine(end_day, quiet.end, tzinfo=zone)
    return end_local.astimezone(moment.tzinfo)


# --- frequency budget ---------------------------------------------------------------------


def budget_opens_at(
    now: datetime, priority: str, caps: Sequence[FrequencyCap], sent: Sequence[tuple[datetime, str]]
) -> tuple[datetime | None, str | None]:
    """When a message of `priority` fits the caps, given what was sent (time, priority class).

    None when it fits now; else the earliest time every cap it falls under has room again, and
    which cap is full."""
    if priority == "transactional":
        return None, None
    opens: datetime | None = None
    full: str | None = None
    for cap in caps:
        if priority not in cap.classes:
            continue
        counted = sorted((at for at, cls in sent if cls in cap.classes and at > now - cap.per), reverse=True)
        if len(counted) < cap.max:
            continue
        if cap.max == 0:
            return now + cap.per * 1000, _describe(cap)  # never: the caller drops or defers far
        # The cap has room again once the oldest message that keeps it full drops out.
        candidate = counted[cap.max - 1] + cap.per
        if opens is None or candidate > opens:
            opens, full = candidate, _describe(cap)
    return opens, full


def _describe(cap: FrequencyCap) -> str:
    return f"at most {cap.max} {'/'.join(cap.classes)} per {_iso(cap.per)}"


def _iso(delta: timedelta) -> str:
    days, seconds = delta.days, delta.seconds
    if seconds == 0:
        return f"P{days}D"
    return f"P{days}DT{seconds}S" if days else f"PT{seconds}S"


# --- holdouts -----------------------------------------------------------------------------


def in_bucket(percent: float, *parts: str) -> bool:
    """Deterministic assignment: the same parts always land in the same bucket."""
    if percent <= 0:
        return False
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS
    return bucket < round(percent * HOLDOUT_BUCKETS / 100)


def holdout_group(
    shop_id: str, customer_id: str, playbook_key: str, global_percent: float, control_percent: float
) -> Literal["treated", "control", "global_holdout"]:
    if in_bucket(global_percent, shop_id, "global", customer_id):
        return "global_holdout"
    if in_bucket(control_percent, shop_id, "playbook", playbook_key, customer_id):
        return "control"
    return "treated"


def held_out(group: str, priority: str) -> str | None:
    """Why a step of this priority is not sent to a customer in this group, or None."""
    if priority == "transactional":
        return None  # an order confirmation is owed to everyone
    if group == "control":
        return "holdout: control group of this playbook"
    if group == "global_holdout" and priority == "marketing":
        return "holdout: global holdout (no marketing)"
    return None
