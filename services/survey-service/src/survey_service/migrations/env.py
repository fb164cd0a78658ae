from retention_shared.migrate import run_migrations
from survey_service.adapters.tables import metadata

run_migrations(metadata)
