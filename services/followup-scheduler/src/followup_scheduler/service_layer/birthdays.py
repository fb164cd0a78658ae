"""Birthdays: a periodic job turns a customer's local birthday into a `customer_birthday` trigger."""

from __future__ import annotations

from collections.abc import Callable

from followup_scheduler.domain.playbook import zone_of
from followup_scheduler.service_layer import handlers
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events.envelope import build_envelope


def start_birthday_runs(uow_factory: Callable[[], SchedulerUnitOfWork]) -> int:
    """Trigger today's birthdays (in each customer's own timezone); safe to run any number of times,
    since a birthday playbook's business key (`occasion`) names the customer and the year.
    Returns how many customers have their birthday today."""
    started = 0
    with uow_factory() as uow:
        now = uow.clock.now()
        candidates = uow.repo.contacts_with_birthday_near(now)
    for contact in candidates:
        local_today = now.astimezone(zone_of(contact.get("timezone"))).date()
        birthday = contact["birthday"]
        if (birthday.month, birthday.day) != (local_today.month, local_today.day):
            continue
        event = build_envelope(
            type="customer_birthday",
            source="followup-scheduler",
            shop_id=contact["shop_id"],
            customer_id=contact["customer_id"],
            data={
                "year": local_today.year,
                "occasion": f"{contact['customer_id']}:{local_today.year}",
                "birthday": birthday.isoformat(),
            },
            time=now,
            id=f"birthday-{local_today.year}-{contact['customer_id']}"[:200],
        )
        with uow_factory() as uow:
            handlers.trigger(event, uow)
            uow.commit()
        started += 1
    return started
