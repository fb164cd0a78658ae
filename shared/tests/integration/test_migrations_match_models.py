"""Every service's migrations, run from scratch on PostgreSQL, build exactly its table models.

A table, column or index added to the models without a migration (or the reverse) shows up here,
before it shows up as a missing column in production.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from retention_shared.migrate import upgrade
from retention_shared.runtime import discover_services

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(discover_services()))
def test_migrations_at_head_match_the_models(name: str, database_factory: Callable[[], str]) -> None:
    definition = discover_services()[name]
    url = database_factory()
    upgrade(definition, url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), definition.metadata)
    finally:
        engine.dispose()
    assert differences == []
