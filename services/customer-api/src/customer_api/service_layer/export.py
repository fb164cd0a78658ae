"""Data export (right of access): everything the platform holds about one customer, as JSON.

It is assembled from the customer-api's own tables and from its read model of the other services
(segment and RFM, churn risk, follow-ups and their statuses, survey answers), so it answers even
while those services are down.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Table, select

from customer_api.adapters import loyalty_tables, tables
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.problems import not_found


def export_customer(*, uow: CustomerApiUnitOfWork, shop_id: str, customer_id: str) -> dict[str, Any]:
    with uow:
        profile = uow.customers.get(shop_id, customer_id)
        if profile is None:
            raise not_found("customer")
        profile.pop("shop_id", None)
        document: dict[str, Any] = {
            "customer_id": customer_id,
            "exported_at": uow.clock.now().isoformat(),
            "profile": profile,
            "consents": _rows(uow, tables.consents, shop_id, customer_id),
            "consent_history": _rows(uow, tables.consent_history, shop_id, customer_id, drop=("id",)),
            "insights": _first(_rows(uow, tables.customer_insights, shop_id, customer_id)),
            "followups": _rows(uow, tables.customer_followups, shop_id, customer_id),
            "survey_answers": _rows(uow, tables.customer_survey_answers, shop_id, customer_id),
            "loyalty": {
                "account": _first(_rows(uow, loyalty_tables.loyalty_accounts, shop_id, customer_id)),
                "ledger": _rows(uow, loyalty_tables.loyalty_ledger, shop_id, customer_id),
                "redemptions": _rows(uow, loyalty_tables.loyalty_redemptions, shop_id, customer_id),
            },
            "events": [
                {
                    "id": row.event_id,
                    "type": row.type,
                    "occurred_at": row.occurred_at,
                    "data": json.loads(row.payload),
                }
                for row in uow.session.execute(
                    select(tables.ingested_events)
                    .where(
                        tables.ingested_events.c.shop_id == shop_id,
                        tables.ingested_events.c.customer_id == customer_id,
                    )
                    .order_by(tables.ingested_events.c.occurred_at)
                )
            ],
        }
    return document


def _rows(
    uow: CustomerApiUnitOfWork, table: Table, shop_id: str, customer_id: str, drop: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    rows = uow.session.execute(
        select(table).where(table.c.shop_id == shop_id, table.c.customer_id == customer_id)
    ).mappings()
    return [{k: v for k, v in row.items() if k not in ("shop_id", "customer_id", *drop)} for row in rows]


def _first(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return rows[0] if rows else None
