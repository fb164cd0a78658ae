"""Platform settings, read from RETENTION_* environment variables (see the README's table)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ADMIN_TOKEN = "dev-admin-token"
DEFAULT_SIGNING_SECRET = "dev-signing-secret-change-me"


class Mode(StrEnum):
    EMBEDDED = "embedded"
    DISTRIBUTED = "distributed"


class PlatformSettings(BaseSettings):
    """Settings shared by every service. Per-service database URLs live in `database_url_for`."""

    model_config = SettingsConfigDict(env_prefix="RETENTION_", extra="ignore")

    mode: Mode = Mode.EMBEDDED
    environment: str = Field("development", description="'production' refuses the development secrets")
    port: int = 8000
    data_dir: Path = Path("var")
    admin_token: SecretStr = SecretStr(DEFAULT_ADMIN_TOKEN)
    signing_secret: SecretStr = SecretStr(DEFAULT_SIGNING_SECRET)
    public_base_url: str = "http://localhost:8000"
    gateway_url: str | None = Field(
        None, description="Where the console calls the services' APIs; unset = the same process (embedded)"
    )

    kafka_bootstrap: str = "127.0.0.1:19092"
    topic_partitions: int = Field(12, ge=1)
    topic_replication: int = Field(1, ge=1)
    topic_namespace: str = Field("", description="prefix for topic names, to isolate environments")

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_sender: str = "no-reply@retention.local"

    customer_api_database_url: str | None = None
    segmentation_database_url: str | None = None
    followup_database_url: str | None = None
    survey_database_url: str | None = None

    rate_limit: str = Field(
        "100/second", description="Requests per API key and process, in `limits` syntax, e.g. 6000/minute"
    )

    log_level: str = "INFO"
    log_format: str = Field("json", pattern="^(json|text)$")

    consumer_batch_size: int = Field(500, ge=1)
    consumer_poll_timeout_ms: int = Field(200, ge=1)
    consumer_max_attempts: int = Field(5, ge=1)
    relay_batch_size: int = Field(1000, ge=1)
    relay_interval_ms: int = Field(50, ge=1)

    @field_validator("rate_limit")
    @classmethod
    def _parseable_rate_limit(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit: {value!r} (expected e.g. 100/second)") from exc
        return value

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> PlatformSettings:
        if self.environment == "production":
            if self.admin_token.get_secret_value() == DEFAULT_ADMIN_TOKEN:
                raise ValueError("RETENTION_ADMIN_TOKEN must be set in production")
            if self.signing_secret.get_secret_value() == DEFAULT_SIGNING_SECRET:
                raise ValueError("RETENTION_SIGNING_SECRET must be set in production")
        return self

    def database_url_for(self, setting_name: str, sqlite_file: str) -> str:
        """The configured URL for a service, or its SQLite file under the data dir."""
        configured = getattr(self, setting_name)
        if configured:
            return str(configured)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / sqlite_file).as_posix()}"
