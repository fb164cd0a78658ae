"""Deciding whether an event starts a playbook run and when each step falls due.

The same function serves the real trigger and the dry run (`POST /v1/playbooks/{id}/simulate`),
so the simulation cannot drift from what the scheduler does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from followup_scheduler.domain.hygiene import holdout_group
from followup_scheduler.domain.playbook import Playbook, Step, due_time, unmet_conditions


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    priority: str
    due_at: datetime | None
    scheduled: bool
    reason: str | None = None


@dataclass
class RunPlan:
    starts: bool
    business_key: str
    group: str
    reasons: list[str] = field(default_factory=list)
    steps: list[PlannedStep] = field(default_factory=list)


def plan_run(
    playbook: Playbook,
    *,
    shop_id: str,
    customer_id: str,
    event_type: str,
    event_id: str,
    event_time: datetime,
    data: dict[str, Any],
    customer: dict[str, Any],
    now: datetime,
    key_taken: bool,
    previous_run_at: datetime | None,
    global_holdout_percent: float,
) -> RunPlan:
    """Whether this event starts a run of `playbook` for the customer, and its steps' due times."""
    business_key = playbook.business_key_of(event_id, data)
    group = holdout_group(
        shop_id, customer_id, playbook.key, global_holdout_percent, playbook.control_group_percent
    )
    plan = RunPlan(starts=True, business_key=business_key, group=group)
    if event_type != playbook.trigger.event:
        plan.reasons.append(f"the playbook starts on {playbook.trigger.event}, not {event_type}")
    if now - event_time > playbook.trigger.max_event_age:
        # History (e.g. an import) must not message customers about old orders.
        plan.reasons.append(f"the event is older than {playbook.trigger.max_event_age}")
    plan.reasons.extend(unmet_conditions(playbook.trigger.conditions, event_type, data, customer))
    if key_taken:
        plan.reasons.append(
            f"re-entry: a run for {playbook.trigger.business_key or 'event'} {business_key!r} exists"
        )
    if (
        playbook.reentry.policy == "once_per_days"
        and previous_run_at is not None
        and playbook.reentry.days is not None
        and now - previous_run_at < timedelta(days=playbook.reentry.days)
    ):
        plan.reasons.append(f"re-entry: the last run started less than {playbook.reentry.days} days ago")
    plan.starts = not plan.reasons
    timezone = customer.get("timezone")
    for step in playbook.steps:
        priority = playbook.priority_of(step)
        unmet = unmet_conditions(step.only_if, event_type, data, customer) if step.only_if else []
        if unmet:
            plan.steps.append(PlannedStep(step, priority, None, False, "; ".join(unmet)))
            continue
        plan.steps.append(PlannedStep(step, priority, max(due_time(step, event_time, timezone), now), True))
    return plan
