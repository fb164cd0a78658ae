"""API keys: issue, list, rotate and revoke. A key is shown once; only its hash and prefix are kept."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from customer_api.adapters import tables
from customer_api.service_layer.shops import IssuedKey, issue_key
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.catalogue import ApiKeyRevoked
from retention_shared.problems import Problem, not_found

PUBLIC_COLUMNS = ("key_id", "name", "prefix", "scopes", "revoked", "created_at", "revoked_at")


def create_key(
    *, uow: CustomerApiUnitOfWork, shop_id: str, name: str, scopes: tuple[str, ...]
) -> tuple[dict[str, Any], str]:
    with uow:
        if not _shop_exists(uow, shop_id):
            raise not_found("shop")
        issued = issue_key(uow, shop_id, name=name, scopes=scopes)
        uow.commit()
    return _read(uow, shop_id, issued.key_id), issued.key


def list_keys(*, uow: CustomerApiUnitOfWork, shop_id: str) -> list[dict[str, Any]]:
    with uow:
        rows = uow.session.execute(
            select(*(tables.api_keys.c[name] for name in PUBLIC_COLUMNS))
            .where(tables.api_keys.c.shop_id == shop_id)
            .order_by(tables.api_keys.c.created_at, tables.api_keys.c.key_id)
        ).mappings()
        return [dict(row) for row in rows]


def revoke_key(*, uow: CustomerApiUnitOfWork, shop_id: str, key_id: str) -> None:
    """Revoke a key. The shop's last live admin key cannot be revoked, so a shop never locks itself out."""
    with uow:
        key = _locked_key(uow, shop_id, key_id)
        if key["revoked"]:
            return  # revoking twice is harmless
        if "admin" in key["scopes"] and _live_admin_keys(uow, shop_id) <= 1:
            raise Problem(
                409,
                "Conflict",
                "This is the shop's last live admin key; issue another admin key before revoking it",
                errors=[{"field": "key_id", "message": "last live admin key"}],
            )
        _revoke(uow, shop_id, key_id)
        uow.commit()


def rotate_key(*, uow: CustomerApiUnitOfWork, shop_id: str, key_id: str) -> tuple[dict[str, Any], str]:
    """Replace a key by a new one with the same name and scopes; the old one stops working."""
    with uow:
        key = _locked_key(uow, shop_id, key_id)
        if key["revoked"]:
            raise Problem(
                409,
                "Conflict",
                "A revoked key cannot be rotated; create a new key instead",
                errors=[{"field": "key_id", "message": "revoked"}],
            )
        issued: IssuedKey = issue_key(uow, shop_id, name=key["name"], scopes=tuple(key["scopes"]))
        _revoke(uow, shop_id, key_id)
        uow.commit()
    return _read(uow, shop_id, issued.key_id), issued.key


def _shop_exists(uow: CustomerApiUnitOfWork, shop_id: str) -> bool:
    return (
        uow.session.execute(select(tables.shops.c.id).where(tables.shops.c.id == shop_id)).first() is not None
    )


def _locked_key(uow: CustomerApiUnitOfWork, shop_id: str, key_id: str) -> dict[str, Any]:
    row = (
        uow.session.execute(
            select(tables.api_keys)
            .where(tables.api_keys.c.shop_id == shop_id, tables.api_keys.c.key_id == key_id)
            .with_for_update()
        )
        .mappings()
        .first()
    )
    if row is None:
        raise not_found("API key")
    return dict(row)


def _live_admin_keys(uow: CustomerApiUnitOfWork, shop_id: str) -> int:
    rows = uow.session.execute(
        select(tables.api_keys.c.scopes).where(
            tables.api_keys.c.shop_id == shop_id, tables.api_keys.c.revoked.is_(False)
        )
    ).scalars()
    return sum(1 for scopes in rows if "admin" in scopes)


def _revoke(uow: CustomerApiUnitOfWork, shop_id: str, key_id: str) -> None:
    uow.session.execute(
        update(tables.api_keys)
        .where(tables.api_keys.c.shop_id == shop_id, tables.api_keys.c.key_id == key_id)
        .values(revoked=True, revoked_at=uow.clock.now())
    )
    uow.publish("api_key_revoked", shop_id=shop_id, customer_id=None, data=ApiKeyRevoked(key_id=key_id))


def _read(uow: CustomerApiUnitOfWork, shop_id: str, key_id: str) -> dict[str, Any]:
    with uow:
        row = (
            uow.session.execute(
                select(*(tables.api_keys.c[name] for name in PUBLIC_COLUMNS)).where(
                    tables.api_keys.c.shop_id == shop_id, tables.api_keys.c.key_id == key_id
                )
            )
            .mappings()
            .one()
        )
        return dict(row)
