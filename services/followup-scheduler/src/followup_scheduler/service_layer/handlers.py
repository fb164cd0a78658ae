"""Event handlers: keep contact data current, start playbook runs, and end them on exit events."""

from __future__ import annotations

import secrets
from typing import Any

from followup_scheduler.domain.playbook import Playbook, due_time
from followup_scheduler.service_layer.defaults import ensure_default_playbooks
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events.catalogue import FollowupCancelled, FollowupScheduled
from retention_shared.events.envelope import Envelope

CONTACT_FIELDS = ("email", "phone", "line_user_id", "name", "locale", "timezone")


def shop_registered(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    ensure_default_playbooks(uow, event.shop_id)


def customer_upserted(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    assert event.customer_id is not None
    existing = uow.repo.contact(event.shop_id, event.customer_id)
    uow.repo.upsert_contact(
        {
            "shop_id": event.shop_id,
            "customer_id": event.customer_id,
            **{name: event.data.get(name) for name in CONTACT_FIELDS},
            "consents": existing["consents"] if existing else {},
            "updated_at": uow.clock.now(),
        }
    )


def consent_changed(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    assert event.customer_id is not None
    existing = uow.repo.contact(event.shop_id, event.customer_id)
    values: dict[str, Any] = (
        dict(existing) if existing else {"shop_id": event.shop_id, "customer_id": event.customer_id}
    )
    values["consents"] = {
        **(values.get("consents") or {}),
        event.data["channel"]: bool(event.data["granted"]),
    }
    values["updated_at"] = uow.clock.now()
    uow.repo.upsert_contact(values)


def trigger(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    """Apply exit rules of the customer's active runs, then start the playbooks this event triggers."""
    if event.customer_id is None:
        return
    _apply_exits(event, uow)
    ensure_default_playbooks(uow, event.shop_id)
    now = uow.clock.now()
    for row in uow.repo.playbooks_for(event.shop_id, event.type):
        playbook = Playbook.model_validate(row["document"])
        if now - event.time > playbook.trigger.max_event_age:
            continue  # history (e.g. an import) must not message customers about old orders
        business_key = playbook.business_key_of(event.id, event.data)
        if uow.repo.run_exists(event.shop_id, playbook.key, business_key):
            continue  # once per business key
        _start_run(event, uow, row, playbook, business_key)


def _start_run(
    event: Envelope, uow: SchedulerUnitOfWork, row: dict[str, Any], playbook: Playbook, business_key: str
) -> None:
    assert event.customer_id is not None
    now = uow.clock.now()
    run_id = f"run_{secrets.token_hex(8)}"
    contact = uow.repo.contact(event.shop_id, event.customer_id)
    timezone = contact.get("timezone") if contact else None
    uow.repo.add_run(
        {
            "id": run_id,
            "shop_id": event.shop_id,
            "customer_id": event.customer_id,
            "playbook_id": row["id"],
            "playbook_key": playbook.key,
            "playbook_version": row["version"],
            "business_key": business_key,
            "trigger_event_id": event.id,
            "context": {"event_type": event.type, "event": event.data},
            "status": "active",
            "started_at": now,
        }
    )
    step_rows = []
    for position, step in enumerate(playbook.steps):
        due = max(due_time(step, event.time, timezone), now)
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
                "priority": playbook.priority_of(step),
                "channels": list(step.channels),
                "template": step.template,
                "due_at": due,
                "status": "scheduled",
                # Derived from the run's identity, so a redelivered trigger could never mint a second key.
                "idempotency_key": f"{event.shop_id}.{playbook.key}.{business_key}.{step.key}"[:128],
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
                due_at=due,
                channels=list(step.channels),
            ),
        )
    uow.repo.add_steps(step_rows)


def _apply_exits(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    assert event.customer_id is not None
    now = uow.clock.now()
    active = uow.repo.active_runs(event.shop_id, event.customer_id)
    if not active:
        return
    playbooks_by_id = {row["id"]: row for row in uow.repo.all_playbooks(event.shop_id)}
    for run in active:
        playbook_row = playbooks_by_id.get(run["playbook_id"])
        if playbook_row is None:
            continue
        playbook = Playbook.model_validate(playbook_row["document"])
        for rule in playbook.exit:
            if rule.event != event.type:
                continue
            if (
                rule.same_business_key
                and playbook.business_key_of(event.id, event.data) != run["business_key"]
            ):
                continue
            reason = f"exit: {event.type}"
            for step in uow.repo.end_run(run["id"], "exited", reason, now):
                uow.publish(
                    "followup_cancelled",
                    shop_id=event.shop_id,
                    customer_id=event.customer_id,
                    data=FollowupCancelled(
                        run_id=run["id"],
                        step_id=step["id"],
                        playbook_key=step["playbook_key"],
                        step_key=step["step_key"],
                        reason=reason,
                    ),
                )
            break
