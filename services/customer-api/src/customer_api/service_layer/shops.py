"""Shops (tenants) and their API keys."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import insert

from customer_api.adapters import tables
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.catalogue import ApiKeyIssued, ShopRegistered
from retention_shared.tenancy import SCOPES, generate_api_key


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    key: str
    prefix: str
    scopes: tuple[str, ...]


def register_shop(
    *, uow: CustomerApiUnitOfWork, name: str, timezone: str, currency: str, locale: str
) -> tuple[str, IssuedKey]:
    """Create a shop with a first key that holds every scope; the key is returned once, never stored."""
    shop_id = f"shop_{secrets.token_hex(8)}"
    now = uow.clock.now()
    with uow:
        uow.session.execute(
            insert(tables.shops).values(
                id=shop_id, name=name, timezone=timezone, currency=currency, locale=locale, created_at=now
            )
        )
        uow.publish(
            "shop_registered",
            shop_id=shop_id,
            customer_id=None,
            data=ShopRegistered(name=name, timezone=timezone, currency=currency, locale=locale),
        )
        issued = issue_key(uow, shop_id, name="default", scopes=SCOPES)
        uow.commit()
    return shop_id, issued


def issue_key(uow: CustomerApiUnitOfWork, shop_id: str, *, name: str, scopes: tuple[str, ...]) -> IssuedKey:
    """Add a key to the open unit of work; the caller commits."""
    key, prefix, key_hash = generate_api_key()
    key_id = f"key_{secrets.token_hex(8)}"
    uow.session.execute(
        insert(tables.api_keys).values(
            key_id=key_id,
            shop_id=shop_id,
            name=name,
            prefix=prefix,
            key_hash=key_hash,
            scopes=list(scopes),
            revoked=False,
            created_at=uow.clock.now(),
        )
    )
    uow.publish(
        "api_key_issued",
        shop_id=shop_id,
        customer_id=None,
        data=ApiKeyIssued(key_id=key_id, name=name, prefix=prefix, key_hash=key_hash, scopes=list(scopes)),
    )
    return IssuedKey(key_id=key_id, key=key, prefix=prefix, scopes=scopes)
