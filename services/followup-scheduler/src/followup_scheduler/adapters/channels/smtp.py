"""Email over SMTP: multipart text and HTML; the step's idempotency key is the Message-ID."""

from __future__ import annotations

import html
import smtplib
import threading
from email.message import EmailMessage
from email.utils import formataddr

from followup_scheduler.adapters.channels.base import (
    NO_RETRY,
    OutgoingMessage,
    PermanentChannelError,
    RetryPolicy,
    TransientChannelError,
)


class SmtpChannel:
    """Keeps one connection open between messages (a dispatcher sends them back to back) and
    reconnects when the server has closed it."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        timeout_s: float = 10.0,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        retry: RetryPolicy = NO_RETRY,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._timeout_s = timeout_s
        self._username = username
        self._password = password
        self._starttls = starttls
        self._retry = retry
        self._client: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    def build(self, message: OutgoingMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = formataddr((message.sender_name, self._sender))
        email["To"] = message.recipient
        email["Subject"] = message.subject
        # A stable Message-ID lets receiving systems drop a copy re-sent after a crash.
        email["Message-ID"] = f"<{message.idempotency_key}@retention>"
        email["X-Retention-Idempotency-Key"] = message.idempotency_key
        for name, value in message.headers.items():
            email[name] = value
        email.set_content(message.text)
        body_html = message.html or _html_from_text(message.text, message.locale)
        email.add_alternative(body_html, subtype="html")
        return email

    def send(self, message: OutgoingMessage) -> None:
        email = self.build(message)
        with self._lock:
            self._retry.call(lambda: self._send_once(email))

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _send_once(self, email: EmailMessage) -> None:
        try:
            try:
                self._connection().send_message(email)
            except smtplib.SMTPServerDisconnected:
                # The kept connection went stale (server timeout); one fresh one is worth a try.
                self._drop()
                self._connection().send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            self._reset()
            raise PermanentChannelError(f"recipient refused: {exc.recipients}") from exc
        except smtplib.SMTPAuthenticationError as exc:
            self._drop()
            raise PermanentChannelError(f"SMTP authentication failed: {exc.smtp_code}") from exc
        except smtplib.SMTPResponseException as exc:
            self._reset()
            error = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            if 500 <= exc.smtp_code < 600:
                raise PermanentChannelError(error) from exc
            raise TransientChannelError(error) from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise TransientChannelError(f"SMTP server {self._host}:{self._port} unavailable: {exc}") from exc

    def _connection(self) -> smtplib.SMTP:
        if self._client is None:
            client = smtplib.SMTP(self._host, self._port, timeout=self._timeout_s)
            try:
                if self._starttls:
                    client.starttls()
                if self._username:
                    client.login(self._username, self._password or "")
            except Exception:
                client.close()
                raise
            self._client = client
        return self._client

    def _reset(self) -> None:
        """After a refused message, clear the transaction so the connection can be reused."""
        if self._client is not None:
            try:
                self._client.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._client.quit()
            except (smtplib.SMTPException, OSError):
                self._client.close()
            self._client = None


def _html_from_text(text: str, locale: str) -> str:
    paragraphs = "".join(
        f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n") if p.strip()
    )
    return f'<!doctype html><html lang="{html.escape(locale)}"><body>{paragraphs}</body></html>'
