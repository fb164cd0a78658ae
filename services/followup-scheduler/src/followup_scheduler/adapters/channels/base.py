"""The one interface every delivery channel implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter


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
    # For webhooks: what the message is about (shop, customer, playbook, step, action).
    metadata: dict[str, Any] = field(default_factory=dict)


class TransientChannelError(Exception):
    """Worth retrying later: the provider is away or busy."""


class PermanentChannelError(Exception):
    """Retrying cannot help: bad address, rejected content, misconfiguration."""


class Channel(Protocol):
    name: str

    def send(self, message: OutgoingMessage) -> None:
        """Hand the message to the provider, passing its idempotency key; raise one of the errors above."""
        ...


T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Quick in-process retries of transient failures (exponential backoff with jitter).

    They ride out a blip; a longer outage goes back to the dispatcher, which reschedules the
    step durably with its own, longer backoff."""

    attempts: int = 3
    initial_s: float = 0.2
    max_s: float = 2.0

    def call(self, send: Callable[[], T]) -> T:
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(multiplier=self.initial_s, max=self.max_s, jitter=self.initial_s),
            retry=retry_if_exception_type(TransientChannelError),
            reraise=True,
        )
        return retrying(send)


NO_RETRY = RetryPolicy(attempts=1)
