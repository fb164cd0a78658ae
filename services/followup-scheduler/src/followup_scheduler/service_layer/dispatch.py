"""The dispatcher: claims due steps one at a time and delivers them.

A step is locked (FOR UPDATE SKIP LOCKED) for the whole delivery and its outcome is committed
with the outgoing event, so replicas never send the same step, and a crash before the commit
leaves the step due again. The step's idempotency key travels to the provider (the e-mail's
Message-ID, the webhook's Idempotency-Key, LINE's retry key), so a provider can drop the copy
sent again after such a crash.

Before sending, a step passes the shop's contact hygiene, in this order: the customer's consent
and an available channel, the holdout groups, the frequency budget and the quiet hours. A
failed check skips the step or defers it, and the reason is written on the step.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jinja2 import TemplateError
from sqlalchemy.exc import InterfaceError, OperationalError

from followup_scheduler.adapters.channels.base import (
    Channel,
    OutgoingMessage,
    PermanentChannelError,
    TransientChannelError,
)
from followup_scheduler.adapters.channels.directory import ChannelDirectory
from followup_scheduler.adapters.rendering import Renderer, TemplateNotFound
from followup_scheduler.adapters.surveys import (
    SurveyFatigue,
    SurveyInvitations,
    SurveyRejected,
    SurveyUnavailable,
)
from followup_scheduler.adapters.unsubscribe import UnsubscribeLinks
from followup_scheduler.domain.delivery import Route, choose_route
from followup_scheduler.domain.hygiene import FollowupSettings, budget_opens_at, held_out, quiet_until
from followup_scheduler.domain.playbook import Playbook
from followup_scheduler.service_layer.context import message_context
from followup_scheduler.service_layer.settings import load_settings
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events.catalogue import FollowupFailed, FollowupSent, FollowupSkipped

log = logging.getLogger(__name__)

CONTACT_GRACE = timedelta(minutes=10)
CONTACT_RETRY = timedelta(seconds=2)
SHOP_CACHE_S = 5.0  # shop settings and channel configuration are re-read at most this often


@dataclass
class _ShopView:
    loaded_at: float
    shop: dict[str, Any]
    settings: FollowupSettings
    channels: dict[str, Channel]


@dataclass
class Dispatcher:
    uow_factory: Callable[[], SchedulerUnitOfWork]
    channels: Mapping[str, Channel]
    renderer: Renderer
    max_attempts: int = 6
    batch_limit: int = 500
    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(hours=1)
    directory: ChannelDirectory | None = None
    surveys: SurveyInvitations | None = None
    survey_base_url: str | None = None
    unsubscribe: UnsubscribeLinks | None = None
    _shops: dict[str, _ShopView] = field(default_factory=dict, init=False, repr=False)
    _playbooks: dict[tuple[str, int], Playbook | None] = field(default_factory=dict, init=False, repr=False)

    def dispatch_due(self) -> int:
        """Deliver due steps until none is left or the batch limit is reached."""
        handled = 0
        while handled < self.batch_limit:
            broken: tuple[dict[str, Any], Exception] | None = None
            with self.uow_factory() as uow:
                step = uow.repo.claim_due_step(uow.clock.now())
                if step is None:
                    return handled
                try:
                    self._deliver(uow, step)
                    uow.commit()
                except (OperationalError, InterfaceError):
                    raise  # the database is away: the step stays due, and the job runs again later
                except Exception as exc:
                    log.exception("step %s could not be handled", step["id"])
                    broken = (step, exc)
            if broken is not None:
                self._quarantine(*broken)
            handled += 1
        return handled

    def _quarantine(self, step: dict[str, Any], error: Exception) -> None:
        """Fail a step whose handling raised, in a transaction of its own. Left due, it would be
        claimed first again and again, and hold up every step behind it."""
        with self.uow_factory() as uow:
            current = uow.repo.step(step["shop_id"], step["id"], lock=True)
            if current is None or current["status"] != "scheduled":
                return
            self._fail(uow, current, None, f"internal error: {type(error).__name__}: {error}", permanent=True)
            uow.commit()

    def _shop_view(self, uow: SchedulerUnitOfWork, shop_id: str) -> _ShopView:
        view = self._shops.get(shop_id)
        if view is not None and time.monotonic() - view.loaded_at < SHOP_CACHE_S:
            return view
        shop = uow.repo.shop(shop_id) or {"name": "", "locale": "en", "timezone": "UTC"}
        settings = load_settings(uow, shop_id)
        rows = uow.repo.channel_configs(shop_id)
        channels = (
            self.directory.channels_for(shop_id, rows) if self.directory is not None else dict(self.channels)
        )
        view = _ShopView(time.monotonic(), dict(shop), settings, channels)
        self._shops[shop_id] = view
        return view

    def _playbook(self, uow: SchedulerUnitOfWork, run: dict[str, Any]) -> Playbook | None:
        key = (run["playbook_id"], run["playbook_version"])
        if key not in self._playbooks:  # a version never changes, so it is cached for good
            document = uow.repo.playbook_document(*key)
            self._playbooks[key] = Playbook.model_validate(document) if document is not None else None
        return self._playbooks[key]

    def _deliver(self, uow: SchedulerUnitOfWork, step: dict[str, Any]) -> None:
        now = uow.clock.now()
        contact = uow.repo.contact(step["shop_id"], step["customer_id"])
        if contact is None:
            if now - step["created_at"] < CONTACT_GRACE:
                # Profile events travel on another topic and may arrive after the trigger.
                self._defer(uow, step, now + CONTACT_RETRY, "waiting for the customer's profile")
            else:
                self._finish(uow, step, "skipped", "no contact data for this customer")
            return
        view = self._shop_view(uow, step["shop_id"])
        settings = view.settings
        route, why_not = self._route(step, contact, view)
        if route is None:
            self._finish(uow, step, "skipped", why_not)
            return
        run = uow.repo.run(step["run_id"]) or {"context": {}, "holdout_group": "treated"}
        holdout = held_out(run.get("holdout_group") or "treated", step["priority"])
        if holdout is not None and step["action"] != "staff_task":
            self._finish(uow, step, "skipped", holdout)
            return
        if step["action"] != "staff_task" and not self._within_budget(uow, step, settings, now):
            return
        timezone = contact.get("timezone") or view.shop.get("timezone")
        if step["action"] != "staff_task" and step["priority"] not in settings.quiet_hours_exempt:
            quiet = settings.quiet_hours.get(route.channel)  # type: ignore[call-overload]
            until = quiet_until(now, quiet, timezone)
            if until is not None and quiet is not None:
                window = f"{quiet.start:%H:%M}-{quiet.end:%H:%M} {timezone or 'UTC'}"
                self._defer(uow, step, until, f"deferred: quiet hours for {route.channel} ({window})")
                return
        survey = None
        if step["action"] == "survey_invitation":
            survey = self._invite(uow, step, run, contact, view)
            if survey is None:
                return
        self._send(uow, step, route, contact, view, run, survey, now)

    def _route(
        self, step: dict[str, Any], contact: dict[str, Any], view: _ShopView
    ) -> tuple[Route | None, str | None]:
        if step["action"] == "staff_task":
            # A staff task goes to the shop's own system, not to the customer: no consent applies.
            if "webhook" in view.channels:
                return Route("webhook", "shop"), None
            return None, "webhook: channel not configured (staff tasks go to the shop's webhook)"
        return choose_route(list(step["channels"]), contact, configured=set(view.channels))

    def _within_budget(
        self, uow: SchedulerUnitOfWork, step: dict[str, Any], settings: FollowupSettings, now: datetime
    ) -> bool:
        priority = step["priority"]
        caps = [cap for cap in settings.frequency_caps if priority in cap.classes]
        if priority == "transactional" or not caps:
            return True
        longest = max(cap.per for cap in caps)
        history = uow.repo.sent_history(step["shop_id"], step["customer_id"], now - longest)
        opens, full = budget_opens_at(now, priority, caps, history)
        if opens is None:
            return True
        rule = settings.over_budget.get(priority, "defer")
        first_due = step.get("first_due_at") or step["due_at"]
        if rule == "drop" or opens - first_due > settings.max_deferral:
            self._finish(uow, step, "skipped", f"over budget: {full}")
        else:
            self._defer(uow, step, opens, f"deferred: frequency budget ({full})")
        return False

    def _invite(
        self,
        uow: SchedulerUnitOfWork,
        step: dict[str, Any],
        run: dict[str, Any],
        contact: dict[str, Any],
        view: _ShopView,
    ) -> dict[str, Any] | None:
        if self.surveys is None:
            self._fail(uow, step, None, "survey invitations are not configured", permanent=True)
            return None
        event_type = (run.get("context") or {}).get("event_type", "")
        event = (run.get("context") or {}).get("event", {})
        if event_type == "purchase_made" and event.get("order_id"):
            context = {"type": "order", "id": str(event["order_id"])}
        elif event_type.startswith("ticket_") and event.get("ticket_id"):
            context = {"type": "ticket", "id": str(event["ticket_id"])}
        else:
            context = {"type": "playbook_run", "id": step["run_id"]}
        try:
            invitation = self.surveys.invite(
                shop_id=step["shop_id"],
                survey=step["survey"],
                customer_id=step["customer_id"],
                context=context,
                locale=contact.get("locale") or view.shop.get("locale") or "en",
                idempotency_key=step["idempotency_key"],
                base_url=view.settings.survey_base_url or self.survey_base_url,
            )
        except SurveyFatigue:
            self._finish(uow, step, "skipped", "survey_fatigue")
            return None
        except SurveyUnavailable as exc:
            self._retry_later(uow, step, "survey", str(exc))
            return None
        except SurveyRejected as exc:
            self._fail(uow, step, None, str(exc), permanent=True)
            return None
        return {"url": invitation.url, "expires_at": invitation.expires_at, "id": invitation.invitation_id}

    def _send(
        self,
        uow: SchedulerUnitOfWork,
        step: dict[str, Any],
        route: Route,
        contact: dict[str, Any],
        view: _ShopView,
        run: dict[str, Any],
        survey: dict[str, Any] | None,
        now: datetime,
    ) -> None:
        shop = view.shop
        locale = contact.get("locale") or shop.get("locale") or "en"
        headers: dict[str, str] = {}
        unsubscribe_url = None
        if (
            self.unsubscribe is not None
            and step["action"] != "staff_task"
            and step["priority"] != "transactional"
        ):
            unsubscribe_url = self.unsubscribe.url(step["shop_id"], step["customer_id"], route.channel)
            if route.channel == "email":
                # RFC 8058 one-click: mail clients POST to the link, no page to visit.
                headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
                headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        playbook = self._playbook(uow, run) if "playbook_id" in run else None
        try:
            context = message_context(
                uow,
                step=step,
                contact=contact,
                shop=shop,
                run=run,
                survey=survey,
                unsubscribe_url=unsubscribe_url,
            )
            rendered = self.renderer.render(
                step["template"], locale, context, playbook.templates if playbook else None
            )
        except (TemplateError, TemplateNotFound) as exc:
            self._fail(uow, step, route.channel, f"template {step['template']}: {exc}", permanent=True)
            return
        channel = view.channels[route.channel]
        message = OutgoingMessage(
            channel=route.channel,
            recipient=route.address,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            idempotency_key=step["idempotency_key"],
            sender_name=shop.get("name") or "Retention",
            locale=locale,
            headers=headers,
            metadata={
                "type": "followup.staff_task" if step["action"] == "staff_task" else "followup.message",
                "shop_id": step["shop_id"],
                "customer_id": step["customer_id"],
                "playbook": step["playbook_key"],
                "step": step["step_key"],
                "priority": step["priority"],
            },
        )
        try:
            channel.send(message)
        except PermanentChannelError as exc:
            self._fail(uow, step, route.channel, str(exc), permanent=True)
            return
        except TransientChannelError as exc:
            self._retry_later(uow, step, route.channel, str(exc))
            return
        except Exception as exc:  # a broken adapter or configuration must not stop the dispatcher
            log.exception("channel %s crashed on step %s", route.channel, step["id"])
            self._fail(
                uow, step, route.channel, f"channel error: {type(exc).__name__}: {exc}", permanent=True
            )
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

    def _defer(self, uow: SchedulerUnitOfWork, step: dict[str, Any], until: datetime, reason: str) -> None:
        now = uow.clock.now()
        uow.repo.update_step(step["id"], due_at=until, reason=reason[:500], updated_at=now)

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
        known_channel = channel if channel in ("email", "sms", "line", "webhook") else None
        self._finish(uow, step, "failed", reason, channel=known_channel, attempts=step["attempts"] + 1)
        uow.publish(
            "followup_failed",
            shop_id=step["shop_id"],
            customer_id=step["customer_id"],
            data=FollowupFailed(
                run_id=step["run_id"],
                step_id=step["id"],
                playbook_key=step["playbook_key"],
                step_key=step["step_key"],
                channel=known_channel,
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
