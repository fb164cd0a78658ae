"""Queries on the followup-scheduler's tables."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from followup_scheduler.adapters.tables import (
    channel_configs,
    co_purchases,
    contacts,
    customer_products,
    messages,
    playbook_versions,
    playbooks,
    products,
    purchases,
    runs,
    shop_settings,
    steps,
    tenancy,
)

PENDING = ("scheduled", "paused")


class SchedulerRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    # --- contacts ---------------------------------------------------------------------------

    def contact(self, shop_id: str, customer_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(contacts).where(contacts.c.shop_id == shop_id, contacts.c.customer_id == customer_id)
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def contacts_for(self, shop_id: str, customer_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The known contacts among these customers, by customer id."""
        if not customer_ids:
            return {}
        rows = self._session.execute(
            select(contacts).where(contacts.c.shop_id == shop_id, contacts.c.customer_id.in_(customer_ids))
        ).mappings()
        return {row["customer_id"]: dict(row) for row in rows}

    def upsert_contact(self, values: dict[str, Any]) -> None:
        self._upsert(contacts, ["shop_id", "customer_id"], values)

    def update_contact(self, shop_id: str, customer_id: str, now: datetime, **values: Any) -> None:
        """Set some fields of a contact, creating it (without consents) when it is not known yet."""
        self._upsert(
            contacts,
            ["shop_id", "customer_id"],
            {"shop_id": shop_id, "customer_id": customer_id, "consents": {}, "updated_at": now, **values},
            update=[*values, "updated_at"],
        )

    def _upsert(
        self, table: Table, keys: list[str], values: dict[str, Any], update: list[str] | None = None
    ) -> None:
        dialect = self._session.get_bind().dialect.name
        insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert_fn(table).values(**values)
        columns = update if update is not None else [k for k in values if k not in keys]
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=keys, set_={k: statement.excluded[k] for k in columns}
            )
        )

    def contacts_with_birthday_near(self, now: datetime) -> list[dict[str, Any]]:
        """Contacts whose birthday (month and day) is yesterday, today or tomorrow in UTC terms;
        the caller checks the date in each customer's own timezone."""
        days = {(now + timedelta(days=offset)).strftime("%m-%d") for offset in (-1, 0, 1)}
        rows = self._session.execute(select(contacts).where(contacts.c.birthday.is_not(None))).mappings()
        # Dates are compared in Python: month-day extraction differs between SQLite and PostgreSQL.
        return [dict(row) for row in rows if row["birthday"].strftime("%m-%d") in days]

    def shop(self, shop_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(select(tenancy.shops).where(tenancy.shops.c.shop_id == shop_id))
            .mappings()
            .first()
        )
        return dict(row) if row else None

    # --- playbooks --------------------------------------------------------------------------

    def playbooks_for(self, shop_id: str, event_type: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(playbooks).where(
                playbooks.c.shop_id == shop_id,
                playbooks.c.trigger_event == event_type,
                playbooks.c.enabled.is_(True),
            )
        ).mappings()
        return [dict(row) for row in rows]

    def has_playbooks(self, shop_id: str) -> bool:
        return (
            self._session.execute(
                select(playbooks.c.id).where(playbooks.c.shop_id == shop_id).limit(1)
            ).first()
            is not None
        )

    def add_playbook(self, values: dict[str, Any]) -> None:
        self._session.execute(insert(playbooks).values(**values))
        self._session.execute(
            insert(playbook_versions).values(
                playbook_id=values["id"],
                version=values["version"],
                document=values["document"],
                created_at=values["created_at"],
            )
        )

    def all_playbooks(self, shop_id: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(playbooks).where(playbooks.c.shop_id == shop_id).order_by(playbooks.c.key)
        ).mappings()
        return [dict(row) for row in rows]

    def playbook(self, shop_id: str, playbook_id: str, *, lock: bool = False) -> dict[str, Any] | None:
        query = select(playbooks).where(playbooks.c.shop_id == shop_id, playbooks.c.id == playbook_id)
        if lock:
            query = query.with_for_update()
        row = self._session.execute(query).mappings().first()
        return dict(row) if row else None

    def playbook_by_key(self, shop_id: str, key: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(playbooks).where(playbooks.c.shop_id == shop_id, playbooks.c.key == key)
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def save_playbook_version(
        self, playbook_id: str, version: int, document: dict[str, Any], trigger_event: str, now: datetime
    ) -> None:
        self._session.execute(
            update(playbooks)
            .where(playbooks.c.id == playbook_id)
            .values(version=version, document=document, trigger_event=trigger_event, updated_at=now)
        )
        self._session.execute(
            insert(playbook_versions).values(
                playbook_id=playbook_id, version=version, document=document, created_at=now
            )
        )

    def set_playbook_enabled(self, playbook_id: str, enabled: bool, now: datetime) -> None:
        self._session.execute(
            update(playbooks).where(playbooks.c.id == playbook_id).values(enabled=enabled, updated_at=now)
        )

    def delete_playbook(self, playbook_id: str) -> None:
        self._session.execute(delete(playbook_versions).where(playbook_versions.c.playbook_id == playbook_id))
        self._session.execute(delete(playbooks).where(playbooks.c.id == playbook_id))

    def playbook_versions(self, playbook_id: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(playbook_versions)
            .where(playbook_versions.c.playbook_id == playbook_id)
            .order_by(playbook_versions.c.version)
        ).mappings()
        return [dict(row) for row in rows]

    def playbook_document(self, playbook_id: str, version: int) -> dict[str, Any] | None:
        return self._session.execute(
            select(playbook_versions.c.document).where(
                playbook_versions.c.playbook_id == playbook_id, playbook_versions.c.version == version
            )
        ).scalar_one_or_none()

    # --- settings and channels --------------------------------------------------------------

    def settings_document(self, shop_id: str) -> dict[str, Any] | None:
        return self._session.execute(
            select(shop_settings.c.document).where(shop_settings.c.shop_id == shop_id)
        ).scalar_one_or_none()

    def save_settings(self, shop_id: str, document: dict[str, Any], now: datetime) -> None:
        self._upsert(
            shop_settings, ["shop_id"], {"shop_id": shop_id, "document": document, "updated_at": now}
        )

    def channel_configs(self, shop_id: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(channel_configs)
            .where(channel_configs.c.shop_id == shop_id)
            .order_by(channel_configs.c.channel)
        ).mappings()
        return [dict(row) for row in rows]

    def save_channel_config(self, values: dict[str, Any]) -> None:
        self._upsert(channel_configs, ["shop_id", "channel"], values)

    def delete_channel_config(self, shop_id: str, channel: str) -> bool:
        result = self._session.execute(
            delete(channel_configs).where(
                channel_configs.c.shop_id == shop_id, channel_configs.c.channel == channel
            )
        )
        return bool(getattr(result, "rowcount", 0))

    # --- purchases and co-purchases ---------------------------------------------------------

    def record_purchase(self, values: dict[str, Any], items: list[dict[str, Any]]) -> bool:
        """Remember a purchase and its products; False when this order was already recorded."""
        known = self._session.execute(
            select(purchases.c.order_id).where(
                purchases.c.shop_id == values["shop_id"], purchases.c.order_id == values["order_id"]
            )
        ).first()
        if known is not None:
            return False
        self._session.execute(insert(purchases).values(**values))
        shop_id, customer_id = values["shop_id"], values["customer_id"]
        skus = sorted({str(item["sku"]) for item in items if item.get("sku")})
        for item in items:
            if item.get("sku"):
                self._upsert(
                    products,
                    ["shop_id", "sku"],
                    {
                        "shop_id": shop_id,
                        "sku": item["sku"],
                        "name": item.get("name"),
                        "category": item.get("category"),
                    },
                )
        if not skus:
            return True
        earlier = set(
            self._session.execute(
                select(customer_products.c.sku).where(
                    customer_products.c.shop_id == shop_id, customer_products.c.customer_id == customer_id
                )
            ).scalars()
        )
        # Pairs within this order and with what the customer bought before, counted both ways.
        pairs = {(a, b) for a in skus for b in skus if a != b}
        pairs |= {(a, b) for a in skus for b in earlier if a != b and b not in skus}
        pairs |= {(b, a) for a, b in list(pairs)}
        for sku, other in sorted(pairs):
            self._increment_pair(shop_id, sku, other)
        new = [sku for sku in skus if sku not in earlier]
        if new:
            self._session.execute(
                insert(customer_products),
                [{"shop_id": shop_id, "customer_id": customer_id, "sku": sku} for sku in new],
            )
        return True

    def _increment_pair(self, shop_id: str, sku: str, other: str) -> None:
        dialect = self._session.get_bind().dialect.name
        insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert_fn(co_purchases).values(shop_id=shop_id, sku=sku, other_sku=other, count=1)
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["shop_id", "sku", "other_sku"], set_={"count": co_purchases.c.count + 1}
            )
        )

    def recommendation(self, shop_id: str, customer_id: str, skus: list[str]) -> dict[str, Any] | None:
        """The product most often bought together with these, which the customer does not own yet."""
        if not skus:
            return None
        owned = select(customer_products.c.sku).where(
            customer_products.c.shop_id == shop_id, customer_products.c.customer_id == customer_id
        )
        row = (
            self._session.execute(
                select(co_purchases.c.other_sku, func.sum(co_purchases.c.count).label("score"))
                .where(
                    co_purchases.c.shop_id == shop_id,
                    co_purchases.c.sku.in_(skus),
                    co_purchases.c.other_sku.not_in(skus),
                    co_purchases.c.other_sku.not_in(owned),
                )
                .group_by(co_purchases.c.other_sku)
                .order_by(func.sum(co_purchases.c.count).desc(), co_purchases.c.other_sku)
                .limit(1)
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        product = (
            self._session.execute(
                select(products).where(products.c.shop_id == shop_id, products.c.sku == row["other_sku"])
            )
            .mappings()
            .first()
        )
        return {
            "sku": row["other_sku"],
            "name": (product["name"] if product else None) or row["other_sku"],
            "category": product["category"] if product else None,
            "bought_together": int(row["score"]),
        }

    def customer_skus(self, shop_id: str, customer_id: str) -> list[str]:
        return list(
            self._session.execute(
                select(customer_products.c.sku).where(
                    customer_products.c.shop_id == shop_id, customer_products.c.customer_id == customer_id
                )
            ).scalars()
        )

    def purchase_count(self, shop_id: str, customer_id: str) -> int:
        return int(
            self._session.execute(
                select(func.count()).where(
                    purchases.c.shop_id == shop_id, purchases.c.customer_id == customer_id
                )
            ).scalar_one()
        )

    def last_purchase(self, shop_id: str, customer_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(purchases)
                .where(purchases.c.shop_id == shop_id, purchases.c.customer_id == customer_id)
                .order_by(purchases.c.occurred_at.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def purchase_times(self, shop_id: str, customer_ids: list[str]) -> dict[str, list[tuple[datetime, str]]]:
        found: dict[str, list[tuple[datetime, str]]] = {}
        for start in range(0, len(customer_ids), 500):
            rows = self._session.execute(
                select(purchases.c.customer_id, purchases.c.occurred_at, purchases.c.order_id).where(
                    purchases.c.shop_id == shop_id,
                    purchases.c.customer_id.in_(customer_ids[start : start + 500]),
                )
            )
            for customer_id, occurred_at, order_id in rows:
                found.setdefault(customer_id, []).append((occurred_at, order_id))
        return found

    def delete_customer_purchases(self, shop_id: str, customer_id: str) -> int:
        """Forget what the customer bought; returns how many orders. (Pair counts stay: they are
        aggregates over all customers and name nobody.)"""
        self._session.execute(
            delete(customer_products).where(
                customer_products.c.shop_id == shop_id, customer_products.c.customer_id == customer_id
            )
        )
        result = self._session.execute(
            delete(purchases).where(purchases.c.shop_id == shop_id, purchases.c.customer_id == customer_id)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # --- runs and steps ---------------------------------------------------------------------

    def run_exists(self, shop_id: str, playbook_key: str, business_key: str) -> bool:
        return (
            self._session.execute(
                select(runs.c.id).where(
                    runs.c.shop_id == shop_id,
                    runs.c.playbook_key == playbook_key,
                    runs.c.business_key == business_key,
                )
            ).first()
            is not None
        )

    def last_run_started(self, shop_id: str, playbook_key: str, customer_id: str) -> datetime | None:
        return self._session.execute(
            select(func.max(runs.c.started_at)).where(
                runs.c.shop_id == shop_id,
                runs.c.playbook_key == playbook_key,
                runs.c.customer_id == customer_id,
            )
        ).scalar_one_or_none()

    def playbook_runs(self, shop_id: str, playbook_key: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(
                runs.c.customer_id,
                runs.c.business_key,
                runs.c.holdout_group,
                runs.c.triggered_at,
                runs.c.started_at,
            ).where(runs.c.shop_id == shop_id, runs.c.playbook_key == playbook_key)
        ).mappings()
        return [dict(row) for row in rows]

    def latest_run(self, shop_id: str, playbook_key: str, customer_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(runs)
                .where(
                    runs.c.shop_id == shop_id,
                    runs.c.playbook_key == playbook_key,
                    runs.c.customer_id == customer_id,
                )
                .order_by(runs.c.started_at.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def add_run(self, values: dict[str, Any]) -> None:
        self._session.execute(insert(runs).values(**values))

    def add_steps(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._session.execute(insert(steps), rows)

    def active_run_ids(self, shop_id: str, playbook_key: str) -> list[str]:
        return list(
            self._session.execute(
                select(runs.c.id).where(
                    runs.c.shop_id == shop_id, runs.c.playbook_key == playbook_key, runs.c.status == "active"
                )
            ).scalars()
        )

    def active_runs(self, shop_id: str, customer_id: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(runs).where(
                runs.c.shop_id == shop_id, runs.c.customer_id == customer_id, runs.c.status == "active"
            )
        ).mappings()
        return [dict(row) for row in rows]

    def end_run(self, run_id: str, status: str, reason: str | None, now: datetime) -> list[dict[str, Any]]:
        """End a run and cancel its pending steps; return the steps cancelled."""
        self._session.execute(
            update(runs).where(runs.c.id == run_id).values(status=status, exit_reason=reason, ended_at=now)
        )
        pending = [
            dict(row)
            for row in self._session.execute(
                select(steps).where(steps.c.run_id == run_id, steps.c.status.in_(PENDING)).with_for_update()
            ).mappings()
        ]
        if pending:
            self._session.execute(
                update(steps)
                .where(steps.c.id.in_([step["id"] for step in pending]))
                .values(status="cancelled", reason=reason, updated_at=now)
            )
        return pending

    def claim_due_steps(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Lock up to `limit` due steps, the earliest first; other replicas skip them (FOR UPDATE
        SKIP LOCKED on PostgreSQL) until this transaction ends."""
        rows = self._session.execute(
            select(steps)
            .where(steps.c.status == "scheduled", steps.c.due_at <= now)
            .order_by(steps.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).mappings()
        return [dict(row) for row in rows]

    def lock_scheduled_steps(self, step_ids: list[str]) -> set[str]:
        """Lock those of these steps that are still scheduled and not locked by anyone else."""
        if not step_ids:
            return set()
        return set(
            self._session.execute(
                select(steps.c.id)
                .where(steps.c.id.in_(step_ids), steps.c.status == "scheduled")
                .with_for_update(skip_locked=True)
            ).scalars()
        )

    def step(self, shop_id: str, step_id: str, *, lock: bool = False) -> dict[str, Any] | None:
        query = select(steps).where(steps.c.shop_id == shop_id, steps.c.id == step_id)
        if lock:
            query = query.with_for_update()
        row = self._session.execute(query).mappings().first()
        return dict(row) if row else None

    def run_steps(self, run_id: str, status: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(steps).where(steps.c.run_id == run_id, steps.c.status == status).with_for_update()
        ).mappings()
        return [dict(row) for row in rows]

    def sent_history(self, shop_id: str, customer_id: str, since: datetime) -> list[tuple[datetime, str]]:
        """(sent_at, priority class) of what this customer was sent since a moment."""
        return self.sent_histories(shop_id, [customer_id], since).get(customer_id, [])

    def sent_histories(
        self, shop_id: str, customer_ids: list[str], since: datetime
    ) -> dict[str, list[tuple[datetime, str]]]:
        """Per customer: (sent_at, priority class) of what they were sent since a moment."""
        found: dict[str, list[tuple[datetime, str]]] = {}
        if not customer_ids:
            return found
        rows = self._session.execute(
            select(steps.c.customer_id, steps.c.sent_at, steps.c.priority).where(
                steps.c.shop_id == shop_id,
                steps.c.customer_id.in_(customer_ids),
                steps.c.status == "sent",
                steps.c.sent_at > since,
            )
        )
        for customer_id, sent_at, priority in rows:
            found.setdefault(customer_id, []).append((sent_at, priority))
        return found

    def update_step(self, step_id: str, **values: Any) -> None:
        self._session.execute(update(steps).where(steps.c.id == step_id).values(**values))

    def update_steps(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        """Apply (step id, new values) pairs: one executemany per set of columns changed."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for step_id, values in changes:
            groups.setdefault(tuple(sorted(values)), []).append({"_step_id": step_id, **values})
        for columns, rows in groups.items():
            statement = (
                update(steps)
                .where(steps.c.id == bindparam("_step_id"))
                .values({column: bindparam(column) for column in columns})
            )
            self._session.execute(statement, rows)

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self._session.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        return dict(row) if row else None

    def runs_by_id(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not run_ids:
            return {}
        rows = self._session.execute(select(runs).where(runs.c.id.in_(run_ids))).mappings()
        return {row["id"]: dict(row) for row in rows}

    def finish_run_if_done(self, run_id: str, now: datetime) -> None:
        """Complete an active run that has no pending step left (one statement: it runs per send)."""
        pending = select(steps.c.id).where(steps.c.run_id == run_id, steps.c.status.in_(PENDING)).exists()
        self._session.execute(
            update(runs)
            .where(runs.c.id == run_id, runs.c.status == "active", ~pending)
            .values(status="completed", ended_at=now)
        )

    def finish_runs_if_done(self, run_ids: list[str], now: datetime) -> None:
        """Complete those of these active runs that have no pending step left, in one statement."""
        if not run_ids:
            return
        pending = (
            select(steps.c.id)
            .where(steps.c.run_id == runs.c.id, steps.c.status.in_(PENDING))
            .correlate(runs)
            .exists()
        )
        self._session.execute(
            update(runs)
            .where(runs.c.id.in_(run_ids), runs.c.status == "active", ~pending)
            .values(status="completed", ended_at=now)
        )

    def record_message(self, values: dict[str, Any]) -> None:
        self._session.execute(insert(messages).values(**values))

    def record_messages(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._session.execute(insert(messages), rows)

    def customer_steps(self, shop_id: str, customer_id: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(steps)
            .where(steps.c.shop_id == shop_id, steps.c.customer_id == customer_id)
            .order_by(steps.c.due_at, steps.c.position)
        ).mappings()
        return [dict(row) for row in rows]
