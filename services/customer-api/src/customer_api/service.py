"""The customer-api as the platform sees it (registered under the `retention.services` entry points)."""

from __future__ import annotations

from pathlib import Path

from customer_api.adapters.tables import metadata
from customer_api.bootstrap import NAME, bootstrap
from customer_api.entrypoints.cli import register_commands
from retention_shared.runtime import ServiceDefinition

definition = ServiceDefinition(
    name=NAME,
    title="Retention customer-api",
    database_setting="customer_api_database_url",
    sqlite_file="customer_api.db",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
    commands=register_commands,
)
