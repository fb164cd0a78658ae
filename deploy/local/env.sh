# Environment of the distributed mode on one machine (sourced by up.sh and by the e2e tests' docs).
export RETENTION_MODE=distributed
export RETENTION_KAFKA_BOOTSTRAP="${RETENTION_KAFKA_BOOTSTRAP:-127.0.0.1:${RETENTION_KAFKA_PORT:-19092}}"
_pg="postgresql+psycopg://retention:retention@127.0.0.1:${RETENTION_PG_PORT:-5432}"
export RETENTION_CUSTOMER_API_DATABASE_URL="${RETENTION_CUSTOMER_API_DATABASE_URL:-$_pg/retention_customer_api}"
export RETENTION_SEGMENTATION_DATABASE_URL="${RETENTION_SEGMENTATION_DATABASE_URL:-$_pg/retention_segmentation}"
export RETENTION_FOLLOWUP_DATABASE_URL="${RETENTION_FOLLOWUP_DATABASE_URL:-$_pg/retention_followup}"
export RETENTION_SURVEY_DATABASE_URL="${RETENTION_SURVEY_DATABASE_URL:-$_pg/retention_survey}"
unset _pg
# service name, API port, consumer health port
RETENTION_LOCAL_SERVICES=(
  "customer-api 8001 9101"
  "segmentation-worker 8002 9102"
  "followup-scheduler 8003 9103"
  "survey-service 8004 9104"
)
