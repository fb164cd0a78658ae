"""How long a shop keeps raw events, and the job that deletes older ones.

Raw events are the purchases, refunds, logins and tickets in `ingested_events`: the history
endpoints read them. Age counts from when the event happened (`occurred_at`), so imported history
older than the period goes at the job's next (hourly) run: set the period before importing. What other
services derived from the events (segments, scores, loyalty points) is not raw data and stays.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from customer_api.adapters import tables
from customer_api.service_layer.uow import CustomerApiUnitOfWork

DEFAULT_RAW_EVENT_DAYS = 730
MIN_RAW_EVENT_DAYS = 30
MAX_RAW_EVENT_DAYS = 3650
PURGE_CHUNK = 5000


def read_policy(*, uow: CustomerApiUnitOfWork, shop_id: str) -> dict[str, object]:
    with uow:
        row = uow.session.execute(
            select(tables.retention_policies).where(tables.retention_policies.c.shop_id == shop_id)
        ).first()
    if row is None:
        return {"raw_event_days": DEFAULT_RAW_EVENT_DAYS, "default": True, "updated_at": None}
    return {"raw_event_days": row.raw_event_days, "default": False, "updated_at": row.updated_at}


def set_policy(*, uow: CustomerApiUnitOfWork, shop_id: str, raw_event_days: int) -> dict[str, object]:
    table = tables.retention_policies
    with uow:
        now = uow.clock.now()
        updated = uow.session.execute(
            table.update()
            .where(table.c.shop_id == shop_id)
            .values(raw_event_days=raw_event_days, updated_at=now)
        )
        if updated.rowcount == 0:  # type: ignore[attr-defined]
            uow.session.execute(
                table.insert().values(shop_id=shop_id, raw_event_days=raw_event_days, updated_at=now)
            )
        uow.commit()
    return {"raw_event_days": raw_event_days, "default": False, "updated_at": now}


def purge_expired_events(*, uow_factory: Callable[[], CustomerApiUnitOfWork]) -> int:
    """Delete every shop's raw events older than its period, in chunks; return how many went."""
    with uow_factory() as uow:
        now = uow.clock.now()
        shops = list(uow.session.execute(select(tables.shops.c.id)).scalars())
        rows = uow.session.execute(
            select(tables.retention_policies.c.shop_id, tables.retention_policies.c.raw_event_days)
        )
        policies: dict[str, int] = {shop_id: days for shop_id, days in rows}
    deleted = 0
    for shop_id in shops:
        cutoff = now - timedelta(days=policies.get(shop_id, DEFAULT_RAW_EVENT_DAYS))
        while (removed := _purge_chunk(uow_factory, shop_id, cutoff)) > 0:
            deleted += removed
            if removed < PURGE_CHUNK:
                break
    return deleted


def _purge_chunk(uow_factory: Callable[[], CustomerApiUnitOfWork], shop_id: str, cutoff: datetime) -> int:
    """One short transaction, so the deletes never hold up ingestion for long."""
    events = tables.ingested_events
    with uow_factory() as uow:
        oldest = (
            select(events.c.event_id)
            .where(events.c.shop_id == shop_id, events.c.occurred_at < cutoff)
            .limit(PURGE_CHUNK)
            .scalar_subquery()
        )
        result = uow.session.execute(
            delete(events).where(events.c.shop_id == shop_id, events.c.event_id.in_(oldest))
        )
        uow.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]
