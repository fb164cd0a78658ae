"""Fixtures for the customer-api's PostgreSQL tests: a fresh, migrated database per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from customer_api.adapters import tables
from customer_api.service_layer import shops
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.clock import SystemClock
from retention_shared.db import create_db_engine
from retention_shared.migrate import upgrade
from retention_shared.runtime import service_named


@pytest.fixture
def engine(database_factory: Callable[[], str]) -> Iterator[Engine]:
    url = database_factory()
    upgrade(service_named("customer-api"), url)
    engine = create_db_engine(url, pool_size=32)  # room for the concurrency tests' threads
    yield engine
    engine.dispose()


@pytest.fixture
def uow_factory(engine: Engine) -> Callable[[], CustomerApiUnitOfWork]:
    return partial(
        CustomerApiUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=SystemClock(),
        source="customer-api",
    )


@pytest.fixture
def shop_id(uow_factory: Callable[[], CustomerApiUnitOfWork]) -> str:
    created, _key = shops.register_shop(
        uow=uow_factory(), name="Kissa", timezone="Asia/Tokyo", currency="JPY", locale="ja"
    )
    return created
