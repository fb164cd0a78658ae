"""HTTP channels: SMS (Twilio-compatible), LINE Messaging API push, and signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from followup_scheduler.adapters.channels.base import (
    OutgoingMessage,
    PermanentChannelError,
    RetryPolicy,
    TransientChannelError,
)

SIGNATURE_HEADER = "Retention-Signature"
# LINE's retry key must be a UUID; derived from the step's key so that a resend reuses it.
LINE_RETRY_NAMESPACE = uuid.UUID("5b0c3a52-8f0e-4c49-9b66-1f3f0d2f6c11")


def _post(client: httpx.Client, what: str, send: Callable[[], httpx.Response]) -> httpx.Response:
    try:
        response = send()
    except httpx.TimeoutException as exc:
        raise TransientChannelError(f"{what}: timed out") from exc
    except httpx.UnsupportedProtocol as exc:
        raise PermanentChannelError(f"{what}: misconfigured URL: {exc}") from exc
    except httpx.TransportError as exc:
        raise TransientChannelError(f"{what}: unreachable: {exc}") from exc
    except httpx.InvalidURL as exc:
        raise PermanentChannelError(f"{what}: invalid URL: {exc}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientChannelError(f"{what}: HTTP {response.status_code}")
    return response


def _fail_permanently(what: str, response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise PermanentChannelError(f"{what}: HTTP {response.status_code}: {response.text[:200]}")


class SmsChannel:
    """SMS through a provider with Twilio's request shape: a form POST to
    `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json` with To, From and Body,
    authenticated with HTTP Basic (account SID and auth token)."""

    name = "sms"

    def __init__(
        self,
        client: httpx.Client,
        *,
        base_url: str,
        account_sid: str,
        auth_token: str,
        from_number: str,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._client = client
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = (account_sid, auth_token)
        self._from = from_number
        self._retry = retry

    def send(self, message: OutgoingMessage) -> None:
        body = message.text.strip()

        def attempt() -> httpx.Response:
            return _post(
                self._client,
                "SMS provider",
                lambda: self._client.post(
                    self._url,
                    data={"To": message.recipient, "From": self._from, "Body": body},
                    auth=self._auth,
                    headers={"Idempotency-Key": message.idempotency_key},
                ),
            )

        _fail_permanently("SMS provider", self._retry.call(attempt))


class LineChannel:
    """LINE Messaging API push message, with `X-Line-Retry-Key` so a resend is accepted once."""

    name = "line"

    def __init__(
        self,
        client: httpx.Client,
        *,
        access_token: str,
        base_url: str = "https://api.line.me",
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._client = client
        self._url = f"{base_url.rstrip('/')}/v2/bot/message/push"
        self._token = access_token
        self._retry = retry

    def send(self, message: OutgoingMessage) -> None:
        text = message.text.strip()
        if message.subject and not text.startswith(message.subject):
            text = f"{message.subject}\n\n{text}"
        payload = {"to": message.recipient, "messages": [{"type": "text", "text": text[:5000]}]}
        retry_key = str(uuid.uuid5(LINE_RETRY_NAMESPACE, message.idempotency_key))

        def attempt() -> httpx.Response:
            return _post(
                self._client,
                "LINE",
                lambda: self._client.post(
                    self._url,
                    json=payload,
                    headers={"Authorization": f"Bearer {self._token}", "X-Line-Retry-Key": retry_key},
                ),
            )

        response = self._retry.call(attempt)
        if response.status_code == 409 and response.headers.get("x-line-accepted-request-id"):
            return  # LINE already accepted this retry key: the earlier attempt went through
        _fail_permanently("LINE", response)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The webhook signature: hex HMAC-SHA256 over `{timestamp}.{body}` with the shop's secret."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance_s: int = 300) -> bool:
    """What a shop does on receipt (documented in docs/channels.md): check freshness and the MAC."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(parts.get("v1", ""), sign(secret, timestamp, body))


class WebhookChannel:
    """A JSON POST to the shop's URL, signed like Stripe's webhooks (`Retention-Signature`)."""

    name = "webhook"

    def __init__(
        self,
        client: httpx.Client,
        *,
        url: str,
        secret: str,
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._url = url
        self._secret = secret
        self._retry = retry
        self._clock = clock

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        return {
            "id": message.idempotency_key,
            "type": message.metadata.get("type", "followup.message"),
            **{k: v for k, v in message.metadata.items() if k != "type"},
            "message": {
                "recipient": message.recipient,
                "subject": message.subject,
                "text": message.text,
                "html": message.html,
                "locale": message.locale,
            },
        }

    def send(self, message: OutgoingMessage) -> None:
        body = json.dumps(self.payload(message), ensure_ascii=False, separators=(",", ":")).encode()

        def attempt() -> httpx.Response:
            timestamp = int(self._clock())  # signed afresh per attempt, so a retry is never stale
            return _post(
                self._client,
                "webhook",
                lambda: self._client.post(
                    self._url,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: signature_header(self._secret, timestamp, body),
                        "Idempotency-Key": message.idempotency_key,
                    },
                ),
            )

        _fail_permanently("webhook", self._retry.call(attempt))
