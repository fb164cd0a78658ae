# syntax=docker/dockerfile:1
#
# "Tools" image: the shared library plus EVERY service, so one container can
# run commands that span services:
#   * retention migrate all      (each service's Alembic migrations)
#   * retention topics ensure    (create Kafka topics)
#   * retention run all          (embedded single-process mode, for demos)
#
# Used by the one-shot `migrate` service in docker-compose.yml and by the
# migration Job in deploy/k8s/. Build from the repository root:
#
#   docker build -f deploy/docker/tools.Dockerfile -t retention/tools:dev .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 retention \
 && useradd --system --uid 10001 --gid retention \
      --home-dir /app --no-create-home --shell /usr/sbin/nologin retention

WORKDIR /app
RUN mkdir -p /app/var && chown retention:retention /app/var

COPY shared/ /app/shared/
RUN pip install /app/shared

COPY services/ /app/services/
RUN pip install \
      /app/services/customer-api \
      /app/services/segmentation-worker \
      /app/services/followup-scheduler \
      /app/services/survey-service

USER 10001:10001

# One-shot commands: nothing long-running to probe.
HEALTHCHECK NONE

CMD ["retention", "migrate", "all"]
