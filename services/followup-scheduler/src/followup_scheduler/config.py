"""The followup-scheduler's own settings (env prefix RETENTION_FOLLOWUP_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from followup_scheduler.service_layer.dispatch import DEFAULT_BATCH_SIZE


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETENTION_FOLLOWUP_", extra="ignore")

    dispatch_batch_size: int = Field(
        DEFAULT_BATCH_SIZE,
        ge=1,
        le=500,
        description=(
            "Due steps a dispatcher claims and commits per transaction. Larger batches send faster, "
            "but a crash mid-batch re-sends (under the same idempotency key) up to this many messages."
        ),
    )
    dispatch_send_concurrency: int = Field(
        4,
        ge=1,
        le=32,
        description="Messages of a batch a dispatcher hands to channels at the same time (SMTP connections)",
    )
