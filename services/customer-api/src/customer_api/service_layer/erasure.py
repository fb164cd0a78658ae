"""Erasure (GDPR, APPI): the customer-api forgets the customer and asks every service to do the same.

The customer-api deletes the profile, contact points, consent records and its read-model rows at
once and publishes `customer_erased`. Each service purges what it holds and answers with
`erasure_completed`; the receipt records every answer, with counts and no personal data. Events
arriving later for the same id carry no profile, so nothing personal comes back unless the shop
upserts the customer again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import delete, select, update

from customer_api.adapters import loyalty_tables, tables
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.catalogue import CustomerErased
from retention_shared.events.envelope import Envelope
from retention_shared.problems import not_found

SERVICE = "customer-api"
# The services that hold data about a customer and must confirm the purge.
CONFIRMING_SERVICES = ("segmentation-worker", "followup-scheduler", "survey-service")

PERSONAL_TABLES = (
    ("profile", tables.customers),
    ("consents", tables.consents),
    ("consent_history", tables.consent_history),
    ("insights", tables.customer_insights),
    ("followups", tables.customer_followups),
    ("survey_answers", tables.customer_survey_answers),
    ("loyalty_account", loyalty_tables.loyalty_accounts),
    ("loyalty_ledger", loyalty_tables.loyalty_ledger),
    ("loyalty_orders", loyalty_tables.loyalty_orders),
    ("loyalty_redemptions", loyalty_tables.loyalty_redemptions),
)


def subject_digest(secret: str, shop_id: str, customer_id: str) -> str:
    return hmac.new(secret.encode(), f"{shop_id}:{customer_id}".encode(), hashlib.sha256).hexdigest()


def erase_customer(
    *, uow: CustomerApiUnitOfWork, shop_id: str, customer_id: str, secret: str
) -> dict[str, Any]:
    """Delete the customer's personal data here, publish `customer_erased`, and return the receipt."""
    erasure_id = f"era_{secrets.token_hex(8)}"
    now = uow.clock.now()
    with uow:
        if uow.customers.get(shop_id, customer_id, for_update=True) is None:
            raise not_found("customer")
        purged = {}
        for kind, table in PERSONAL_TABLES:
            result = uow.session.execute(
                delete(table).where(table.c.shop_id == shop_id, table.c.customer_id == customer_id)
            )
            purged[kind] = int(getattr(result, "rowcount", 0) or 0)
        services: dict[str, Any] = {SERVICE: {"completed_at": now.isoformat(), "purged": purged}}
        services.update(dict.fromkeys(CONFIRMING_SERVICES))
        uow.session.execute(
            tables.erasure_receipts.insert().values(
                erasure_id=erasure_id,
                shop_id=shop_id,
                subject_digest=subject_digest(secret, shop_id, customer_id),
                requested_at=now,
                services=services,
            )
        )
        uow.publish(
            "customer_erased",
            shop_id=shop_id,
            customer_id=customer_id,
            data=CustomerErased(erasure_id=erasure_id),
        )
        uow.commit()
    return read_receipt(uow=uow, shop_id=shop_id, erasure_id=erasure_id)


def erasure_completed(event: Envelope, uow: CustomerApiUnitOfWork) -> None:
    """A service confirmed its purge: record it on the receipt, and close the receipt when all have."""
    receipts = tables.erasure_receipts
    row = uow.session.execute(
        select(receipts.c.services)
        .where(receipts.c.erasure_id == event.data["erasure_id"], receipts.c.shop_id == event.shop_id)
        .with_for_update()
    ).first()
    if row is None:
        return  # not ours (another shop's id can never match, since the shop is part of the key)
    services = dict(row.services)
    services[event.data["service"]] = {
        "completed_at": event.time.isoformat(),
        "purged": event.data.get("purged", {}),
    }
    done = all(services.get(name) for name in (SERVICE, *CONFIRMING_SERVICES))
    uow.session.execute(
        update(receipts)
        .where(receipts.c.erasure_id == event.data["erasure_id"])
        .values(services=services, completed_at=uow.clock.now() if done else None)
    )


def read_receipt(*, uow: CustomerApiUnitOfWork, shop_id: str, erasure_id: str) -> dict[str, Any]:
    receipts = tables.erasure_receipts
    with uow:
        row = (
            uow.session.execute(
                select(receipts).where(receipts.c.erasure_id == erasure_id, receipts.c.shop_id == shop_id)
            )
            .mappings()
            .first()
        )
    if row is None:
        raise not_found("erasure")
    receipt = dict(row)
    receipt.pop("shop_id")
    receipt["status"] = "completed" if receipt["completed_at"] else "in_progress"
    return receipt


def receipts_for(
    *, uow: CustomerApiUnitOfWork, shop_id: str, customer_id: str, secret: str
) -> list[dict[str, Any]]:
    """The receipts of erasures of this customer id (matched by digest; nothing else is stored)."""
    receipts = tables.erasure_receipts
    digest = subject_digest(secret, shop_id, customer_id)
    with uow:
        ids = (
            uow.session.execute(
                select(receipts.c.erasure_id)
                .where(receipts.c.shop_id == shop_id, receipts.c.subject_digest == digest)
                .order_by(receipts.c.requested_at)
            )
            .scalars()
            .all()
        )
    return [read_receipt(uow=uow, shop_id=shop_id, erasure_id=erasure_id) for erasure_id in ids]
