"""Erasure: cancel the customer's pending follow-ups and delete their contact data and messages."""

from __future__ import annotations

from sqlalchemy import delete, select, update

from followup_scheduler.adapters.tables import contacts, messages, runs
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events.catalogue import ErasureCompleted, FollowupCancelled
from retention_shared.events.envelope import Envelope

SERVICE = "followup-scheduler"
REASON = "customer erased"


def customer_erased(event: Envelope, uow: SchedulerUnitOfWork) -> None:
    assert event.customer_id is not None
    now = uow.clock.now()
    cancelled = 0
    active = uow.session.execute(
        select(runs.c.id).where(
            runs.c.shop_id == event.shop_id,
            runs.c.customer_id == event.customer_id,
            runs.c.status == "active",
        )
    ).scalars()
    for run_id in list(active):
        for step in uow.repo.end_run(run_id, "cancelled", REASON, now):
            cancelled += 1
            uow.publish(
                "followup_cancelled",
                shop_id=event.shop_id,
                customer_id=event.customer_id,
                data=FollowupCancelled(
                    run_id=run_id,
                    step_id=step["id"],
                    playbook_key=step["playbook_key"],
                    step_key=step["step_key"],
                    reason=REASON,
                ),
            )
    # Runs stay (without their triggering event's data) so that the shop's holdout figures keep
    # their denominators; the event's data (order lines, a birthday) goes.
    uow.session.execute(
        update(runs)
        .where(runs.c.shop_id == event.shop_id, runs.c.customer_id == event.customer_id)
        .values(context={"erased": True})
    )
    removed_purchases = uow.repo.delete_customer_purchases(event.shop_id, event.customer_id)
    removed_messages = uow.session.execute(
        delete(messages).where(
            messages.c.shop_id == event.shop_id, messages.c.customer_id == event.customer_id
        )
    )
    removed_contacts = uow.session.execute(
        delete(contacts).where(
            contacts.c.shop_id == event.shop_id, contacts.c.customer_id == event.customer_id
        )
    )
    uow.publish(
        "erasure_completed",
        shop_id=event.shop_id,
        customer_id=event.customer_id,
        data=ErasureCompleted(
            erasure_id=event.data["erasure_id"],
            service=SERVICE,
            purged={
                "contact_points": _count(removed_contacts),
                "rendered_messages": _count(removed_messages),
                "pending_followups_cancelled": cancelled,
                "purchase_history": removed_purchases,
            },
        ),
    )


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
