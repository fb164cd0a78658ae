"""Queries on the followup-scheduler's tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from followup_scheduler.adapters.tables import contacts, messages, playbooks, runs, steps, tenancy

PENDING = ("scheduled",)


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

    def upsert_contact(self, values: dict[str, Any]) -> None:
        dialect = self._session.get_bind().dialect.name
        insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert_fn(contacts).values(**values)
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["shop_id", "customer_id"],
                set_={k: statement.excluded[k] for k in values if k not in ("shop_id", "customer_id")},
            )
        )

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

    def all_playbooks(self, shop_id: str) -> list[dict[str, Any]]:
        rows = self._session.execute(select(playbooks).where(playbooks.c.shop_id == shop_id)).mappings()
        return [dict(row) for row in rows]

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

    def add_run(self, values: dict[str, Any]) -> None:
        self._session.execute(insert(runs).values(**values))

    def add_steps(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._session.execute(insert(steps), rows)

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

    def claim_due_step(self, now: datetime) -> dict[str, Any] | None:
        """Lock the next due step; other replicas skip it (FOR UPDATE SKIP LOCKED on PostgreSQL)."""
        row = (
            self._session.execute(
                select(steps)
                .where(steps.c.status == "scheduled", steps.c.due_at <= now)
                .order_by(steps.c.due_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def update_step(self, step_id: str, **values: Any) -> None:
        self._session.execute(update(steps).where(steps.c.id == step_id).values(**values))

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self._session.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        return dict(row) if row else None

    def finish_run_if_done(self, run_id: str, now: datetime) -> None:
        remaining = self._session.execute(
            select(steps.c.id).where(steps.c.run_id == run_id, steps.c.status.in_(PENDING)).limit(1)
        ).first()
        if remaining is None:
            self._session.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == "active")
                .values(status="completed", ended_at=now)
            )

    def record_message(self, values: dict[str, Any]) -> None:
        self._session.execute(insert(messages).values(**values))

    def customer_steps(self, shop_id: str, customer_id: str) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(steps)
            .where(steps.c.shop_id == shop_id, steps.c.customer_id == customer_id)
            .order_by(steps.c.due_at, steps.c.position)
        ).mappings()
        return [dict(row) for row in rows]
