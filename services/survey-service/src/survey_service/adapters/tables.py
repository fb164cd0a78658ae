"""The survey-service's own database schema (surveys and responses arrive with the survey issue)."""

from __future__ import annotations

from retention_shared.db import new_metadata
from retention_shared.messaging.outbox import messaging_tables
from retention_shared.tenancy import tenancy_replica_tables

metadata = new_metadata()
messaging = messaging_tables(metadata)
tenancy = tenancy_replica_tables(metadata)
