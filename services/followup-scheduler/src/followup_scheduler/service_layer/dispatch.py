"""The dispatcher: claims due steps one at a time and delivers them.

A step is locked (FOR UPDATE SKIP LOCKED) for the whole delivery and its outcome is committed
with the outgoing event, so replicas never send the same step, and a crash before the commit
leaves the step due again. The step's idempotency key travels to the provider (the e-mail's
Message-ID), so a provider can drop the copy sent again after such a crash.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jinja2 import TemplateError

from followup_scheduler.adapters.channels.base import (
    Channel,
    OutgoingMessage,
    PermanentChannelError,
    TransientChannelError,
)
from followup_scheduler.adapters.rendering import Renderer, TemplateNotFound
from followup_scheduler.domain.delivery import choose_route
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events.catalogue import FollowupFailed, FollowupSent, FollowupSkipped

log = logging.getLogger(__name__)

CONTACT_GRACE = timedelta(minutes=10)
CONTACT_RETRY = timedelta(seconds=2)


@dataclass
class Dispatcher:
    uow_factory: Callable[[], SchedulerUnitOfWork]
    channels: Mapping[str, Channel]
    renderer: Renderer
    max_attempts: int = 6
    batch_limit: int = 500
    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(hours=1)

    def dispatch_due(self) -> int:
        """Deliver due steps until none is left or the batch limit is reached."""
        handled = 0
        while handled < self.batch_limit:
            with self.uow_factory() as uow:
                step = uow.repo.claim_due_step(uow.clock.now())
                if step is None:
                    return handled
                self._deliver(uow, step)
                uow.commit()
            handled += 1
        return handled

    def _deliver(self, uow: SchedulerUnitOfWork, step: dict[str, Any]) -> None:
        now = uow.clock.now()
        contact = uow.repo.contact(step["shop_id"], step["customer_id"])
        if contact is None:
            if now - step["created_at"] < CONTACT_GRACE:
                # Profile events travel on another topic and may arrive after the trigger.
                uow.repo.update_step(
                    step["id"],
                    due_at=now + CONTACT_RETRY,
                    reason="waiting for the customer's profile",
                    updated_at=now,
                )
            else:
                self._finish(uow, step, "skipped", "no contact data for this customer")
            return
        route, why_not = choose_route(list(step["channels"]), contact)
        if route is None:
            self._finish(uow, step, "skipped", why_not)
            return
        channel = self.channels.get(route.channel)
        if channel is None:
            self._finish(uow, step, "skipped", f"{route.channel}: channel not configured")
            return
        run = uow.repo.run(step["run_id"]) or {"context": {}}
        shop = uow.repo.shop(step["shop_id"]) or {"name": "", "locale": "en"}
        locale = contact.get("locale") or shop.get("locale") or "en"
        try:
            rendered = self.renderer.render(
                step["template"],
                locale,
                {"customer": contact, "shop": shop, "order": run["context"].get("event", {})},
            )
        except (TemplateError, TemplateNotFound) as exc:
            self._fail(uow, step, route.channel, f"template {step['template']}: {exc}", permanent=True)
            return
        message = OutgoingMessage(
            channel=route.channel,
            recipient=route.address,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            idempotency_key=step["idempotency_key"],
            sender_name=shop.get("name") or "Retention",
            locale=locale,
        )
        try:
            channel.send(message)
        except PermanentChannelError as exc:
            self._fail(uow, step, route.channel, str(exc), permanent=True)
            return
        except TransientChannelError as exc:
            self._retry_later(uow, step, route.channel, str(exc))
            return
        uow.repo.update_step(
            step["id"],
            status="sent",
            channel=route.channel,
            sent_at=now,
            attempts=step["attempts"] + 1,
            reason=None,
            updated_at=now,
        )
        uow.repo.record_message(
            {
                "step_id": step["id"],
                "shop_id": step["shop_id"],
                "customer_id": step["customer_id"],
                "channel": route.channel,
                "recipient": route.address,
                "subject": rendered.subject,
                "body": rendered.text,
                "sent_at": now,
            }
        )
        uow.publish(
            "followup_sent",
            shop_id=step["shop_id"],
            customer_id=step["customer_id"],
            data=FollowupSent(
                run_id=step["run_id"],
                step_id=step["id"],
                playbook_key=step["playbook_key"],
                step_key=step["step_key"],
                channel=route.channel,
                idempotency_key=step["idempotency_key"],
            ),
        )
        uow.repo.finish_run_if_done(step["run_id"], now)

    def _retry_later(self, uow: SchedulerUnitOfWork, step: dict[str, Any], channel: str, error: str) -> None:
        attempts = step["attempts"] + 1
        if attempts >= self.max_attempts:
            self._fail(uow, step, channel, f"gave up after {attempts} attempts: {error}", permanent=False)
            return
        backoff = min(self.retry_cap, self.retry_base * 2 ** (attempts - 1))
        delay = backoff * random.uniform(0.5, 1.0)  # jitter spreads retries after an outage
        now = uow.clock.now()
        uow.repo.update_step(
            step["id"],
            attempts=attempts,
            due_at=now + delay,
            reason=f"retrying: {error}"[:500],
            updated_at=now,
        )
        log.warning("step %s deferred after a transient %s failure: %s", step["id"], channel, error)

    def _fail(
        self,
        uow: SchedulerUnitOfWork,
        step: dict[str, Any],
        channel: str | None,
        reason: str,
        *,
        permanent: bool,
    ) -> None:
        self._finish(uow, step, "failed", reason, channel=channel, attempts=step["attempts"] + 1)
        uow.publish(
            "followup_failed",
            shop_id=step["shop_id"],
            customer_id=step["customer_id"],
            data=FollowupFailed(
                run_id=step["run_id"],
                step_id=step["id"],
                playbook_key=step["playbook_key"],
                step_key=step["step_key"],
                channel=channel,
                reason=reason[:500],
                permanent=permanent,
            ),
        )

    def _finish(
        self, uow: SchedulerUnitOfWork, step: dict[str, Any], status: str, reason: str | None, **extra: Any
    ) -> None:
        now = uow.clock.now()
        uow.repo.update_step(step["id"], status=status, reason=(reason or "")[:500], updated_at=now, **extra)
        uow.repo.finish_run_if_done(step["run_id"], now)
        if status == "skipped":
            uow.publish(
                "followup_skipped",
                shop_id=step["shop_id"],
                customer_id=step["customer_id"],
                data=FollowupSkipped(
                    run_id=step["run_id"],
                    step_id=step["id"],
                    playbook_key=step["playbook_key"],
                    step_key=step["step_key"],
                    reason=(reason or "")[:500],
                ),
            )
