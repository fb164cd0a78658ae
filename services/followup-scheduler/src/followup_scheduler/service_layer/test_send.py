"""A test message through one of the shop's channels, so staff can check a configuration works."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from followup_scheduler.adapters.channels.base import (
    OutgoingMessage,
    PermanentChannelError,
    TransientChannelError,
)
from followup_scheduler.adapters.channels.directory import ChannelDirectory
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork

SUBJECTS = {"ja": "Retention のテスト送信", "en": "A test message from Retention"}
TEXTS = {
    "ja": "このメッセージは {channel} チャネルの設定を確認するためのテスト送信です。",
    "en": "This message checks that the {channel} channel is set up. No action is needed.",
}


class ChannelUnavailable(LookupError):
    """The shop has not configured this channel (or disabled it), and the platform has no default."""


@dataclass(frozen=True)
class TestSendResult:
    channel: str
    recipient: str
    delivered: bool
    error: str | None


def send_test_message(
    uow: SchedulerUnitOfWork, directory: ChannelDirectory, *, shop_id: str, channel: str, recipient: str
) -> TestSendResult:
    """Send now, outside any playbook: nothing is recorded, and no budget or consent applies, since
    the recipient is the shop's own staff address given with the request."""
    with uow:
        rows = uow.repo.channel_configs(shop_id)
        shop = uow.repo.shop(shop_id) or {}
    available = directory.channels_for(shop_id, rows)
    if channel not in available:
        raise ChannelUnavailable(channel)
    locale = "ja" if str(shop.get("locale") or "").startswith("ja") else "en"
    message = OutgoingMessage(
        channel=channel,
        recipient=recipient,
        subject=SUBJECTS[locale],
        text=TEXTS[locale].format(channel=channel),
        html=None,
        idempotency_key=f"test-{secrets.token_hex(8)}",
        sender_name=str(shop.get("name") or "Retention"),
        locale=locale,
        metadata={"shop_id": shop_id, "action": "test"},
    )
    try:
        available[channel].send(message)
    except (TransientChannelError, PermanentChannelError) as error:
        return TestSendResult(channel, recipient, False, str(error) or type(error).__name__)
    return TestSendResult(channel, recipient, True, None)
