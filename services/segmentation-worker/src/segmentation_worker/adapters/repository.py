"""Queries on the segmentation-worker's tables, in bulk: a consumer applies a whole poll at once."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from segmentation_worker.adapters.tables import customer_state, orders, shop_stats

ZERO = Decimal(0)
CHUNK = 500

CustomerKey = tuple[str, str]
OrderKey = tuple[str, str]


class StateRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, shop_id: str, customer_id: str) -> dict[str, Any] | None:
        return self.states_for([(shop_id, customer_id)]).get((shop_id, customer_id))

    def states_for(self, keys: Iterable[CustomerKey]) -> dict[CustomerKey, dict[str, Any]]:
        found: dict[CustomerKey, dict[str, Any]] = {}
        for shop_id, customer_ids in _by_shop(keys):
            rows = self._session.execute(
                select(customer_state).where(
                    customer_state.c.shop_id == shop_id, customer_state.c.customer_id.in_(customer_ids)
                )
            ).mappings()
            found.update({(row["shop_id"], row["customer_id"]): dict(row) for row in rows})
        return found

    def orders_of(self, customers: Iterable[CustomerKey]) -> dict[OrderKey, dict[str, Any]]:
        found: dict[OrderKey, dict[str, Any]] = {}
        for shop_id, customer_ids in _by_shop(customers):
            rows = self._session.execute(
                select(orders).where(orders.c.shop_id == shop_id, orders.c.customer_id.in_(customer_ids))
            ).mappings()
            found.update({(row["shop_id"], row["order_id"]): dict(row) for row in rows})
        return found

    def orders_by_id(self, keys: Iterable[OrderKey]) -> dict[OrderKey, dict[str, Any]]:
        found: dict[OrderKey, dict[str, Any]] = {}
        for shop_id, order_ids in _by_shop(keys):
            rows = self._session.execute(
                select(orders).where(orders.c.shop_id == shop_id, orders.c.order_id.in_(order_ids))
            ).mappings()
            found.update({(row["shop_id"], row["order_id"]): dict(row) for row in rows})
        return found

    def save_orders(self, rows: list[dict[str, Any]]) -> None:
        self._upsert(orders, rows, ["shop_id", "order_id"])

    def save_states(self, rows: list[dict[str, Any]]) -> None:
        self._upsert(customer_state, rows, ["shop_id", "customer_id"])

    def adjust_shops(self, deltas: dict[str, tuple[int, Decimal]]) -> dict[str, Decimal]:
        """Apply (buyers, net spend) deltas per shop; return each shop's new average net spend per buyer."""
        averages: dict[str, Decimal] = {}
        for shop_id, (buyers, net_spend) in sorted(deltas.items()):
            self._upsert(
                shop_stats, [{"shop_id": shop_id, "buyers": 0, "net_spend": ZERO}], ["shop_id"], update=False
            )
            row = self._session.execute(
                update(shop_stats)
                .where(shop_stats.c.shop_id == shop_id)
                .values(buyers=shop_stats.c.buyers + buyers, net_spend=shop_stats.c.net_spend + net_spend)
                .returning(shop_stats.c.buyers, shop_stats.c.net_spend)
            ).one()
            averages[shop_id] = Decimal(row.net_spend) / row.buyers if row.buyers else ZERO
        return averages

    def _upsert(
        self, table: Table, rows: list[dict[str, Any]], key: list[str], *, update: bool = True
    ) -> None:
        if not rows:
            return
        dialect = self._session.get_bind().dialect.name
        insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert_fn(table)
        if update:
            columns = [name for name in rows[0] if name not in key]
            statement = statement.on_conflict_do_update(
                index_elements=key, set_={name: statement.excluded[name] for name in columns}
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=key)
        for chunk in _chunks(rows):
            self._session.execute(statement, chunk)


def _by_shop(keys: Iterable[tuple[str, str]]) -> Iterable[tuple[str, list[str]]]:
    """Group (shop, id) pairs by shop, in chunks: `shop = :s AND id IN (...)` plans in microseconds,
    where a row-value IN over (shop, id) pairs becomes hundreds of OR'ed conditions to plan."""
    grouped: dict[str, list[str]] = {}
    for shop_id, item_id in sorted(set(keys)):
        grouped.setdefault(shop_id, []).append(item_id)
    for shop_id, ids in grouped.items():
        for chunk in _chunks(ids):
            yield shop_id, chunk


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
