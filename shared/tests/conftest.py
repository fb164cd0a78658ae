"""Shared test helpers for the kit: a tiny service schema on real SQLite."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, Integer, String, Table
from sqlalchemy.orm import sessionmaker

from retention_shared.clock import ManualClock
from retention_shared.db import create_db_engine, new_metadata
from retention_shared.messaging.outbox import messaging_tables
from retention_shared.uow import SqlAlchemyUnitOfWork

metadata = new_metadata()
messaging = messaging_tables(metadata)
applied = Table(
    "applied",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(200), nullable=False),
    Column("note", String(200)),
)


def make_engine(url: str) -> Engine:
    engine = create_db_engine(url)
    metadata.create_all(engine)
    return engine


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
