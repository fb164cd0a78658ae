"""A shop's contact hygiene settings and channel configuration over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field, ValidationError

from followup_scheduler.adapters.channels.directory import ChannelDirectory
from followup_scheduler.domain.channel_config import ChannelName, validated
from followup_scheduler.domain.hygiene import FollowupSettings
from followup_scheduler.service_layer.settings import load_settings
from followup_scheduler.service_layer.test_send import ChannelUnavailable, send_test_message
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.problems import Problem, not_found
from retention_shared.tenancy import Principal
from retention_shared.web import Authenticator, require_scope


class ChannelWrite(BaseModel):
    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, Any] = Field(
        default_factory=dict, description="Write-only; omitted secrets keep their stored value"
    )


class ChannelRead(BaseModel):
    channel: str
    enabled: bool
    settings: dict[str, Any]
    secrets_set: list[str] = Field(description="Which secrets are stored (never their values)")
    updated_at: datetime


class ChannelList(BaseModel):
    channels: list[ChannelRead]
    platform_defaults: list[str] = Field(description="Channels the platform provides when not configured")


def _channel_read(row: dict[str, Any]) -> ChannelRead:
    return ChannelRead(
        channel=row["channel"],
        enabled=row["enabled"],
        settings=row["settings"],
        secrets_set=sorted(row["secrets"]),
        updated_at=row["updated_at"],
    )


class TestSendWrite(BaseModel):
    to: str = Field(
        min_length=1,
        max_length=320,
        description="Where to send it: an email address, a phone number in E.164, a LINE user id "
        "(ignored by the webhook channel, which posts to its configured URL)",
    )


class TestSendRead(BaseModel):
    channel: str
    recipient: str
    delivered: bool = Field(description="Whether the channel's provider accepted the message")
    error: str | None = Field(description="The provider's answer when it did not")


def build_settings_router(
    *,
    uow_factory: Callable[[], SchedulerUnitOfWork],
    authenticate: Authenticator,
    directory: ChannelDirectory,
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["followup settings"])
    can_manage = require_scope(authenticate, "admin")

    @router.get("/followup/settings", response_model=FollowupSettings)
    def get_settings(principal: Principal = Depends(can_manage)) -> FollowupSettings:
        """Frequency budget, quiet hours, holdout and survey-service settings (defaults until saved)."""
        with uow_factory() as uow:
            return load_settings(uow, principal.shop_id)

    @router.put("/followup/settings", response_model=FollowupSettings)
    def put_settings(body: FollowupSettings, principal: Principal = Depends(can_manage)) -> FollowupSettings:
        """Replace the shop's settings; they apply to steps falling due from now on."""
        with uow_factory() as uow:
            uow.repo.save_settings(principal.shop_id, body.model_dump(mode="json"), uow.clock.now())
            uow.commit()
        return body

    @router.get("/channels", response_model=ChannelList)
    def list_channels(principal: Principal = Depends(can_manage)) -> ChannelList:
        """The shop's channel configuration; secrets are never returned."""
        with uow_factory() as uow:
            rows = uow.repo.channel_configs(principal.shop_id)
        return ChannelList(channels=[_channel_read(row) for row in rows], platform_defaults=["email"])

    @router.put("/channels/{channel}", response_model=ChannelRead)
    def put_channel(
        channel: Annotated[ChannelName, Path()],
        body: ChannelWrite,
        principal: Principal = Depends(can_manage),
    ) -> ChannelRead:
        """Configure a channel (email: own SMTP server; sms; line; webhook)."""
        with uow_factory() as uow:
            existing = {row["channel"]: row for row in uow.repo.channel_configs(principal.shop_id)}.get(
                channel
            )
            secrets = {**(existing["secrets"] if existing else {}), **body.secrets}
            try:
                settings, stored_secrets = validated(channel, body.settings, secrets)
            except ValidationError as exc:
                errors = [
                    {
                        "field": ".".join(
                            [
                                "body",
                                "secrets"
                                if error["loc"] and _is_secret(channel, error["loc"][0])
                                else "settings",
                            ]
                            + [str(part) for part in error["loc"]]
                        ),
                        "message": error["msg"],
                    }
                    for error in exc.errors(include_url=False)
                ]
                raise Problem(
                    422, "Unprocessable Content", f"invalid {channel} configuration", errors=errors
                ) from exc
            row = {
                "shop_id": principal.shop_id,
                "channel": channel,
                "enabled": body.enabled,
                "settings": settings,
                "secrets": stored_secrets,
                "updated_at": uow.clock.now(),
            }
            uow.repo.save_channel_config(row)
            uow.commit()
        return _channel_read(row)

    @router.post("/channels/{channel}/test", response_model=TestSendRead)
    def test_channel(
        channel: Annotated[ChannelName, Path()],
        body: TestSendWrite,
        principal: Principal = Depends(can_manage),
    ) -> TestSendRead:
        """Send a test message through the channel as configured now (the platform's email server
        when the shop has none); the answer says whether the provider accepted it, or its error."""
        try:
            result = send_test_message(
                uow_factory(), directory, shop_id=principal.shop_id, channel=channel, recipient=body.to
            )
        except ChannelUnavailable as exc:
            raise not_found("channel configuration") from exc
        return TestSendRead(**vars(result))

    @router.delete("/channels/{channel}", status_code=204)
    def delete_channel(
        channel: Annotated[ChannelName, Path()], principal: Principal = Depends(can_manage)
    ) -> Response:
        """Remove the configuration (email falls back to the platform's SMTP server)."""
        with uow_factory() as uow:
            if not uow.repo.delete_channel_config(principal.shop_id, channel):
                raise not_found("channel configuration")
            uow.commit()
        return Response(status_code=204)

    return router


def _is_secret(channel: str, name: object) -> bool:
    from followup_scheduler.domain.channel_config import SCHEMAS

    return str(name) in SCHEMAS[channel][1].model_fields
