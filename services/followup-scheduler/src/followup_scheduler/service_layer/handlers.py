"""Event handlers: keep contact data current, start playbook runs, and end or pause them on exits."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from followup_scheduler.domain.planning import RunPlan, plan_run
from followup_scheduler.domain.playbook import Playbook
from followup_scheduler.service_layer.defaults import ensure_default_playbooks
from followup_scheduler.service_layer.settings import load_settings
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events.catalogue import FollowupCancelled, FollowupScheduled
from retention_shared.events.envelope import Envelope

CONTACT_FIELDS = ("email", "phone", "line_user_id", "name", "locale", "timezone", "birthday", "attributes")
# Facts other services publish about a customer, kept for trigger conditions and templates.
PROFILE_FACTS = {"segment_changed": "segment", "tier_changed": "tier", "churn_risk_changed": "churn_band"}


def shop_registered(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    ensure_default_playbooks(uow, event.shop_id)


def customer_upserted(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    assert event.customer_id is not None
    values: dict[str, Any] = {name: event.data.get(name) for name in CONTACT_FIELDS}
    if isinstance(values["birthday"], str):
        values["birthday"] = datetime.fromisoformat(values["birthday"]).date()
    uow.repo.update_contact(event.shop_id, event.customer_id, uow.clock.now(), **values)


def consent_changed(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    assert event.customer_id is not None
    existing = uow.repo.contact(event.shop_id, event.customer_id)
    consents = {
        **((existing or {}).get("consents") or {}),
        event.data["channel"]: bool(event.data["granted"]),
    }
    uow.repo.update_contact(event.shop_id, event.customer_id, uow.clock.now(), consents=consents)


def trigger(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    """Apply exit rules of the customer's active runs, then start the playbooks this event triggers."""
    if event.customer_id is None:
        return
    now = uow.clock.now()
    fact = PROFILE_FACTS.get(event.type)
    if fact is not None and event.data.get("to"):
        uow.repo.update_contact(event.shop_id, event.customer_id, now, **{fact: event.data["to"]})
    if event.type == "purchase_made":
        uow.repo.record_purchase(
            {
                "shop_id": event.shop_id,
                "order_id": str(event.data["order_id"]),
                "customer_id": event.customer_id,
                "amount": str(event.data.get("amount", "0")),
                "currency": str(event.data.get("currency", "XXX"))[:3],
                "occurred_at": event.time,
            },
            [item for item in event.data.get("items") or [] if isinstance(item, dict)],
        )
    _apply_exits(event, uow)
    ensure_default_playbooks(uow, event.shop_id)
    rows = uow.repo.playbooks_for(event.shop_id, event.type)
    if not rows:
        return
    customer = customer_facts(uow, event.shop_id, event.customer_id)
    settings = load_settings(uow, event.shop_id)
    for row in rows:
        playbook = Playbook.model_validate(row["document"])
        business_key = playbook.business_key_of(event.id, event.data)
        plan = plan_run(
            playbook,
            shop_id=event.shop_id,
            customer_id=event.customer_id,
            event_type=event.type,
            event_id=event.id,
            event_time=event.time,
            data=event.data,
            customer=customer,
            now=now,
            key_taken=uow.repo.run_exists(event.shop_id, playbook.key, business_key),
            previous_run_at=uow.repo.last_run_started(event.shop_id, playbook.key, event.customer_id),
            global_holdout_percent=settings.global_holdout_percent,
        )
        if plan.starts:
            _start_run(event, uow, row, playbook, plan)


def customer_facts(uow: SchedulerUnitOfWork, shop_id: str, customer_id: str) -> dict[str, Any]:
    """What trigger conditions may ask about a customer."""
    contact = uow.repo.contact(shop_id, customer_id) or {}
    return {**contact, "purchase_count": uow.repo.purchase_count(shop_id, customer_id)}


def _start_run(
    event: Envelope, uow: SchedulerUnitOfWork, row: dict[str, Any], playbook: Playbook, plan: RunPlan
) -> None:
    assert event.customer_id is not None
    now = uow.clock.now()
    run_id = f"run_{secrets.token_hex(8)}"
    uow.repo.add_run(
        {
            "id": run_id,
            "shop_id": event.shop_id,
            "customer_id": event.customer_id,
            "playbook_id": row["id"],
            "playbook_key": playbook.key,
            "playbook_version": row["version"],
            "business_key": plan.business_key,
            "trigger_event_id": event.id,
            "context": {"event_type": event.type, "event": event.data},
            "status": "active",
            "holdout_group": plan.group,
            "triggered_at": event.time,
            "started_at": now,
        }
    )
    step_rows = []
    for position, planned in enumerate(plan.steps):
        if not planned.scheduled or planned.due_at is None:
            continue  # its only_if conditions do not hold for this event
        step = planned.step
        step_id = f"stp_{secrets.token_hex(8)}"
        step_rows.append(
            {
                "id": step_id,
                "run_id": run_id,
                "shop_id": event.shop_id,
                "customer_id": event.customer_id,
                "playbook_key": playbook.key,
                "step_key": step.key,
                "position": position,
                "action": step.action,
                "priority": planned.priority,
                "channels": list(step.channels),
                "template": step.template,
                "survey": step.survey,
                "due_at": planned.due_at,
                "first_due_at": planned.due_at,
                "status": "scheduled",
                # Derived from the run's identity, so a redelivered trigger could never mint a second key.
                "idempotency_key": f"{event.shop_id}.{playbook.key}.{plan.business_key}.{step.key}"[:128],
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        uow.publish(
            "followup_scheduled",
            shop_id=event.shop_id,
            customer_id=event.customer_id,
            data=FollowupScheduled(
                run_id=run_id,
                step_id=step_id,
                playbook_key=playbook.key,
                step_key=step.key,
                due_at=planned.due_at,
                channels=list(step.channels),
            ),
        )
    uow.repo.add_steps(step_rows)
    if not step_rows:
        uow.repo.finish_run_if_done(run_id, now)


def run_playbook(uow: SchedulerUnitOfWork, run: dict[str, Any]) -> Playbook | None:
    """The playbook version a run started with (runs keep their rules when the playbook changes)."""
    document = uow.repo.playbook_document(run["playbook_id"], run["playbook_version"])
    return Playbook.model_validate(document) if document is not None else None


def _apply_exits(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    assert event.customer_id is not None
    now = uow.clock.now()
    for run in uow.repo.active_runs(event.shop_id, event.customer_id):
        playbook = run_playbook(uow, run)
        if playbook is None:
            continue
        for rule in playbook.exit:
            if event.type == rule.resume_on:
                _resume_surveys(uow, run, event.type, now)
            if rule.event != event.type:
                continue
            if (
                rule.same_business_key
                and playbook.exit_key_of(rule, event.id, event.data) != run["business_key"]
            ):
                continue
            if rule.effect == "pause_surveys":
                _pause_surveys(uow, run, event.type, now)
                continue
            reason = f"exit: {event.type}"
            for step in uow.repo.end_run(run["id"], "exited", reason, now):
                publish_cancelled(uow, step, reason)
            break


def _pause_surveys(uow: SchedulerUnitOfWork, run: dict[str, Any], event_type: str, now: datetime) -> None:
    for step in uow.repo.run_steps(run["id"], "scheduled"):
        if step["action"] == "survey_invitation":
            uow.repo.update_step(step["id"], status="paused", reason=f"paused: {event_type}", updated_at=now)


def _resume_surveys(uow: SchedulerUnitOfWork, run: dict[str, Any], event_type: str, now: datetime) -> None:
    for step in uow.repo.run_steps(run["id"], "paused"):
        uow.repo.update_step(
            step["id"],
            status="scheduled",
            due_at=max(step["due_at"], now),
            reason=f"resumed: {event_type}",
            updated_at=now,
        )


def publish_cancelled(uow: SchedulerUnitOfWork, step: dict[str, Any], reason: str) -> None:
    uow.publish(
        "followup_cancelled",
        shop_id=step["shop_id"],
        customer_id=step["customer_id"],
        data=FollowupCancelled(
            run_id=step["run_id"],
            step_id=step["id"],
            playbook_key=step["playbook_key"],
            step_key=step["step_key"],
            reason=reason,
        ),
    )
