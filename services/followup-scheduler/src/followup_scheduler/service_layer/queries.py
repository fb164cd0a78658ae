"""Use cases behind the API that are not event handlers: dry runs, previews, results, cancelling."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from followup_scheduler.adapters.rendering import Rendered, Renderer
from followup_scheduler.domain.delivery import choose_route
from followup_scheduler.domain.hygiene import FollowupSettings, held_out, quiet_until
from followup_scheduler.domain.planning import plan_run
from followup_scheduler.domain.playbook import Playbook
from followup_scheduler.domain.results import GroupOutcome, uplift
from followup_scheduler.service_layer.context import SAMPLE_EVENTS, message_context, sample_contexts
from followup_scheduler.service_layer.handlers import customer_facts, publish_cancelled
from followup_scheduler.service_layer.settings import load_settings
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork

PLATFORM_EMAIL = ("email",)  # the platform's SMTP server serves every shop without its own


def configured_channels(uow: SchedulerUnitOfWork, shop_id: str) -> set[str]:
    channels = set(PLATFORM_EMAIL)
    for row in uow.repo.channel_configs(shop_id):
        if row["enabled"]:
            channels.add(row["channel"])
        else:
            channels.discard(row["channel"])
    return channels


def simulate(
    uow: SchedulerUnitOfWork,
    *,
    shop_id: str,
    playbook: Playbook,
    customer_id: str,
    customer_overrides: dict[str, Any],
    event_type: str,
    event_id: str,
    event_time: datetime,
    data: dict[str, Any],
) -> dict[str, Any]:
    """What the scheduler would do with this event for this customer; nothing is written."""
    now = uow.clock.now()
    settings = load_settings(uow, shop_id)
    customer = {**customer_facts(uow, shop_id, customer_id), **customer_overrides}
    if event_type == "purchase_made" and "purchase_count" not in customer_overrides:
        customer["purchase_count"] = int(customer.get("purchase_count") or 0) + 1  # this purchase
    business_key = playbook.business_key_of(event_id, data)
    plan = plan_run(
        playbook,
        shop_id=shop_id,
        customer_id=customer_id,
        event_type=event_type,
        event_id=event_id,
        event_time=event_time,
        data=data,
        customer=customer,
        now=now,
        key_taken=uow.repo.run_exists(shop_id, playbook.key, business_key),
        previous_run_at=uow.repo.last_run_started(shop_id, playbook.key, customer_id),
        global_holdout_percent=settings.global_holdout_percent,
    )
    shop = uow.repo.shop(shop_id) or {}
    timezone = customer.get("timezone") or shop.get("timezone")
    configured = configured_channels(uow, shop_id)
    steps = []
    for planned in plan.steps:
        entry: dict[str, Any] = {
            "key": planned.step.key,
            "action": planned.step.action,
            "priority": planned.priority,
            "scheduled": planned.scheduled and plan.starts,
            "due_at": planned.due_at,
            "send_at": None,
            "channel": None,
            "outcome": "not_scheduled",
            "reasons": [],
        }
        steps.append(entry)
        if not planned.scheduled or planned.due_at is None:
            entry["reasons"].append(f"only_if: {planned.reason}")
            continue
        if not plan.starts:
            entry["reasons"].append("the run does not start")
            continue
        _predict(
            entry,
            planned.step.action,
            list(planned.step.channels),
            customer,
            configured,
            plan.group,
            settings,
            timezone,
            planned.due_at,
        )
    return {
        "starts": plan.starts,
        "reasons": plan.reasons,
        "business_key": plan.business_key,
        "holdout_group": plan.group,
        "steps": steps,
    }


def _predict(
    entry: dict[str, Any],
    action: str,
    channels: list[str],
    customer: dict[str, Any],
    configured: set[str],
    group: str,
    settings: FollowupSettings,
    timezone: str | None,
    due_at: datetime,
) -> None:
    if action == "staff_task":
        entry["channel"] = "webhook"
        entry["outcome"], entry["send_at"] = ("send", due_at) if "webhook" in configured else ("skip", None)
        if "webhook" not in configured:
            entry["reasons"].append("webhook: channel not configured")
        return
    route, why_not = choose_route(channels, customer, configured=configured)
    if route is None:
        entry["outcome"] = "skip"
        entry["reasons"].append(why_not)
        return
    entry["channel"] = route.channel
    holdout = held_out(group, entry["priority"])
    if holdout is not None:
        entry["outcome"] = "skip"
        entry["reasons"].append(holdout)
        return
    send_at = due_at
    if entry["priority"] not in settings.quiet_hours_exempt:
        quiet = settings.quiet_hours.get(route.channel)  # type: ignore[call-overload]
        until = quiet_until(due_at, quiet, timezone)
        if until is not None:
            send_at = until
            entry["reasons"].append(f"deferred by quiet hours for {route.channel} until {until.isoformat()}")
    entry["outcome"] = "send"
    entry["send_at"] = send_at
    if entry["priority"] != "transactional":
        entry["reasons"].append("the frequency budget is checked when the step falls due")


def preview(
    uow: SchedulerUnitOfWork,
    renderer: Renderer,
    *,
    shop_id: str,
    playbook_row: dict[str, Any],
    playbook: Playbook,
    step_key: str,
    customer_id: str,
) -> tuple[Rendered, str] | None:
    """The step rendered for a customer: from their latest run of this playbook, or sample data."""
    step = next((s for s in playbook.steps if s.key == step_key), None)
    contact = uow.repo.contact(shop_id, customer_id)
    if step is None or contact is None:
        return None
    shop = dict(uow.repo.shop(shop_id) or {"name": "", "locale": "en"})
    run = uow.repo.latest_run(shop_id, playbook.key, customer_id) or {
        "context": {
            "event_type": playbook.trigger.event,
            "event": SAMPLE_EVENTS.get(playbook.trigger.event, {}),
        }
    }
    survey = sample_contexts(playbook.trigger.event, step.action)[0]["survey"]
    fake_step = {"shop_id": shop_id, "customer_id": customer_id, "run_id": run.get("id", "")}
    context = message_context(
        uow, step=fake_step, contact=contact, shop=shop, run=run, survey=survey, unsubscribe_url=None
    )
    locale = contact.get("locale") or shop.get("locale") or "en"
    return renderer.render(step.template, locale, context, playbook.templates), locale


def results(uow: SchedulerUnitOfWork, *, shop_id: str, playbook: Playbook) -> dict[str, Any]:
    """Conversion of treated versus control runs whose goal window has closed."""
    now = uow.clock.now()
    within = playbook.conversion_goal.within
    runs = uow.repo.playbook_runs(shop_id, playbook.key)
    purchases = uow.repo.purchase_times(shop_id, sorted({run["customer_id"] for run in runs}))
    counts = {"treated": [0, 0], "control": [0, 0]}
    maturing = 0
    excluded = 0
    for run in runs:
        group = run["holdout_group"]
        if group not in counts:
            excluded += 1  # the global holdout is outside this playbook's experiment
            continue
        start = run["triggered_at"] or run["started_at"]
        if start + within > now:
            maturing += 1
            continue
        converted = any(
            start < occurred_at <= start + within and order_id != run["business_key"]
            for occurred_at, order_id in purchases.get(run["customer_id"], [])
        )
        counts[group][0] += 1
        counts[group][1] += int(converted)
    treated = GroupOutcome(*counts["treated"])
    control = GroupOutcome(*counts["control"])
    effect = uplift(treated, control)
    return {
        "goal": {"event": playbook.conversion_goal.event, "within": within},
        "treated": {
            "runs": treated.customers,
            "converted": treated.converted,
            "conversion_rate": treated.rate,
        },
        "control": {
            "runs": control.customers,
            "converted": control.converted,
            "conversion_rate": control.rate,
        },
        "uplift": effect.absolute,
        "uplift_ci95": [effect.ci_low, effect.ci_high] if effect.absolute is not None else None,
        "relative_uplift": effect.relative,
        "runs_still_in_goal_window": maturing,
        "runs_in_global_holdout": excluded,
        "control_group_percent": playbook.control_group_percent,
    }


class NotCancellable(Exception):
    pass


def cancel_followup(uow: SchedulerUnitOfWork, *, shop_id: str, step_id: str) -> dict[str, Any] | None:
    """Cancel one pending step; None when it is unknown (or another shop's)."""
    step = uow.repo.step(shop_id, step_id, lock=True)
    if step is None:
        return None
    if step["status"] not in ("scheduled", "paused"):
        raise NotCancellable(f"the follow-up is {step['status']}, not pending")
    now = uow.clock.now()
    reason = "cancelled through the API"
    uow.repo.update_step(step_id, status="cancelled", reason=reason, updated_at=now)
    uow.repo.finish_run_if_done(step["run_id"], now)
    publish_cancelled(uow, step, reason)
    return {**step, "status": "cancelled", "reason": reason, "updated_at": now}
