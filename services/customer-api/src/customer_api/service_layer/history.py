"""A customer's history: purchases, tickets, and one timeline of everything that happened."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select

from customer_api.adapters import tables
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.problems import not_found


@dataclass(frozen=True)
class Position:
    """Where a page of history ended: the time and id of its last entry."""

    at: datetime
    id: str


PURCHASE_TYPES = ("purchase_made", "refund_issued")
TICKET_TYPES = ("ticket_opened", "ticket_resolved")
ACTIVITY_TYPES = (
    "purchase_made",
    "refund_issued",
    "login_recorded",
    "login_dropped",
    "ticket_opened",
    "ticket_resolved",
)


def events_of(
    *,
    uow: CustomerApiUnitOfWork,
    shop_id: str,
    customer_id: str,
    types: tuple[str, ...],
    limit: int,
    after: Position | None,
) -> list[dict[str, Any]]:
    """The customer's ingested events of these types, newest first."""
    with uow:
        _require_customer_or_history(uow, shop_id, customer_id)
        return _events(uow, shop_id, customer_id, types, limit, after)


def timeline(
    *, uow: CustomerApiUnitOfWork, shop_id: str, customer_id: str, limit: int, after: Position | None
) -> list[dict[str, Any]]:
    """Purchases, tickets, logins, follow-ups sent and survey answers, newest first."""
    with uow:
        _require_customer_or_history(uow, shop_id, customer_id)
        entries = _events(uow, shop_id, customer_id, ACTIVITY_TYPES, limit, after)
        followups = tables.customer_followups
        query = select(followups).where(
            followups.c.shop_id == shop_id,
            followups.c.customer_id == customer_id,
            followups.c.status == "sent",
        )
        if after is not None:
            query = query.where(_older(followups.c.updated_at, followups.c.step_id, after))
        query = query.order_by(followups.c.updated_at.desc(), followups.c.step_id).limit(limit)
        for row in uow.session.execute(query).mappings():
            entries.append(
                {
                    "kind": "followup_sent",
                    "at": row["updated_at"],
                    "id": row["step_id"],
                    "data": {"playbook": row["playbook"], "step": row["step"], "channel": row["channel"]},
                }
            )
        answers = tables.customer_survey_answers
        query = select(answers).where(answers.c.shop_id == shop_id, answers.c.customer_id == customer_id)
        if after is not None:
            query = query.where(_older(answers.c.answered_at, answers.c.response_id, after))
        query = query.order_by(answers.c.answered_at.desc(), answers.c.response_id).limit(limit)
        for row in uow.session.execute(query).mappings():
            entries.append(
                {
                    "kind": "survey_answered",
                    "at": row["answered_at"],
                    "id": row["response_id"],
                    "data": {k: row[k] for k in ("survey_id", "kind", "score", "detractor")},
                }
            )
    entries.sort(key=lambda entry: (-entry["at"].timestamp(), entry["id"]))
    return entries[:limit]


def _events(
    uow: CustomerApiUnitOfWork,
    shop_id: str,
    customer_id: str,
    types: tuple[str, ...],
    limit: int,
    after: Position | None,
) -> list[dict[str, Any]]:
    events = tables.ingested_events
    query = select(events.c.event_id, events.c.type, events.c.occurred_at, events.c.payload).where(
        events.c.shop_id == shop_id, events.c.customer_id == customer_id, events.c.type.in_(types)
    )
    if after is not None:
        query = query.where(_older(events.c.occurred_at, events.c.event_id, after))
    rows = uow.session.execute(query.order_by(events.c.occurred_at.desc(), events.c.event_id).limit(limit))
    return [
        {"kind": row.type, "at": row.occurred_at, "id": row.event_id, "data": json.loads(row.payload)}
        for row in rows
    ]


def _older(at: ColumnElement[Any], id_: ColumnElement[Any], position: Position) -> ColumnElement[bool]:
    """Entries after `position` in the order (time descending, id ascending)."""
    return or_(at < position.at, and_(at == position.at, id_ > position.id))


def _require_customer_or_history(uow: CustomerApiUnitOfWork, shop_id: str, customer_id: str) -> None:
    # A backend may send events before it upserts the profile, so history alone makes a customer known.
    if uow.customers.get(shop_id, customer_id) is not None:
        return
    events = tables.ingested_events
    known = uow.session.execute(
        select(events.c.event_id)
        .where(events.c.shop_id == shop_id, events.c.customer_id == customer_id)
        .limit(1)
    ).first()
    if known is None:
        raise not_found("customer")
