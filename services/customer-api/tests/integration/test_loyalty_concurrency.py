"""The loyalty programme on real PostgreSQL: the account row lock keeps the balance from going negative
under concurrent redemptions and refunds, and the bulk statements (arrays, COPY) run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from customer_api.adapters import tables
from customer_api.adapters.loyalty_tables import loyalty_ledger, loyalty_orders, loyalty_redemptions
from customer_api.service_layer import loyalty
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.clock import ManualClock
from retention_shared.problems import Problem

pytestmark = pytest.mark.integration

THREADS = 20
UowFactory = Callable[[], CustomerApiUnitOfWork]


@dataclass(frozen=True)
class Activity:
    id: str
    type: str
    customer_id: str
    occurred_at: datetime
    data: dict[str, Any]


def ingest(uow_factory: UowFactory, shop_id: str, *events: tuple[str, str, str]) -> None:
    """(type, order id, amount) events for customer c1, applied as ingestion does."""
    activities = [
        Activity(
            f"evt-{event_type}-{order_id}",
            event_type,
            "c1",
            datetime.now(UTC),
            {"order_id": order_id, "amount": amount, "currency": "JPY"},
        )
        for event_type, order_id, amount in events
    ]
    with uow_factory() as uow:
        loyalty.apply_loyalty_for_events(uow=uow, shop_id=shop_id, events=activities)
        uow.commit()


def run_together(calls: list[Callable[[], int]]) -> list[int]:
    """Start every call at the same moment, each on its own thread and connection."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], int]) -> int:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def redemption(uow_factory: UowFactory, shop_id: str, points: int, key: str) -> Callable[[], int]:
    def attempt() -> int:
        try:
            redeemed, _ = loyalty.redeem_points(
                uow=uow_factory(), shop_id=shop_id, customer_id="c1", points=points, idempotency_key=key
            )
        except Problem as problem:
            assert problem.status == 422, problem.detail
            assert problem.errors is not None and problem.errors[0]["field"] == "body.points"
            return 0
        return int(redeemed["points"])

    return attempt


def ledger_facts(engine: Engine, shop_id: str) -> tuple[int, int, int]:
    """(sum of the ledger, lots below zero, redemptions recorded)."""
    mine = loyalty_ledger.c.shop_id == shop_id
    with engine.connect() as connection:
        total = connection.execute(select(func.coalesce(func.sum(loyalty_ledger.c.points), 0)).where(mine))
        negative_lots = connection.execute(
            select(func.count()).select_from(
                select(loyalty_ledger.c.lot_id)
                .where(mine)
                .group_by(loyalty_ledger.c.lot_id)
                .having(func.sum(loyalty_ledger.c.points) < 0)
                .subquery()
            )
        )
        redemptions = connection.execute(select(func.count()).where(loyalty_redemptions.c.shop_id == shop_id))
        return int(total.scalar_one()), int(negative_lots.scalar_one()), int(redemptions.scalar_one())


def balance(uow_factory: UowFactory, shop_id: str) -> int:
    return int(loyalty.read_loyalty(uow=uow_factory(), shop_id=shop_id, customer_id="c1")["balance"])


def test_concurrent_redemptions_never_overdraw_the_balance(
    uow_factory: UowFactory, shop_id: str, engine: Engine
) -> None:
    # 400 points at bronze, then 600 more: 1,000 points in two lots, so redemptions span lots.
    ingest(uow_factory, shop_id, ("purchase_made", "o-1", "40000"), ("purchase_made", "o-2", "60000"))
    assert balance(uow_factory, shop_id) == 1000

    results = run_together([redemption(uow_factory, shop_id, 70, f"key-{n}") for n in range(THREADS)])

    accepted = [points for points in results if points]
    assert len(accepted) == 14  # 14 × 70 = 980 fits in 1,000; a 15th would not
    assert sum(accepted) == 980
    assert balance(uow_factory, shop_id) == 20
    assert ledger_facts(engine, shop_id) == (20, 0, 14)


def test_the_same_idempotency_key_sent_concurrently_redeems_once(
    uow_factory: UowFactory, shop_id: str, engine: Engine
) -> None:
    ingest(uow_factory, shop_id, ("purchase_made", "o-1", "10000"))

    results = run_together([redemption(uow_factory, shop_id, 30, "same-key") for _ in range(THREADS)])

    assert results == [30] * THREADS  # every caller gets the one redemption's answer
    assert balance(uow_factory, shop_id) == 70
    assert ledger_facts(engine, shop_id) == (70, 0, 1)


def test_redemptions_racing_a_refund_leave_no_negative_balance(
    uow_factory: UowFactory, shop_id: str, engine: Engine
) -> None:
    ingest(uow_factory, shop_id, ("purchase_made", "o-1", "40000"), ("purchase_made", "o-2", "60000"))

    def refund() -> int:
        ingest(uow_factory, shop_id, ("refund_issued", "o-2", "60000"))
        return 0

    calls = [redemption(uow_factory, shop_id, 90, f"key-{n}") for n in range(THREADS - 1)] + [refund]
    results = run_together(calls)

    final = balance(uow_factory, shop_id)
    total, negative_lots, redemptions = ledger_facts(engine, shop_id)
    assert final >= 0 and negative_lots == 0
    assert total == final
    assert redemptions == len([points for points in results if points])
    # What was neither redeemed nor left was clawed back; what the clawback could not take is on the order.
    with engine.connect() as connection:
        order = connection.execute(
            select(loyalty_orders).where(
                loyalty_orders.c.shop_id == shop_id, loyalty_orders.c.order_id == "o-2"
            )
        ).one()
    assert order.points_reversed == 600
    assert 1000 - sum(results) - final == order.points_reversed - order.points_unrecovered


def test_the_bulk_path_on_postgresql(uow_factory: UowFactory, shop_id: str, engine: Engine) -> None:
    # A refund ahead of its purchase, only pending refunds in a batch (all-NULL columns), a
    # duplicate order, and a threshold crossed: the PostgreSQL statements (arrays, COPY) all run.
    ingest(uow_factory, shop_id, ("refund_issued", "o-1", "2400"), ("refund_issued", "o-9", "100"))
    ingest(uow_factory, shop_id, ("purchase_made", "o-1", "4800"), ("purchase_made", "o-2", "60000"))
    with uow_factory() as uow:
        duplicate = Activity(
            "evt-again",
            "purchase_made",
            "c1",
            datetime.now(UTC),
            {"order_id": "o-2", "amount": "60000", "currency": "JPY"},
        )
        loyalty.apply_loyalty_for_events(uow=uow, shop_id=shop_id, events=[duplicate])
        uow.commit()

    member = loyalty.read_loyalty(uow=uow_factory(), shop_id=shop_id, customer_id="c1")
    assert member["balance"] == 24 + 600
    assert member["tier"]["name"] == "silver"
    assert str(member["rolling_spend"]) == "62400"
    assert loyalty.expire_points(uow=uow_factory()) == 0
    assert loyalty.refresh_tiers(uow=uow_factory(), older_than=timedelta(0)) == 1
    assert ledger_facts(engine, shop_id)[:2] == (624, 0)

    # A year and more later: the expiry job writes explicit rows and the tier falls back to bronze.
    later = partial(
        CustomerApiUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=ManualClock(datetime.now(UTC) + timedelta(days=400)),
        source="customer-api",
    )
    assert loyalty.expire_points(uow=later(), lookback=timedelta(days=60)) == 2
    assert loyalty.expire_points(uow=later(), lookback=timedelta(days=60)) == 0
    assert loyalty.refresh_tiers(uow=later()) == 1
    member = loyalty.read_loyalty(uow=later(), shop_id=shop_id, customer_id="c1")
    assert (member["balance"], member["tier"]["name"]) == (0, "bronze")
    assert ledger_facts(engine, shop_id)[:2] == (0, 0)
