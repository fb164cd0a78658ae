"""Choosing a channel for a step: the first preferred channel with consent, an address and a provider."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Route:
    channel: str
    address: str


ADDRESS_FIELD = {"email": "email", "sms": "phone", "line": "line_user_id"}


def choose_route(
    channels: list[str], contact: dict[str, Any], configured: Collection[str] | None = None
) -> tuple[Route | None, str | None]:
    """The route to use, or None and the reason no channel can be used.

    `configured` names the channels the shop can send through; the others are passed over."""
    reasons = []
    consents: dict[str, bool] = contact.get("consents") or {}
    for channel in channels:
        if channel == "webhook":
            # The shop's own system decides what reaches the customer; it gets the consents too.
            if configured is not None and channel in configured:
                return Route("webhook", "shop"), None
            reasons.append(
                "webhook: channel not available" if configured is None else "webhook: channel not configured"
            )
            continue
        field = ADDRESS_FIELD.get(channel)
        if field is None:
            reasons.append(f"{channel}: channel not available")
            continue
        if not consents.get(channel, False):
            reasons.append(f"{channel}: no consent")
            continue
        address = contact.get(field)
        if not address:
            reasons.append(f"{channel}: no address")
            continue
        if configured is not None and channel not in configured:
            reasons.append(f"{channel}: channel not configured")
            continue
        return Route(channel, address), None
    return None, "; ".join(reasons) or "no channel"
