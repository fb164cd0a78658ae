"""The followup-scheduler as the platform sees it."""

from __future__ import annotations

from pathlib import Path

from followup_scheduler.adapters.tables import metadata
from followup_scheduler.bootstrap import NAME, bootstrap
from retention_shared.runtime import ServiceDefinition

definition = ServiceDefinition(
    name=NAME,
    title="Retention followup-scheduler",
    database_setting="followup_database_url",
    sqlite_file="followup.db",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
)
