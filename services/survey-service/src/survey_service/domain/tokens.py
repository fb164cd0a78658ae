"""Invitation tokens: a random id and an expiry, signed with HMAC-SHA256.

A token carries no shop or customer data: only 12 random bytes (the key of the invitation row) and
the expiry time, both under a MAC keyed with a key derived from the platform's signing secret. So a
token cannot be forged or altered without the secret, and a failed check says nothing about any
shop: it is rejected before the database is even asked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

VERSION = 1
_NONCE_BYTES = 12
_MAC_BYTES = 16
_PAYLOAD = struct.Struct(">B12sI")  # version, nonce, expiry in Unix seconds
_PURPOSE = b"retention/survey-invitation/v1"


class TokenState(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class TokenCheck:
    state: TokenState
    token_id: str | None = None
    expires_at: datetime | None = None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class InvitationSigner:
    def __init__(self, signing_secret: str) -> None:
        # A key of its own, so a MAC made here is worth nothing to any other use of the secret.
        key = hmac.new(signing_secret.encode(), _PURPOSE, hashlib.sha256).digest()
        # Keyed once: a copy of it costs half of keying a new HMAC for every token checked.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def new_token_id(self) -> str:
        return _b64(secrets.token_bytes(_NONCE_BYTES))

    def sign(self, token_id: str, expires_at: datetime) -> str:
        nonce = _unb64(token_id)
        if len(nonce) != _NONCE_BYTES:
            raise ValueError("not a token id")
        payload = _PAYLOAD.pack(VERSION, nonce, int(expires_at.timestamp()))
        return _b64(payload + self._mac(payload))

    def check(self, token: str, now: datetime) -> TokenCheck:
        """Verify the MAC first (in constant time); only a genuine token reveals its expiry."""
        if not token or len(token) > 100:
            return TokenCheck(TokenState.INVALID)
        try:
            raw = _unb64(token)
        except (binascii.Error, ValueError):
            return TokenCheck(TokenState.INVALID)
        # b64decode skips stray characters, so insist on the one canonical spelling of the bytes.
        if len(raw) != _PAYLOAD.size + _MAC_BYTES or _b64(raw) != token:
            return TokenCheck(TokenState.INVALID)
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return TokenCheck(TokenState.INVALID)
        version, nonce, expiry = _PAYLOAD.unpack(payload)
        if version != VERSION:
            return TokenCheck(TokenState.INVALID)
        expires_at = datetime.fromtimestamp(expiry, UTC)
        state = TokenState.VALID if now < expires_at else TokenState.EXPIRED
        return TokenCheck(state, _b64(nonce), expires_at)

    def _mac(self, payload: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(payload)
        return mac.digest()[:_MAC_BYTES]
