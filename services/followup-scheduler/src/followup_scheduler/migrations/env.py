from followup_scheduler.adapters.tables import metadata
from retention_shared.migrate import run_migrations

run_migrations(metadata)
