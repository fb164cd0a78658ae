-- Creates one database per service (each service owns its schema and runs its
-- own Alembic migrations against it). Mounted into the postgres container at
-- /docker-entrypoint-initdb.d/, so it runs once, on an empty data volume, as
-- the POSTGRES_USER defined in docker-compose.yml.
--
--   service               database                 env var
--   customer-api          retention_customer       RETENTION_CUSTOMER_API_DATABASE_URL
--   segmentation-worker   retention_segmentation   RETENTION_SEGMENTATION_DATABASE_URL
--   followup-scheduler    retention_followup       RETENTION_FOLLOWUP_DATABASE_URL
--   survey-service        retention_survey         RETENTION_SURVEY_DATABASE_URL
--
-- In development all services share the `retention` role. In production give
-- each service its own role that can only reach its own database.

CREATE DATABASE retention_customer OWNER retention;
CREATE DATABASE retention_segmentation OWNER retention;
CREATE DATABASE retention_followup OWNER retention;
CREATE DATABASE retention_survey OWNER retention;
