"""Console sign-in sessions: stored server-side, looked up by the SHA-256 of the cookie's token."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Engine, delete, select, update

from customer_api.adapters import tables
from retention_shared.clock import Clock

SessionKind = Literal["shop", "operator"]

# A session ends after this long without a request, and in any case after ABSOLUTE_LIFETIME.
IDLE_TIMEOUT = timedelta(hours=2)
ABSOLUTE_LIFETIME = timedelta(hours=12)
# Sliding the expiry costs a write; doing it at most once a minute keeps page views read-only.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class ConsoleSession:
    token_hash: str
    kind: SessionKind
    shop_id: str | None
    key_id: str | None
    scopes: frozenset[str]
    csrf_token: str
    created_at: datetime
    expires_at: datetime

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    def allows(self, scope: str) -> bool:
        return self.is_operator or scope in self.scopes or "admin" in self.scopes


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Creates, finds and ends console sessions in the customer-api's database."""

    def __init__(self, engine: Engine, clock: Clock, *, operator_token: str) -> None:
        self._engine = engine
        self._clock = clock
        # Operator sessions record which operator token opened them (as a digest), so replacing
        # RETENTION_ADMIN_TOKEN ends them just as revoking a key ends a shop's sessions.
        self.operator_key_id = "operator:" + hash_token(operator_token)[:16]

    def create(
        self, *, kind: SessionKind, shop_id: str | None, key_id: str | None, scopes: frozenset[str]
    ) -> tuple[str, ConsoleSession]:
        """Start a session; returns the cookie token (shown to the browser only) and the session."""
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        session = ConsoleSession(
            token_hash=hash_token(token),
            kind=kind,
            shop_id=shop_id,
            key_id=key_id,
            scopes=scopes,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=min(now + IDLE_TIMEOUT, now + ABSOLUTE_LIFETIME),
        )
        with self._engine.begin() as connection:
            # Expired rows of anyone are purged on sign-in, so the table stays the size of live sessions.
            connection.execute(
                delete(tables.console_sessions).where(tables.console_sessions.c.expires_at < now)
            )
            connection.execute(
                tables.console_sessions.insert().values(
                    token_hash=session.token_hash,
                    kind=kind,
                    shop_id=shop_id,
                    key_id=key_id,
                    scopes=sorted(scopes),
                    csrf_token=session.csrf_token,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=session.expires_at,
                )
            )
        return token, session

    def find(self, token: str) -> ConsoleSession | None:
        """The live session of this cookie token, or None (unknown, expired, or its key revoked).

        A shop session is only as good as its API key: the key's current row decides, so revoking
        or rotating the key ends every session signed in with it at the next request.
        """
        sessions, keys = tables.console_sessions, tables.api_keys
        now = self._clock.now()
        token_hash = hash_token(token)
        with self._engine.connect() as connection:
            row = connection.execute(
                select(sessions, keys.c.revoked.label("key_revoked"), keys.c.scopes.label("key_scopes"))
                .outerjoin(
                    keys, (keys.c.key_id == sessions.c.key_id) & (keys.c.shop_id == sessions.c.shop_id)
                )
                .where(sessions.c.token_hash == token_hash)
            ).first()
        if row is None:
            return None
        if row.expires_at <= now:
            self.end(token)
            return None
        scopes = frozenset(row.scopes)
        if row.kind == "operator" and row.key_id != self.operator_key_id:
            self.end(token)
            return None
        if row.kind == "shop":
            if row.key_revoked is None or row.key_revoked:
                self.end(token)
                return None
            scopes = frozenset(row.key_scopes)
        expires_at = row.expires_at
        if now - row.last_seen_at >= TOUCH_EVERY:
            expires_at = min(now + IDLE_TIMEOUT, row.created_at + ABSOLUTE_LIFETIME)
            with self._engine.begin() as connection:
                connection.execute(
                    update(tables.console_sessions)
                    .where(tables.console_sessions.c.token_hash == token_hash)
                    .values(last_seen_at=now, expires_at=expires_at)
                )
        return ConsoleSession(
            token_hash=token_hash,
            kind=row.kind,
            shop_id=row.shop_id,
            key_id=row.key_id,
            scopes=scopes,
            csrf_token=row.csrf_token,
            created_at=row.created_at,
            expires_at=expires_at,
        )

    def switch_shop(self, session: ConsoleSession, shop_id: str) -> None:
        """The operator acts for another shop from now on."""
        with self._engine.begin() as connection:
            connection.execute(
                update(tables.console_sessions)
                .where(tables.console_sessions.c.token_hash == session.token_hash)
                .values(shop_id=shop_id)
            )

    def end(self, token: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                delete(tables.console_sessions).where(
                    tables.console_sessions.c.token_hash == hash_token(token)
                )
            )

    def end_sessions_of_key(self, shop_id: str, key_id: str) -> int:
        """End every session signed in with a key (called when the console revokes or rotates it)."""
        with self._engine.begin() as connection:
            result = connection.execute(
                delete(tables.console_sessions).where(
                    tables.console_sessions.c.shop_id == shop_id, tables.console_sessions.c.key_id == key_id
                )
            )
        return int(result.rowcount or 0)
