"""Applying activity to each customer's behavioural state, a whole poll at a time.

Orders are kept one row each, so a refund nets against its own order whichever of the two
arrives first, and an order reported twice (under two event ids) counts once. After the events
are applied, every touched customer's purchase facts are recomputed from their orders and the
customer is re-scored; a change of segment emits `segment_changed`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from retention_shared.events.catalogue import RfmScores, SegmentChanged
from retention_shared.events.envelope import Envelope
from segmentation_worker.domain import rfm
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

ZERO = Decimal(0)
ACTIVITY_TYPES = frozenset(
    {"purchase_made", "refund_issued", "login_recorded", "ticket_opened", "ticket_resolved"}
)

CustomerKey = tuple[str, str]


def apply_activity(events: list[Envelope], uow: SegmentationUnitOfWork) -> None:
    """Apply a batch of activity events in order, then re-score the customers they touched."""
    now = uow.clock.now()
    customers = {(e.shop_id, _customer(e)) for e in events}
    states = uow.state.states_for(customers)
    orders = uow.state.orders_of(customers)
    order_ids = {(e.shop_id, str(e.data["order_id"])) for e in events if "order_id" in e.data}
    orders.update(uow.state.orders_by_id(order_ids - orders.keys()))
    previous = {key: (state.get("purchase_count", 0), _net(state)) for key, state in states.items()}

    changed_orders: set[tuple[str, str]] = set()
    rescore: set[CustomerKey] = set()
    for event in events:
        key = (event.shop_id, _customer(event))
        state = states.setdefault(key, _new_state(key, now))
        state["updated_at"] = now
        if event.type == "purchase_made":
            if _record_purchase(event, orders):
                changed_orders.add((event.shop_id, str(event.data["order_id"])))
                rescore.add(key)
        elif event.type == "refund_issued":
            _record_refund(event, orders)
            changed_orders.add((event.shop_id, str(event.data["order_id"])))
            rescore.add(key)
        elif event.type == "login_recorded":
            if state.get("last_login_at") is None or event.time > state["last_login_at"]:
                state["last_login_at"] = event.time
            state["login_count"] = state.get("login_count", 0) + 1
        elif event.type == "ticket_opened":
            state["open_tickets"] = state.get("open_tickets", 0) + 1
        elif event.type == "ticket_resolved":
            state["open_tickets"] = max(0, state.get("open_tickets", 0) - 1)

    by_customer: dict[CustomerKey, list[dict[str, Any]]] = defaultdict(list)
    for order in orders.values():
        by_customer[(order["shop_id"], order["customer_id"])].append(order)
    shop_deltas: dict[str, tuple[int, Decimal]] = {}
    for key in rescore:
        _recompute_purchase_facts(states[key], by_customer[key])
        was_buyer, was_net = previous.get(key, (0, ZERO))
        buyers, net = shop_deltas.get(key[0], (0, ZERO))
        shop_deltas[key[0]] = (
            buyers + int(states[key]["purchase_count"] > 0) - int(was_buyer > 0),
            net + _net(states[key]) - was_net,
        )

    uow.state.save_orders([orders[k] for k in sorted(changed_orders)])
    averages = uow.state.adjust_shops(shop_deltas)
    for key in sorted(rescore):
        _rescore(key, states[key], by_customer[key], averages[key[0]], now, uow)
    uow.state.save_states([states[key] for key in sorted(states)])


def _customer(event: Envelope) -> str:
    if event.customer_id is None:
        raise ValueError(f"{event.type} {event.id} has no customer_id")
    return event.customer_id


def _new_state(key: CustomerKey, now: datetime) -> dict[str, Any]:
    # Events for customers we have not seen create them.
    return {
        "shop_id": key[0],
        "customer_id": key[1],
        "first_purchase_at": None,
        "last_purchase_at": None,
        "purchase_count": 0,
        "purchase_days": 0,
        "gross_spend": ZERO,
        "refunded": ZERO,
        "last_login_at": None,
        "login_count": 0,
        "open_tickets": 0,
        "r_score": None,
        "f_score": None,
        "m_score": None,
        "segment": None,
        "updated_at": now,
    }


def _net(state: dict[str, Any]) -> Decimal:
    return Decimal(state.get("gross_spend") or 0) - Decimal(state.get("refunded") or 0)


def _record_purchase(event: Envelope, orders: dict[tuple[str, str], dict[str, Any]]) -> bool:
    key = (event.shop_id, str(event.data["order_id"]))
    existing = orders.get(key)
    if existing is not None and existing["purchased_at"] is not None:
        return False  # the same order reported again under another event id counts once
    orders[key] = {
        "shop_id": event.shop_id,
        "order_id": key[1],
        "customer_id": _customer(event),
        "purchased_at": event.time,
        "amount": Decimal(str(event.data["amount"])),
        "refunded": Decimal(existing["refunded"]) if existing else ZERO,
    }
    return True


def _record_refund(event: Envelope, orders: dict[tuple[str, str], dict[str, Any]]) -> None:
    """A refund that arrives before its purchase waits on an order row with no purchase yet."""
    key = (event.shop_id, str(event.data["order_id"]))
    existing = orders.get(key)
    orders[key] = {
        "shop_id": event.shop_id,
        "order_id": key[1],
        "customer_id": existing["customer_id"] if existing else _customer(event),
        "purchased_at": existing["purchased_at"] if existing else None,
        "amount": Decimal(existing["amount"]) if existing else ZERO,
        "refunded": (Decimal(existing["refunded"]) if existing else ZERO)
        + Decimal(str(event.data["amount"])),
    }


def _recompute_purchase_facts(state: dict[str, Any], customer_orders: list[dict[str, Any]]) -> None:
    purchased = [order for order in customer_orders if order["purchased_at"] is not None]
    times = sorted(order["purchased_at"] for order in purchased)
    state.update(
        purchase_count=len(times),
        purchase_days=len({t.date() for t in times}),  # same-day purchases count once for modelling
        first_purchase_at=times[0] if times else None,
        last_purchase_at=times[-1] if times else None,
        gross_spend=sum((Decimal(o["amount"]) for o in purchased), ZERO),
        # A refund never takes more than its order's amount, so spend never goes negative.
        refunded=sum((min(Decimal(o["refunded"]), Decimal(o["amount"])) for o in purchased), ZERO),
    )


def _rescore(
    key: CustomerKey,
    state: dict[str, Any],
    customer_orders: list[dict[str, Any]],
    shop_average: Decimal,
    now: datetime,
    uow: SegmentationUnitOfWork,
) -> None:
    if state["last_purchase_at"] is None:
        return
    year_ago = now - timedelta(days=365)
    purchase_days = {
        o["purchased_at"].date()
        for o in customer_orders
        if o["purchased_at"] and o["purchased_at"] >= year_ago
    }
    scores, segment = rfm.score(
        last_purchase_at=state["last_purchase_at"],
        purchase_days_last_year=len(purchase_days),
        net_spend=_net(state),
        shop_average=shop_average,
        now=now,
    )
    previous = state.get("segment")
    state.update(r_score=int(scores.r), f_score=int(scores.f), m_score=int(scores.m), segment=segment)
    if segment != previous:
        uow.publish(
            "segment_changed",
            shop_id=key[0],
            customer_id=key[1],
            data=SegmentChanged(
                from_segment=previous,
                to_segment=segment,
                rfm=RfmScores(r=int(scores.r), f=int(scores.f), m=int(scores.m)),
            ),
        )


# One-event entry points, for callers (and tests) that apply a single event.
def purchase_made(event: Envelope, uow: SegmentationUnitOfWork) -> None:
    apply_activity([event], uow)


refund_issued = login_recorded = ticket_opened = ticket_resolved = purchase_made
