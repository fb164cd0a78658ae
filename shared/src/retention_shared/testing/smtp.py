"""A real SMTP server for tests (aiosmtpd), recording what it receives."""

from __future__ import annotations

import email
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: Message

    @property
    def subject(self) -> str:
        from email.header import decode_header, make_header

        return str(make_header(decode_header(self.message["Subject"] or "")))

    @property
    def message_id(self) -> str:
        return self.message["Message-ID"] or ""

    def text(self) -> str:
        for part in self.message.walk():
            if part.get_content_type() == "text/plain":
                payload = part.get_payload(decode=True)
                return (
                    payload.decode(part.get_content_charset() or "utf-8")
                    if isinstance(payload, bytes)
                    else ""
                )
        return ""


@dataclass
class _Recorder:
    received: list[ReceivedMail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content)
        with self.lock:
            self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted"


class SmtpServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self._recorder = _Recorder()
        self._controller = Controller(self._recorder, hostname=host, port=self.port)

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[ReceivedMail]:
        with self._recorder.lock:
            return list(self._recorder.received)

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[ReceivedMail]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return self.received
            time.sleep(0.05)
        raise AssertionError(f"expected {count} mails, got {len(self.received)} within {timeout_s}s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
