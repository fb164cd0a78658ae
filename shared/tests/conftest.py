"""Shared test helpers for the kit: a tiny service schema on real SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from retention_shared.clock import ManualClock, SystemClock
from retention_shared.testing.kit_schema import make_engine, messaging
from retention_shared.uow import SqlAlchemyUnitOfWork


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'kit.db'}")


@pytest.fixture
def uow_factory(sqlite_engine: Engine, manual_clock: ManualClock) -> Callable[[], SqlAlchemyUnitOfWork]:
    return partial(
        SqlAlchemyUnitOfWork,
        sessionmaker(sqlite_engine, expire_on_commit=False),
        tables=messaging,
        clock=manual_clock,
        source="kit-test",
    )


@pytest.fixture
def pg_engine(database_factory: Callable[[], str]) -> Iterator[Engine]:
    """The kit's tiny schema in a fresh PostgreSQL database."""
    engine = make_engine(database_factory())
    yield engine
    engine.dispose()


@pytest.fixture
def pg_uow(pg_engine: Engine) -> Callable[[], SqlAlchemyUnitOfWork]:
    return partial(
        SqlAlchemyUnitOfWork, sessionmaker(pg_engine), tables=messaging, clock=SystemClock(), source="it"
    )
