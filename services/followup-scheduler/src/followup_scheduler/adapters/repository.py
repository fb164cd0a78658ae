"""Queries on the followup-scheduler's tables."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Integer, String, Table, bindparam, delete, func, insert, select, update
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
from retention_shared.db import UTCDateTime, copy_text, driver_cursor, json_dumps

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

    def known_orders(self, shop_id: str, order_ids: list[str]) -> set[str]:
        """Which of these orders were recorded already."""
        found: set[str] = set()
        for start in range(0, len(order_ids), 500):
            found.update(
                self._session.execute(
                    select(purchases.c.order_id).where(
                        purchases.c.shop_id == shop_id,
                        purchases.c.order_id.in_(order_ids[start : start + 500]),
                    )
                ).scalars()
            )
        return found

    def purchase_counts(self, shop_id: str, customer_ids: list[str]) -> dict[str, int]:
        """How many purchases each of these customers has made (absent: none)."""
        counts: dict[str, int] = {}
        for start in range(0, len(customer_ids), 500):
            rows = self._session.execute(
                select(purchases.c.customer_id, func.count())
                .where(
                    purchases.c.shop_id == shop_id,
                    purchases.c.customer_id.in_(customer_ids[start : start + 500]),
                )
                .group_by(purchases.c.customer_id)
            )
            counts.update((customer_id, int(count)) for customer_id, count in rows)
        return counts

    def add_purchases(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._session.execute(insert(purchases), rows)

    def skus_of(self, shop_id: str, customer_ids: list[str]) -> dict[str, set[str]]:
        """The products each of these customers has bought (absent: none)."""
        found: dict[str, set[str]] = {}
        for start in range(0, len(customer_ids), 500):
            rows = self._session.execute(
                select(customer_products.c.customer_id, customer_products.c.sku).where(
                    customer_products.c.shop_id == shop_id,
                    customer_products.c.customer_id.in_(customer_ids[start : start + 500]),
                )
            )
            for customer_id, sku in rows:
                found.setdefault(customer_id, set()).add(sku)
        return found

    def add_customer_products(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._session.execute(insert(customer_products), rows)

    def upsert_products(self, rows: list[dict[str, Any]]) -> None:
        """Insert or update (name, category) products; one row per (shop, sku)."""
        if not rows:
            return
        statement = self._insert(products)
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["shop_id", "sku"],
                set_={"name": statement.excluded.name, "category": statement.excluded.category},
            ),
            rows,
        )

    def add_pair_counts(self, shop_id: str, counts: dict[tuple[str, str], int]) -> None:
        """Add to the bought-together counts of (sku, other sku) pairs."""
        if not counts:
            return
        statement = self._insert(co_purchases)
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["shop_id", "sku", "other_sku"],
                set_={"count": co_purchases.c.count + statement.excluded["count"]},
            ),
            [
                {"shop_id": shop_id, "sku": sku, "other_sku": other, "count": count}
                for (sku, other), count in sorted(counts.items())
            ],
        )

    def _insert(self, table: Table) -> Any:
        dialect = self._session.get_bind().dialect.name
        return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)

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

    def taken_business_keys(self, shop_id: str, business_keys: list[str]) -> set[tuple[str, str]]:
        """(playbook key, business key) of the shop's runs with one of these business keys."""
        found: set[tuple[str, str]] = set()
        for start in range(0, len(business_keys), 500):
            rows = self._session.execute(
                select(runs.c.playbook_key, runs.c.business_key).where(
                    runs.c.shop_id == shop_id,
                    runs.c.business_key.in_(business_keys[start : start + 500]),
                )
            )
            found.update((playbook_key, business_key) for playbook_key, business_key in rows)
        return found

    def last_runs_started(self, shop_id: str, customer_ids: list[str]) -> dict[tuple[str, str], datetime]:
        """When each (playbook key, customer) pair of these customers last started a run."""
        found: dict[tuple[str, str], datetime] = {}
        for start in range(0, len(customer_ids), 500):
            rows = self._session.execute(
                select(runs.c.playbook_key, runs.c.customer_id, func.max(runs.c.started_at))
                .where(runs.c.shop_id == shop_id, runs.c.customer_id.in_(customer_ids[start : start + 500]))
                .group_by(runs.c.playbook_key, runs.c.customer_id)
            )
            found.update(((key, customer_id), started) for key, customer_id, started in rows)
        return found

    def active_runs_of(self, shop_id: str, customer_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Per customer, their active runs, oldest first."""
        found: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(customer_ids), 500):
            rows = self._session.execute(
                select(runs)
                .where(
                    runs.c.shop_id == shop_id,
                    runs.c.customer_id.in_(customer_ids[start : start + 500]),
                    runs.c.status == "active",
                )
                .order_by(runs.c.started_at, runs.c.id)
            ).mappings()
            for row in rows:
                found.setdefault(row["customer_id"], []).append(dict(row))
        return found

    def playbook_documents(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """The documents of these (playbook id, version) pairs that exist."""
        wanted = set(keys)
        found: dict[tuple[str, int], dict[str, Any]] = {}
        ids = sorted({playbook_id for playbook_id, _ in wanted})
        for start in range(0, len(ids), 500):
            rows = self._session.execute(
                select(
                    playbook_versions.c.playbook_id, playbook_versions.c.version, playbook_versions.c.document
                ).where(
                    playbook_versions.c.playbook_id.in_(ids[start : start + 500]),
                    playbook_versions.c.version.in_(sorted({version for _, version in wanted})),
                )
            )
            for playbook_id, version, document in rows:
                if (playbook_id, version) in wanted:
                    found[(playbook_id, version)] = document
        return found

    def enabled_playbooks(self, shop_id: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(playbooks)
            .where(playbooks.c.shop_id == shop_id, playbooks.c.enabled.is_(True))
            .order_by(playbooks.c.key)
        ).mappings()
        return [dict(row) for row in rows]

    def add_runs(self, rows: list[dict[str, Any]]) -> None:
        self._bulk_insert(runs, rows)

    def add_run(self, values: dict[str, Any]) -> None:
        self._session.execute(insert(runs).values(**values))

    def add_steps(self, rows: list[dict[str, Any]]) -> None:
        self._bulk_insert(steps, rows)

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
        """Apply (step id, new values) pairs: one statement per set of columns changed (on
        PostgreSQL the values travel as arrays; elsewhere one executemany)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for step_id, values in changes:
            groups.setdefault(tuple(sorted(values)), []).append({"_step_id": step_id, **values})
        for columns, rows in groups.items():
            if self._postgresql and len(rows) > 1 and all(c in _ARRAY_TYPES_OF_STEPS for c in columns):
                self._update_steps_from_arrays(columns, rows)
                continue
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
        self._bulk_insert(messages, rows)

    def customer_steps(self, shop_id: str, customer_id: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(steps)
            .where(steps.c.shop_id == shop_id, steps.c.customer_id == customer_id)
            .order_by(steps.c.due_at, steps.c.position)
        ).mappings()
        return [dict(row) for row in rows]

    # --- bulk writes on PostgreSQL ------------------------------------------------------------

    @property
    def _postgresql(self) -> bool:
        return self._session.get_bind().dialect.name == "postgresql"

    def _bulk_insert(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert rows that all have the same keys: one COPY on PostgreSQL (an executemany runs a
        statement per row), one executemany elsewhere."""
        if not rows:
            return
        if not self._postgresql:
            self._session.execute(insert(table), rows)
            return
        columns = list(rows[0])
        lines = "".join("\t".join(_copy_value(row[column]) for column in columns) + "\n" for row in rows)
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with driver_cursor(self._session) as cursor, cursor.copy(statement) as copy:
            copy.write(lines)

    def _update_steps_from_arrays(self, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        """One UPDATE for many steps: the ids and new values go as one array per column."""
        names = ["_step_id", *columns]
        arrays = ", ".join(f"%s::{_ARRAY_TYPES_OF_STEPS[name]}" for name in names)
        assignments = ", ".join(f"{column} = v.{column}" for column in columns)
        statement = (
            f"UPDATE steps SET {assignments} FROM unnest({arrays}) AS v({', '.join(names)})"
            " WHERE steps.id = v._step_id"
        )
        with driver_cursor(self._session) as cursor:
            cursor.execute(statement, [[row[name] for row in rows] for name in names])


def _array_type(column: Any) -> str | None:
    if isinstance(column.type, UTCDateTime | DateTime):
        return "timestamptz[]"
    if isinstance(column.type, Integer):
        return "integer[]"
    if isinstance(column.type, String):
        return "text[]"
    return None


# PostgreSQL array types of the steps' scalar columns (the ones `update_steps` can send as arrays).
_ARRAY_TYPES_OF_STEPS: dict[str, str] = {
    "_step_id": "text[]",
    **{
        column.name: array_type
        for column in steps.columns
        if (array_type := _array_type(column)) is not None and column.name != "id"
    },
}


def _copy_value(value: Any) -> str:
    """A Python value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return copy_text(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return copy_text(json_dumps(value))
    return str(value)
