"""What a shop configures per channel; secrets are kept apart because the API never returns them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

ChannelName = Literal["email", "sms", "line", "webhook"]


class EmailSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(587, ge=1, le=65535)
    sender: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    starttls: bool = True
    username: str | None = Field(None, max_length=320)


class EmailSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(None, max_length=1000)


class SmsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: AnyHttpUrl = Field(description="The provider's API root, e.g. https://api.twilio.com")
    account_sid: str = Field(min_length=1, max_length=128)
    from_number: str = Field(min_length=3, max_length=32)


class SmsSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auth_token: str = Field(min_length=1, max_length=1000)


class LineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: AnyHttpUrl = Field(AnyHttpUrl("https://api.line.me"))


class LineSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_token: str = Field(min_length=1, max_length=2000, description="The channel access token")


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="Receives messages and staff tasks as signed JSON POSTs")


class WebhookSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str = Field(min_length=16, max_length=1000, description="HMAC-SHA256 signing secret")


SCHEMAS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "email": (EmailSettings, EmailSecrets),
    "sms": (SmsSettings, SmsSecrets),
    "line": (LineSettings, LineSecrets),
    "webhook": (WebhookSettings, WebhookSecrets),
}


def validated(
    channel: str, settings: dict[str, Any], secrets: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both halves validated and in their stored JSON form; raises pydantic's ValidationError."""
    settings_model, secrets_model = SCHEMAS[channel]
    return (
        settings_model.model_validate(settings).model_dump(mode="json"),
        secrets_model.model_validate(secrets).model_dump(mode="json", exclude_none=True),
    )
