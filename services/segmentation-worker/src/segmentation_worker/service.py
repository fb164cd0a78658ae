"""The segmentation-worker as the platform sees it."""

from __future__ import annotations

from pathlib import Path

from retention_shared.runtime import ServiceDefinition
from segmentation_worker.adapters.tables import metadata
from segmentation_worker.bootstrap import NAME, bootstrap
from segmentation_worker.entrypoints.cli import register_commands

definition = ServiceDefinition(
    name=NAME,
    title="Retention segmentation-worker",
    database_setting="segmentation_database_url",
    sqlite_file="segmentation.db",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
    commands=register_commands,
)
