"""Choosing a channel for a step: the first preferred channel with consent and an address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Route:
    channel: str
    address: str


ADDRESS_FIELD = {"email": "email", "sms": "phone", "line": "line_user_id"}


def choose_route(channels: list[str], contact: dict[str, Any]) -> tuple[Route | None, str | None]:
    """The route to use, or None and the reason no channel can be used."""
    reasons = []
    consents: dict[str, bool] = contact.get("consents") or {}
    for channel in channels:
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
        return Route(channel, address), None
    return None, "; ".join(reasons) or "no channel"
