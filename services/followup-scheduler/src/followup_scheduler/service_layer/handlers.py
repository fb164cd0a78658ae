"""Event handlers: keep contact data current, start playbook runs, and end or pause them on exits."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from followup_scheduler.domain.hygiene import FollowupSettings
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
# Events whose handlers change one contact and nothing else a batch of triggers has loaded.
CONTACT_EVENTS = frozenset({"customer_upserted", "consent_changed"})

Handler = Callable[[Envelope, SchedulerUnitOfWork], None]


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
    batch = Triggers(uow, [event])
    batch.apply(event)
    batch.flush()


def batch_handler(
    others: Mapping[str, Handler],
) -> Callable[[list[Envelope], SchedulerUnitOfWork], None]:
    """The consumer's handler for a whole poll: every event in its order, the trigger events
    through one `Triggers` (their state read in bulk), the others through their own handler."""

    def apply_events(events: list[Envelope], uow: SchedulerUnitOfWork) -> None:
        batch = Triggers(uow, events)
        for event in events:
            handler = others.get(event.type)
            if handler is None:
                batch.apply(event)
                continue
            # What the other handler reads or changes must be in the database, and what the batch
            # had loaded about the shop or customer may be stale afterwards.
            batch.flush()
            handler(event, uow)
            batch.forget(event)
        batch.flush()

    return apply_events


def customer_facts(uow: SchedulerUnitOfWork, shop_id: str, customer_id: str) -> dict[str, Any]:
    """What trigger conditions may ask about a customer."""
    contact = uow.repo.contact(shop_id, customer_id) or {}
    return {**contact, "purchase_count": uow.repo.purchase_count(shop_id, customer_id)}


@dataclass
class _Shop:
    """What a batch's trigger events need to know about one shop and its customers in the batch."""

    playbooks: dict[str, list[tuple[dict[str, Any], Playbook]]]  # enabled ones, by trigger event
    settings: FollowupSettings
    contacts: dict[str, dict[str, Any] | None]
    purchase_counts: dict[str, int]
    known_orders: set[str]
    active: dict[str, list[dict[str, Any]]]  # customer -> active runs
    taken: set[tuple[str, str]]  # (playbook key, business key) of existing runs
    last_started: dict[tuple[str, str], datetime]  # (playbook key, customer) -> last run start
    skus: dict[str, set[str]] | None = None  # customer -> products bought; read when first needed


class Triggers:
    """Trigger events of one transaction, applied one after another exactly as one at a time, but
    with what they read (contacts, purchase counts, active runs, playbooks, settings, runs taken)
    loaded with a few queries per shop and kept current in memory, and with what they write
    (purchases, runs, steps) inserted together by `flush`.

    Only the consumer's transaction writes these tables' trigger state while it runs: other writers
    (the API's cancel, the dispatcher) change steps and end runs, which the batch re-reads where it
    matters (ending a run and pausing surveys read the steps from the database)."""

    def __init__(self, uow: SchedulerUnitOfWork, events: list[Envelope]) -> None:
        self._uow = uow
        self._customers: dict[str, list[str]] = {}
        self._orders: dict[str, list[str]] = {}
        self._keys: dict[str, list[Envelope]] = {}
        for event in events:
            if event.customer_id is None:
                continue
            customers = self._customers.setdefault(event.shop_id, [])
            if event.customer_id not in customers:
                customers.append(event.customer_id)
            if event.type == "purchase_made" and event.data.get("order_id") is not None:
                self._orders.setdefault(event.shop_id, []).append(str(event.data["order_id"]))
            self._keys.setdefault(event.shop_id, []).append(event)
        self._shops: dict[str, _Shop] = {}
        self._playbooks: dict[tuple[str, int], Playbook | None] = {}
        self._purchases: list[dict[str, Any]] = []
        self._products: dict[tuple[str, str], dict[str, Any]] = {}
        self._customer_products: list[dict[str, Any]] = []
        self._pairs: dict[str, Counter[tuple[str, str]]] = {}
        self._runs: list[dict[str, Any]] = []
        self._steps: list[dict[str, Any]] = []

    # --- one event ------------------------------------------------------------------------

    def apply(self, event: Envelope) -> None:
        """Apply exit rules of the customer's active runs, then start the playbooks it triggers."""
        customer_id = event.customer_id
        if customer_id is None:
            return
        uow = self._uow
        now = uow.clock.now()
        shop = self._shop(event.shop_id)
        fact = PROFILE_FACTS.get(event.type)
        if fact is not None and event.data.get("to"):
            uow.repo.update_contact(event.shop_id, customer_id, now, **{fact: event.data["to"]})
            shop.contacts[customer_id] = uow.repo.contact(event.shop_id, customer_id)
        if event.type == "purchase_made":
            self._record_purchase(event, shop, customer_id)
        self._apply_exits(event, shop, customer_id, now)
        candidates = shop.playbooks.get(event.type, [])
        if not candidates:
            return
        customer = {
            **(shop.contacts.get(customer_id) or {}),
            "purchase_count": shop.purchase_counts.get(customer_id, 0),
        }
        for row, playbook in candidates:
            business_key = playbook.business_key_of(event.id, event.data)
            plan = plan_run(
                playbook,
                shop_id=event.shop_id,
                customer_id=customer_id,
                event_type=event.type,
                event_id=event.id,
                event_time=event.time,
                data=event.data,
                customer=customer,
                now=now,
                key_taken=(playbook.key, business_key) in shop.taken,
                previous_run_at=shop.last_started.get((playbook.key, customer_id)),
                global_holdout_percent=shop.settings.global_holdout_percent,
            )
            if plan.starts:
                self._start_run(event, shop, row, playbook, plan, now)

    def _record_purchase(self, event: Envelope, shop: _Shop, customer_id: str) -> None:
        """Remember a purchase and its products (once per order), as `record_purchase` did."""
        order_id = str(event.data["order_id"])
        if order_id in shop.known_orders:
            return
        shop.known_orders.add(order_id)
        shop.purchase_counts[customer_id] = shop.purchase_counts.get(customer_id, 0) + 1
        self._purchases.append(
            {
                "shop_id": event.shop_id,
                "order_id": order_id,
                "customer_id": customer_id,
                "amount": str(event.data.get("amount", "0")),
                "currency": str(event.data.get("currency", "XXX"))[:3],
                "occurred_at": event.time,
            }
        )
        items = [item for item in event.data.get("items") or [] if isinstance(item, dict) and item.get("sku")]
        if not items:
            return
        for item in items:
            self._products[(event.shop_id, str(item["sku"]))] = {
                "shop_id": event.shop_id,
                "sku": item["sku"],
                "name": item.get("name"),
                "category": item.get("category"),
            }
        if shop.skus is None:
            shop.skus = self._uow.repo.skus_of(event.shop_id, self._customers[event.shop_id])
        earlier = shop.skus.setdefault(customer_id, set())
        skus = sorted({str(item["sku"]) for item in items})
        # Pairs within this order and with what the customer bought before, counted both ways.
        pairs = {(a, b) for a in skus for b in skus if a != b}
        pairs |= {(a, b) for a in skus for b in earlier if a != b and b not in skus}
        pairs |= {(b, a) for a, b in list(pairs)}
        self._pairs.setdefault(event.shop_id, Counter()).update(pairs)
        for sku in skus:
            if sku not in earlier:
                earlier.add(sku)
                self._customer_products.append(
                    {"shop_id": event.shop_id, "customer_id": customer_id, "sku": sku}
                )

    def _apply_exits(self, event: Envelope, shop: _Shop, customer_id: str, now: datetime) -> None:
        uow = self._uow
        runs = shop.active.get(customer_id) or []
        self._load_playbooks([(run["playbook_id"], run["playbook_version"]) for run in runs])
        for run in list(runs):
            playbook = self._playbooks.get((run["playbook_id"], run["playbook_version"]))
            if playbook is None:
                continue
            for rule in playbook.exit:
                if event.type == rule.resume_on:
                    self.flush()
                    _resume_surveys(uow, run, event.type, now)
                if rule.event != event.type:
                    continue
                if (
                    rule.same_business_key
                    and playbook.exit_key_of(rule, event.id, event.data) != run["business_key"]
                ):
                    continue
                if rule.effect == "pause_surveys":
                    self.flush()
                    _pause_surveys(uow, run, event.type, now)
                    continue
                reason = f"exit: {event.type}"
                self.flush()
                runs.remove(run)
                current = uow.repo.run(run["id"])
                if current is None or current["status"] != "active":
                    break  # ended meanwhile (the dispatcher completes a run whose steps are all done)
                for step in uow.repo.end_run(run["id"], "exited", reason, now):
                    publish_cancelled(uow, step, reason)
                break

    def _start_run(
        self,
        event: Envelope,
        shop: _Shop,
        row: dict[str, Any],
        playbook: Playbook,
        plan: RunPlan,
        now: datetime,
    ) -> None:
        assert event.customer_id is not None
        uow = self._uow
        # One call to the system's random source for the run's id and its steps' (not one each).
        randomness = secrets.token_hex(8 * (1 + len(plan.steps)))
        ids = iter(randomness[start : start + 16] for start in range(0, len(randomness), 16))
        run_id = f"run_{next(ids)}"
        run = {
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
            "exit_reason": None,
            "holdout_group": plan.group,
            "triggered_at": event.time,
            "started_at": now,
            "ended_at": None,
        }
        shop.taken.add((playbook.key, plan.business_key))
        shop.last_started[(playbook.key, event.customer_id)] = now
        steps_before = len(self._steps)
        for position, planned in enumerate(plan.steps):
            if not planned.scheduled or planned.due_at is None:
                continue  # its only_if conditions do not hold for this event
            step = planned.step
            step_id = f"stp_{next(ids)}"
            self._steps.append(
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
                    # Derived from the run's identity, so a redelivered trigger could never mint a
                    # second key.
                    "idempotency_key": f"{event.shop_id}.{playbook.key}.{plan.business_key}.{step.key}"[:128],
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if planned.due_at <= now:
                uow.steps_due_now = True  # the dispatcher is woken when this commits
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
        if len(self._steps) == steps_before:
            # Nothing to do: the run is complete as soon as it starts.
            run.update(status="completed", ended_at=now)
        else:
            shop.active.setdefault(event.customer_id, []).append(run)
        self._runs.append(run)

    # --- state ------------------------------------------------------------------------------

    def _shop(self, shop_id: str) -> _Shop:
        """The shop's state for this batch, read at its first trigger event."""
        shop = self._shops.get(shop_id)
        if shop is not None:
            return shop
        repo = self._uow.repo
        customers = self._customers.get(shop_id, [])
        ensure_default_playbooks(self._uow, shop_id)
        rows = repo.enabled_playbooks(shop_id)
        documents = {(row["id"], row["version"]): row["document"] for row in rows}
        self._playbooks.update(
            (key, Playbook.model_validate(document)) for key, document in documents.items()
        )
        playbooks: dict[str, list[tuple[dict[str, Any], Playbook]]] = {}
        for row in rows:
            playbook = self._playbooks[(row["id"], row["version"])]
            assert playbook is not None
            playbooks.setdefault(row["trigger_event"], []).append((row, playbook))
        business_keys = sorted(
            {
                playbook.business_key_of(event.id, event.data)
                for event in self._keys.get(shop_id, [])
                for _row, playbook in playbooks.get(event.type, [])
            }
        )
        contacts: dict[str, dict[str, Any] | None] = dict.fromkeys(customers)
        contacts.update(repo.contacts_for(shop_id, customers))
        shop = _Shop(
            playbooks=playbooks,
            settings=load_settings(self._uow, shop_id),
            contacts=contacts,
            purchase_counts=repo.purchase_counts(shop_id, customers),
            known_orders=repo.known_orders(shop_id, sorted(set(self._orders.get(shop_id, [])))),
            active=repo.active_runs_of(shop_id, customers),
            taken=repo.taken_business_keys(shop_id, business_keys),
            last_started=repo.last_runs_started(shop_id, customers),
        )
        self._shops[shop_id] = shop
        return shop

    def _load_playbooks(self, keys: list[tuple[str, int]]) -> None:
        """The playbook versions of these runs (a version never changes once saved)."""
        missing = sorted({key for key in keys if key not in self._playbooks})
        if not missing:
            return
        documents = self._uow.repo.playbook_documents(missing)
        for key in missing:
            document = documents.get(key)
            self._playbooks[key] = Playbook.model_validate(document) if document is not None else None

    def forget(self, event: Envelope) -> None:
        """Another handler has applied this event: read what it may have changed again."""
        shop = self._shops.get(event.shop_id)
        if shop is None:
            return
        if event.type in CONTACT_EVENTS and event.customer_id is not None:
            shop.contacts[event.customer_id] = self._uow.repo.contact(event.shop_id, event.customer_id)
        else:
            del self._shops[event.shop_id]

    def flush(self) -> None:
        """Insert what the events applied so far have added."""
        repo = self._uow.repo
        repo.add_purchases(self._purchases)
        repo.upsert_products(list(self._products.values()))
        repo.add_customer_products(self._customer_products)
        for shop_id, pairs in self._pairs.items():
            repo.add_pair_counts(shop_id, dict(pairs))
        repo.add_runs(self._runs)
        repo.add_steps(self._steps)
        self._purchases, self._products, self._customer_products, self._pairs = [], {}, [], {}
        self._runs, self._steps = [], []


def run_playbook(uow: SchedulerUnitOfWork, run: dict[str, Any]) -> Playbook | None:
    """The playbook version a run started with (runs keep their rules when the playbook changes)."""
    document = uow.repo.playbook_document(run["playbook_id"], run["playbook_version"])
    return Playbook.model_validate(document) if document is not None else None


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
