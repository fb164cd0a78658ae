"""The dispatcher: claims due steps in small batches and delivers them.

Each batch is one transaction. Up to `batch_size` due steps are locked (FOR UPDATE SKIP LOCKED)
for the whole delivery, so replicas never send the same step. The batch's contacts, runs and
frequency-budget history are read with a few queries, the steps are delivered one after another,
and then every outcome (the steps' new state, the messages, the outgoing events in the outbox,
the runs that are complete) is written and committed at once. A crash before that commit leaves
all the batch's steps due again. The step's idempotency key travels to the provider (the
e-mail's Message-ID, the webhook's Idempotency-Key, LINE's retry key), so a provider can drop a
copy sent again after such a crash.

The batch size is the trade-off: per step, a batch saves about eight database round trips and a
commit, but a crash (or a database outage) in the middle of a batch sends again, under the same
idempotency key, every step of it that had already gone out: at most `batch_size` messages per
crash, where delivery one step per transaction re-sends at most one. Keep it small (setting
RETENTION_FOLLOWUP_DISPATCH_BATCH_SIZE, default 20); 1 restores one step per transaction.

Within a batch, the messages that passed their checks are handed to their channels several at a
time (RETENTION_FOLLOWUP_DISPATCH_SEND_CONCURRENCY, default 4; the SMTP channel keeps one
connection per message in flight). A customer's steps go out in rounds, one per round, so that a
later step is checked against the budget only once it is known whether the earlier one went out.

Before sending, a step passes the shop's contact hygiene, in this order: the customer's consent
and an available channel, the holdout groups, the frequency budget and the quiet hours. A
failed check skips the step or defers it, and the reason is written on the step. The budget
counts what was sent earlier in the same batch as well as what was committed before.

A step whose handling raises is failed ("internal error") in the same batch, and the others go
on: left due, it would be claimed first again and again and hold up every step behind it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jinja2 import TemplateError
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

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
DEFAULT_BATCH_SIZE = 20
NO_RUN: dict[str, Any] = {"context": {}, "holdout_group": "treated"}


@dataclass
class _ShopView:
    loaded_at: float
    shop: dict[str, Any]
    settings: FollowupSettings
    channels: dict[str, Channel]


@dataclass
class _Outcome:
    """What handling one step decided. Nothing is written until the whole batch is done."""

    step: dict[str, Any]
    now: datetime
    values: dict[str, Any] = field(default_factory=dict)  # the step's new column values
    message: dict[str, Any] | None = None  # the message sent, for the messages table
    events: list[tuple[str, BaseModel]] = field(default_factory=list)
    ends_run: bool = False  # the step left the pending ones: its run may be complete now

    def publish(self, event_type: str, data: BaseModel) -> None:
        self.events.append((event_type, data))


@dataclass
class _Ready:
    """A message that passed every check and is rendered; channels are called once per round."""

    outcome: _Outcome
    route: Route
    channel: Channel
    message: OutgoingMessage


def _rounds(claimed: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split a batch, in claim order, so that a round holds at most one step per customer.

    A round's messages go out together; a customer's next step is checked (budget) only once
    it is known whether the one before went out."""
    rounds: list[list[dict[str, Any]]] = []
    seen: dict[tuple[str, str], int] = {}
    for step in claimed:
        key = (step["shop_id"], step["customer_id"])
        index = seen.get(key, 0)
        seen[key] = index + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(step)
    return rounds


class _Batch:
    """The steps claimed in one transaction and what their hygiene checks need, loaded at once."""

    def __init__(self, uow: SchedulerUnitOfWork, claimed: list[dict[str, Any]]) -> None:
        self._uow = uow
        self._by_shop: dict[str, list[str]] = {}
        for step in claimed:
            customers = self._by_shop.setdefault(step["shop_id"], [])
            if step["customer_id"] not in customers:
                customers.append(step["customer_id"])
        self.contacts: dict[tuple[str, str], dict[str, Any]] = {
            (shop_id, customer_id): contact
            for shop_id, customers in self._by_shop.items()
            for customer_id, contact in uow.repo.contacts_for(shop_id, customers).items()
        }
        self.runs = uow.repo.runs_by_id(sorted({step["run_id"] for step in claimed}))
        # Per shop: since when its committed history is loaded, and (sent_at, priority) per
        # customer; sends of this batch are not committed yet, so they are kept apart.
        self._loaded_since: dict[str, datetime] = {}
        self._committed: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
        self._in_batch: dict[tuple[str, str], list[tuple[datetime, str]]] = {}

    def history(self, shop_id: str, customer_id: str, since: datetime) -> list[tuple[datetime, str]]:
        """What the customer was sent after `since`: committed before, or sent earlier in this batch."""
        loaded = self._loaded_since.get(shop_id)
        if loaded is None or since < loaded:
            # One query for every customer of the shop in this batch.
            customers = self._by_shop.get(shop_id) or [customer_id]
            found = self._uow.repo.sent_histories(shop_id, customers, since)
            for customer in customers:
                self._committed[(shop_id, customer)] = found.get(customer, [])
            self._loaded_since[shop_id] = since
        key = (shop_id, customer_id)
        return [
            entry for entry in self._committed.get(key, []) + self._in_batch.get(key, []) if entry[0] > since
        ]

    def sent(self, shop_id: str, customer_id: str, at: datetime, priority: str) -> None:
        """Count a message sent in this batch against the customer's budget for the rest of it."""
        self._in_batch.setdefault((shop_id, customer_id), []).append((at, priority))


@dataclass
class Dispatcher:
    uow_factory: Callable[[], SchedulerUnitOfWork]
    channels: Mapping[str, Channel]
    renderer: Renderer
    max_attempts: int = 6
    batch_limit: int = 500  # steps handled per call of dispatch_due, in batches of batch_size
    batch_size: int = DEFAULT_BATCH_SIZE  # steps claimed and committed per transaction
    send_concurrency: int = 1  # messages of a batch handed to channels at the same time
    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(hours=1)
    directory: ChannelDirectory | None = None
    surveys: SurveyInvitations | None = None
    survey_base_url: str | None = None
    unsubscribe: UnsubscribeLinks | None = None
    # Set (by `wake`, or by the unit of work after a commit that scheduled steps due at once) to
    # end `run_once`'s idle wait early.
    wakeup: threading.Event = field(default_factory=threading.Event, repr=False)
    _shops: dict[str, _ShopView] = field(default_factory=dict, init=False, repr=False)
    _playbooks: dict[tuple[str, int], Playbook | None] = field(default_factory=dict, init=False, repr=False)
    _senders: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def wake(self) -> None:
        """Steps fell due (a trigger scheduled one for now): look for them without waiting to poll."""
        self.wakeup.set()

    def run_once(self, idle_s: float = 0.1) -> int:
        """The dispatcher's loop body: deliver what is due, then, once nothing is left, wait until
        woken or `idle_s` has passed (steps that fall due by the clock are found by that poll)."""
        self.wakeup.clear()  # a wake from here on, even during the dispatch, ends the wait below
        try:
            handled = self.dispatch_due()
        except Exception:
            time.sleep(idle_s)  # the database is away, say: do not retry in a tight loop
            raise
        if handled < self.batch_limit:
            self.wakeup.wait(idle_s)
        return handled

    def dispatch_due(self) -> int:
        """Deliver due steps, a batch per transaction, until none is left or the limit is reached."""
        handled = 0
        while handled < self.batch_limit:
            count = self._dispatch_batch(min(max(1, self.batch_size), self.batch_limit - handled))
            if count == 0:
                break
            handled += count
        return handled

    def _dispatch_batch(self, size: int) -> int:
        with self.uow_factory() as uow:
            claimed = uow.repo.claim_due_steps(uow.clock.now(), size)
            if not claimed:
                return 0
            batch = _Batch(uow, claimed)
            outcomes: list[_Outcome] = []
            broken: tuple[dict[str, Any], Exception] | None = None
            for round_steps in _rounds(claimed):
                ready: list[_Ready] = []
                for step in round_steps:
                    outcome = _Outcome(step, uow.clock.now())
                    try:
                        message = self._deliver(uow, batch, outcome)
                    except (OperationalError, InterfaceError):
                        raise  # the database is away: the batch stays due, and the job runs again later
                    except DBAPIError as exc:
                        # The transaction is unusable: what was decided so far is saved in a new one,
                        # and the steps not sent yet stay due.
                        log.exception("step %s could not be handled", step["id"])
                        broken = (step, exc)
                        break
                    except Exception as exc:
                        log.exception("step %s could not be handled", step["id"])
                        outcome, message = self._quarantined(step, exc, uow.clock.now()), None
                    if message is None:
                        outcomes.append(outcome)
                    else:
                        ready.append(message)
                if broken is not None:
                    break
                for message, error in zip(ready, self._hand_over(ready), strict=True):
                    self._record(batch, message, error)
                    outcomes.append(message.outcome)
            if broken is None:
                self._write(uow, outcomes)
                uow.commit()
                return len(outcomes)
            uow.rollback()
            # The rollback released the locks; steps another replica has claimed since are left to it.
            outcomes.append(self._quarantined(*broken, uow.clock.now()))
            locked = uow.repo.lock_scheduled_steps([outcome.step["id"] for outcome in outcomes])
            self._write(uow, [outcome for outcome in outcomes if outcome.step["id"] in locked])
            uow.commit()
            return len(outcomes)

    def _hand_over(self, ready: list[_Ready]) -> list[Exception | None]:
        """Send a round's messages, several at a time when allowed; the error of each, or None."""
        if self.send_concurrency <= 1 or len(ready) <= 1:
            return [_send_one(message) for message in ready]
        if self._senders is None:
            self._senders = ThreadPoolExecutor(self.send_concurrency, thread_name_prefix="dispatch-send")
        return list(self._senders.map(_send_one, ready))

    def close(self) -> None:
        """Stop the sending threads (they are started on first use)."""
        if self._senders is not None:
            self._senders.shutdown(wait=True)
            self._senders = None

    def _write(self, uow: SchedulerUnitOfWork, outcomes: list[_Outcome]) -> None:
        """Write a batch's outcomes with a few bulk statements; the unit of work adds the outbox."""
        uow.repo.update_steps(
            [(outcome.step["id"], outcome.values) for outcome in outcomes if outcome.values]
        )
        uow.repo.record_messages([outcome.message for outcome in outcomes if outcome.message is not None])
        for outcome in outcomes:
            for event_type, data in outcome.events:
                uow.publish(
                    event_type,
                    shop_id=outcome.step["shop_id"],
                    customer_id=outcome.step["customer_id"],
                    data=data,
                    time=outcome.now,
                )
        finished = sorted({outcome.step["run_id"] for outcome in outcomes if outcome.ends_run})
        if finished:
            uow.repo.finish_runs_if_done(finished, max(outcome.now for outcome in outcomes))

    def _quarantined(self, step: dict[str, Any], error: Exception, now: datetime) -> _Outcome:
        """Fail a step whose handling raised (whatever it had decided is dropped)."""
        outcome = _Outcome(step, now)
        self._fail(outcome, None, f"internal error: {type(error).__name__}: {error}", permanent=True)
        return outcome

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

    def _deliver(self, uow: SchedulerUnitOfWork, batch: _Batch, outcome: _Outcome) -> _Ready | None:
        """Check a step and render its message; None when the outcome is decided without sending."""
        step, now = outcome.step, outcome.now
        contact = batch.contacts.get((step["shop_id"], step["customer_id"]))
        if contact is None:
            if now - step["created_at"] < CONTACT_GRACE:
                # Profile events travel on another topic and may arrive after the trigger.
                self._defer(outcome, now + CONTACT_RETRY, "waiting for the customer's profile")
            else:
                self._finish(outcome, "skipped", "no contact data for this customer")
            return None
        view = self._shop_view(uow, step["shop_id"])
        settings = view.settings
        route, why_not = self._route(step, contact, view)
        if route is None:
            self._finish(outcome, "skipped", why_not)
            return None
        run = batch.runs.get(step["run_id"]) or NO_RUN
        holdout = held_out(run.get("holdout_group") or "treated", step["priority"])
        if holdout is not None and step["action"] != "staff_task":
            self._finish(outcome, "skipped", holdout)
            return None
        if step["action"] != "staff_task" and not self._within_budget(batch, outcome, settings):
            return None
        timezone = contact.get("timezone") or view.shop.get("timezone")
        if step["action"] != "staff_task" and step["priority"] not in settings.quiet_hours_exempt:
            quiet = settings.quiet_hours.get(route.channel)  # type: ignore[call-overload]
            until = quiet_until(now, quiet, timezone)
            if until is not None and quiet is not None:
                window = f"{quiet.start:%H:%M}-{quiet.end:%H:%M} {timezone or 'UTC'}"
                self._defer(outcome, until, f"deferred: quiet hours for {route.channel} ({window})")
                return None
        survey = None
        if step["action"] == "survey_invitation":
            survey = self._invite(outcome, run, contact, view)
            if survey is None:
                return None
        return self._prepare(uow, outcome, route, contact, view, run, survey)

    def _route(
        self, step: dict[str, Any], contact: dict[str, Any], view: _ShopView
    ) -> tuple[Route | None, str | None]:
        if step["action"] == "staff_task":
            # A staff task goes to the shop's own system, not to the customer: no consent applies.
            if "webhook" in view.channels:
                return Route("webhook", "shop"), None
            return None, "webhook: channel not configured (staff tasks go to the shop's webhook)"
        return choose_route(list(step["channels"]), contact, configured=set(view.channels))

    def _within_budget(self, batch: _Batch, outcome: _Outcome, settings: FollowupSettings) -> bool:
        step, now = outcome.step, outcome.now
        priority = step["priority"]
        caps = [cap for cap in settings.frequency_caps if priority in cap.classes]
        if priority == "transactional" or not caps:
            return True
        longest = max(cap.per for cap in caps)
        history = batch.history(step["shop_id"], step["customer_id"], now - longest)
        opens, full = budget_opens_at(now, priority, caps, history)
        if opens is None:
            return True
        rule = settings.over_budget.get(priority, "defer")
        first_due = step.get("first_due_at") or step["due_at"]
        if rule == "drop" or opens - first_due > settings.max_deferral:
            self._finish(outcome, "skipped", f"over budget: {full}")
        else:
            self._defer(outcome, opens, f"deferred: frequency budget ({full})")
        return False

    def _invite(
        self,
        outcome: _Outcome,
        run: dict[str, Any],
        contact: dict[str, Any],
        view: _ShopView,
    ) -> dict[str, Any] | None:
        step = outcome.step
        if self.surveys is None:
            self._fail(outcome, None, "survey invitations are not configured", permanent=True)
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
            self._finish(outcome, "skipped", "survey_fatigue")
            return None
        except SurveyUnavailable as exc:
            self._retry_later(outcome, "survey", str(exc))
            return None
        except SurveyRejected as exc:
            self._fail(outcome, None, str(exc), permanent=True)
            return None
        return {"url": invitation.url, "expires_at": invitation.expires_at, "id": invitation.invitation_id}

    def _prepare(
        self,
        uow: SchedulerUnitOfWork,
        outcome: _Outcome,
        route: Route,
        contact: dict[str, Any],
        view: _ShopView,
        run: dict[str, Any],
        survey: dict[str, Any] | None,
    ) -> _Ready | None:
        """Render the message; None when that failed (the outcome says why)."""
        step = outcome.step
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
        inline = playbook.templates if playbook else None
        try:
            context = message_context(
                uow,
                step=step,
                contact=contact,
                shop=shop,
                run=run,
                survey=survey,
                unsubscribe_url=unsubscribe_url,
                # Recommendations and the last order cost queries: only for templates that use them.
                used=self.renderer.variables(step["template"], locale, inline),
            )
            rendered = self.renderer.render(step["template"], locale, context, inline)
        except (TemplateError, TemplateNotFound) as exc:
            self._fail(outcome, route.channel, f"template {step['template']}: {exc}", permanent=True)
            return None
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
        return _Ready(outcome, route, channel, message)

    def _record(self, batch: _Batch, ready: _Ready, error: Exception | None) -> None:
        """Note what became of a message handed to its channel."""
        outcome, route, message = ready.outcome, ready.route, ready.message
        step, now = outcome.step, outcome.now
        if isinstance(error, PermanentChannelError):
            self._fail(outcome, route.channel, str(error), permanent=True)
            return
        if isinstance(error, TransientChannelError):
            self._retry_later(outcome, route.channel, str(error))
            return
        if error is not None:  # a broken adapter or configuration must not stop the dispatcher
            log.error("channel %s crashed on step %s", route.channel, step["id"], exc_info=error)
            self._fail(
                outcome, route.channel, f"channel error: {type(error).__name__}: {error}", permanent=True
            )
            return
        outcome.values = {
            "status": "sent",
            "channel": route.channel,
            "sent_at": now,
            "attempts": step["attempts"] + 1,
            "reason": None,
            "updated_at": now,
        }
        outcome.message = {
            "step_id": step["id"],
            "shop_id": step["shop_id"],
            "customer_id": step["customer_id"],
            "channel": route.channel,
            "recipient": route.address,
            "subject": message.subject,
            "body": message.text,
            "sent_at": now,
        }
        outcome.publish(
            "followup_sent",
            FollowupSent(
                run_id=step["run_id"],
                step_id=step["id"],
                playbook_key=step["playbook_key"],
                step_key=step["step_key"],
                channel=route.channel,
                idempotency_key=step["idempotency_key"],
            ),
        )
        outcome.ends_run = True
        batch.sent(step["shop_id"], step["customer_id"], now, step["priority"])

    def _defer(self, outcome: _Outcome, until: datetime, reason: str) -> None:
        outcome.values = {"due_at": until, "reason": reason[:500], "updated_at": outcome.now}

    def _retry_later(self, outcome: _Outcome, channel: str, error: str) -> None:
        step = outcome.step
        attempts = step["attempts"] + 1
        if attempts >= self.max_attempts:
            self._fail(outcome, channel, f"gave up after {attempts} attempts: {error}", permanent=False)
            return
        backoff = min(self.retry_cap, self.retry_base * 2 ** (attempts - 1))
        delay = backoff * random.uniform(0.5, 1.0)  # jitter spreads retries after an outage
        outcome.values = {
            "attempts": attempts,
            "due_at": outcome.now + delay,
            "reason": f"retrying: {error}"[:500],
            "updated_at": outcome.now,
        }
        log.warning("step %s deferred after a transient %s failure: %s", step["id"], channel, error)

    def _fail(self, outcome: _Outcome, channel: str | None, reason: str, *, permanent: bool) -> None:
        step = outcome.step
        known_channel = channel if channel in ("email", "sms", "line", "webhook") else None
        self._finish(outcome, "failed", reason, channel=known_channel, attempts=step["attempts"] + 1)
        outcome.publish(
            "followup_failed",
            FollowupFailed(
                run_id=step["run_id"],
                step_id=step["id"],
                playbook_key=step["playbook_key"],
                step_key=step["step_key"],
                channel=known_channel,
                reason=reason[:500],
                permanent=permanent,
            ),
        )

    def _finish(self, outcome: _Outcome, status: str, reason: str | None, **extra: Any) -> None:
        step = outcome.step
        outcome.values = {
            "status": status,
            "reason": (reason or "")[:500],
            "updated_at": outcome.now,
            **extra,
        }
        outcome.ends_run = True
        if status == "skipped":
            outcome.publish(
                "followup_skipped",
                FollowupSkipped(
                    run_id=step["run_id"],
                    step_id=step["id"],
                    playbook_key=step["playbook_key"],
                    step_key=step["step_key"],
                    reason=(reason or "")[:500],
                ),
            )


def _send_one(ready: _Ready) -> Exception | None:
    try:
        ready.channel.send(ready.message)
    except Exception as exc:  # sorted out by the caller, on the dispatcher's thread
        return exc
    return None
