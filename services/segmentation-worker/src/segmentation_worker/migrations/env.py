from retention_shared.migrate import run_migrations
from segmentation_worker.adapters.tables import metadata

run_migrations(metadata)
