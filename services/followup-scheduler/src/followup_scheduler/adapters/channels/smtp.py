"""Email over SMTP: multipart text and HTML; the step's idempotency key is the Message-ID."""

from __future__ import annotations

import html
import smtplib
from email.message import EmailMessage
from email.utils import formataddr

from followup_scheduler.adapters.channels.base import (
    OutgoingMessage,
    PermanentChannelError,
    TransientChannelError,
)


class SmtpChannel:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, timeout_s: float = 10.0) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._timeout_s = timeout_s

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
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout_s) as client:
                client.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentChannelError(f"recipient refused: {exc.recipients}") from exc
        except smtplib.SMTPResponseException as exc:
            error = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            if 500 <= exc.smtp_code < 600:
                raise PermanentChannelError(error) from exc
            raise TransientChannelError(error) from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise TransientChannelError(f"SMTP server {self._host}:{self._port} unavailable: {exc}") from exc


def _html_from_text(text: str, locale: str) -> str:
    paragraphs = "".join(
        f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n") if p.strip()
    )
    return f'<!doctype html><html lang="{html.escape(locale)}"><body>{paragraphs}</body></html>'
