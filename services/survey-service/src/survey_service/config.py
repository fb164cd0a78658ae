"""The survey-service's own settings (env prefix RETENTION_SURVEY_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SurveySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETENTION_SURVEY_", extra="ignore")

    fatigue_days: int = Field(
        30, ge=0, description="A customer gets at most one invitation per this many days"
    )
    invitation_ttl_days: int = Field(30, ge=1, description="How long an invitation link stays valid")
    edit_window_hours: int = Field(
        24, ge=0, description="How long after the first answer a second submission updates it"
    )
