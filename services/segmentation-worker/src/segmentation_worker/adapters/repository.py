"""Queries on the segmentation-worker's tables."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from segmentation_worker.adapters.tables import customer_state, orders, shop_stats

ZERO = Decimal(0)


class StateRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, shop_id: str, customer_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(customer_state).where(
                    customer_state.c.shop_id == shop_id, customer_state.c.customer_id == customer_id
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def get_or_create(self, shop_id: str, customer_id: str, now: datetime) -> dict[str, Any]:
        state = self.get(shop_id, customer_id)
        if state is None:
            state = {
                "shop_id": shop_id,
                "customer_id": customer_id,
                "purchase_count": 0,
                "purchase_days": 0,
                "gross_spend": ZERO,
                "refunded": ZERO,
                "login_count": 0,
                "open_tickets": 0,
                "updated_at": now,
            }
            self._session.execute(insert(customer_state).values(**state))
            state = self.get(shop_id, customer_id) or state
        return state

    def save(self, state: dict[str, Any]) -> None:
        key = {"shop_id": state["shop_id"], "customer_id": state["customer_id"]}
        values = {k: v for k, v in state.items() if k not in key}
        self._session.execute(
            update(customer_state)
            .where(
                customer_state.c.shop_id == key["shop_id"], customer_state.c.customer_id == key["customer_id"]
            )
            .values(**values)
        )

    def order(self, shop_id: str, order_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(orders).where(orders.c.shop_id == shop_id, orders.c.order_id == order_id)
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def put_order(self, values: dict[str, Any], *, exists: bool) -> None:
        if exists:
            self._session.execute(
                update(orders)
                .where(orders.c.shop_id == values["shop_id"], orders.c.order_id == values["order_id"])
                .values(**values)
            )
        else:
            self._session.execute(insert(orders).values(**values))

    def purchase_times(self, shop_id: str, customer_id: str) -> list[datetime]:
        rows = self._session.execute(
            select(orders.c.purchased_at).where(
                orders.c.shop_id == shop_id,
                orders.c.customer_id == customer_id,
                orders.c.purchased_at.is_not(None),
            )
        ).scalars()
        return list(rows)

    def net_spend(self, shop_id: str, customer_id: str) -> tuple[Decimal, Decimal]:
        """(gross, refunded) over the customer's known purchases; a refund never exceeds its order."""
        rows = self._session.execute(
            select(orders.c.amount, orders.c.refunded).where(
                orders.c.shop_id == shop_id,
                orders.c.customer_id == customer_id,
                orders.c.purchased_at.is_not(None),
            )
        ).all()
        gross = sum((Decimal(r.amount) for r in rows), ZERO)
        refunded = sum((min(Decimal(r.refunded), Decimal(r.amount)) for r in rows), ZERO)
        return gross, refunded

    def shop_average(self, shop_id: str) -> Decimal:
        row = (
            self._session.execute(select(shop_stats).where(shop_stats.c.shop_id == shop_id))
            .mappings()
            .first()
        )
        if row is None or not row["buyers"]:
            return ZERO
        return Decimal(row["net_spend"]) / row["buyers"]

    def adjust_shop(self, shop_id: str, *, buyers: int, net_spend: Decimal) -> None:
        exists = self._session.execute(
            select(shop_stats.c.shop_id).where(shop_stats.c.shop_id == shop_id)
        ).first()
        if exists is None:
            self._session.execute(insert(shop_stats).values(shop_id=shop_id, buyers=0, net_spend=ZERO))
        self._session.execute(
            update(shop_stats)
            .where(shop_stats.c.shop_id == shop_id)
            .values(buyers=shop_stats.c.buyers + buyers, net_spend=shop_stats.c.net_spend + net_spend)
        )

    def count(self, shop_id: str) -> int:
        return int(
            self._session.execute(
                select(func.count()).select_from(customer_state).where(customer_state.c.shop_id == shop_id)
            ).scalar_one()
        )
