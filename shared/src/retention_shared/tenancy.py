"""API keys and the shops they belong to, as every service sees them.

The customer-api owns shops and keys. It publishes `shop_registered`, `api_key_issued` (with the
key's SHA-256, never the key) and `api_key_revoked`; the other services keep a replica of those
so that they authenticate shops on their own, even while the customer-api is down.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Boolean, Column, Engine, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from retention_shared.db import JSONDocument, UTCDateTime
from retention_shared.events.envelope import Envelope

SCOPES = ("events:write", "customers:read", "customers:write", "admin")
KEY_PREFIX = "rtn"


@dataclass(frozen=True)
class Principal:
    shop_id: str
    key_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


class KeyDirectory(Protocol):
    def lookup(self, key_hash: str) -> Principal | None:
        """The principal of a live key with this hash, or None. May block on the database."""
        ...

    def remembered(self, key_hash: str) -> tuple[bool, Principal | None]:
        """(True, the answer) when a fresh answer is at hand without I/O, else (False, None)."""
        ...


def generate_api_key() -> tuple[str, str, str]:
    """Return (key, visible prefix, sha256 hex). The key is shown once and never stored."""
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return key, f"{KEY_PREFIX}_{prefix}", hash_api_key(key)


def hash_api_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force,
    # and a slow KDF would put hundreds of milliseconds on every request.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class TenancyTables:
    shops: Table
    api_keys: Table


def tenancy_replica_tables(metadata: MetaData) -> TenancyTables:
    shops = Table(
        "known_shops",
        metadata,
        Column("shop_id", String(128), primary_key=True),
        Column("name", String(200), nullable=False),
        Column("timezone", String(64), nullable=False),
        Column("currency", String(3), nullable=False),
        Column("locale", String(16), nullable=False),
        Column("registered_at", UTCDateTime(), nullable=False),
    )
    api_keys = Table(
        "known_api_keys",
        metadata,
        Column("key_id", String(128), primary_key=True),
        Column("shop_id", String(128), nullable=False, index=True),
        Column("key_hash", String(64), nullable=False, unique=True),
        Column("scopes", JSONDocument, nullable=False),
        Column("revoked", Boolean, nullable=False, default=False),
    )
    return TenancyTables(shops=shops, api_keys=api_keys)


def _upsert(session: Session, table: Table, values: dict[str, object], key: list[str]) -> None:
    dialect = session.get_bind().dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert_fn(table).values(**values)
    updates = {name: statement.excluded[name] for name in values if name not in key}
    session.execute(statement.on_conflict_do_update(index_elements=key, set_=updates))


def tenancy_handlers(tables: TenancyTables) -> dict[str, Callable[[Envelope, object], None]]:
    """Event handlers that keep a service's replica of shops and keys current."""

    def shop_registered(event: Envelope, uow: object) -> None:
        session: Session = uow.session  # type: ignore[attr-defined]
        _upsert(
            session,
            tables.shops,
            {
                "shop_id": event.shop_id,
                "name": event.data["name"],
                "timezone": event.data["timezone"],
                "currency": event.data["currency"],
                "locale": event.data["locale"],
                "registered_at": event.time,
            },
            ["shop_id"],
        )

    def api_key_issued(event: Envelope, uow: object) -> None:
        session: Session = uow.session  # type: ignore[attr-defined]
        _upsert(
            session,
            tables.api_keys,
            {
                "key_id": event.data["key_id"],
                "shop_id": event.shop_id,
                "key_hash": event.data["key_hash"],
                "scopes": list(event.data["scopes"]),
                "revoked": False,
            },
            ["key_id"],
        )

    def api_key_revoked(event: Envelope, uow: object) -> None:
        session: Session = uow.session  # type: ignore[attr-defined]
        session.execute(
            tables.api_keys.update()
            .where(
                tables.api_keys.c.key_id == event.data["key_id"], tables.api_keys.c.shop_id == event.shop_id
            )
            .values(revoked=True)
        )

    return {
        "shop_registered": shop_registered,
        "api_key_issued": api_key_issued,
        "api_key_revoked": api_key_revoked,
    }


class CachedKeyDirectory:
    """Looks keys up in a table of keys (key_id, shop_id, key_hash, scopes, revoked), caching answers
    briefly: a revocation takes effect within `ttl_s` everywhere."""

    def __init__(
        self, engine: Engine, api_keys: Table, ttl_s: float = 5.0, max_entries: int = 10_000
    ) -> None:
        self._engine = engine
        self._table = api_keys
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def remembered(self, key_hash: str) -> tuple[bool, Principal | None]:
        with self._lock:
            cached = self._cache.get(key_hash)
        if cached and time.monotonic() - cached[0] < self._ttl_s:
            return True, cached[1]
        return False, None

    def lookup(self, key_hash: str) -> Principal | None:
        known, principal = self.remembered(key_hash)
        if known:
            return principal
        now = time.monotonic()
        with self._engine.connect() as connection:
            row = connection.execute(
                select(self._table.c.key_id, self._table.c.shop_id, self._table.c.scopes).where(
                    self._table.c.key_hash == key_hash, self._table.c.revoked.is_(False)
                )
            ).first()
        principal = Principal(row.shop_id, row.key_id, frozenset(row.scopes)) if row else None
        with self._lock:
            # Unknown keys are cached for a shorter time: the issuing event may just be on its way.
            self._cache.pop(key_hash, None)  # re-inserted last: the dict's order is the age order
            self._cache[key_hash] = (now if principal else now - self._ttl_s + 0.5, principal)
            # Callers choose the keys they send: random ones must not grow the memory without end.
            while len(self._cache) > self._max_entries:
                del self._cache[next(iter(self._cache))]
        return principal
