"""Customers and their consent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.catalogue import ConsentChanged, CustomerUpserted
from retention_shared.problems import not_found

PROFILE_FIELDS = ("email", "phone", "line_user_id", "name", "locale", "timezone", "birthday", "attributes")


@dataclass(frozen=True)
class ConsentChange:
    channel: str
    granted: bool
    legal_basis: str = "consent"
    source: str = "api"


@dataclass(frozen=True)
class CustomerProfile:
    email: str | None = None
    phone: str | None = None
    line_user_id: str | None = None
    name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    birthday: date | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def upsert_customer(
    *,
    uow: CustomerApiUnitOfWork,
    shop_id: str,
    customer_id: str,
    profile: CustomerProfile,
    consents: list[ConsentChange],
) -> tuple[dict[str, Any], bool]:
    """Create or replace a customer's profile and apply consent changes; emits the matching events."""
    now = uow.clock.now()
    with uow:
        existing = uow.customers.get(shop_id, customer_id)
        values = {name: getattr(profile, name) for name in PROFILE_FIELDS}
        if existing is None:
            uow.customers.insert(
                {
                    "shop_id": shop_id,
                    "customer_id": customer_id,
                    **values,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        else:
            uow.customers.update(shop_id, customer_id, {**values, "updated_at": now})
        uow.publish(
            "customer_upserted",
            shop_id=shop_id,
            customer_id=customer_id,
            data=CustomerUpserted(created=existing is None, **values),
        )
        _apply_consents(uow, shop_id, customer_id, consents)
        uow.commit()
    return read_customer(uow=uow, shop_id=shop_id, customer_id=customer_id), existing is None


def _apply_consents(
    uow: CustomerApiUnitOfWork, shop_id: str, customer_id: str, changes: list[ConsentChange]
) -> None:
    current = uow.customers.consents(shop_id, customer_id)
    now = uow.clock.now()
    for change in changes:
        before = current.get(change.channel)
        if before is not None and before["granted"] == change.granted:
            continue  # no change, no event, no history row
        uow.customers.set_consent(
            shop_id, customer_id, change.channel, change.granted, change.legal_basis, change.source, now
        )
        uow.publish(
            "consent_changed",
            shop_id=shop_id,
            customer_id=customer_id,
            data=ConsentChanged(
                channel=change.channel,
                granted=change.granted,
                legal_basis=change.legal_basis,
                source=change.source,
            ),
        )


def read_customer(*, uow: CustomerApiUnitOfWork, shop_id: str, customer_id: str) -> dict[str, Any]:
    with uow:
        customer = uow.customers.get(shop_id, customer_id)
        if customer is None:
            raise not_found("customer")
        consents = uow.customers.consents(shop_id, customer_id)
    customer.pop("shop_id", None)
    customer["consents"] = {
        channel: {k: row[k] for k in ("granted", "legal_basis", "source", "changed_at")}
        for channel, row in consents.items()
    }
    return customer
