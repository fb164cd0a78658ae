"""The one interface every delivery channel implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    channel: str
    recipient: str
    subject: str
    text: str
    html: str | None
    idempotency_key: str
    sender_name: str
    locale: str
    headers: dict[str, str] = field(default_factory=dict)


class TransientChannelError(Exception):
    """Worth retrying later: the provider is away or busy."""


class PermanentChannelError(Exception):
    """Retrying cannot help: bad address, rejected content, misconfiguration."""


class Channel(Protocol):
    name: str

    def send(self, message: OutgoingMessage) -> None:
        """Hand the message to the provider, passing its idempotency key; raise one of the errors above."""
        ...
