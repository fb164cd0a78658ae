"""Applying activity to each customer's behavioural state, a whole poll at a time.

Orders and tickets are kept one row each, so a refund nets against its own order and a
resolution closes its own ticket whichever of the two arrives first, and an order reported twice
(under two event ids) counts once. Logins are counted per customer and day. After the events are
applied, the customers whose purchases changed are re-scored with the shop's current settings and
model fit; a new segment emits `segment_changed`, a worse churn band `churn_risk_changed`.

Everything is read and written in bulk: a batch costs a handful of statements whatever its size.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np

from retention_shared.events.catalogue import ChurnRiskChanged, CustomerScored, RfmScores, SegmentChanged
from retention_shared.events.envelope import Envelope
from segmentation_worker.domain.churn import BANDS, worsened
from segmentation_worker.domain.config import SegmentationConfig
from segmentation_worker.domain.scoring import Buyers, Scores, score
from segmentation_worker.service_layer.context import shop_context
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

ZERO = Decimal(0)
SECONDS_PER_DAY = 86_400.0
ACTIVITY_TYPES = frozenset(
    {
        "purchase_made",
        "refund_issued",
        "login_recorded",
        "login_dropped",
        "ticket_opened",
        "ticket_resolved",
        "survey_answered",
    }
)

CustomerKey = tuple[str, str]


def apply_activity(events: list[Envelope], uow: SegmentationUnitOfWork) -> None:
    """Apply a batch of activity events in order, then re-score the customers whose purchases changed."""
    now = uow.clock.now()
    customers = {(e.shop_id, _customer(e)) for e in events}
    states = uow.state.states_for(customers)
    buyers_touched = {
        (e.shop_id, _customer(e)) for e in events if e.type in ("purchase_made", "refund_issued")
    }
    orders: dict[tuple[str, str], dict[str, Any]] = {}
    if buyers_touched:
        orders = uow.state.orders_of(buyers_touched)
        order_ids = {(e.shop_id, str(e.data["order_id"])) for e in events if e.type in _ORDER_TYPES}
        orders.update(uow.state.orders_by_id(order_ids - orders.keys()))
    ticket_ids = {(e.shop_id, str(e.data["ticket_id"])) for e in events if e.type in _TICKET_TYPES}
    tickets = uow.state.tickets_by_id(ticket_ids) if ticket_ids else {}
    previous = {key: (state.get("purchase_count", 0), _net(state)) for key, state in states.items()}

    changed_orders: set[tuple[str, str]] = set()
    rescore: set[CustomerKey] = set()
    logins: Counter[tuple[str, str, Any]] = Counter()
    ticket_holders: set[CustomerKey] = set()
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
            _record_login(state, event.time)
            logins[(event.shop_id, key[1], event.time.date())] += 1
        elif event.type == "login_dropped":
            # A backend reported the drop itself: this episode is reported, ours would repeat it.
            state["login_drop_active"] = True
        elif event.type in _TICKET_TYPES:
            _record_ticket(event, tickets)
            ticket_holders.add(key)
        elif event.type == "survey_answered":
            _record_survey(state, event)

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

    uow.state.save_orders([{**orders[k], "updated_at": now} for k in sorted(changed_orders)])
    uow.state.adjust_shops(shop_deltas)
    if tickets:
        uow.state.save_tickets(list(tickets.values()))
        counts = uow.state.open_ticket_counts(ticket_holders)
        for key in ticket_holders:
            states[key]["open_tickets"] = counts.get(key, 0)
    uow.state.add_logins(
        [
            {"shop_id": shop_id, "customer_id": customer_id, "day": day, "logins": count}
            for (shop_id, customer_id, day), count in sorted(logins.items())
        ]
    )
    _rescore(sorted(rescore), states, now, uow)
    uow.state.save_states([states[key] for key in sorted(states)])


_ORDER_TYPES = ("purchase_made", "refund_issued")
_TICKET_TYPES = ("ticket_opened", "ticket_resolved")


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
        "first_login_at": None,
        "last_login_at": None,
        "login_count": 0,
        "open_tickets": 0,
        "last_nps_score": None,
        "last_nps_at": None,
        "r_score": None,
        "f_score": None,
        "m_score": None,
        "segment": None,
        "segment_since": None,
        "p_alive": None,
        "expected_purchases": None,
        "expected_spend": None,
        "clv": None,
        "churn_band": None,
        "churn_score": None,
        "login_drop_active": False,
        "scored_at": None,
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


def _record_login(state: dict[str, Any], at: datetime) -> None:
    if state.get("last_login_at") is None or at > state["last_login_at"]:
        state["last_login_at"] = at
    if state.get("first_login_at") is None or at < state["first_login_at"]:
        state["first_login_at"] = at
    state["login_count"] = state.get("login_count", 0) + 1


def _record_ticket(event: Envelope, tickets: dict[tuple[str, str], dict[str, Any]]) -> None:
    key = (event.shop_id, str(event.data["ticket_id"]))
    row = tickets.setdefault(
        key,
        {
            "shop_id": event.shop_id,
            "ticket_id": key[1],
            "customer_id": _customer(event),
            "opened_at": None,
            "resolved_at": None,
        },
    )
    column = "opened_at" if event.type == "ticket_opened" else "resolved_at"
    if row[column] is None:
        row[column] = event.time


def _record_survey(state: dict[str, Any], event: Envelope) -> None:
    if event.data.get("kind") != "nps":
        return
    # Answers may arrive out of order: the latest answer by time is the customer's last NPS.
    if state.get("last_nps_at") is None or event.time >= state["last_nps_at"]:
        state["last_nps_score"] = int(event.data["score"])
        state["last_nps_at"] = event.time


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
    keys: list[CustomerKey],
    states: dict[CustomerKey, dict[str, Any]],
    now: datetime,
    uow: SegmentationUnitOfWork,
) -> None:
    """Score the given customers shop by shop, vectorised, and record what changed."""
    by_shop: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key in keys:
        if states[key]["last_purchase_at"] is not None:
            by_shop[key[0]].append(states[key])
    for shop_id, shop_states in by_shop.items():
        context = shop_context(uow, shop_id, now)
        scores = score(buyers_of(shop_states, now), context)
        apply_scores(uow, shop_id, shop_states, scores, now, context.config)


def buyers_of(states: list[dict[str, Any]], now: datetime) -> Buyers:
    now_epoch = now.timestamp()
    return Buyers(
        first_days_ago=np.array(
            [(now_epoch - s["first_purchase_at"].timestamp()) / SECONDS_PER_DAY for s in states]
        ),
        last_days_ago=np.array(
            [(now_epoch - s["last_purchase_at"].timestamp()) / SECONDS_PER_DAY for s in states]
        ),
        purchase_days=np.array([float(s["purchase_days"]) for s in states]),
        net_spend=np.array([max(float(_net(s)), 0.0) for s in states]),
    )


def apply_scores(
    uow: SegmentationUnitOfWork,
    shop_id: str,
    states: list[dict[str, Any]],
    scores: Scores,
    now: datetime,
    config: SegmentationConfig,
) -> None:
    """Copy scores into the customers' state rows, emitting segment, churn and CLV changes."""
    history = []
    for index, state in enumerate(states):
        rfm = RfmScores(r=int(scores.r[index]), f=int(scores.f[index]), m=int(scores.m[index]))
        segment = str(scores.segment[index])
        band = BANDS[int(scores.churn_rank[index])]
        p_alive = _optional(scores.p_alive[index])
        previous_segment, previous_band = state.get("segment"), state.get("churn_band")
        previous_clv = state.get("clv")
        state.update(
            r_score=rfm.r,
            f_score=rfm.f,
            m_score=rfm.m,
            segment=segment,
            p_alive=p_alive,
            expected_purchases=_optional(scores.expected_purchases[index]),
            expected_spend=_optional(scores.expected_spend[index]),
            clv=_optional(scores.clv[index]),
            churn_band=band,
            churn_score=float(scores.churn_score[index]),
            scored_at=now,
        )
        if segment != previous_segment:
            state["segment_since"] = now
            history.append(
                {
                    "shop_id": shop_id,
                    "customer_id": state["customer_id"],
                    "changed_at": now,
                    "from_segment": previous_segment,
                    "to_segment": segment,
                }
            )
            uow.publish(
                "segment_changed",
                shop_id=shop_id,
                customer_id=state["customer_id"],
                data=SegmentChanged.model_validate({"from": previous_segment, "to": segment, "rfm": rfm}),
            )
        if worsened(previous_band, band):
            uow.publish(
                "churn_risk_changed",
                shop_id=shop_id,
                customer_id=state["customer_id"],
                data=ChurnRiskChanged.model_validate(
                    {"from": previous_band, "to": band, "probability_alive": p_alive}
                ),
            )
        old_clv = np.array([np.nan if previous_clv is None else float(previous_clv)])
        if clv_moved(old_clv, scores.clv[index : index + 1])[0]:
            uow.publish(
                "customer_scored",
                shop_id=shop_id,
                customer_id=state["customer_id"],
                data=customer_scored_data(
                    scores.clv[index], scores.expected_purchases[index], scores.p_alive[index], config
                ),
            )
    uow.state.add_history(history)


# A CLV moving by less than this share is not announced (customer_scored) to other services.
CLV_EVENT_TOLERANCE = 0.10


def clv_moved(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Customers with a first CLV, or one that moved by CLV_EVENT_TOLERANCE or more."""
    with np.errstate(invalid="ignore"):
        apart = np.abs(new - old) >= CLV_EVENT_TOLERANCE * np.abs(old)
    return ~np.isnan(new) & (np.isnan(old) | apart)


def customer_scored_data(
    clv: float, expected_purchases: float, p_alive: float, config: SegmentationConfig
) -> CustomerScored:
    def known(value: float) -> float | None:
        return None if np.isnan(value) else float(value)

    return CustomerScored(
        clv=known(clv),
        horizon_months=config.clv.horizon_months,
        expected_purchases=known(expected_purchases),
        probability_alive=known(p_alive),
    )


def _optional(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


# One-event entry points, for callers (and tests) that apply a single event.
def purchase_made(event: Envelope, uow: SegmentationUnitOfWork) -> None:
    apply_activity([event], uow)


refund_issued = login_recorded = login_dropped = ticket_opened = ticket_resolved = survey_answered = (
    purchase_made
)
