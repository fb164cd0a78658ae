"""Signed one-click unsubscribe links: the token names the shop, customer and channel."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Unsubscription:
    shop_id: str
    customer_id: str
    channel: str


class UnsubscribeLinks:
    def __init__(self, secret: str, public_base_url: str) -> None:
        # A key of its own, derived from the platform secret, so these tokens sign nothing else.
        self._key = hmac.new(secret.encode(), b"retention-unsubscribe-v1", hashlib.sha256).digest()
        self._base = public_base_url.rstrip("/")

    def token(self, shop_id: str, customer_id: str, channel: str) -> str:
        payload = _b64(json.dumps([shop_id, customer_id, channel], separators=(",", ":")).encode())
        return f"{payload}.{_b64(self._mac(payload))}"

    def url(self, shop_id: str, customer_id: str, channel: str) -> str:
        return f"{self._base}/u/{self.token(shop_id, customer_id, channel)}"

    def read(self, token: str) -> Unsubscription | None:
        """The unsubscription a token stands for, or None when it is forged or malformed."""
        payload, _, mac = token.partition(".")
        try:
            if not hmac.compare_digest(_unb64(mac), self._mac(payload)):
                return None
            shop_id, customer_id, channel = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        return Unsubscription(str(shop_id), str(customer_id), str(channel))

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:20]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
