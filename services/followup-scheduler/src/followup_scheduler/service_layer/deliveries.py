"""The read side of deliveries: a shop's follow-up steps by channel and status, newest first."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select

from followup_scheduler.adapters.tables import steps
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork

# Steps whose outcome is known; scheduled ones are listed too, as they are what comes next.
STATUSES = ("scheduled", "sent", "skipped", "failed", "cancelled")
NO_CHANNEL = "none"  # a step skipped or cancelled before a channel was chosen


class BadCursor(ValueError):
    """The cursor was not one this API handed out."""


@dataclass(frozen=True)
class DeliveryPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(updated_at: datetime, step_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([updated_at.isoformat(), step_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        updated_at, step_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(updated_at), str(step_id)
    except (binascii.Error, ValueError, TypeError) as error:
        raise BadCursor(str(error)) from error


def list_deliveries(
    uow: SchedulerUnitOfWork,
    *,
    shop_id: str,
    status: str | None,
    channel: str | None,
    limit: int,
    cursor: str | None,
) -> DeliveryPage:
    """The shop's steps, most recently changed first, `limit` at a time."""
    query = select(
        steps.c.id,
        steps.c.run_id,
        steps.c.customer_id,
        steps.c.playbook_key,
        steps.c.step_key,
        steps.c.status,
        steps.c.channel,
        steps.c.reason,
        steps.c.attempts,
        steps.c.due_at,
        steps.c.sent_at,
        steps.c.updated_at,
    ).where(steps.c.shop_id == shop_id)
    if status is not None:
        query = query.where(steps.c.status == status)
    if channel == NO_CHANNEL:
        query = query.where(steps.c.channel.is_(None))
    elif channel is not None:
        query = query.where(steps.c.channel == channel)
    if cursor is not None:
        after_time, after_id = decode_cursor(cursor)
        query = query.where(
            or_(
                steps.c.updated_at < after_time,
                and_(steps.c.updated_at == after_time, steps.c.id < after_id),
            )
        )
    rows = [
        dict(row)
        for row in uow.session.execute(
            query.order_by(steps.c.updated_at.desc(), steps.c.id.desc()).limit(limit + 1)
        ).mappings()
    ]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["updated_at"], rows[-1]["id"])
    return DeliveryPage(rows, next_cursor)


def delivery_counts(uow: SchedulerUnitOfWork, *, shop_id: str, since: datetime) -> list[dict[str, Any]]:
    """How many of the shop's steps changed since `since`, by channel and status."""
    channel = func.coalesce(steps.c.channel, NO_CHANNEL)
    rows = uow.session.execute(
        select(channel.label("channel"), steps.c.status, func.count().label("count"))
        .where(steps.c.shop_id == shop_id, steps.c.updated_at >= since)
        .group_by(channel, steps.c.status)
        .order_by(channel, steps.c.status)
    ).mappings()
    return [dict(row) for row in rows]


def summary_since(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)
