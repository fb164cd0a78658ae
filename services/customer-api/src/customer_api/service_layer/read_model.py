"""The single customer view's read model, kept current from the other services' events.

Each part carries the time of the event it comes from (`*_as_of`), and an older event never
overwrites a newer one, so redelivered or late events cannot turn the view back in time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from customer_api.adapters import tables
from customer_api.adapters.repository import CustomerRepository
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.envelope import Envelope

FOLLOWUP_STATUS = {
    "followup_scheduled": "scheduled",
    "followup_sent": "sent",
    "followup_failed": "failed",
    "followup_skipped": "skipped",
    "followup_cancelled": "cancelled",
}


def segment_changed(event: Envelope, uow: CustomerApiUnitOfWork) -> None:
    _set_insight(uow.session, event, "segment_as_of", segment=event.data["to"], rfm=event.data.get("rfm"))


def churn_risk_changed(event: Envelope, uow: CustomerApiUnitOfWork) -> None:
    _set_insight(
        uow.session,
        event,
        "churn_as_of",
        churn_risk=event.data["to"],
        probability_alive=event.data.get("probability_alive"),
    )


def customer_scored(event: Envelope, uow: CustomerApiUnitOfWork) -> None:
    _set_insight(uow.session, event, "scores_as_of", **_scores(event))


def _scores(event: Envelope) -> dict[str, Any]:
    return {
        "clv": event.data.get("clv"),
        "clv_horizon_months": event.data.get("horizon_months"),
        "expected_purchases": event.data.get("expected_purchases"),
    }


def survey_answered(event: Envelope, uow: CustomerApiUnitOfWork) -> None:
    answer = {
        "survey_id": event.data["survey_id"],
        "kind": event.data["kind"],
        "score": event.data["score"],
        "detractor": event.data["detractor"],
        "answered_at": event.time.isoformat(),
    }
    _set_insight(uow.session, event, "survey_as_of", last_survey=answer)
    _insert_ignoring_duplicates(
        uow.session,
        tables.customer_survey_answers,
        {
            "shop_id": event.shop_id,
            "response_id": event.data["response_id"],
            "customer_id": _customer(event),
            "survey_id": event.data["survey_id"],
            "kind": event.data["kind"],
            "score": event.data["score"],
            "detractor": event.data["detractor"],
            "answered_at": event.time,
        },
    )


def followup_changed(event: Envelope, uow: CustomerApiUnitOfWork) -> None:
    table = tables.customer_followups
    values: dict[str, Any] = {
        "shop_id": event.shop_id,
        "step_id": event.data["step_id"],
        "customer_id": _customer(event),
        "playbook": event.data["playbook_key"],
        "step": event.data["step_key"],
        "status": FOLLOWUP_STATUS[event.type],
        "channel": event.data.get("channel"),
        "due_at": event.data.get("due_at"),
        "reason": event.data.get("reason"),
        "updated_at": event.time,
    }
    if values["due_at"] is not None:
        values["due_at"] = datetime.fromisoformat(values["due_at"])
    existing = uow.session.execute(
        select(table.c.updated_at, table.c.due_at).where(
            table.c.shop_id == event.shop_id, table.c.step_id == values["step_id"]
        )
    ).first()
    if existing is None:
        uow.session.execute(table.insert().values(**values))
    elif existing.updated_at <= event.time:
        values["due_at"] = values["due_at"] or existing.due_at
        uow.session.execute(
            update(table)
            .where(table.c.shop_id == event.shop_id, table.c.step_id == values["step_id"])
            .values(**values)
        )


# Per event type: the as-of column and how an event becomes the columns it sets.
_INSIGHT_COLUMNS: dict[str, tuple[str, Callable[[Envelope], dict[str, Any]]]] = {
    "segment_changed": (
        "segment_as_of",
        lambda event: {"segment": event.data["to"], "rfm": event.data.get("rfm")},
    ),
    "churn_risk_changed": (
        "churn_as_of",
        lambda event: {
            "churn_risk": event.data["to"],
            "probability_alive": event.data.get("probability_alive"),
        },
    ),
    "customer_scored": ("scores_as_of", _scores),
}
INSIGHT_TYPES = frozenset(_INSIGHT_COLUMNS)


def apply_insights(events: Sequence[Envelope], uow: CustomerApiUnitOfWork) -> None:
    """Segment and churn changes of a whole batch in one upsert per event type.

    The segmentation worker re-scores a shop at once, so these come in thousands. Within the batch
    only each customer's newest event counts; against the table, the `*_as_of` guard in the
    upsert's WHERE keeps an older event from overwriting a newer one, as in `_set_insight`.
    """
    table = tables.customer_insights
    insert_fn = postgresql.insert if uow.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    for event_type, (as_of_column, columns_of) in _INSIGHT_COLUMNS.items():
        newest: dict[tuple[str, str], Envelope] = {}
        for event in events:
            if event.type != event_type:
                continue
            key = (event.shop_id, _customer(event))
            if key not in newest or newest[key].time <= event.time:
                newest[key] = event
        if not newest:
            continue
        rows = [
            {"shop_id": shop_id, "customer_id": customer_id, **columns_of(event), as_of_column: event.time}
            for (shop_id, customer_id), event in newest.items()
        ]
        statement = insert_fn(table)
        updated = [name for name in rows[0] if name not in ("shop_id", "customer_id")]
        uow.session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.shop_id, table.c.customer_id],
                set_={name: statement.excluded[name] for name in updated},
                where=(table.c[as_of_column].is_(None))
                | (table.c[as_of_column] <= statement.excluded[as_of_column]),
            ),
            rows,
        )


def consent_changed_elsewhere(event: Envelope, uow: CustomerApiUnitOfWork) -> None:
    """A consent another service recorded, e.g. a one-click unsubscribe handled by the scheduler.

    The customer's consent record here is the one shops read, so it follows (with the history
    row naming the source). Not published again: every service already heard the original.
    """
    if event.source == "customer-api" or event.customer_id is None:
        return  # our own event, already applied
    repository = CustomerRepository(uow.session)
    if repository.get(event.shop_id, event.customer_id) is None:
        return  # erased, or never known here: nothing to bring back
    current = repository.consents(event.shop_id, event.customer_id).get(event.data["channel"])
    if current is not None and (
        current["granted"] == event.data["granted"] or current["changed_at"] > event.time
    ):
        return  # nothing new, or the shop has changed it since
    repository.set_consent(
        event.shop_id,
        event.customer_id,
        event.data["channel"],
        event.data["granted"],
        event.data.get("legal_basis", "consent"),
        event.data.get("source", event.source),
        event.time,
    )


HANDLERS = {
    "consent_changed": consent_changed_elsewhere,
    "segment_changed": segment_changed,
    "churn_risk_changed": churn_risk_changed,
    "customer_scored": customer_scored,
    "survey_answered": survey_answered,
    **dict.fromkeys(FOLLOWUP_STATUS, followup_changed),
}


def _customer(event: Envelope) -> str:
    if event.customer_id is None:
        raise ValueError(f"{event.type} {event.id} has no customer_id")
    return event.customer_id


def _set_insight(session: Session, event: Envelope, as_of_column: str, **values: Any) -> None:
    table = tables.customer_insights
    key = {"shop_id": event.shop_id, "customer_id": _customer(event)}
    current = session.execute(
        select(table.c[as_of_column]).where(
            table.c.shop_id == key["shop_id"], table.c.customer_id == key["customer_id"]
        )
    ).first()
    if current is None:
        _insert_ignoring_duplicates(session, table, {**key, **values, as_of_column: event.time})
    elif current[0] is None or current[0] <= event.time:
        session.execute(
            update(table)
            .where(table.c.shop_id == key["shop_id"], table.c.customer_id == key["customer_id"])
            .values(**values, **{as_of_column: event.time})
        )


def _insert_ignoring_duplicates(session: Session, table: Any, values: dict[str, Any]) -> None:
    insert_fn = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert_fn(table).values(**values).on_conflict_do_nothing())
