"""Reaching the real PostgreSQL and Kafka that `make test` starts (deploy/postgres, deploy/kafka)."""

from __future__ import annotations

import os
import secrets
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

T = TypeVar("T")

ADMIN_URL = os.environ.get(
    "RETENTION_TEST_PG_ADMIN_URL", "postgresql+psycopg://retention:retention@127.0.0.1:5432/postgres"
)
KAFKA_BOOTSTRAP = os.environ.get("RETENTION_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


def infrastructure_required() -> bool:
    """Under `make test` (and CI) missing infrastructure fails the run instead of skipping tests."""
    return os.environ.get("RETENTION_REQUIRE_INFRA", "") == "1"


def postgres_available() -> bool:
    try:
        engine = sa.create_engine(ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def create_database(prefix: str = "rt") -> str:
    """A fresh, empty database; returns its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    engine = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str, *, attempts: int = 20) -> None:
    """Drop a throwaway database, waiting out sessions we may not terminate.

    `WITH (FORCE)` terminates our own leftover sessions, but an autovacuum
    worker that has just started on the fresh tables belongs to the server, and
    a non-superuser role may not signal it. It finishes within moments, so we
    retry; a database that still cannot go is left behind with a warning rather
    than failing the test that used it.
    """
    name = url.rsplit("/", 1)[1]
    engine = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(attempts):
            try:
                with engine.connect() as connection:
                    connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                return
            except sa.exc.DBAPIError as error:
                if attempt == attempts - 1:
                    warnings.warn(f"test database {name} left behind: {error.orig}", stacklevel=2)
                    return
                time.sleep(0.25 * (attempt + 1))
    finally:
        engine.dispose()


def kafka_available() -> bool:
    from retention_shared.messaging.kafka import broker_reachable

    return broker_reachable(KAFKA_BOOTSTRAP, timeout_ms=3000)


def eventually(
    probe: Callable[[], T | None],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll until `probe` returns something truthy; fail with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")
