"""Event handlers: keep each customer's behavioural state and re-score it on every change."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from retention_shared.events.catalogue import RfmScores, SegmentChanged
from retention_shared.events.envelope import Envelope
from segmentation_worker.domain import rfm
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

ZERO = Decimal(0)


def purchase_made(event: Envelope, uow: SegmentationUnitOfWork) -> None:
    assert event.customer_id is not None
    order_id = event.data["order_id"]
    amount = Decimal(str(event.data["amount"]))
    existing = uow.state.order(event.shop_id, order_id)
    if existing is not None and existing["purchased_at"] is not None:
        return  # the same order reported twice under another event id: count it once
    uow.state.put_order(
        {
            "shop_id": event.shop_id,
            "order_id": order_id,
            "customer_id": event.customer_id,
            "purchased_at": event.time,
            "amount": amount,
            "refunded": existing["refunded"] if existing else ZERO,
        },
        exists=existing is not None,
    )
    _refresh(event, uow)


def refund_issued(event: Envelope, uow: SegmentationUnitOfWork) -> None:
    """Refunds net against their order; one that arrives before its purchase waits on the order row."""
    assert event.customer_id is not None
    order_id = event.data["order_id"]
    amount = Decimal(str(event.data["amount"]))
    existing = uow.state.order(event.shop_id, order_id)
    uow.state.put_order(
        {
            "shop_id": event.shop_id,
            "order_id": order_id,
            "customer_id": event.customer_id,
            "purchased_at": existing["purchased_at"] if existing else None,
            "amount": existing["amount"] if existing else ZERO,
            "refunded": (Decimal(existing["refunded"]) if existing else ZERO) + amount,
        },
        exists=existing is not None,
    )
    _refresh(event, uow)


def login_recorded(event: Envelope, uow: SegmentationUnitOfWork) -> None:
    assert event.customer_id is not None
    state = uow.state.get_or_create(event.shop_id, event.customer_id, uow.clock.now())
    if state["last_login_at"] is None or event.time > state["last_login_at"]:
        state["last_login_at"] = event.time
    state["login_count"] += 1
    state["updated_at"] = uow.clock.now()
    uow.state.save(state)


def ticket_opened(event: Envelope, uow: SegmentationUnitOfWork) -> None:
    _adjust_tickets(event, uow, +1)


def ticket_resolved(event: Envelope, uow: SegmentationUnitOfWork) -> None:
    _adjust_tickets(event, uow, -1)


def _adjust_tickets(event: Envelope, uow: SegmentationUnitOfWork, delta: int) -> None:
    assert event.customer_id is not None
    state = uow.state.get_or_create(event.shop_id, event.customer_id, uow.clock.now())
    state["open_tickets"] = max(0, state["open_tickets"] + delta)
    state["updated_at"] = uow.clock.now()
    uow.state.save(state)


def _refresh(event: Envelope, uow: SegmentationUnitOfWork) -> None:
    """Recompute the customer's purchase facts from their orders, then their RFM and segment."""
    assert event.customer_id is not None
    now = uow.clock.now()
    state = uow.state.get_or_create(event.shop_id, event.customer_id, now)
    times = sorted(uow.state.purchase_times(event.shop_id, event.customer_id))
    gross, refunded = uow.state.net_spend(event.shop_id, event.customer_id)
    previous_net = Decimal(state["gross_spend"]) - Decimal(state["refunded"])
    was_buyer = state["purchase_count"] > 0
    state.update(
        purchase_count=len(times),
        purchase_days=len({t.date() for t in times}),
        first_purchase_at=times[0] if times else None,
        last_purchase_at=times[-1] if times else None,
        gross_spend=gross,
        refunded=refunded,
        updated_at=now,
    )
    uow.state.adjust_shop(
        event.shop_id, buyers=int(bool(times)) - int(was_buyer), net_spend=(gross - refunded) - previous_net
    )
    if times:
        _rescore(event, uow, state, times)
    uow.state.save(state)


def _rescore(event: Envelope, uow: SegmentationUnitOfWork, state: dict[str, Any], times: list) -> None:
    now = uow.clock.now()
    year_ago = now - timedelta(days=365)
    scores, segment = rfm.score(
        last_purchase_at=times[-1],
        purchase_days_last_year=len({t.date() for t in times if t >= year_ago}),
        net_spend=Decimal(state["gross_spend"]) - Decimal(state["refunded"]),
        shop_average=uow.state.shop_average(event.shop_id),
        now=now,
    )
    previous = state.get("segment")
    state.update(r_score=int(scores.r), f_score=int(scores.f), m_score=int(scores.m), segment=segment)
    if segment != previous:
        uow.publish(
            "segment_changed",
            shop_id=event.shop_id,
            customer_id=event.customer_id,
            data=SegmentChanged(
                from_segment=previous,
                to_segment=segment,
                rfm=RfmScores(r=int(scores.r), f=int(scores.f), m=int(scores.m)),
            ),
        )
