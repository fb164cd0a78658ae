"""Email over SMTP: multipart text and HTML; the step's idempotency key is the Message-ID."""

from __future__ import annotations

import binascii
import html
import secrets
import smtplib
import threading
from email.header import Header
from email.utils import formataddr, formatdate

from followup_scheduler.adapters.channels.base import (
    NO_RETRY,
    OutgoingMessage,
    PermanentChannelError,
    RetryPolicy,
    TransientChannelError,
)


class SmtpChannel:
    """Keeps its connections open between messages (a dispatcher sends them back to back) and
    reconnects when the server has closed one. Threads may send at the same time: each takes an
    idle connection, or opens one, and puts it back when its message is through."""

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
        self._idle: list[smtplib.SMTP] = []
        self._lock = threading.Lock()  # guards the idle list only; sending holds no lock

    def build(self, message: OutgoingMessage) -> bytes:
        """The message as it goes on the wire: multipart/alternative, CRLF line ends.

        Written out directly rather than with `email.message.EmailMessage`, whose header parsing
        and folding cost several milliseconds a message, more than the SMTP exchange itself."""
        if not message.recipient.isascii():
            # It would need SMTPUTF8; internationalised mailboxes are not supported.
            raise PermanentChannelError(f"address not supported (non-ASCII): {message.recipient!r}")
        body_html = message.html or _html_from_text(message.text, message.locale)
        # Quoted-printable never lets "=_" through, so the boundary cannot occur in a body.
        boundary = f"=_{secrets.token_hex(16)}"
        headers = [
            ("From", formataddr((_one_line(message.sender_name), self._sender), charset="utf-8")),
            ("To", _one_line(message.recipient)),
            ("Subject", _header_value(message.subject)),
            ("Date", formatdate(localtime=False)),
            # A stable Message-ID lets receiving systems drop a copy re-sent after a crash.
            ("Message-ID", f"<{message.idempotency_key}@retention>"),
            ("X-Retention-Idempotency-Key", message.idempotency_key),
            *((name, _header_value(value)) for name, value in message.headers.items()),
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        lines = [f"{name}: {value}" for name, value in headers]
        for subtype, body in (("plain", message.text), ("html", body_html)):
            lines += [
                "",
                f"--{boundary}",
                f'Content-Type: text/{subtype}; charset="utf-8"',
                "Content-Transfer-Encoding: quoted-printable",
                "",
                _quoted_printable(body),
            ]
        lines += [f"--{boundary}--", ""]
        return "\r\n".join(lines).encode("ascii")

    def send(self, message: OutgoingMessage) -> None:
        data = self.build(message)
        self._retry.call(lambda: self._send_once(message.recipient, data))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            _quit(client)

    def _send_once(self, recipient: str, data: bytes) -> None:
        client: smtplib.SMTP | None = None
        try:
            client, reused = self._checkout()
            try:
                client.sendmail(self._sender, [recipient], data)
            except (smtplib.SMTPServerDisconnected, ConnectionError):
                if not reused:
                    raise
                # The kept connection went stale (server timeout or restart): one fresh one is
                # worth a try. Had the server taken the message before it went, the copy carries
                # the same Message-ID.
                _quit(client)
                client = None
                client = self._open()
                client.sendmail(self._sender, [recipient], data)
        except smtplib.SMTPRecipientsRefused as exc:
            self._reset(client)
            raise PermanentChannelError(f"recipient refused: {exc.recipients}") from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentChannelError(f"SMTP authentication failed: {exc.smtp_code}") from exc
        except smtplib.SMTPResponseException as exc:
            self._reset(client)
            error = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            if 500 <= exc.smtp_code < 600:
                raise PermanentChannelError(error) from exc
            raise TransientChannelError(error) from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            if client is not None:
                _quit(client)
            raise TransientChannelError(f"SMTP server {self._host}:{self._port} unavailable: {exc}") from exc
        self._checkin(client)

    def _checkout(self) -> tuple[smtplib.SMTP, bool]:
        """An idle connection (reused: True), else a new one."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._open(), False

    def _checkin(self, client: smtplib.SMTP) -> None:
        with self._lock:
            self._idle.append(client)

    def _open(self) -> smtplib.SMTP:
        client = smtplib.SMTP(self._host, self._port, timeout=self._timeout_s)
        try:
            if self._starttls:
                client.starttls()
            if self._username:
                client.login(self._username, self._password or "")
        except Exception:
            client.close()
            raise
        return client

    def _reset(self, client: smtplib.SMTP | None) -> None:
        """After a refused message, clear the transaction so the connection can be reused."""
        if client is None:
            return
        try:
            client.rset()
        except (smtplib.SMTPException, OSError):
            _quit(client)
            return
        self._checkin(client)


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def _one_line(value: str) -> str:
    """Line breaks in a header value would start a new header (header injection)."""
    return " ".join(value.splitlines())


def _header_value(value: str) -> str:
    """A header value as ASCII: non-ASCII (or overlong) text as RFC 2047 encoded words."""
    value = _one_line(value)
    if value.isascii() and len(value) < 900:
        return value
    return Header(value, "utf-8", maxlinelen=76).encode(linesep="\r\n")


def _quoted_printable(text: str) -> str:
    """UTF-8 text as quoted-printable with CRLF line ends (binascii does it in C)."""
    unix = text.replace("\r\n", "\n").replace("\r", "\n")
    return binascii.b2a_qp(unix.encode("utf-8"), istext=True).decode("ascii").replace("\n", "\r\n")


def _html_from_text(text: str, locale: str) -> str:
    paragraphs = "".join(
        f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n") if p.strip()
    )
    return f'<!doctype html><html lang="{html.escape(locale)}"><body>{paragraphs}</body></html>'
