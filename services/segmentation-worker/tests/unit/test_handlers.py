from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from retention_shared.clock import ManualClock
from retention_shared.db import create_db_engine
from retention_shared.events.envelope import Envelope, build_envelope
from segmentation_worker.adapters import tables
from segmentation_worker.service_layer import handlers
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

SHOP = "shop_1"
Apply = Callable[..., None]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'segmentation.db'}")
    tables.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def uow_factory(engine: Engine, manual_clock: ManualClock) -> Callable[[], SegmentationUnitOfWork]:
    return partial(
        SegmentationUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=manual_clock,
        source="segmentation-worker",
    )


@pytest.fixture
def apply(uow_factory: Callable[[], SegmentationUnitOfWork], manual_clock: ManualClock) -> Apply:
    """Apply one activity event in its own transaction, as the consumer does."""

    def run(
        event_type: str,
        order_id: str,
        amount: str,
        *,
        customer: str = "c1",
        event_id: str | None = None,
        at: datetime | None = None,
    ) -> Envelope:
        event = build_envelope(
            id=event_id,
            type=event_type,
            source="customer-api",
            shop_id=SHOP,
            customer_id=customer,
            data={"order_id": order_id, "amount": amount, "currency": "JPY"},
            time=at or manual_clock.now(),
        )
        with uow_factory() as uow:
            getattr(handlers, event_type)(event, uow)
            uow.commit()
        return event

    return run


def state_of(engine: Engine, customer: str = "c1") -> dict[str, Any]:
    with engine.connect() as connection:
        row = (
            connection.execute(
                select(tables.customer_state).where(
                    tables.customer_state.c.shop_id == SHOP, tables.customer_state.c.customer_id == customer
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


def net_spend(engine: Engine, customer: str = "c1") -> Decimal:
    state = state_of(engine, customer)
    return Decimal(state["gross_spend"]) - Decimal(state["refunded"])


def outbox_events(engine: Engine, event_type: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        payloads = connection.execute(
            select(tables.messaging.outbox.c.payload).order_by(tables.messaging.outbox.c.id)
        ).scalars()
        documents = [json.loads(payload) for payload in payloads]
    return [document for document in documents if document["type"] == event_type]


class TestRefundNetting:
    def test_a_refund_after_its_purchase_nets_the_spend(self, apply: Apply, engine: Engine) -> None:
        apply("purchase_made", "o-1", "100")
        apply("refund_issued", "o-1", "30")

        state = state_of(engine)
        assert Decimal(state["gross_spend"]) == Decimal("100")
        assert Decimal(state["refunded"]) == Decimal("30")
        assert net_spend(engine) == Decimal("70")

    def test_a_refund_arriving_before_its_purchase_is_netted_once_the_purchase_arrives(
        self, apply: Apply, engine: Engine
    ) -> None:
        apply("refund_issued", "o-1", "30")
        assert net_spend(engine) == Decimal("0")
        assert state_of(engine)["purchase_count"] == 0

        apply("purchase_made", "o-1", "100")

        state = state_of(engine)
        assert state["purchase_count"] == 1
        assert net_spend(engine) == Decimal("70")

    def test_a_refund_larger_than_its_purchase_never_makes_spend_negative(
        self, apply: Apply, engine: Engine
    ) -> None:
        apply("purchase_made", "o-1", "50")
        apply("refund_issued", "o-1", "80")

        assert net_spend(engine) == Decimal("0")

    def test_an_oversized_early_refund_is_capped_at_its_order_too(self, apply: Apply, engine: Engine) -> None:
        apply("refund_issued", "o-1", "80")
        apply("purchase_made", "o-1", "50")
        apply("purchase_made", "o-2", "40")

        assert net_spend(engine) == Decimal("40")

    def test_a_refund_only_nets_against_its_own_order(self, apply: Apply, engine: Engine) -> None:
        apply("purchase_made", "o-1", "100")
        apply("purchase_made", "o-2", "200")
        apply("refund_issued", "o-1", "150")

        assert net_spend(engine) == Decimal("200")


class TestPurchaseCounting:
    def test_purchases_on_the_same_day_count_as_one_purchase_day(
        self, apply: Apply, engine: Engine, manual_clock: ManualClock
    ) -> None:
        apply("purchase_made", "o-1", "100")
        manual_clock.advance(timedelta(hours=3))
        apply("purchase_made", "o-2", "100")

        state = state_of(engine)
        assert state["purchase_count"] == 2
        assert state["purchase_days"] == 1

        manual_clock.advance(timedelta(days=1))
        apply("purchase_made", "o-3", "100")
        assert state_of(engine)["purchase_days"] == 2

    def test_the_same_order_under_two_event_ids_counts_once(self, apply: Apply, engine: Engine) -> None:
        apply("purchase_made", "o-1", "100", event_id="evt-a")
        apply("purchase_made", "o-1", "100", event_id="evt-b")

        state = state_of(engine)
        assert state["purchase_count"] == 1
        assert Decimal(state["gross_spend"]) == Decimal("100")

    def test_first_and_last_purchase_follow_event_time_not_arrival_order(
        self, apply: Apply, engine: Engine, manual_clock: ManualClock
    ) -> None:
        now = manual_clock.now()
        apply("purchase_made", "o-2", "100", at=now - timedelta(days=1))
        apply("purchase_made", "o-1", "100", at=now - timedelta(days=10))

        state = state_of(engine)
        assert state["first_purchase_at"] == now - timedelta(days=10)
        assert state["last_purchase_at"] == now - timedelta(days=1)


class TestSegmentChanges:
    def test_segment_changed_is_published_only_when_the_segment_changes(
        self, apply: Apply, engine: Engine, manual_clock: ManualClock
    ) -> None:
        apply("purchase_made", "o-1", "100")  # one purchase day: new
        first = outbox_events(engine, "segment_changed")
        assert len(first) == 1
        assert first[0]["customer_id"] == "c1"
        assert first[0]["data"].get("from") is None
        assert first[0]["data"]["to"] == "new"
        assert state_of(engine)["segment"] == "new"

        manual_clock.advance(timedelta(days=1))
        apply("purchase_made", "o-2", "100")  # two purchase days: still rare, still new
        assert len(outbox_events(engine, "segment_changed")) == 1

        manual_clock.advance(timedelta(days=1))
        apply("purchase_made", "o-3", "100")  # three purchase days: frequency rises to mid
        changes = outbox_events(engine, "segment_changed")
        assert len(changes) == 2
        assert changes[1]["data"]["from"] == "new"
        assert changes[1]["data"]["to"] == "potential_loyalists"
        assert changes[1]["data"]["rfm"] == {"r": 5, "f": 3, "m": 3}
        assert state_of(engine)["segment"] == "potential_loyalists"

    def test_an_old_imported_purchase_scores_the_customer_as_lapsed(
        self, apply: Apply, engine: Engine, manual_clock: ManualClock
    ) -> None:
        apply("purchase_made", "o-1", "100", at=manual_clock.now() - timedelta(days=200))

        state = state_of(engine)
        # the only buyer spends exactly the shop average: mid spend
        assert (state["r_score"], state["f_score"], state["m_score"]) == (1, 1, 3)
        assert state["segment"] == "lost"  # the standard grid's bottom corner
        assert outbox_events(engine, "segment_changed")[0]["data"]["to"] == "lost"
