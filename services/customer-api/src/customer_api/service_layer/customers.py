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
    values = {name: getattr(profile, name) for name in PROFILE_FIELDS}
    return _save(uow, shop_id, customer_id, values, consents, must_exist=False)


def patch_customer(
    *,
    uow: CustomerApiUnitOfWork,
    shop_id: str,
    customer_id: str,
    changes: dict[str, Any],
    consents: list[ConsentChange],
) -> dict[str, Any]:
    """Change only the given fields of an existing customer (a null clears a field)."""
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise ValueError(f"not profile fields: {sorted(unknown)}")
    customer, _ = _save(uow, shop_id, customer_id, changes, consents, must_exist=True)
    return customer


def _save(
    uow: CustomerApiUnitOfWork,
    shop_id: str,
    customer_id: str,
    values: dict[str, Any],
    consents: list[ConsentChange],
    *,
    must_exist: bool,
) -> tuple[dict[str, Any], bool]:
    now = uow.clock.now()
    with uow:
        existing = uow.customers.get(shop_id, customer_id, for_update=True)
        if existing is None and must_exist:
            raise not_found("customer")
        created = existing is None
        if created:
            blank = dict.fromkeys(PROFILE_FIELDS) | {"attributes": {}}
            created = uow.customers.insert_if_absent(
                {
                    "shop_id": shop_id,
                    "customer_id": customer_id,
                    **blank,
                    **values,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        if not created:  # it existed, or a concurrent request created it a moment ago
            uow.customers.update(shop_id, customer_id, {**values, "updated_at": now})
        profile = uow.customers.get(shop_id, customer_id)
        assert profile is not None
        uow.publish(
            "customer_upserted",
            shop_id=shop_id,
            customer_id=customer_id,
            data=CustomerUpserted(created=created, **{name: profile[name] for name in PROFILE_FIELDS}),
        )
        _apply_consents(uow, shop_id, customer_id, consents)
        uow.commit()
    return read_customer(uow=uow, shop_id=shop_id, customer_id=customer_id), created


def set_consents(
    *, uow: CustomerApiUnitOfWork, shop_id: str, customer_id: str, consents: list[ConsentChange]
) -> dict[str, Any]:
    """Record consent changes (each with its legal basis and source); unchanged channels add nothing."""
    with uow:
        if uow.customers.get(shop_id, customer_id, for_update=True) is None:
            raise not_found("customer")
        _apply_consents(uow, shop_id, customer_id, consents)
        uow.commit()
    return read_customer(uow=uow, shop_id=shop_id, customer_id=customer_id)


def consent_history(*, uow: CustomerApiUnitOfWork, shop_id: str, customer_id: str) -> list[dict[str, Any]]:
    with uow:
        if uow.customers.get(shop_id, customer_id) is None:
            raise not_found("customer")
        return uow.customers.consent_history(shop_id, customer_id)


def list_customers(
    *,
    uow: CustomerApiUnitOfWork,
    shop_id: str,
    limit: int,
    after: str | None,
    updated_since: Any = None,
    attributes: dict[str, str] | None = None,
    segment: str | None = None,
    churn_risk: str | None = None,
    tier: str | None = None,
    text: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of customers ordered by id, and the id to continue after (None on the last page)."""
    with uow:
        rows = uow.customers.page(
            shop_id,
            limit=limit + 1,
            after=after,
            updated_since=updated_since,
            attributes=attributes or {},
            segment=segment,
            churn_risk=churn_risk,
            tier=tier,
            text=text,
        )
    page = rows[:limit]
    for row in page:
        row.pop("shop_id", None)
    return page, (page[-1]["customer_id"] if len(rows) > limit else None)


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
    with uow.reading():
        customer = uow.customers.profile(shop_id, customer_id)
        if customer is None:
            raise not_found("customer")
        customer["next_followups"] = uow.customers.upcoming_followups(shop_id, customer_id, limit=5)
    customer.pop("shop_id", None)
    return customer
