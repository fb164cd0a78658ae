"""The survey-service as the platform sees it."""

from __future__ import annotations

from pathlib import Path

from retention_shared.runtime import ServiceDefinition
from survey_service.adapters.tables import metadata
from survey_service.bootstrap import NAME, bootstrap

definition = ServiceDefinition(
    name=NAME,
    title="Retention survey-service",
    database_setting="survey_database_url",
    sqlite_file="survey.db",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
)
