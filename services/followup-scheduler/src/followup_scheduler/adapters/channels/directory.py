"""Which channels a shop can use: its own configuration, else the platform's defaults."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import httpx

from followup_scheduler.adapters.channels.base import Channel, RetryPolicy
from followup_scheduler.adapters.channels.http import LineChannel, SmsChannel, WebhookChannel
from followup_scheduler.adapters.channels.smtp import SmtpChannel


class ChannelDirectory:
    """Builds channel adapters from stored configuration rows, reusing them until a row changes."""

    def __init__(
        self,
        defaults: Mapping[str, Channel],
        client: httpx.Client | None = None,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._defaults = dict(defaults)
        self._client = client or httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0))
        self._retry = retry
        self._cache: dict[tuple[str, str], tuple[Any, Channel]] = {}
        self._lock = threading.Lock()

    def channels_for(self, shop_id: str, rows: list[dict[str, Any]]) -> dict[str, Channel]:
        channels = dict(self._defaults)
        for row in rows:
            if not row["enabled"]:
                channels.pop(row["channel"], None)
                continue
            channels[row["channel"]] = self._build_cached(shop_id, row)
        return channels

    def _build_cached(self, shop_id: str, row: dict[str, Any]) -> Channel:
        key = (shop_id, row["channel"])
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == row["updated_at"]:
                return cached[1]
            channel = self.build(row["channel"], row["settings"], row["secrets"])
            self._cache[key] = (row["updated_at"], channel)
            return channel

    def build(self, name: str, settings: dict[str, Any], secrets: dict[str, Any]) -> Channel:
        if name == "email":
            return SmtpChannel(
                settings["host"],
                int(settings["port"]),
                settings["sender"],
                username=settings.get("username"),
                password=secrets.get("password"),
                starttls=bool(settings.get("starttls")),
                retry=self._retry,
            )
        if name == "sms":
            return SmsChannel(
                self._client,
                base_url=settings["base_url"],
                account_sid=settings["account_sid"],
                auth_token=secrets["auth_token"],
                from_number=settings["from_number"],
                retry=self._retry,
            )
        if name == "line":
            return LineChannel(
                self._client,
                access_token=secrets["access_token"],
                base_url=settings["base_url"],
                retry=self._retry,
            )
        if name == "webhook":
            return WebhookChannel(
                self._client, url=settings["url"], secret=secrets["secret"], retry=self._retry
            )
        raise ValueError(f"unknown channel {name}")

    def close(self) -> None:
        self._client.close()
