"""Erasure: forget a customer's behavioural state when the customer asks to be forgotten."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import delete

from retention_shared.events.catalogue import ErasureCompleted
from retention_shared.events.envelope import Envelope
from segmentation_worker.adapters.tables import customer_state, login_days, orders, segment_history, tickets
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

SERVICE = "segmentation-worker"


def customer_erased(event: Envelope, uow: SegmentationUnitOfWork) -> None:
    """Delete the customer's state, orders, tickets, login days and segment history; the shop's
    aggregates keep only the counts."""
    assert event.customer_id is not None
    key = (event.shop_id, event.customer_id)
    state = uow.state.get(*key)
    if state is not None and state["purchase_count"] > 0:
        net = Decimal(state["gross_spend"]) - Decimal(state["refunded"])
        uow.state.adjust_shops({event.shop_id: (-1, -net)})
    removed_orders = uow.session.execute(
        delete(orders).where(orders.c.shop_id == event.shop_id, orders.c.customer_id == event.customer_id)
    )
    if _count(removed_orders):
        # The shop's KPI snapshots counted these orders; live figures no longer do.
        uow.state.mark_kpis_revised(event.shop_id, at=uow.clock.now())
    removed_state = uow.session.execute(
        delete(customer_state).where(
            customer_state.c.shop_id == event.shop_id, customer_state.c.customer_id == event.customer_id
        )
    )
    # Tickets, login days and segment history are behavioural data about the person too.
    for table in (tickets, login_days, segment_history):
        uow.session.execute(
            delete(table).where(table.c.shop_id == event.shop_id, table.c.customer_id == event.customer_id)
        )
    uow.publish(
        "erasure_completed",
        shop_id=event.shop_id,
        customer_id=event.customer_id,
        data=ErasureCompleted(
            erasure_id=event.data["erasure_id"],
            service=SERVICE,
            purged={"behavioural_state": _count(removed_state), "orders": _count(removed_orders)},
        ),
    )


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
